package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkCreateAuthRequest measures POST /v1/auth-requests through the
// handler (key check, JSON decoding, card lookup, insert) on a SQLite
// file.
func BenchmarkCreateAuthRequest(b *testing.B) {
	e := newEnv(b)
	p := e.createParty(b, "shop", "", "")
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/auth-requests", strings.NewReader(`{"card":"`+cardA+`"}`))
		req.Header.Set("Authorization", "Bearer "+p.key)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			b.Fatalf("POST /v1/auth-requests = %d %s, want 201", w.Code, w.Body)
		}
	}
}

// BenchmarkGetAuthRequest measures GET /v1/auth-requests/{id} (key check,
// read) on a SQLite file.
func BenchmarkGetAuthRequest(b *testing.B) {
	e := newEnv(b)
	p := e.createParty(b, "shop", "", "")
	v := decodeBody[authRequestView](b, e.do(b, "POST", "/v1/auth-requests", p.key, `{"card":"`+cardA+`"}`))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "/v1/auth-requests/"+v.ID, nil)
		req.Header.Set("Authorization", "Bearer "+p.key)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET = %d %s, want 200", w.Code, w.Body)
		}
	}
}
