package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRegisterDevice(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr string // "" for success
	}{
		{"created", 201, `{"id":"dev_1","server_keys":["` + key + `"]}`, ""},
		{"problem", 401, `{"type":"https://cardlink.dev/problems/unauthorized","title":"Unauthorized","status":401,"detail":"A valid operator key is required."}`, "server answered Unauthorized: A valid operator key is required."},
		{"not JSON error", 502, `<html>`, "server answered 502 Bad Gateway"},
		{"short server key", 201, `{"id":"dev_1","server_keys":["AAAA"]}`, "bad server key"},
		{"no server key", 201, `{"id":"dev_1","server_keys":[]}`, "0 server keys"},
		{"no id", 201, `{"server_keys":["` + key + `"]}`, "no id"},
		{"not JSON", 201, `{"id":`, "decoding the answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]string
			var auth string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/v1/devices" {
					http.NotFound(w, r)
					return
				}
				auth = r.Header.Get("Authorization")
				b, _ := io.ReadAll(r.Body)
				json.Unmarshal(b, &got)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			pub := []byte("0123456789abcdef0123456789abcdef")
			reg, err := registerDevice(context.Background(), srv.URL+"/", "op-key", "kitchen", pub)
			if auth != "Bearer op-key" {
				t.Errorf("Authorization = %q, want the operator key as a bearer token", auth)
			}
			if got["name"] != "kitchen" || got["static_key"] != base64.StdEncoding.EncodeToString(pub) {
				t.Errorf("request body = %v, want name and base64 static_key", got)
			}
			if tt.wantErr == "" {
				if err != nil || reg.ID != "dev_1" || len(reg.keys) != 1 {
					t.Fatalf("registerDevice() = %+v, %v; want dev_1 with one key", reg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("registerDevice() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
