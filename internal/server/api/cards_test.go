package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/server/auth"
	"cardlink/internal/store"
)

func TestMain(m *testing.M) {
	auth.PINIterations = 1000 // records keep their count; only speed changes
	os.Exit(m.Run())
}

// TestSetOnlinePIN sets a card's online PIN through the API; the auth
// package's verification accepts it, and setting it again replaces it
// with fresh tries.
func TestSetOnlinePIN(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const pin = "246810"
	r := e.do(t, "PUT", "/v1/cards/"+cardA+"/online-pin", operatorKey, `{"pin":"`+pin+`"}`)
	wantStatus(t, "PUT online-pin", r, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("PUT online-pin body = %q, want none", r.body)
	}
	if n, err := auth.VerifyOnlinePIN(ctx, e.store, cardA, "135790", e.clock.Now()); !errors.Is(err, auth.ErrWrongPIN) || n != 2 {
		t.Errorf("VerifyOnlinePIN(wrong PIN) = %d, %v; want 2, %v", n, err, auth.ErrWrongPIN)
	}
	if n, err := auth.VerifyOnlinePIN(ctx, e.store, cardA, pin, e.clock.Now()); err != nil || n != 3 {
		t.Errorf("VerifyOnlinePIN(set PIN) = %d, %v; want 3 (the default), nil", n, err)
	}
	p, err := e.store.PIN(ctx, cardA)
	if err != nil || bytes.Contains(p.Hash, []byte(pin)) || bytes.Contains(p.Salt, []byte(pin)) || strings.Contains(p.Params, pin) {
		t.Errorf("PIN(%s) = %+v, %v; want a hash that is not the PIN", cardA, p, err)
	}

	// Replaced: the old PIN no longer matches; the tries are the new ones.
	wantStatus(t, "PUT online-pin again", e.do(t, "PUT", "/v1/cards/"+cardA+"/online-pin", operatorKey, `{"pin":"9753","max_tries":5}`), http.StatusNoContent)
	if n, err := auth.VerifyOnlinePIN(ctx, e.store, cardA, pin, e.clock.Now()); !errors.Is(err, auth.ErrWrongPIN) || n != 4 {
		t.Errorf("VerifyOnlinePIN(old PIN) = %d, %v; want 4, %v", n, err, auth.ErrWrongPIN)
	}
	if n, err := auth.VerifyOnlinePIN(ctx, e.store, cardA, "9753", e.clock.Now()); err != nil || n != 5 {
		t.Errorf("VerifyOnlinePIN(new PIN) = %d, %v; want 5, nil", n, err)
	}
	// The other card has none.
	if _, err := e.store.PIN(ctx, cardB); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PIN(%s) = %v, want %v", cardB, err, store.ErrNotFound)
	}
}

func TestSetOnlinePINRefused(t *testing.T) {
	const secretPIN = "97531" // a valid PIN sent with every refused body that has one
	tests := []struct {
		name, card, body string
		status           int
		slug             string
	}{
		{"too short", cardA, `{"pin":"123"}`, 422, "invalid-request"},
		{"too long", cardA, `{"pin":"1234567890123"}`, 422, "invalid-request"},
		{"letters", cardA, `{"pin":"12a4"}`, 422, "invalid-request"},
		{"spaces", cardA, `{"pin":" 1234"}`, 422, "invalid-request"},
		{"other digits", cardA, `{"pin":"١٢٣٤"}`, 422, "invalid-request"},
		{"empty", cardA, `{"pin":""}`, 422, "invalid-request"},
		{"missing", cardA, `{}`, 422, "invalid-request"},
		{"no tries", cardA, `{"pin":"` + secretPIN + `","max_tries":0}`, 422, "invalid-request"},
		{"negative tries", cardA, `{"pin":"` + secretPIN + `","max_tries":-1}`, 422, "invalid-request"},
		{"too many tries", cardA, `{"pin":"` + secretPIN + `","max_tries":11}`, 422, "invalid-request"},
		{"number", cardA, `{"pin":97531}`, 400, "bad-request"},
		{"fractional tries", cardA, `{"pin":"` + secretPIN + `","max_tries":2.5}`, 400, "bad-request"},
		{"unknown field", cardA, `{"pin":"` + secretPIN + `","puk":"12345678"}`, 400, "bad-request"},
		{"not an object", cardA, `"` + secretPIN + `"`, 400, "bad-request"},
		{"unknown card", "4000000000000002", `{"pin":"` + secretPIN + `"}`, 404, "not-found"},
		{"not a card number", "4111111111111112", `{"pin":"` + secretPIN + `"}`, 404, "not-found"},
		{"short number", "1234", `{"pin":"` + secretPIN + `"}`, 404, "not-found"},
		{"revoked card", cardRevoked, `{"pin":"` + secretPIN + `"}`, 422, "card-revoked"},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "PUT", "/v1/cards/"+tt.card+"/online-pin", operatorKey, tt.body)
			p := wantProblem(t, "PUT online-pin ("+tt.name+")", r, tt.status, tt.slug)
			if strings.Contains(string(r.body), secretPIN) || strings.Contains(p.Detail, "97531") {
				t.Errorf("problem %s echoes the PIN", r.body)
			}
		})
	}
	for _, n := range []string{cardA, cardRevoked} {
		if _, err := e.store.PIN(context.Background(), n); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("PIN(%s) after refusals = %v, want %v", n, err, store.ErrNotFound)
		}
	}
}

// TestSetBiometric enrolls a template through the API; the auth
// package's matching accepts a sample near it and refuses one far off.
func TestSetBiometric(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tmpl := wallettest.Template()
	body := func(tmpl []byte, extra string) string {
		return `{"template":"` + base64.StdEncoding.EncodeToString(tmpl) + `"` + extra + `}`
	}
	r := e.do(t, "PUT", "/v1/cards/"+cardA+"/biometric", operatorKey, body(tmpl, ""))
	wantStatus(t, "PUT biometric", r, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("PUT biometric body = %q, want none", r.body)
	}
	b, err := e.store.Biometric(ctx, cardA)
	if err != nil || !bytes.Equal(b.Template, tmpl) || b.Threshold != auth.DefaultBiometricThreshold || b.Tries != auth.DefaultBiometricTries {
		t.Fatalf("Biometric(%s) = %+v, %v; want the template with the defaults", cardA, b, err)
	}
	if n, err := auth.VerifyBiometric(ctx, e.store, cardA, wallettest.Sample(tmpl, 200), e.clock.Now()); !errors.Is(err, auth.ErrBiometricMismatch) || n != 4 {
		t.Errorf("VerifyBiometric(far) = %d, %v; want 4, %v", n, err, auth.ErrBiometricMismatch)
	}
	if n, err := auth.VerifyBiometric(ctx, e.store, cardA, wallettest.Sample(tmpl, 64), e.clock.Now()); err != nil || n != 5 {
		t.Errorf("VerifyBiometric(near) = %d, %v; want 5, nil", n, err)
	}

	// Replaced, with a threshold and tries of its own.
	other := wallettest.Sample(tmpl, 512)
	wantStatus(t, "PUT biometric again", e.do(t, "PUT", "/v1/cards/"+cardA+"/biometric", operatorKey, body(other, `,"threshold":0,"max_tries":2`)), http.StatusNoContent)
	b, err = e.store.Biometric(ctx, cardA)
	if err != nil || !bytes.Equal(b.Template, other) || b.Threshold != 0 || b.Tries != 2 || b.MaxTries != 2 {
		t.Fatalf("Biometric(%s) after replacing = %+v, %v; want the new template, threshold 0, 2 tries", cardA, b, err)
	}
	if n, err := auth.VerifyBiometric(ctx, e.store, cardA, wallettest.Sample(other, 1), e.clock.Now()); !errors.Is(err, auth.ErrBiometricMismatch) || n != 1 {
		t.Errorf("VerifyBiometric(1 bit off, threshold 0) = %d, %v; want 1, %v", n, err, auth.ErrBiometricMismatch)
	}
}

func TestSetBiometricRefused(t *testing.T) {
	tmpl := base64.StdEncoding.EncodeToString(wallettest.Template())
	withTmpl := func(extra string) string { return `{"template":"` + tmpl + `"` + extra + `}` }
	tests := []struct {
		name, card, body string
		status           int
		slug             string
	}{
		{"short template", cardA, `{"template":"` + base64.StdEncoding.EncodeToString(make([]byte, 63)) + `"}`, 422, "invalid-request"},
		{"long template", cardA, `{"template":"` + base64.StdEncoding.EncodeToString(make([]byte, 65)) + `"}`, 422, "invalid-request"},
		{"no template", cardA, `{"threshold":10}`, 422, "invalid-request"},
		{"negative threshold", cardA, withTmpl(`,"threshold":-1`), 422, "invalid-request"},
		{"threshold too high", cardA, withTmpl(`,"threshold":129`), 422, "invalid-request"},
		{"no tries", cardA, withTmpl(`,"max_tries":0`), 422, "invalid-request"},
		{"too many tries", cardA, withTmpl(`,"max_tries":11`), 422, "invalid-request"},
		{"not base64", cardA, `{"template":"not base64!"}`, 400, "bad-request"},
		{"template as number", cardA, `{"template":12}`, 400, "bad-request"},
		{"unknown field", cardA, withTmpl(`,"finger":"left"`), 400, "bad-request"},
		{"unknown card", "4000000000000002", withTmpl(""), 404, "not-found"},
		{"not a card number", "4111111111111112", withTmpl(""), 404, "not-found"},
		{"revoked card", cardRevoked, withTmpl(""), 422, "card-revoked"},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "PUT", "/v1/cards/"+tt.card+"/biometric", operatorKey, tt.body)
			wantProblem(t, "PUT biometric ("+tt.name+")", r, tt.status, tt.slug)
			if strings.Contains(string(r.body), tmpl[:16]) {
				t.Errorf("problem %s echoes the template", r.body)
			}
		})
	}
	for _, n := range []string{cardA, cardRevoked} {
		if _, err := e.store.Biometric(context.Background(), n); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Biometric(%s) after refusals = %v, want %v", n, err, store.ErrNotFound)
		}
	}
}

// TestCardCredentialsNotLogged: the PIN and the template never reach the
// logs, even when the store fails.
func TestCardCredentialsNotLogged(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnv(t, envOpt{logger: slog.New(slog.NewTextHandler(logs, nil))})
	tmpl := wallettest.Template()
	const pin = "8642097531"
	e.do(t, "PUT", "/v1/cards/"+cardA+"/online-pin", operatorKey, `{"pin":"`+pin+`"}`)
	e.do(t, "PUT", "/v1/cards/"+cardA+"/biometric", operatorKey, `{"template":"`+base64.StdEncoding.EncodeToString(tmpl)+`"}`)
	e.store.Close() // now every call is an internal error, logged
	for _, path := range []string{"online-pin", "biometric"} {
		body := `{"pin":"` + pin + `"}`
		if path == "biometric" {
			body = `{"template":"` + base64.StdEncoding.EncodeToString(tmpl) + `"}`
		}
		r := e.do(t, "PUT", "/v1/cards/"+cardA+"/"+path, operatorKey, body)
		wantProblem(t, "PUT "+path+" on a closed store", r, http.StatusInternalServerError, "internal")
	}
	out := logs.String()
	if !strings.Contains(out, "api:") {
		t.Fatalf("logs = %q, want the internal errors", out)
	}
	for _, secret := range []string{pin, base64.StdEncoding.EncodeToString(tmpl)[:16], fmt.Sprintf("%x", tmpl[:8])} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain %q:\n%s", secret, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDeleteCardCredentials removes a card's online PIN and template: each
// only its own, once, and only with the operator key.
func TestDeleteCardCredentials(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	p := e.createParty(t, "shop", "", "")
	tmpl := base64.StdEncoding.EncodeToString(wallettest.Template())
	for _, n := range []string{cardA, cardB} {
		wantStatus(t, "PUT online-pin", e.do(t, "PUT", "/v1/cards/"+n+"/online-pin", operatorKey, `{"pin":"2468"}`), http.StatusNoContent)
		wantStatus(t, "PUT biometric", e.do(t, "PUT", "/v1/cards/"+n+"/biometric", operatorKey, `{"template":"`+tmpl+`"}`), http.StatusNoContent)
	}
	// A revoked card's credentials may still be removed.
	if err := e.store.SetPIN(ctx, store.PIN{Card: cardRevoked, Hash: []byte{1}, Salt: []byte{2}, Params: "p", MaxTries: 3}); err != nil {
		t.Fatalf("SetPIN(revoked card) = %v", err)
	}
	has := func(card string) (pin, bio bool) {
		_, perr := e.store.PIN(ctx, card)
		_, berr := e.store.Biometric(ctx, card)
		return perr == nil, berr == nil
	}
	steps := []struct {
		name, path, key string
		status          int
		pinA, bioA      bool // what card A has after the step
	}{
		{"party key", "/v1/cards/" + cardA + "/online-pin", p.key, 401, true, true},
		{"party key", "/v1/cards/" + cardA + "/biometric", p.key, 401, true, true},
		{"no key", "/v1/cards/" + cardA + "/online-pin", "", 401, true, true},
		{"online PIN", "/v1/cards/" + cardA + "/online-pin", operatorKey, 204, false, true},
		{"online PIN again", "/v1/cards/" + cardA + "/online-pin", operatorKey, 404, false, true},
		{"biometric", "/v1/cards/" + cardA + "/biometric", operatorKey, 204, false, false},
		{"biometric again", "/v1/cards/" + cardA + "/biometric", operatorKey, 404, false, false},
		{"unknown card", "/v1/cards/4000000000000002/online-pin", operatorKey, 404, false, false},
		{"not a card number", "/v1/cards/4111111111111112/biometric", operatorKey, 404, false, false},
		{"revoked card's PIN", "/v1/cards/" + cardRevoked + "/online-pin", operatorKey, 204, false, false},
	}
	for i, s := range steps {
		r := e.do(t, "DELETE", s.path, s.key, "")
		if s.status == http.StatusNoContent {
			wantStatus(t, s.name, r, s.status)
		} else {
			wantProblem(t, fmt.Sprintf("step %d: DELETE %s", i, s.name), r, s.status, map[int]string{401: "unauthorized", 404: "not-found"}[s.status])
		}
		if pin, bio := has(cardA); pin != s.pinA || bio != s.bioA {
			t.Fatalf("step %d (%s): card A has PIN %v, biometric %v; want %v, %v", i, s.name, pin, bio, s.pinA, s.bioA)
		}
	}
	if pin, bio := has(cardB); !pin || !bio {
		t.Errorf("card B has PIN %v, biometric %v after deleting A's; want both", pin, bio)
	}
	if pin, _ := has(cardRevoked); pin {
		t.Errorf("revoked card still has its PIN after DELETE")
	}
	if _, err := auth.VerifyOnlinePIN(ctx, e.store, cardA, "2468", e.clock.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("VerifyOnlinePIN(deleted) = %v, want %v", err, store.ErrNotFound)
	}
}
