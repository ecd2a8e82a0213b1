package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"cardlink/internal/store"
)

// FuzzRefund sends any body, with any Idempotency-Key, to POST
// /v1/purchases/{id}/refunds of a paid purchase through the whole handler,
// a real store and a real ledger: the answer is a refund or a client
// problem, never a server error, and the refunds pending and done never
// exceed the amount paid, whose ledger postings match them.
func FuzzRefund(f *testing.F) {
	for _, s := range []string{`{}`, ``, `{"amount":1}`, `{"amount":250000}`, `{"amount":1000001}`, `{"amount":0}`,
		`{"amount":-5}`, `{"amount":1e3}`, `{"amount":"5"}`, `{"amount":null}`, `{"amount":1} {}`, `[]`, `null`, "\xff"} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"amount":100}`), "order-1")
	f.Add([]byte(`{"amount":200}`), "order-1")

	e := newEnv(f, envOpt{money: true})
	m := e.createMerchant(f, "fuzz", "EUR")
	const paid = 1_000_000
	p := e.paidPurchase(f, m, cardA, paid)
	path := "/v1/purchases/" + p.ID + "/refunds"
	ms := e.store.(store.Merchants)

	f.Fuzz(func(t *testing.T, body []byte, idem string) {
		req := httptest.NewRequest("POST", path, strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+m.key)
		if idem != "" {
			req.Header["Idempotency-Key"] = []string{idem} // raw: invalid keys must reach the handler
		}
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusCreated:
			var v refundView
			if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || v.Status != "done" || v.Amount <= 0 {
				t.Fatalf("POST %q = 201 %s (%v), want a refund done", body, w.Body.Bytes(), err)
			}
		case http.StatusBadRequest, http.StatusConflict, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" || !json.Valid(w.Body.Bytes()) {
				t.Fatalf("POST %q = %d with Content-Type %q body %q, want a problem", body, w.Code, ct, w.Body.Bytes())
			}
		default:
			t.Fatalf("POST %q = %d %s, want 201, 400, 409, 413 or 422", body, w.Code, w.Body.Bytes())
		}
		rs, err := ms.Refunds(context.Background(), p.ID)
		if err != nil {
			t.Fatal(err)
		}
		var held, done int64
		for _, r := range rs {
			switch r.Status {
			case store.RefundPending:
				held += r.Amount
			case store.RefundDone:
				done += r.Amount
			}
		}
		if held != 0 || done > paid {
			t.Fatalf("refunds: %d pending, %d done; want 0 pending and at most %d done", held, done, paid)
		}
		if b, err := e.ledger.Balance(context.Background(), m.account); err != nil || b.Minor != paid-done {
			t.Fatalf("merchant balance = %v, %v; want %d", b, err, paid-done)
		}
	})
}

// FuzzDepositRequest decodes any body as a deposit: accepted means a
// positive amount within the limit in a known currency, which survives
// a JSON round trip.
func FuzzDepositRequest(f *testing.F) {
	for _, s := range []string{`{"amount":2500,"currency":"EUR"}`, `{"amount":1000000000000,"currency":"JPY"}`,
		`{"amount":0,"currency":"EUR"}`, `{"amount":5,"currency":"eur"}`, `{"amount":5}`, `{"amount":5,"currency":"EUR","x":1}`,
		`{"amount":5e0,"currency":"EUR"}`, `{"amount":9223372036854775808,"currency":"EUR"}`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req depositRequest
		if err := decodeJSON(strings.NewReader(string(body)), &req); err != nil {
			return
		}
		a, msg := checkDeposit(&req)
		if msg != "" {
			return
		}
		if a.Minor <= 0 || a.Minor > maxAmount || len(a.Currency) != 3 {
			t.Fatalf("checkDeposit(%q) accepted %v", body, a)
		}
		b, _ := json.Marshal(depositRequest{a.Minor, string(a.Currency)})
		var back depositRequest
		if err := decodeJSON(strings.NewReader(string(b)), &back); err != nil || back != req {
			t.Fatalf("round trip of %q = %+v, %v; want %+v", body, back, err, req)
		}
	})
}

// FuzzStatementQuery parses any query string as a statement request:
// accepted means a period of at most 366 days, from not after to, in
// UTC, and a known format.
func FuzzStatementQuery(f *testing.F) {
	for _, s := range []string{"", "format=csv", "from=2026-11-01T00:00:00Z&to=2026-11-28T00:00:00Z",
		"from=2026-11-28T00:00:00%2B02:00", "to=2026-11-28T12:00:00.123456789Z&format=json", "from=x", "format=csv&format=csv",
		"from=2020-01-01T00:00:00Z", "account=a", "%zz", ";"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		sq, msg := parseStatementQuery(q, now)
		if msg != "" {
			return
		}
		if sq.to.Before(sq.from) || sq.to.Sub(sq.from) > maxStatementPeriod || sq.from.Location() != time.UTC || sq.to.Location() != time.UTC {
			t.Fatalf("parseStatementQuery(%q) = %v .. %v", raw, sq.from, sq.to)
		}
		if f := q.Get("format"); sq.csv != (f == "csv") {
			t.Fatalf("parseStatementQuery(%q): csv %v for format %q", raw, sq.csv, f)
		}
	})
}
