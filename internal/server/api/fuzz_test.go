package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
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

	st := servertest.SQLite(f)
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

// FuzzSetCardCredentials sends any body to PUT /v1/cards/{number}/online-pin
// or …/biometric through the whole handler and a real store: the answer is
// 204 with a stored record that the auth package accepts — the PIN sent
// verifies, the template sent is the one kept, within the limits — or a
// client problem; never a server error.
func FuzzSetCardCredentials(f *testing.F) {
	tmpl := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, auth.BiometricSize))
	for _, s := range []string{
		`{"pin":"2468"}`,
		`{"pin":"123456789012","max_tries":10}`,
		`{"pin":"12345","max_tries":0}`,
		`{"pin":"12a4"}`,
		`{"pin":1234}`,
		`{"template":"` + tmpl + `"}`,
		`{"template":"` + tmpl + `","threshold":0,"max_tries":1}`,
		`{"template":"` + tmpl + `","threshold":129}`,
		`{"template":"AAAA"}`,
		`{"template":"` + tmpl + `"} {}`,
		`[]`, `null`, ``, `{`, "\xff",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}

	st := servertest.SQLite(f)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	if err := st.PutCard(ctx, store.Card{Number: cardA, Cert: []byte("c")}, now); err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256([]byte(operatorKey))
	h := New(Config{Store: st, OperatorKeyHash: sum[:], Now: func() time.Time { return now }})

	f.Fuzz(func(t *testing.T, body []byte, biometric bool) {
		path := "/v1/cards/" + cardA + "/online-pin"
		if biometric {
			path = "/v1/cards/" + cardA + "/biometric"
		}
		// Start from nothing, so that a 204 is this body's doing.
		st.DeletePIN(ctx, cardA)
		st.DeleteBiometric(ctx, cardA)
		req := httptest.NewRequest("PUT", path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+operatorKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusNoContent:
			if w.Body.Len() != 0 {
				t.Fatalf("PUT %s %q: 204 with body %q", path, body, w.Body.Bytes())
			}
			if biometric {
				var sent setBiometricRequest
				if err := json.Unmarshal(body, &sent); err != nil {
					t.Fatalf("PUT %s %q: 204, but the body does not decode: %v", path, body, err)
				}
				b, err := st.Biometric(ctx, cardA)
				if err != nil || !bytes.Equal(b.Template, sent.Template) || len(b.Template) != auth.BiometricSize ||
					b.Threshold < 0 || b.Threshold > auth.MaxBiometricThreshold || b.Tries < 1 || b.Tries > auth.MaxBiometricTries {
					t.Fatalf("PUT %s %q: stored %+v, %v; want the template sent, within the limits", path, body, b, err)
				}
				return
			}
			var sent setOnlinePINRequest
			if err := json.Unmarshal(body, &sent); err != nil {
				t.Fatalf("PUT %s %q: 204, but the body does not decode: %v", path, body, err)
			}
			n, err := auth.VerifyOnlinePIN(ctx, st, cardA, sent.PIN, now)
			if err != nil || n < 1 || n > maxPINTries {
				t.Fatalf("PUT %s %q: VerifyOnlinePIN(the PIN sent) = %d, %v; want 1..%d tries, nil", path, body, n, err, maxPINTries)
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" || !json.Valid(w.Body.Bytes()) {
				t.Fatalf("PUT %s %q: %d with Content-Type %q, body %q", path, body, w.Code, ct, w.Body.Bytes())
			}
			if _, err := st.PIN(ctx, cardA); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("PUT %s %q: refused (%d) but a PIN was stored", path, body, w.Code)
			}
			if _, err := st.Biometric(ctx, cardA); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("PUT %s %q: refused (%d) but a template was stored", path, body, w.Code)
			}
		default:
			t.Fatalf("PUT %s %q = %d %s, want 204, 400, 413 or 422", path, body, w.Code, w.Body.Bytes())
		}
	})
}
