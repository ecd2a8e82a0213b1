package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"cardlink/internal/store"
)

// testMerchant is a merchant created through the API.
type testMerchant struct {
	id, key, account string
}

func (e *env) createMerchant(t testing.TB, name, currency string) testMerchant {
	t.Helper()
	body, _ := json.Marshal(createMerchantRequest{Name: name, Currency: currency})
	r := e.do(t, "POST", "/v1/merchants", operatorKey, string(body))
	wantStatus(t, "POST /v1/merchants", r, http.StatusCreated)
	got := decodeBody[createMerchantResponse](t, r)
	if secret, err := base64.StdEncoding.DecodeString(got.WebhookSecret); err != nil || len(secret) != 32 {
		t.Fatalf("webhook_secret %q: %d bytes, err %v; want 32 bytes of base64", got.WebhookSecret, len(secret), err)
	}
	if !strings.HasPrefix(got.APIKey, apiKeyPrefix) || !strings.HasPrefix(got.ID, "mer_") {
		t.Fatalf("POST /v1/merchants = %+v; want an id mer_… and a key %s…", got, apiKeyPrefix)
	}
	return testMerchant{got.ID, got.APIKey, got.Account}
}

func (e *env) createItem(t testing.TB, m testMerchant, body string) itemView {
	t.Helper()
	r := e.do(t, "POST", "/v1/items", m.key, body)
	wantStatus(t, "POST /v1/items", r, http.StatusCreated)
	return decodeBody[itemView](t, r)
}

func TestReferenceCheckDigit(t *testing.T) {
	const code = "48302716"
	ref := code[:7] + string(verhoeffDigit(code[:7]))
	if !ValidReference(ref) {
		t.Fatalf("ValidReference(%s) = false, want true", ref)
	}
	for i := range ref {
		for d := byte('0'); d <= '9'; d++ {
			if d == ref[i] {
				continue
			}
			bad := []byte(ref)
			bad[i] = d
			if ValidReference(string(bad)) {
				t.Errorf("ValidReference(%s) = true (digit %d changed), want false", bad, i)
			}
		}
	}
	for i := 0; i+1 < len(ref); i++ {
		if ref[i] == ref[i+1] {
			continue
		}
		bad := []byte(ref)
		bad[i], bad[i+1] = bad[i+1], bad[i]
		if ValidReference(string(bad)) {
			t.Errorf("ValidReference(%s) = true (digits %d,%d swapped), want false", bad, i, i+1)
		}
	}
	// Known Verhoeff vector: 236 → check digit 3.
	if got := verhoeffDigit("236"); got != '3' {
		t.Errorf("verhoeffDigit(236) = %c, want 3", got)
	}
	for _, s := range []string{"", "1234567", "123456789", "1234567a"} {
		if ValidReference(s) {
			t.Errorf("ValidReference(%q) = true, want false", s)
		}
	}
}

func TestCreateMerchantAccount(t *testing.T) {
	e := newEnv(t)
	m := e.createMerchant(t, "Shop", "EUR")
	a, err := e.store.(store.Ledger).Account(context.Background(), m.account)
	if err != nil || a.Kind != store.KindMerchant || a.Currency != "EUR" {
		t.Errorf("Account(%q) = %+v, %v; want a EUR merchant account", m.account, a, err)
	}
	if m2 := e.createMerchant(t, "No account", ""); m2.account != "" {
		t.Errorf("merchant without currency has account %q, want none", m2.account)
	}
	r := e.do(t, "POST", "/v1/merchants", operatorKey, `{"name":"x","currency":"XXQ"}`)
	wantProblem(t, "POST /v1/merchants bad currency", r, http.StatusUnprocessableEntity, "invalid-request")
}

func TestMerchantUnauthorized(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "party", "", "")
	for _, rt := range []struct{ method, path, body string }{
		{"POST", "/v1/items", `{"name":"x","price":1,"currency":"EUR"}`},
		{"GET", "/v1/items", ""},
		{"POST", "/v1/purchases", `{"amount":1,"currency":"EUR","description":"x"}`},
		{"GET", "/v1/purchases/pur_1", ""},
	} {
		for _, key := range []string{"", "not-a-key", operatorKey, p.key} {
			r := e.do(t, rt.method, rt.path, key, rt.body)
			wantProblem(t, rt.method+" "+rt.path+" key "+key, r, http.StatusUnauthorized, "unauthorized")
		}
	}
}

func TestItems(t *testing.T) {
	e := newEnv(t)
	a, b := e.createMerchant(t, "A", ""), e.createMerchant(t, "B", "")
	coffee := e.createItem(t, a, `{"name":"Coffee","price":250,"currency":"EUR"}`)
	e.clock.Add(time.Second) // the list is oldest first
	ticket := e.createItem(t, a, `{"name":"Ticket","price":1200,"currency":"EUR","stock":3,"delivery":"ticket","payload":"row 5 seat 2"}`)
	e.clock.Add(time.Second)
	e.createItem(t, a, `{"name":"Manual","price":100,"currency":"EUR","delivery":"file","payload":"`+base64.StdEncoding.EncodeToString([]byte("%PDF"))+`"}`)
	if coffee.Delivery != "none" || coffee.Stock != nil || ticket.Stock == nil || *ticket.Stock != 3 {
		t.Errorf("created items = %+v, %+v; want none/unlimited and ticket/3", coffee, ticket)
	}
	r := e.do(t, "GET", "/v1/items", a.key, "")
	wantStatus(t, "GET /v1/items", r, http.StatusOK)
	list := decodeBody[map[string][]itemView](t, r)["items"]
	if len(list) != 3 || list[0].ID != coffee.ID || list[1].ID != ticket.ID {
		t.Errorf("GET /v1/items (A) = %+v, want coffee, ticket, manual", list)
	}
	r = e.do(t, "GET", "/v1/items", b.key, "")
	if got := decodeBody[map[string][]itemView](t, r)["items"]; len(got) != 0 {
		t.Errorf("GET /v1/items (B) = %+v, want none", got)
	}
	invalid := []struct{ name, body string }{
		{"no name", `{"price":1,"currency":"EUR"}`},
		{"zero price", `{"name":"x","price":0,"currency":"EUR"}`},
		{"negative price", `{"name":"x","price":-5,"currency":"EUR"}`},
		{"huge price", `{"name":"x","price":1000000000001,"currency":"EUR"}`},
		{"unknown currency", `{"name":"x","price":1,"currency":"eur"}`},
		{"negative stock", `{"name":"x","price":1,"currency":"EUR","stock":-1}`},
		{"unknown delivery", `{"name":"x","price":1,"currency":"EUR","delivery":"pigeon"}`},
		{"voucher without payload", `{"name":"x","price":1,"currency":"EUR","delivery":"voucher"}`},
		{"payload without delivery", `{"name":"x","price":1,"currency":"EUR","payload":"v"}`},
		{"file not base64", `{"name":"x","price":1,"currency":"EUR","delivery":"file","payload":"%%%"}`},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/items", a.key, tt.body)
			wantProblem(t, "POST /v1/items", r, http.StatusUnprocessableEntity, "invalid-request")
		})
	}
}

func TestCreatePurchase(t *testing.T) {
	e := newEnv(t)
	a, b := e.createMerchant(t, "A", ""), e.createMerchant(t, "B", "")
	ticket := e.createItem(t, a, `{"name":"Ticket","price":1200,"currency":"EUR","stock":1,"delivery":"ticket","payload":"T"}`)
	gone := e.createItem(t, a, `{"name":"Gone","price":5,"currency":"EUR","stock":0,"delivery":"voucher","payload":"V"}`)

	r := e.do(t, "POST", "/v1/purchases", a.key, `{"item_id":"`+ticket.ID+`","callback_url":"https://a.example/cb"}`, "Idempotency-Key", "order-1")
	wantStatus(t, "POST /v1/purchases (item)", r, http.StatusCreated)
	p := decodeBody[purchaseView](t, r)
	if p.Status != "pending" || p.Amount != 1200 || p.Currency != "EUR" || p.Description != "Ticket" ||
		!ValidReference(p.Reference) || p.Expires != formatTime(e.clock.Now().Add(purchaseTTL)) {
		t.Errorf("POST /v1/purchases = %+v; want pending EUR 1200 \"Ticket\" with a valid reference", p)
	}
	if loc := r.header.Get("Location"); loc != "/v1/purchases/"+p.ID {
		t.Errorf("Location = %q, want /v1/purchases/%s", loc, p.ID)
	}

	// Idempotency: the same key and body give the same request.
	r = e.do(t, "POST", "/v1/purchases", a.key, `{"item_id":"`+ticket.ID+`","callback_url":"https://a.example/cb"}`, "Idempotency-Key", "order-1")
	wantStatus(t, "POST /v1/purchases (replay)", r, http.StatusCreated)
	if again := decodeBody[purchaseView](t, r); again != p || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay = %+v (replayed %q), want %+v (true)", again, r.header.Get("Idempotent-Replayed"), p)
	}
	r = e.do(t, "POST", "/v1/purchases", a.key, `{"item_id":"`+ticket.ID+`"}`, "Idempotency-Key", "order-1")
	wantProblem(t, "same key, other body", r, http.StatusUnprocessableEntity, "idempotency-key-reused")
	// Another merchant's key space is its own.
	r = e.do(t, "POST", "/v1/purchases", b.key, `{"amount":5,"currency":"EUR","description":"tip"}`, "Idempotency-Key", "order-1")
	wantStatus(t, "B with A's key", r, http.StatusCreated)
	bp := decodeBody[purchaseView](t, r)

	r = e.do(t, "POST", "/v1/purchases", a.key, `{"item_id":"`+gone.ID+`"}`)
	wantProblem(t, "stock 0", r, http.StatusConflict, "sold-out")

	r = e.do(t, "GET", "/v1/purchases/"+p.ID, a.key, "")
	wantStatus(t, "GET own purchase", r, http.StatusOK)
	if got := decodeBody[purchaseView](t, r); got != p {
		t.Errorf("GET /v1/purchases/%s = %+v, want %+v", p.ID, got, p)
	}
	for _, tt := range []struct{ name, key, id string }{
		{"A reads B's", a.key, bp.ID}, {"B reads A's", b.key, p.ID}, {"unknown", a.key, "pur_none"},
	} {
		r := e.do(t, "GET", "/v1/purchases/"+tt.id, tt.key, "")
		wantProblem(t, tt.name, r, http.StatusNotFound, "not-found")
	}

	invalid := []struct{ name, body, slug string }{
		{"both item and amount", `{"item_id":"` + ticket.ID + `","amount":5,"currency":"EUR"}`, "invalid-request"},
		{"other merchant's item", `{"item_id":"` + ticket.ID + `"}`, "invalid-request"}, // sent by B below
		{"no amount", `{"currency":"EUR","description":"x"}`, "invalid-request"},
		{"no description", `{"amount":5,"currency":"EUR"}`, "invalid-request"},
		{"bad currency", `{"amount":5,"currency":"EURO","description":"x"}`, "invalid-request"},
		{"bad callback", `{"amount":5,"currency":"EUR","description":"x","callback_url":"ftp://x"}`, "invalid-request"},
		{"control in description", `{"amount":5,"currency":"EUR","description":"a\u0007b"}`, "invalid-request"},
		{"unknown field", `{"amount":5,"currency":"EUR","description":"x","tip":1}`, "bad-request"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			key := a.key
			if tt.name == "other merchant's item" {
				key = b.key
			}
			r := e.do(t, "POST", "/v1/purchases", key, tt.body)
			wantProblem(t, "POST /v1/purchases", r, r.status, tt.slug)
			if r.status/100 != 4 {
				t.Errorf("POST /v1/purchases %s: status %d, want 4xx", tt.name, r.status)
			}
		})
	}
	r = e.do(t, "POST", "/v1/purchases", a.key, `{"amount":5,"currency":"EUR","description":"x"}`, "Idempotency-Key", strings.Repeat("k", maxIdempotencyKey+1))
	if r.status != http.StatusBadRequest {
		t.Errorf("bad Idempotency-Key: status %d, want 400", r.status)
	}
}

// TestReferenceRetry: with a random source that repeats, the second
// purchase's first reference collides with the pending first one, and the
// handler draws again.
func TestReferenceRetry(t *testing.T) {
	e := newEnv(t)
	m := e.createMerchant(t, "A", "")
	var refs []string
	for i := range 3 {
		r := e.do(t, "POST", "/v1/purchases", m.key, fmt.Sprintf(`{"amount":%d,"currency":"EUR","description":"x"}`, i+1))
		wantStatus(t, "POST /v1/purchases", r, http.StatusCreated)
		refs = append(refs, decodeBody[purchaseView](t, r).Reference)
	}
	if refs[0] == refs[1] || refs[1] == refs[2] || refs[0] == refs[2] {
		t.Errorf("references = %v, want distinct", refs)
	}
	e.h.rand = &repeatReader{}
	r := e.do(t, "POST", "/v1/purchases", m.key, `{"amount":1,"currency":"EUR","description":"x"}`)
	wantStatus(t, "first with a constant source", r, http.StatusCreated)
	r = e.do(t, "POST", "/v1/purchases", m.key, `{"amount":1,"currency":"EUR","description":"x"}`)
	wantProblem(t, "second with a constant source", r, http.StatusInternalServerError, "internal")
}

// repeatReader gives fresh 16-byte draws (identifiers) but always the
// same shorter draws (reference codes).
type repeatReader struct{ n byte }

func (r *repeatReader) Read(p []byte) (int, error) {
	clear(p)
	if len(p) == 16 {
		r.n++
		p[0] = r.n
	}
	return len(p), nil
}

func FuzzCreatePurchase(f *testing.F) {
	for _, s := range []string{
		`{"amount":5,"currency":"EUR","description":"tip"}`,
		`{"item_id":"item_x"}`,
		`{"amount":1000000000000,"currency":"JPY","description":"big","callback_url":"https://a.example/cb"}`,
		`{"amount":-1,"currency":"EUR","description":"x"}`,
		`{"amount":5,"currency":"EUR","description":"x"} {}`,
		`[]`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	m := e.createMerchant(f, "fuzz", "")
	f.Fuzz(func(t *testing.T, body string) {
		r := e.do(t, "POST", "/v1/purchases", m.key, body)
		switch r.status {
		case http.StatusCreated:
			p := decodeBody[purchaseView](t, r)
			if !ValidReference(p.Reference) || p.Amount <= 0 || p.Status != "pending" {
				t.Errorf("POST /v1/purchases %q = %+v; want pending, positive amount, valid reference", body, p)
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusConflict, http.StatusRequestEntityTooLarge:
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("POST /v1/purchases %q: Content-Type %q, want problem+json", body, ct)
			}
		default:
			t.Errorf("POST /v1/purchases %q: status %d, want 201 or a 4xx problem (body %s)", body, r.status, r.body)
		}
	})
}
