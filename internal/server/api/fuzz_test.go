package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/store"
	"cardlink/internal/store/sqlite"
	"cardlink/internal/txn"
)

// FuzzCreateAuthRequest sends any body to POST /v1/auth-requests through
// the whole handler and a real store: the answer is a created request
// that is valid and stored, or a client problem; never a server error,
// never something that is not JSON.
func FuzzCreateAuthRequest(f *testing.F) {
	for _, s := range []string{
		`{"card":"4111111111111111"}`,
		`{"card":"4111111111111111","policy":"online-pin,biometric","ttl_seconds":60}`,
		`{"card":"4111111111111111","policy":"offline-pin","ttl_seconds":3600}`,
		`{"card":"4111111111111112"}`,
		`{"card":"4000000000000002","policy":"none"}`,
		`{"card":"4111111111111111","ttl_seconds":-1}`,
		`{"card":"4111111111111111","ttl_seconds":1e3}`,
		`{"card":"4111111111111111"} trailing`,
		`{"card":"4111111111111111","card":"5555555555554444"}`,
		`{"CARD":"4111111111111111"}`,
		`[]`, `null`, ``, `{`, "\xff",
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"card":"4111111111111111"}`), "order-1")
	f.Add([]byte(`{"card":"4111111111111111","policy":"biometric"}`), "order-1")

	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "cardlink.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	if err := st.PutCard(ctx, store.Card{Number: cardA, Cert: []byte("c")}, now); err != nil {
		f.Fatal(err)
	}
	const key = "party-key"
	sum := sha256.Sum256([]byte(key))
	if err := st.PutRelyingParty(ctx, store.RelyingParty{ID: "rp_f", Name: "f", KeyHash: sum[:]}, now); err != nil {
		f.Fatal(err)
	}
	h := New(Config{Store: st, Now: func() time.Time { return now }})

	f.Fuzz(func(t *testing.T, body []byte, idem string) {
		req := httptest.NewRequest("POST", "/v1/auth-requests", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("POST %q: body %q is not JSON", body, w.Body.Bytes())
		}
		switch w.Code {
		case http.StatusCreated:
			var v authRequestView
			if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
				t.Fatalf("POST %q: 201 body %s: %v", body, w.Body.Bytes(), err)
			}
			ar, err := st.AuthRequest(ctx, v.ID)
			if err != nil {
				t.Fatalf("POST %q: created %s, AuthRequest: %v", body, v.ID, err)
			}
			if txn.ValidCardNumber(ar.Card) != nil || ar.RelyingParty != "rp_f" {
				t.Fatalf("POST %q: stored %+v, want a valid card of rp_f", body, ar)
			}
			if _, err := auth.ParsePolicy(ar.Policy); err != nil || auth.FormatPolicy(mustPolicy(t, ar.Policy)) != ar.Policy {
				t.Fatalf("POST %q: stored policy %q is not canonical (%v)", body, ar.Policy, err)
			}
			if ttl := ar.Expires.Sub(now); ttl < minTTL || ttl > maxTTL {
				t.Fatalf("POST %q: ttl %v outside [%v, %v]", body, ttl, minTTL, maxTTL)
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("POST %q: %d with Content-Type %q", body, w.Code, ct)
			}
		default:
			t.Fatalf("POST %q = %d %s, want 201, 400, 413 or 422", body, w.Code, w.Body.Bytes())
		}
	})
}

func mustPolicy(t *testing.T, s string) (set protocol.CVMSet) {
	t.Helper()
	set, err := auth.ParsePolicy(s)
	if err != nil {
		t.Fatalf("auth.ParsePolicy(%q): %v", s, err)
	}
	return set
}

// FuzzVerifySignature checks that any header parses without panicking,
// and that what Sign makes always verifies and fails for another body.
func FuzzVerifySignature(f *testing.F) {
	f.Add([]byte("secret"), []byte(`{"id":"ar_1"}`), "t=1800000000,v1=00", int64(1_800_000_000))
	f.Add([]byte(""), []byte(""), "", int64(0))
	f.Add([]byte("k"), []byte("b"), "t=1,v1="+string(bytes.Repeat([]byte("ab"), 32))+",v1=zz", int64(1))
	f.Fuzz(func(t *testing.T, secret, body []byte, header string, unix int64) {
		at := time.Unix(unix%(1<<40), 0)
		VerifySignature(secret, body, header, at, time.Minute)
		if unix < 0 {
			return
		}
		h := Sign(secret, body, at)
		if err := VerifySignature(secret, body, h, at, time.Minute); err != nil {
			t.Fatalf("VerifySignature(Sign(…)) = %v, want nil", err)
		}
		if err := VerifySignature(secret, append(body, 'x'), h, at, time.Minute); err == nil {
			t.Fatalf("VerifySignature(Sign(…), other body) = nil, want an error")
		}
	})
}
