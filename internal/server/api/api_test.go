package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

const (
	operatorKey = "op-secret-key"
	cardA       = "4111111111111111"
	cardB       = "5555555555554444"
	cardRevoked = "4012888888881881"
)

// env is an API over a real SQLite store, served on loopback.
type env struct {
	store    store.Store
	clock    *servertest.Clock
	srv      *httptest.Server
	h        *handler
	mu       sync.Mutex
	notified []store.AuthRequest

	// With envOpt.money: the ledger and purchase service the API uses,
	// and the purchases the service notified.
	ledger    *ledger.Ledger
	purchases *purchase.Service
	pnotified []store.Purchase
}

type envOpt struct {
	noServerKey bool
	logger      *slog.Logger // nil: discard
	money       bool         // serve refunds, deposits and the ledger
}

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	var opt envOpt
	if len(opts) > 0 {
		opt = opts[0]
	}
	ctx := context.Background()
	st := servertest.SQLite(t)
	e := &env{store: st, clock: servertest.NewClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))}
	now := e.clock.Now()
	if !opt.noServerKey {
		k := store.ServerKey{Public: bytes.Repeat([]byte{7}, 32), Private: bytes.Repeat([]byte{8}, 32)}
		if err := st.AddServerKey(ctx, k, now); err != nil {
			t.Fatalf("AddServerKey: %v", err)
		}
	}
	for _, n := range []string{cardA, cardB, cardRevoked} {
		if err := st.PutCard(ctx, store.Card{Number: n, Cert: []byte("cert " + n), IssuerKeyID: []byte{1}}, now); err != nil {
			t.Fatalf("PutCard(%s): %v", n, err)
		}
	}
	if err := st.RevokeCard(ctx, cardRevoked, now); err != nil {
		t.Fatalf("RevokeCard: %v", err)
	}
	sum := sha256.Sum256([]byte(operatorKey))
	var pcfg Config
	if opt.money {
		e.newMoney(t)
		pcfg.Purchases, pcfg.Ledger = e.purchases, e.ledger
	}
	e.h = newHandler(Config{
		Purchases:       pcfg.Purchases,
		Ledger:          pcfg.Ledger,
		Store:           st,
		OperatorKeyHash: sum[:],
		Now:             e.clock.Now,
		Logger:          opt.logger,
		Notify: func(_ context.Context, r store.AuthRequest) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.notified = append(e.notified, r)
		},
	})
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	return e
}

// response is what a call returned.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do calls the API with an optional bearer key and JSON body; extra
// holds header name/value pairs.
func (e *env) do(t testing.TB, method, path, key, body string, extra ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Add(extra[i], extra[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// wantStatus fails unless r has status.
func wantStatus(t testing.TB, what string, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status = %d, want %d (body %s)", what, r.status, status, r.body)
	}
}

// wantProblem fails unless r is a problem+json of this status and slug.
func wantProblem(t *testing.T, what string, r response, status int, slug string) Problem {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status = %d, want %d (body %s)", what, r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s: Content-Type = %q, want application/problem+json", what, ct)
	}
	var p Problem
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: decoding problem %s: %v", what, r.body, err)
	}
	if want := ProblemBase + slug; p.Type != want {
		t.Errorf("%s: problem type = %q, want %q", what, p.Type, want)
	}
	if p.Status != r.status || p.Title == "" {
		t.Errorf("%s: problem = %+v, want status %d and a title", what, p, r.status)
	}
	return p
}

func decodeBody[T any](t testing.TB, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
	return v
}

// testParty is a relying party created through the API.
type testParty struct {
	id, key string
	secret  []byte
}

func (e *env) createParty(t testing.TB, name, webhook, policy string) testParty {
	t.Helper()
	body, _ := json.Marshal(createRelyingPartyRequest{Name: name, WebhookURL: webhook, Policy: policy})
	r := e.do(t, "POST", "/v1/relying-parties", operatorKey, string(body))
	wantStatus(t, "POST /v1/relying-parties", r, http.StatusCreated)
	got := decodeBody[createRelyingPartyResponse](t, r)
	secret, err := base64.StdEncoding.DecodeString(got.WebhookSecret)
	if err != nil || len(secret) != 32 {
		t.Fatalf("webhook_secret %q: %d bytes, err %v; want 32 bytes of base64", got.WebhookSecret, len(secret), err)
	}
	return testParty{got.ID, got.APIKey, secret}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/healthz", "", "")
	wantStatus(t, "GET /healthz", r, http.StatusOK)
	if got := decodeBody[map[string]string](t, r); got["status"] != "ok" {
		t.Errorf("GET /healthz = %s, want status ok", r.body)
	}
	e.store.Close()
	r = e.do(t, "GET", "/healthz", "", "")
	wantProblem(t, "GET /healthz on a closed store", r, http.StatusServiceUnavailable, "not-ready")
}

// TestOpenAPIRoutes checks that the document lists every route the
// handler serves, with the right security, and nothing else.
func TestOpenAPIRoutes(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/openapi.json", "", "")
	wantStatus(t, "GET /openapi.json", r, http.StatusOK)
	if !bytes.Equal(r.body, openAPIDoc) {
		t.Errorf("GET /openapi.json is not the embedded document")
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			OperationID string                 `json:"operationId"`
			Security    *[]map[string][]string `json:"security"`
			Responses   map[string]any         `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("decoding OpenAPI document: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	documented := map[string]string{} // "METHOD path" → security scheme ("" for none)
	ops := map[string]bool{}
	for path, methods := range doc.Paths {
		for method, op := range methods {
			key := strings.ToUpper(method) + " " + path
			if op.Security == nil {
				t.Errorf("%s: no security in the document", key)
				continue
			}
			if op.OperationID == "" || ops[op.OperationID] {
				t.Errorf("%s: operationId %q missing or repeated", key, op.OperationID)
			}
			ops[op.OperationID] = true
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses in the document", key)
			}
			scheme := ""
			for _, req := range *op.Security {
				for name := range req {
					scheme = name
				}
			}
			documented[key] = scheme
		}
	}
	served := map[string]string{}
	for _, rt := range e.h.routes {
		served[rt.method+" "+rt.path] = map[access]string{public: "", operator: "operatorKey", party: "partyKey", merchant: "merchantKey"}[rt.access]
	}
	for _, k := range slices.Sorted(maps.Keys(served)) {
		scheme, ok := documented[k]
		switch {
		case !ok:
			t.Errorf("route %s is not in the OpenAPI document", k)
		case scheme != served[k]:
			t.Errorf("OpenAPI security of %s = %q, want %q", k, scheme, served[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if _, ok := served[k]; !ok {
			t.Errorf("OpenAPI document lists %s, which is not served", k)
		}
	}
}

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path string
		status             int
		slug               string
	}{
		{"unknown path", "GET", "/v2/nothing", http.StatusNotFound, "not-found"},
		{"root", "GET", "/", http.StatusNotFound, "not-found"},
		{"wrong method", "DELETE", "/healthz", http.StatusMethodNotAllowed, "method-not-allowed"},
		{"GET on a POST route", "GET", "/v1/devices", http.StatusMethodNotAllowed, "method-not-allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path, operatorKey, "")
			wantProblem(t, tt.method+" "+tt.path, r, tt.status, tt.slug)
			if tt.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Errorf("%s %s: no Allow header", tt.method, tt.path)
			}
		})
	}
}

func TestUnauthorized(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "shop", "", "")
	protected := []struct {
		method, path, body string
		operator           bool
	}{
		{"POST", "/v1/relying-parties", `{"name":"x"}`, true},
		{"POST", "/v1/devices", `{"name":"x","static_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, true},
		{"POST", "/v1/devices/dev_1/revoke", "", true},
		{"POST", "/v1/cards/" + cardA + "/revoke", "", true},
		{"PUT", "/v1/cards/" + cardA + "/online-pin", `{"pin":"246810"}`, true},
		{"PUT", "/v1/cards/" + cardA + "/biometric", `{"template":"` + base64.StdEncoding.EncodeToString(make([]byte, 64)) + `"}`, true},
		{"DELETE", "/v1/cards/" + cardA + "/online-pin", "", true},
		{"DELETE", "/v1/cards/" + cardA + "/biometric", "", true},
		{"POST", "/v1/auth-requests", `{"card":"` + cardA + `"}`, false},
		{"GET", "/v1/auth-requests/ar_1", "", false},
	}
	for _, rt := range protected {
		wrongKind := operatorKey // the other kind of valid key
		if rt.operator {
			wrongKind = p.key
		}
		keys := []struct{ name, header string }{
			{"no header", ""},
			{"empty bearer", "Bearer "},
			{"basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("op:"+operatorKey))},
			{"wrong key", "Bearer not-a-key"},
			{"other kind of key", "Bearer " + wrongKind},
		}
		for _, k := range keys {
			t.Run(rt.method+" "+rt.path+"/"+k.name, func(t *testing.T) {
				var extra []string
				if k.header != "" {
					extra = []string{"Authorization", k.header}
				}
				r := e.do(t, rt.method, rt.path, "", rt.body, extra...)
				wantProblem(t, rt.method+" "+rt.path, r, http.StatusUnauthorized, "unauthorized")
				if r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s: no WWW-Authenticate header", rt.method, rt.path)
				}
			})
		}
	}
	// Nothing was created or revoked by the refused calls.
	if c, err := e.store.Card(context.Background(), cardA); err != nil || c.Revoked() {
		t.Errorf("card %s after refused revocations: revoked %v, err %v; want not revoked", cardA, c.Revoked(), err)
	}
	if _, err := e.store.PIN(context.Background(), cardA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PIN(%s) after refused calls = %v, want %v", cardA, err, store.ErrNotFound)
	}
	if _, err := e.store.Biometric(context.Background(), cardA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Biometric(%s) after refused calls = %v, want %v", cardA, err, store.ErrNotFound)
	}
}

func TestOperatorDisabledWithoutKeyHash(t *testing.T) {
	e := newEnv(t)
	h := New(Config{Store: e.store})
	for _, key := range []string{"", "Bearer ", "Bearer " + operatorKey} {
		req := httptest.NewRequest("POST", "/v1/relying-parties", strings.NewReader(`{"name":"x"}`))
		if key != "" {
			req.Header.Set("Authorization", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("POST /v1/relying-parties with %q and no operator key configured = %d, want 401", key, w.Code)
		}
	}
}

func TestCreateRelyingParty(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "POST", "/v1/relying-parties", operatorKey, `{"name":"Shop","webhook_url":"https://shop.example/hook","policy":"online-pin, offline-pin"}`)
	wantStatus(t, "create party", r, http.StatusCreated)
	got := decodeBody[createRelyingPartyResponse](t, r)
	if !strings.HasPrefix(got.ID, "rp_") || !strings.HasPrefix(got.APIKey, apiKeyPrefix) || got.Policy != "offline-pin,online-pin" {
		t.Errorf("create party = %+v, want rp_ id, %s key, canonical policy", got, apiKeyPrefix)
	}
	rp, err := e.store.RelyingParty(context.Background(), got.ID)
	if err != nil {
		t.Fatalf("RelyingParty(%s): %v", got.ID, err)
	}
	sum := sha256.Sum256([]byte(got.APIKey))
	secret, _ := base64.StdEncoding.DecodeString(got.WebhookSecret)
	if !bytes.Equal(rp.KeyHash, sum[:]) || !bytes.Equal(rp.WebhookSecret, secret) || rp.Name != "Shop" ||
		rp.WebhookURL != "https://shop.example/hook" || rp.Policy != "offline-pin,online-pin" {
		t.Errorf("stored party = %+v, want what the API returned, key hashed", rp)
	}
	if bytes.Contains(r.body, rp.KeyHash) {
		t.Errorf("response leaks the key hash")
	}
	// The key works.
	r = e.do(t, "GET", "/v1/auth-requests/ar_none", got.APIKey, "")
	wantProblem(t, "GET with the new key", r, http.StatusNotFound, "not-found")
	// Two parties get different keys.
	if other := e.createParty(t, "Shop", "", ""); other.key == got.APIKey || other.id == got.ID {
		t.Errorf("second party has the same key or id as the first")
	}
}

func TestCreateRelyingPartyInvalid(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, body, ctype string
		status            int
		slug              string
	}{
		{"empty body", "", "", 400, "bad-request"},
		{"not JSON", "name=x", "", 400, "bad-request"},
		{"array", `["x"]`, "", 400, "bad-request"},
		{"truncated", `{"name":"x"`, "", 400, "bad-request"},
		{"trailing data", `{"name":"x"} {}`, "", 400, "bad-request"},
		{"unknown field", `{"name":"x","admin":true}`, "", 400, "bad-request"},
		{"wrong type", `{"name":5}`, "", 400, "bad-request"},
		{"form content type", `{"name":"x"}`, "application/x-www-form-urlencoded", 415, "unsupported-media-type"},
		{"too large", `{"name":"` + strings.Repeat("x", maxBody) + `"}`, "", 413, "too-large"},
		{"no name", `{}`, "", 422, "invalid-request"},
		{"long name", `{"name":"` + strings.Repeat("x", maxName+1) + `"}`, "", 422, "invalid-request"},
		{"control in name", `{"name":"a\u0007b"}`, "", 422, "invalid-request"},
		{"webhook not a URL", `{"name":"x","webhook_url":"::"}`, "", 422, "invalid-request"},
		{"webhook relative", `{"name":"x","webhook_url":"/hook"}`, "", 422, "invalid-request"},
		{"webhook ftp", `{"name":"x","webhook_url":"ftp://h/x"}`, "", 422, "invalid-request"},
		{"webhook user info", `{"name":"x","webhook_url":"https://u:p@h/x"}`, "", 422, "invalid-request"},
		{"unknown policy", `{"name":"x","policy":"retina"}`, "", 422, "invalid-request"},
		{"empty policy item", `{"name":"x","policy":"offline-pin,"}`, "", 422, "invalid-request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var extra []string
			if tt.ctype != "" {
				extra = []string{"Content-Type", tt.ctype}
			}
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/relying-parties", strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+operatorKey)
			if len(extra) > 0 {
				req.Header.Set(extra[0], extra[1])
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			p := wantProblem(t, "POST "+tt.name, response{resp.StatusCode, resp.Header, b}, tt.status, tt.slug)
			if strings.Contains(p.Detail, "json:") || strings.Contains(p.Detail, "store") {
				t.Errorf("problem detail %q leaks an internal error", p.Detail)
			}
		})
	}
}

func TestCreateDevice(t *testing.T) {
	e := newEnv(t)
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, 32))
	r := e.do(t, "POST", "/v1/devices", operatorKey, `{"name":"kitchen","static_key":"`+key+`"}`)
	wantStatus(t, "create device", r, http.StatusCreated)
	got := decodeBody[deviceResponse](t, r)
	if !strings.HasPrefix(got.ID, "dev_") || len(got.ServerKeys) != 1 || !bytes.Equal(got.ServerKeys[0], bytes.Repeat([]byte{7}, 32)) {
		t.Errorf("create device = %+v, want dev_ id and the one server key", got)
	}
	if bytes.Contains(r.body, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{8}, 32)))) {
		t.Errorf("create device leaks the server's private key")
	}
	d, err := e.store.DeviceByKey(context.Background(), bytes.Repeat([]byte{0x42}, 32))
	if err != nil || d.ID != got.ID || d.Name != "kitchen" {
		t.Errorf("DeviceByKey = %+v, %v; want %s named kitchen", d, err, got.ID)
	}

	tests := []struct {
		name, body string
		status     int
		slug       string
	}{
		{"same key again", `{"name":"again","static_key":"` + key + `"}`, 409, "conflict"},
		{"short key", `{"name":"x","static_key":"` + base64.StdEncoding.EncodeToString(make([]byte, 31)) + `"}`, 422, "invalid-request"},
		{"no key", `{"name":"x"}`, 422, "invalid-request"},
		{"key not base64", `{"name":"x","static_key":"!!"}`, 400, "bad-request"},
		{"no name", `{"static_key":"` + key + `"}`, 422, "invalid-request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, tt.name, e.do(t, "POST", "/v1/devices", operatorKey, tt.body), tt.status, tt.slug)
		})
	}

	t.Run("no server key", func(t *testing.T) {
		e := newEnv(t, envOpt{noServerKey: true})
		r := e.do(t, "POST", "/v1/devices", operatorKey, `{"name":"x","static_key":"`+key+`"}`)
		wantProblem(t, "create device without server key", r, 503, "not-ready")
		if _, err := e.store.DeviceByKey(context.Background(), bytes.Repeat([]byte{0x42}, 32)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeviceByKey after refusal: err = %v, want ErrNotFound", err)
		}
	})
}

func TestRevokeDevice(t *testing.T) {
	e := newEnv(t)
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x43}, 32))
	dev := decodeBody[deviceResponse](t, e.do(t, "POST", "/v1/devices", operatorKey, `{"name":"d","static_key":"`+key+`"}`))
	e.clock.Add(time.Hour)
	r := e.do(t, "POST", "/v1/devices/"+dev.ID+"/revoke", operatorKey, "")
	wantStatus(t, "revoke device", r, http.StatusOK)
	got := decodeBody[deviceResponse](t, r)
	if want := formatTime(e.clock.Now()); got.ID != dev.ID || got.RevokedAt != want {
		t.Errorf("revoke device = %+v, want id %s revoked at %s", got, dev.ID, want)
	}
	d, err := e.store.Device(context.Background(), dev.ID)
	if err != nil || !d.Revoked() {
		t.Errorf("Device(%s) after revoke: revoked %v, err %v; want revoked", dev.ID, d.Revoked(), err)
	}
	// Again: still revoked at the first time.
	e.clock.Add(time.Hour)
	again := decodeBody[deviceResponse](t, e.do(t, "POST", "/v1/devices/"+dev.ID+"/revoke", operatorKey, ""))
	if again.RevokedAt != got.RevokedAt {
		t.Errorf("second revoke: revoked_at = %s, want %s", again.RevokedAt, got.RevokedAt)
	}
	wantProblem(t, "revoke unknown device", e.do(t, "POST", "/v1/devices/dev_nope/revoke", operatorKey, ""), 404, "not-found")
}

func TestRevokeCard(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "POST", "/v1/cards/"+cardA+"/revoke", operatorKey, "")
	wantStatus(t, "revoke card", r, http.StatusOK)
	got := decodeBody[cardResponse](t, r)
	if got.Number != cardA || got.RevokedAt == "" {
		t.Errorf("revoke card = %+v, want %s revoked", got, cardA)
	}
	if c, err := e.store.Card(context.Background(), cardA); err != nil || !c.Revoked() {
		t.Errorf("Card(%s) after revoke: revoked %v, err %v; want revoked", cardA, c.Revoked(), err)
	}
	for _, n := range []string{"4000000000000002", "123", "411111111111111x"} {
		wantProblem(t, "revoke card "+n, e.do(t, "POST", "/v1/cards/"+n+"/revoke", operatorKey, ""), 404, "not-found")
	}
}
