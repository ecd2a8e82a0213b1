package api

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

// newMoney gives e a ledger and a purchase service over its store.
func (e *env) newMoney(t testing.TB) {
	t.Helper()
	e.ledger = ledger.New(e.store.(store.Ledger), ledger.Options{Now: e.clock.Now})
	t.Cleanup(func() { e.ledger.Close() })
	as, err := auth.New(auth.Config{Store: e.store, CA: servertest.CA(t), Now: e.clock.Now})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	e.purchases, err = purchase.New(purchase.Config{Store: e.store, Ledger: e.ledger, Auth: as, Now: e.clock.Now,
		Notify: func(_ context.Context, p store.Purchase) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.pnotified = append(e.pnotified, p)
		}})
	if err != nil {
		t.Fatalf("purchase.New: %v", err)
	}
}

var keys atomic.Int64

// newKey returns an idempotency key not used before.
func newKey() string { return fmt.Sprintf("key-%d", keys.Add(1)) }

// deposit credits card through the API.
func (e *env) deposit(t testing.TB, card string, amount int64) depositResponse {
	t.Helper()
	r := e.do(t, "POST", "/v1/cards/"+card+"/deposits", operatorKey,
		fmt.Sprintf(`{"amount":%d,"currency":"EUR"}`, amount), "Idempotency-Key", newKey())
	wantStatus(t, "POST deposits", r, http.StatusCreated)
	return decodeBody[depositResponse](t, r)
}

// paidPurchase creates a purchase of amount pushed to card through the
// API, funds the card, and drives the purchase to approved through the
// real store and ledger, as the device flow does.
func (e *env) paidPurchase(t testing.TB, m testMerchant, card string, amount int64) purchaseView {
	t.Helper()
	ctx := context.Background()
	e.deposit(t, card, amount)
	r := e.do(t, "POST", "/v1/purchases", m.key,
		fmt.Sprintf(`{"amount":%d,"currency":"EUR","description":"Coffee","card":%q}`, amount, card))
	wantStatus(t, "POST /v1/purchases", r, http.StatusCreated)
	pv := decodeBody[purchaseView](t, r)
	ms := e.store.(store.Merchants)
	now := e.clock.Now()
	if _, err := ms.BindPurchase(ctx, pv.ID, card, []byte("offer"), now); err != nil {
		t.Fatalf("BindPurchase: %v", err)
	}
	p, err := ms.AuthorizePurchase(ctx, pv.ID, card, store.PurchaseApproval{Counter: 7, CVM: 2, Signature: []byte("sig"), Device: "dev_1"}, now)
	if err != nil {
		t.Fatalf("AuthorizePurchase: %v", err)
	}
	posted, err := e.ledger.Transfer(ctx, ledger.Transfer{Key: purchase.TransferKey(p.ID), Currency: p.Currency,
		Memo: "purchase " + p.ID + " " + p.Reference,
		Legs: []ledger.Leg{{Account: ledger.HolderAccount(card, p.Currency), Amount: -amount}, {Account: m.account, Amount: amount}}})
	if err != nil {
		t.Fatalf("posting payment: %v", err)
	}
	if _, err := ms.CompletePurchase(ctx, p.ID, posted.ID, "", now); err != nil {
		t.Fatalf("CompletePurchase: %v", err)
	}
	r = e.do(t, "GET", "/v1/purchases/"+pv.ID, m.key, "")
	wantStatus(t, "GET purchase", r, http.StatusOK)
	return decodeBody[purchaseView](t, r)
}

func TestDeposit(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	path := "/v1/cards/" + cardA + "/deposits"
	r := e.do(t, "POST", path, operatorKey, `{"amount":2500,"currency":"EUR"}`, "Idempotency-Key", "dep-1")
	wantStatus(t, "POST deposits", r, http.StatusCreated)
	d := decodeBody[depositResponse](t, r)
	if want := ledger.HolderAccount(cardA, "EUR"); d.Account != want || d.Balance != 2500 || d.Transfer == 0 || d.Currency != "EUR" {
		t.Errorf("POST deposits = %+v, want account %s with balance 2500 and a transfer", d, want)
	}
	if r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first deposit: Idempotent-Replayed = %q, want none", r.header.Get("Idempotent-Replayed"))
	}
	r = e.do(t, "POST", path, operatorKey, `{"amount":2500,"currency":"EUR"}`, "Idempotency-Key", "dep-1")
	wantStatus(t, "POST deposits replayed", r, http.StatusCreated)
	if again := decodeBody[depositResponse](t, r); again.Transfer != d.Transfer || again.Balance != 2500 || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed deposit = %+v (Idempotent-Replayed %q), want transfer %d, balance 2500, replayed",
			again, r.header.Get("Idempotent-Replayed"), d.Transfer)
	}

	tests := []struct {
		name, path, body string
		headers          []string
		status           int
		slug             string
	}{
		{"key reused", path, `{"amount":1,"currency":"EUR"}`, []string{"Idempotency-Key", "dep-1"}, 422, "idempotency-key-reused"},
		{"no key", path, `{"amount":1,"currency":"EUR"}`, nil, 400, "bad-request"},
		{"empty key", path, `{"amount":1,"currency":"EUR"}`, []string{"Idempotency-Key", ""}, 400, "bad-request"},
		{"unknown card", "/v1/cards/4000000000000002/deposits", `{"amount":1,"currency":"EUR"}`, []string{"Idempotency-Key", "d2"}, 404, "not-found"},
		{"bad card number", "/v1/cards/4111111111111112/deposits", `{"amount":1,"currency":"EUR"}`, []string{"Idempotency-Key", "d3"}, 404, "not-found"},
		{"revoked card", "/v1/cards/" + cardRevoked + "/deposits", `{"amount":1,"currency":"EUR"}`, []string{"Idempotency-Key", "d4"}, 422, "card-revoked"},
		{"zero", path, `{"amount":0,"currency":"EUR"}`, []string{"Idempotency-Key", "d5"}, 422, "invalid-request"},
		{"negative", path, `{"amount":-3,"currency":"EUR"}`, []string{"Idempotency-Key", "d6"}, 422, "invalid-request"},
		{"too much", path, `{"amount":1000000000001,"currency":"EUR"}`, []string{"Idempotency-Key", "d7"}, 422, "invalid-request"},
		{"unknown currency", path, `{"amount":1,"currency":"XYZ"}`, []string{"Idempotency-Key", "d8"}, 422, "invalid-request"},
		{"fraction", path, `{"amount":1.5,"currency":"EUR"}`, []string{"Idempotency-Key", "d9"}, 400, "bad-request"},
		{"unknown field", path, `{"amount":1,"currency":"EUR","to":"x"}`, []string{"Idempotency-Key", "d10"}, 400, "bad-request"},
	}
	for _, tt := range tests {
		r := e.do(t, "POST", tt.path, operatorKey, tt.body, tt.headers...)
		wantProblem(t, tt.name, r, tt.status, tt.slug)
	}
	r = e.do(t, "GET", "/v1/accounts/"+url.PathEscape(d.Account), operatorKey, "")
	wantStatus(t, "GET account", r, http.StatusOK)
	if a := decodeBody[accountView](t, r); a.Balance != 2500 {
		t.Errorf("balance after refused deposits = %d, want 2500", a.Balance)
	}
}

func TestMoneyNotConfigured(t *testing.T) {
	e := newEnv(t)
	m := e.createMerchant(t, "shop", "EUR")
	tests := []struct {
		method, path, key, body string
		headers                 []string
	}{
		{"POST", "/v1/cards/" + cardA + "/deposits", operatorKey, `{"amount":1,"currency":"EUR"}`, []string{"Idempotency-Key", "k"}},
		{"GET", "/v1/accounts/x", operatorKey, "", nil},
		{"GET", "/v1/accounts/x/statement", operatorKey, "", nil},
		{"GET", "/v1/balance", m.key, "", nil},
		{"GET", "/v1/statement", m.key, "", nil},
		{"POST", "/v1/purchases/pur_x/refunds", m.key, `{}`, nil},
	}
	for _, tt := range tests {
		r := e.do(t, tt.method, tt.path, tt.key, tt.body, tt.headers...)
		wantProblem(t, tt.method+" "+tt.path, r, http.StatusNotImplemented, "not-implemented")
	}
}

func TestAccountsAndStatements(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	m := e.createMerchant(t, "shop", "EUR")
	bare := e.createMerchant(t, "no account", "")
	start := e.clock.Now()
	e.clock.Add(time.Minute)
	p := e.paidPurchase(t, m, cardA, 1234)
	e.clock.Add(time.Minute)
	holder := ledger.HolderAccount(cardA, "EUR")

	r := e.do(t, "GET", "/v1/accounts/"+url.PathEscape(holder), operatorKey, "")
	wantStatus(t, "GET holder account", r, http.StatusOK)
	if a := decodeBody[accountView](t, r); a != (accountView{ID: holder, Kind: "holder", Currency: "EUR", Balance: 0, Limit: 0}) {
		t.Errorf("GET holder account = %+v, want holder in EUR with balance 0", a)
	}
	r = e.do(t, "GET", "/v1/accounts/"+url.PathEscape(ledger.FundingAccount("EUR")), operatorKey, "")
	if a := decodeBody[accountView](t, r); a.Kind != "funding" || a.Balance != -1234 || a.Limit >= -1e15 {
		t.Errorf("GET funding account = %+v, want funding, balance -1234, a very low limit", a)
	}
	r = e.do(t, "GET", "/v1/balance", m.key, "")
	wantStatus(t, "GET /v1/balance", r, http.StatusOK)
	if a := decodeBody[accountView](t, r); a.ID != m.account || a.Kind != "merchant" || a.Balance != 1234 {
		t.Errorf("GET /v1/balance = %+v, want %s, merchant, 1234", a, m.account)
	}

	q := "?from=" + url.QueryEscape(start.Format(time.RFC3339)) + "&to=" + url.QueryEscape(e.clock.Now().Format(time.RFC3339))
	r = e.do(t, "GET", "/v1/accounts/"+url.PathEscape(holder)+"/statement"+q, operatorKey, "")
	wantStatus(t, "GET holder statement", r, http.StatusOK)
	s := decodeBody[statementView](t, r)
	if s.Account != holder || s.Opening != 0 || s.Closing != 0 || len(s.Entries) != 2 {
		t.Fatalf("holder statement = %+v, want 2 entries from 0 to 0", s)
	}
	if s.Entries[0].Amount != 1234 || !strings.HasPrefix(s.Entries[0].Key, "deposit:") ||
		s.Entries[1].Amount != -1234 || s.Entries[1].Key != "purchase:"+p.ID || s.Entries[1].Balance != 0 {
		t.Errorf("holder statement entries = %+v, want the deposit then the payment", s.Entries)
	}

	r = e.do(t, "GET", "/v1/statement"+q+"&format=csv", m.key, "")
	wantStatus(t, "GET /v1/statement CSV", r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("CSV Content-Type = %q, want text/csv", ct)
	}
	rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil {
		t.Fatalf("reading CSV %s: %v", r.body, err)
	}
	if len(rows) != 4 || rows[0][0] != "time" || rows[1][3] != "opening" || rows[2][2] != "purchase:"+p.ID ||
		rows[2][4] != "12.34" || rows[3][3] != "closing" || rows[3][5] != "12.34" {
		t.Errorf("merchant statement CSV = %q, want header, opening, the payment of 12.34, closing", rows)
	}
	// Default period: the last 31 days, which hold the payment.
	r = e.do(t, "GET", "/v1/statement", m.key, "")
	if s := decodeBody[statementView](t, r); len(s.Entries) != 1 || s.Closing != 1234 {
		t.Errorf("GET /v1/statement = %+v, want the payment", s)
	}

	bad := []struct {
		name, path, key string
		status          int
		slug            string
	}{
		{"unknown account", "/v1/accounts/nope", operatorKey, 404, "not-found"},
		{"unknown account statement", "/v1/accounts/nope/statement", operatorKey, 404, "not-found"},
		{"merchant without account", "/v1/balance", bare.key, 404, "not-found"},
		{"merchant without account statement", "/v1/statement", bare.key, 404, "not-found"},
		{"merchant on operator route", "/v1/accounts/" + url.PathEscape(m.account), m.key, 401, "unauthorized"},
		{"bad from", "/v1/statement?from=yesterday", m.key, 422, "invalid-request"},
		{"bad to", "/v1/statement?to=2026-13-01T00:00:00Z", m.key, 422, "invalid-request"},
		{"from after to", "/v1/statement?from=2026-11-28T12:00:00Z&to=2026-11-27T12:00:00Z", m.key, 422, "invalid-request"},
		{"too long", "/v1/statement?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", m.key, 422, "invalid-request"},
		{"bad format", "/v1/statement?format=xml", m.key, 422, "invalid-request"},
		{"twice", "/v1/statement?format=csv&format=json", m.key, 422, "invalid-request"},
		{"unknown parameter", "/v1/statement?account=acct_other", m.key, 422, "invalid-request"},
	}
	for _, tt := range bad {
		wantProblem(t, tt.name, e.do(t, "GET", tt.path, tt.key, ""), tt.status, tt.slug)
	}
}

func TestPurchaseCard(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	m := e.createMerchant(t, "shop", "EUR")
	r := e.do(t, "POST", "/v1/purchases", m.key, `{"amount":5,"currency":"EUR","description":"x","card":"`+cardB+`"}`, "Idempotency-Key", "p1")
	wantStatus(t, "POST /v1/purchases with card", r, http.StatusCreated)
	pv := decodeBody[purchaseView](t, r)
	if pv.CardLast4 != cardB[12:] || pv.Refunded != 0 || pv.Approval != nil {
		t.Errorf("POST /v1/purchases with card = %+v, want card_last4 %s, no approval", pv, cardB[12:])
	}
	p, err := e.store.(store.Merchants).Purchase(context.Background(), m.id, pv.ID)
	if err != nil || p.Card != cardB {
		t.Errorf("stored purchase card = %q, %v; want %s", p.Card, err, cardB)
	}
	tests := []struct {
		name, body string
		headers    []string
		status     int
		slug       string
	}{
		{"bad card number", `{"amount":5,"currency":"EUR","description":"x","card":"4111111111111112"}`, nil, 422, "invalid-request"},
		{"short card number", `{"amount":5,"currency":"EUR","description":"x","card":"4111"}`, nil, 422, "invalid-request"},
		{"unknown card", `{"amount":5,"currency":"EUR","description":"x","card":"4000000000000002"}`, nil, 422, "card-unknown"},
		{"revoked card", `{"amount":5,"currency":"EUR","description":"x","card":"` + cardRevoked + `"}`, nil, 422, "card-revoked"},
		{"key reused for another card", `{"amount":5,"currency":"EUR","description":"x","card":"` + cardA + `"}`, []string{"Idempotency-Key", "p1"}, 422, "idempotency-key-reused"},
		{"key reused without card", `{"amount":5,"currency":"EUR","description":"x"}`, []string{"Idempotency-Key", "p1"}, 422, "idempotency-key-reused"},
	}
	for _, tt := range tests {
		wantProblem(t, tt.name, e.do(t, "POST", "/v1/purchases", m.key, tt.body, tt.headers...), tt.status, tt.slug)
	}
	paid := e.paidPurchase(t, m, cardA, 700)
	want := approvalView{CVM: "online-pin", Counter: 7, Device: "dev_1"}
	if paid.Status != "approved" || paid.CardLast4 != cardA[12:] || paid.Transfer == 0 || paid.Updated == "" ||
		paid.Approval == nil || *paid.Approval != want {
		t.Errorf("paid purchase view = %+v (approval %+v), want approved, card_last4, transfer, updated, approval %+v", paid, paid.Approval, want)
	}
}

func TestRefunds(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	m := e.createMerchant(t, "shop", "EUR")
	other := e.createMerchant(t, "other", "EUR")
	p := e.paidPurchase(t, m, cardA, 1000)
	path := "/v1/purchases/" + p.ID + "/refunds"

	r := e.do(t, "POST", path, m.key, `{"amount":300}`, "Idempotency-Key", "r1")
	wantStatus(t, "POST refund 300", r, http.StatusCreated)
	first := decodeBody[refundView](t, r)
	if !strings.HasPrefix(first.ID, "ref_") || first.Purchase != p.ID || first.Amount != 300 || first.Currency != "EUR" ||
		first.Status != "done" || first.Transfer == 0 || first.Created == "" || first.IdemKey != "r1" {
		t.Errorf("POST refund 300 = %+v, want done, 300 EUR of %s", first, p.ID)
	}
	r = e.do(t, "POST", path, m.key, `{"amount":300}`, "Idempotency-Key", "r1")
	wantStatus(t, "POST refund 300 replayed", r, http.StatusCreated)
	if again := decodeBody[refundView](t, r); again.ID != first.ID || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed refund = %+v (Idempotent-Replayed %q), want %s replayed", again, r.header.Get("Idempotent-Replayed"), first.ID)
	}

	problems := []struct {
		name, path, key, body string
		headers               []string
		status                int
		slug                  string
	}{
		{"key reused", path, m.key, `{"amount":400}`, []string{"Idempotency-Key", "r1"}, 422, "idempotency-key-reused"},
		{"above the rest", path, m.key, `{"amount":701}`, nil, 422, "refund-too-large"},
		{"zero", path, m.key, `{"amount":0}`, nil, 422, "invalid-request"},
		{"negative", path, m.key, `{"amount":-1}`, nil, 422, "invalid-request"},
		{"not a number", path, m.key, `{"amount":"1"}`, nil, 400, "bad-request"},
		{"unknown field", path, m.key, `{"amount":1,"reason":"x"}`, nil, 400, "bad-request"},
		{"bad key", path, m.key, `{"amount":1}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "bad-request"},
		{"unknown purchase", "/v1/purchases/pur_nope/refunds", m.key, `{}`, nil, 404, "not-found"},
		{"another merchant's", path, other.key, `{}`, nil, 404, "not-found"},
		{"no key", path, "", `{}`, nil, 401, "unauthorized"},
	}
	for _, tt := range problems {
		wantProblem(t, tt.name, e.do(t, "POST", tt.path, tt.key, tt.body, tt.headers...), tt.status, tt.slug)
	}

	// No body: the whole rest. (Later: refunds list oldest first.)
	e.clock.Add(time.Second)
	r = e.do(t, "POST", path, m.key, "")
	wantStatus(t, "POST refund, no body", r, http.StatusCreated)
	if rest := decodeBody[refundView](t, r); rest.Amount != 700 || rest.Status != "done" {
		t.Errorf("POST refund, no body = %+v, want 700 done", rest)
	}
	wantProblem(t, "refund of a refunded purchase", e.do(t, "POST", path, m.key, `{}`), 409, "not-paid")

	r = e.do(t, "GET", path, m.key, "")
	wantStatus(t, "GET refunds", r, http.StatusOK)
	list := decodeBody[map[string][]refundView](t, r)["refunds"]
	if len(list) != 2 || list[0].ID != first.ID || list[1].Amount != 700 {
		t.Errorf("GET refunds = %+v, want the 300 then the 700", list)
	}
	wantProblem(t, "GET another merchant's refunds", e.do(t, "GET", path, other.key, ""), 404, "not-found")
	r = e.do(t, "GET", "/v1/purchases/"+p.ID, m.key, "")
	if v := decodeBody[purchaseView](t, r); v.Status != "refunded" || v.Refunded != 1000 {
		t.Errorf("purchase after refunds = %s refunded %d, want refunded 1000", v.Status, v.Refunded)
	}
	if b, _ := e.ledger.Balance(context.Background(), m.account); b.Minor != 0 {
		t.Errorf("merchant balance = %d, want 0", b.Minor)
	}

	pending := e.do(t, "POST", "/v1/purchases", m.key, `{"amount":5,"currency":"EUR","description":"x"}`)
	pv := decodeBody[purchaseView](t, pending)
	wantProblem(t, "refund of a pending purchase", e.do(t, "POST", "/v1/purchases/"+pv.ID+"/refunds", m.key, `{}`), 409, "not-paid")
}

func TestRefundMerchantShort(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	m := e.createMerchant(t, "shop", "EUR")
	p := e.paidPurchase(t, m, cardA, 1000)
	ctx := context.Background()
	// The merchant's money leaves: 100 left.
	if err := e.ledger.CreateAccount(ctx, store.Account{ID: "payout", Kind: store.KindFunding, Currency: "EUR", Limit: -1e9}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Transfer(ctx, ledger.Transfer{Key: "payout-1", Currency: "EUR",
		Legs: []ledger.Leg{{Account: m.account, Amount: -900}, {Account: "payout", Amount: 900}}}); err != nil {
		t.Fatal(err)
	}
	path := "/v1/purchases/" + p.ID + "/refunds"
	pr := wantProblem(t, "refund above the merchant's balance", e.do(t, "POST", path, m.key, `{"amount":500}`), 409, "refund-failed")
	r := e.do(t, "GET", path, m.key, "")
	list := decodeBody[map[string][]refundView](t, r)["refunds"]
	if len(list) != 1 || list[0].Status != "failed" || list[0].Reason != "merchant balance too low" {
		t.Fatalf("refunds = %+v, want one failed: merchant balance too low", list)
	}
	if !strings.Contains(pr.Detail, list[0].ID) {
		t.Errorf("problem detail %q does not name the failed refund %s", pr.Detail, list[0].ID)
	}
	if b, _ := e.ledger.Balance(ctx, m.account); b.Minor != 100 {
		t.Errorf("merchant balance = %d, want 100 (nothing posted)", b.Minor)
	}
}

// TestPurchaseWebhooks: the purchase service's notifications reach the
// merchant signed with its secret, at the callback URL or else its
// webhook URL, with bounded retries.
func TestPurchaseWebhooks(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	hook := newReceiver(t, 200)
	callback := newReceiver(t, 500) // always fails: retried, then given up
	ms := e.store.(store.Merchants)
	ctx := context.Background()
	body, _ := json.Marshal(createMerchantRequest{Name: "hooked", WebhookURL: hook.srv.URL + "/hook", Currency: "EUR"})
	r := e.do(t, "POST", "/v1/merchants", operatorKey, string(body))
	wantStatus(t, "POST /v1/merchants", r, http.StatusCreated)
	created := decodeBody[createMerchantResponse](t, r)
	secret, _ := base64.StdEncoding.DecodeString(created.WebhookSecret)
	m := testMerchant{created.ID, created.APIKey, created.Account}
	quiet := e.createMerchant(t, "no webhook", "EUR")

	at := time.Unix(1_800_000_000, 0)
	n := newTestNotifier(t, NotifierConfig{Store: e.store, Now: func() time.Time { return at }, Attempts: 3})

	paid := e.paidPurchase(t, m, cardA, 500)
	p, err := ms.Purchase(ctx, m.id, paid.ID)
	if err != nil {
		t.Fatal(err)
	}
	n.NotifyPurchase(ctx, p)
	c := hook.next(t)
	checkSignature(t, c, secret, at)
	if ev := c.header.Get(EventHeader); ev != "purchase.finished" {
		t.Errorf("%s = %q, want purchase.finished", EventHeader, ev)
	}
	var v purchaseView
	if err := json.Unmarshal(c.body, &v); err != nil || v.ID != p.ID || v.Status != "approved" || v.Approval == nil {
		t.Errorf("webhook body %s (%v), want the approved purchase with its approval", c.body, err)
	}

	// A refund through the service notifies; the Notifier sends it.
	e.mu.Lock()
	e.pnotified = nil
	e.mu.Unlock()
	if _, _, err := e.purchases.Refund(ctx, store.Merchant{ID: m.id, Account: m.account}, p.ID, 200, ""); err != nil {
		t.Fatalf("Refund: %v", err)
	}
	e.mu.Lock()
	notified := e.pnotified
	e.mu.Unlock()
	if len(notified) != 1 || notified[0].Status != store.PurchaseRefundedPartially {
		t.Fatalf("service notified %+v, want the purchase refunded-partially once", notified)
	}
	n.NotifyPurchase(ctx, notified[0])
	c = hook.next(t)
	checkSignature(t, c, secret, at)
	if ev := c.header.Get(EventHeader); ev != "purchase.refunded" {
		t.Errorf("%s = %q, want purchase.refunded", EventHeader, ev)
	}
	if err := json.Unmarshal(c.body, &v); err != nil || v.Refunded != 200 || v.Status != "refunded-partially" {
		t.Errorf("refund webhook body %s (%v), want refunded 200", c.body, err)
	}

	// A callback URL wins over the merchant's; a failing one is tried
	// Attempts times, no more.
	p.CallbackURL = callback.srv.URL + "/cb"
	p.Status = store.PurchaseDeclined
	n.NotifyPurchase(ctx, p)
	for range 3 {
		checkSignature(t, callback.next(t), secret, at)
	}
	// Statuses that are not an end send nothing; a merchant without a
	// URL gets nothing. A last call to the hook proves the queue moved
	// past them (one worker order is not guaranteed, so Close first).
	p.CallbackURL = ""
	p.Status = store.PurchasePending
	n.NotifyPurchase(ctx, p)
	q := p
	q.Merchant, q.Status = quiet.id, store.PurchaseExpired
	n.NotifyPurchase(ctx, q)
	p.Status = store.PurchaseExpired
	n.NotifyPurchase(ctx, p)
	if c := hook.next(t); !strings.Contains(string(c.body), `"status":"expired"`) {
		t.Errorf("last hook call body %s, want the expired purchase", c.body)
	}
	n.Close()
	if got := callback.count(); got != 3 {
		t.Errorf("failing callback got %d calls, want 3 (Attempts)", got)
	}
	if got := hook.count(); got != 3 {
		t.Errorf("hook got %d calls, want 3 (finished, refunded, expired)", got)
	}
}

// TestMoneyDecoders checks the refund and deposit request checks at
// their edges.
func TestMoneyDecoders(t *testing.T) {
	refunds := []struct {
		body   string
		amount int64
		ok     bool
	}{
		{`{}`, 0, true},
		{`{"amount":1}`, 1, true},
		{`{"amount":1000000000000}`, 1e12, true},
		{`{"amount":1000000000001}`, 0, false},
		{`{"amount":0}`, 0, false},
		{`{"amount":null}`, 0, true},
	}
	for _, tt := range refunds {
		var req refundRequest
		if err := decodeJSON(strings.NewReader(tt.body), &req); err != nil {
			t.Fatalf("decodeJSON(%s): %v", tt.body, err)
		}
		amount, msg := checkRefund(&req)
		if (msg == "") != tt.ok || amount != tt.amount {
			t.Errorf("checkRefund(%s) = %d, %q; want %d, ok %v", tt.body, amount, msg, tt.amount, tt.ok)
		}
	}
	deposits := []struct {
		req  depositRequest
		want money.Amount
		ok   bool
	}{
		{depositRequest{1, "EUR"}, money.Amount{Minor: 1, Currency: "EUR"}, true},
		{depositRequest{1e12, "JPY"}, money.Amount{Minor: 1e12, Currency: "JPY"}, true},
		{depositRequest{1e12 + 1, "EUR"}, money.Amount{}, false},
		{depositRequest{5, "eur"}, money.Amount{}, false},
		{depositRequest{5, ""}, money.Amount{}, false},
	}
	for _, tt := range deposits {
		got, msg := checkDeposit(&tt.req)
		if (msg == "") != tt.ok || got != tt.want {
			t.Errorf("checkDeposit(%+v) = %v, %q; want %v, ok %v", tt.req, got, msg, tt.want, tt.ok)
		}
	}
}

// TestRefundPending: a refund recorded whose posting cannot be confirmed
// (the ledger stopped) is answered 202 with the pending refund.
func TestRefundPending(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	m := e.createMerchant(t, "shop", "EUR")
	p := e.paidPurchase(t, m, cardA, 1000)
	e.ledger.Close()
	r := e.do(t, "POST", "/v1/purchases/"+p.ID+"/refunds", m.key, `{"amount":100}`)
	wantStatus(t, "POST refund with the ledger stopped", r, http.StatusAccepted)
	if v := decodeBody[refundView](t, r); v.Status != "pending" || v.Amount != 100 || v.ID == "" {
		t.Errorf("POST refund with the ledger stopped = %+v, want pending 100", v)
	}
}

// TestRefundsConcurrent: refunds sent at once never exceed the amount
// paid.
func TestRefundsConcurrent(t *testing.T) {
	e := newEnv(t, envOpt{money: true})
	m := e.createMerchant(t, "shop", "EUR")
	p := e.paidPurchase(t, m, cardA, 1000)
	const n = 6
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Not e.do: it may call t.Fatal, which only the test's goroutine may.
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/purchases/"+p.ID+"/refunds", strings.NewReader(`{"amount":300}`))
			req.Header.Set("Authorization", "Bearer "+m.key)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Errorf("POST refund: %v", err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	created := 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusUnprocessableEntity:
		default:
			t.Errorf("concurrent refund status %d, want 201 or 422", s)
		}
	}
	if created != 3 {
		t.Errorf("%d of %d refunds of 300 made on 1000, want 3", created, n)
	}
	if b, _ := e.ledger.Balance(context.Background(), m.account); b.Minor != 100 {
		t.Errorf("merchant balance = %d, want 100", b.Minor)
	}
}
