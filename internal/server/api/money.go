package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/store"
)

// Limits of the money endpoints.
const (
	// defaultStatementPeriod is the period of a statement that names no
	// from: the 31 days before to.
	defaultStatementPeriod = 31 * 24 * time.Hour
	// maxStatementPeriod bounds one statement's period.
	maxStatementPeriod = 366 * 24 * time.Hour
)

// depositRequest is the body of POST /v1/cards/{number}/deposits.
type depositRequest struct {
	Amount   int64  `json:"amount"` // minor units
	Currency string `json:"currency"`
}

// depositResponse answers a deposit.
type depositResponse struct {
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Balance  int64  `json:"balance"`  // after the deposit (and whatever else was posted since)
	Transfer int64  `json:"transfer"` // the ledger transfer
}

// checkDeposit validates req; the message is for the client, "" means
// valid.
func checkDeposit(req *depositRequest) (money.Amount, string) {
	if req.Amount <= 0 || req.Amount > maxAmount {
		return money.Amount{}, "amount must be a positive number of minor units, at most 10^12."
	}
	cur, err := money.ParseCurrency(req.Currency)
	if err != nil {
		return money.Amount{}, "currency must be a known ISO 4217 code."
	}
	return money.Amount{Minor: req.Amount, Currency: cur}, ""
}

// refundRequest is the body of POST /v1/purchases/{id}/refunds; an empty
// body or an absent amount refunds the whole rest.
type refundRequest struct {
	Amount *int64 `json:"amount,omitempty"` // minor units
}

// checkRefund validates req and returns the amount to refund, 0 for
// the whole rest; the message is for the client, "" means valid.
func checkRefund(req *refundRequest) (int64, string) {
	if req.Amount == nil {
		return 0, ""
	}
	if *req.Amount <= 0 || *req.Amount > maxAmount {
		return 0, "amount must be a positive number of minor units, at most 10^12 (or absent: the whole rest)."
	}
	return *req.Amount, ""
}

// refundView is how the API shows a refund.
type refundView struct {
	ID       string `json:"id"`
	Purchase string `json:"purchase_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
	Transfer int64  `json:"transfer,omitempty"`
	Created  string `json:"created"`
	Updated  string `json:"updated"`
	IdemKey  string `json:"idempotency_key,omitempty"`
}

func refundViewOf(r store.Refund, cur money.Currency) refundView {
	return refundView{ID: r.ID, Purchase: r.Purchase, Amount: r.Amount, Currency: string(cur), Status: string(r.Status),
		Reason: r.Reason, Transfer: r.Transfer, Created: formatTime(r.Created), Updated: formatTime(r.Updated),
		IdemKey: r.IdemKey}
}

// accountView is how the API shows a ledger account.
type accountView struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Currency string `json:"currency"`
	Balance  int64  `json:"balance"` // minor units
	Limit    int64  `json:"limit"`   // the lowest balance allowed
}

// entryView is one statement line.
type entryView struct {
	Transfer int64  `json:"transfer"`
	Key      string `json:"key"`
	Amount   int64  `json:"amount"`  // signed minor units
	Balance  int64  `json:"balance"` // after the entry
	Memo     string `json:"memo,omitempty"`
	Time     string `json:"time"`
}

// statementView is an account's statement over [from, to).
type statementView struct {
	Account  string      `json:"account"`
	Currency string      `json:"currency"`
	From     string      `json:"from"`
	To       string      `json:"to"`
	Opening  int64       `json:"opening"`
	Closing  int64       `json:"closing"`
	Entries  []entryView `json:"entries"`
}

// statementQuery is what a statement request asks for.
type statementQuery struct {
	from, to time.Time
	csv      bool
}

// parseStatementQuery reads ?from=&to=&format= (RFC 3339 times; format
// json, the default, or csv). to defaults to now, from to 31 days
// before to. The message is for the client, "" means valid.
func parseStatementQuery(q url.Values, now time.Time) (statementQuery, string) {
	for k, v := range q {
		switch k {
		case "from", "to", "format":
			if len(v) != 1 {
				return statementQuery{}, k + " may be given once."
			}
		default:
			return statementQuery{}, fmt.Sprintf("unknown query parameter %.40q (want from, to, format).", k)
		}
	}
	sq := statementQuery{to: now}
	if s := q.Get("to"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return statementQuery{}, "to must be an RFC 3339 time."
		}
		sq.to = t
	}
	sq.from = sq.to.Add(-defaultStatementPeriod)
	if s := q.Get("from"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return statementQuery{}, "from must be an RFC 3339 time."
		}
		sq.from = t
	}
	if sq.to.Before(sq.from) {
		return statementQuery{}, "from must not be after to."
	}
	if sq.to.Sub(sq.from) > maxStatementPeriod {
		return statementQuery{}, "a statement covers at most 366 days."
	}
	switch q.Get("format") {
	case "", "json":
	case "csv":
		sq.csv = true
	default:
		return statementQuery{}, "format must be json or csv."
	}
	sq.from, sq.to = sq.from.UTC(), sq.to.UTC()
	return sq, ""
}

// ledgerOrFail returns the ledger and its store; on failure it has
// written the problem.
func (h *handler) ledgerOrFail(w http.ResponseWriter) (*ledger.Ledger, store.Ledger, bool) {
	sl, ok := h.store.(store.Ledger)
	if h.ledger == nil || !ok {
		writeProblem(w, probNotImplemented, "This server runs no ledger.")
		return nil, nil, false
	}
	return h.ledger, sl, true
}

// purchasesOrFail returns the purchase service; on failure it has
// written the problem.
func (h *handler) purchasesOrFail(w http.ResponseWriter) (*purchase.Service, bool) {
	if h.purchases == nil {
		writeProblem(w, probNotImplemented, "This server runs no purchase service.")
		return nil, false
	}
	return h.purchases, true
}

// idempotencyKey reads the optional Idempotency-Key header; on failure
// it has written the problem.
func idempotencyKey(w http.ResponseWriter, r *http.Request) (key string, present, ok bool) {
	v, present := r.Header["Idempotency-Key"]
	if !present {
		return "", false, true
	}
	if len(v) != 1 || !validIdempotencyKey(v[0]) {
		writeProblem(w, probBadRequest, "Idempotency-Key must be one header of 1 to 255 printable ASCII characters.")
		return "", true, false
	}
	return v[0], true, true
}

// createDeposit credits a card's holder account from the funding account.
func (h *handler) createDeposit(w http.ResponseWriter, r *http.Request) {
	svc, ok := h.purchasesOrFail(w)
	if !ok {
		return
	}
	l, _, ok := h.ledgerOrFail(w)
	if !ok {
		return
	}
	key, present, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	if !present {
		writeProblem(w, probBadRequest, "Idempotency-Key is required: a deposit retried under the same key is made once.")
		return
	}
	card, ok := h.knownCard(w, r)
	if !ok {
		return
	}
	var req depositRequest
	if !decode(w, r, &req) {
		return
	}
	amount, msg := checkDeposit(&req)
	if msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	posted, err := svc.Deposit(r.Context(), card, amount, key)
	switch {
	case errors.Is(err, store.ErrConflict):
		writeProblem(w, probIdempotency, "This Idempotency-Key was used for a different deposit.")
		return
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such card.")
		return
	case err != nil:
		h.internal(w, r, "depositing", err)
		return
	}
	account := ledger.HolderAccount(card, amount.Currency)
	bal, err := l.Balance(r.Context(), account)
	if err != nil {
		h.internal(w, r, "reading balance", err)
		return
	}
	if posted.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/v1/accounts/"+url.PathEscape(account))
	writeJSON(w, http.StatusCreated, depositResponse{Account: account, Currency: string(amount.Currency),
		Balance: bal.Minor, Transfer: posted.ID})
}

// getAccount shows any ledger account to the operator.
func (h *handler) getAccount(w http.ResponseWriter, r *http.Request) {
	if _, sl, ok := h.ledgerOrFail(w); ok {
		h.writeAccount(w, r, sl, r.PathValue("id"))
	}
}

// getBalance shows the merchant its own account.
func (h *handler) getBalance(w http.ResponseWriter, r *http.Request) {
	if _, sl, ok := h.ledgerOrFail(w); ok && hasAccount(w, r) {
		h.writeAccount(w, r, sl, merchantOf(r).Account)
	}
}

// hasAccount reports whether the merchant has a ledger account, answering
// with a problem when not.
func hasAccount(w http.ResponseWriter, r *http.Request) bool {
	if merchantOf(r).Account == "" {
		writeProblem(w, probNotFound, "You have no ledger account (create the merchant with a currency).")
		return false
	}
	return true
}

func (h *handler) writeAccount(w http.ResponseWriter, r *http.Request, sl store.Ledger, id string) {
	a, err := sl.Account(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, probNotFound, "No such account.")
		return
	}
	if err != nil {
		h.internal(w, r, "reading account", err)
		return
	}
	writeJSON(w, http.StatusOK, accountView{ID: a.ID, Kind: string(a.Kind), Currency: string(a.Currency),
		Balance: a.Balance, Limit: a.Limit})
}

// getAccountStatement shows any account's statement to the operator.
func (h *handler) getAccountStatement(w http.ResponseWriter, r *http.Request) {
	if l, _, ok := h.ledgerOrFail(w); ok {
		h.writeStatement(w, r, l, r.PathValue("id"))
	}
}

// getStatement shows the merchant its own account's statement.
func (h *handler) getStatement(w http.ResponseWriter, r *http.Request) {
	if l, _, ok := h.ledgerOrFail(w); ok && hasAccount(w, r) {
		h.writeStatement(w, r, l, merchantOf(r).Account)
	}
}

func (h *handler) writeStatement(w http.ResponseWriter, r *http.Request, l *ledger.Ledger, id string) {
	q, msg := parseStatementQuery(r.URL.Query(), h.now())
	if msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	s, err := l.Statement(r.Context(), id, q.from, q.to)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, probNotFound, "No such account.")
		return
	}
	if err != nil {
		h.internal(w, r, "reading statement", err)
		return
	}
	if q.csv {
		var buf bytes.Buffer
		if err := s.WriteCSV(&buf); err != nil {
			h.internal(w, r, "writing statement", err)
			return
		}
		hd := w.Header()
		hd.Set("Content-Type", "text/csv; charset=utf-8")
		hd.Set("Content-Disposition", `attachment; filename="`+csvName(id, q)+`"`)
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		w.Write(buf.Bytes())
		return
	}
	v := statementView{Account: s.Account.ID, Currency: string(s.Account.Currency), From: formatTime(q.from),
		To: formatTime(q.to), Opening: s.Opening, Closing: s.Closing, Entries: make([]entryView, 0, len(s.Entries))}
	for _, e := range s.Entries {
		v.Entries = append(v.Entries, entryView{Transfer: e.Transfer, Key: e.Key, Amount: e.Amount, Balance: e.Balance,
			Memo: e.Memo, Time: e.Time.UTC().Format(time.RFC3339Nano)})
	}
	writeJSON(w, http.StatusOK, v)
}

// csvName is the file name a statement download suggests: the account
// with anything but letters, digits and -_ made "_", and the period.
func csvName(account string, q statementQuery) string {
	safe := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '_'
	}, account)
	if len(safe) > 64 {
		safe = safe[:64]
	}
	return safe + "_" + q.from.Format("20060102") + "-" + q.to.Format("20060102") + ".csv"
}

// createRefund refunds some or all of one of the merchant's paid
// purchases.
func (h *handler) createRefund(w http.ResponseWriter, r *http.Request) {
	m := merchantOf(r)
	svc, ok := h.purchasesOrFail(w)
	if !ok {
		return
	}
	ms, ok := h.merchants(w, r)
	if !ok {
		return
	}
	key, _, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	var req refundRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	amount, msg := checkRefund(&req)
	if msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	id := r.PathValue("id")
	ref, replayed, err := svc.Refund(r.Context(), m, id, amount, key)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such purchase request.")
		return
	case errors.Is(err, purchase.ErrNotPaid):
		writeProblem(w, probNotPaid, "The purchase is not paid, or is refunded in full: there is nothing to refund.")
		return
	case errors.Is(err, store.ErrRefundTooLarge):
		writeProblem(w, probRefundTooLarge, "The refunds would exceed the amount paid.")
		return
	case errors.Is(err, purchase.ErrRefundFailed):
		writeProblem(w, probRefundFailed, fmt.Sprintf("Refund %s failed: %s.", ref.ID, ref.Reason))
		return
	case errors.Is(err, store.ErrConflict):
		writeProblem(w, probIdempotency, "This Idempotency-Key was used for a different refund of this purchase.")
		return
	case ref.ID != "" && ref.Status == store.RefundPending:
		// Recorded, its posting's outcome unknown: the server finishes it.
		h.log.WarnContext(r.Context(), "api: refund left pending", "refund", ref.ID, "err", err)
	default:
		h.internal(w, r, "refunding", err)
		return
	}
	p, err := ms.Purchase(r.Context(), m.ID, id)
	if err != nil {
		h.internal(w, r, "reading purchase", err)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	status := http.StatusCreated
	if ref.Status == store.RefundPending {
		status = http.StatusAccepted
	}
	w.Header().Set("Location", "/v1/purchases/"+url.PathEscape(p.ID)+"/refunds")
	writeJSON(w, status, refundViewOf(ref, p.Currency))
}

// listRefunds lists the refunds of one of the merchant's purchases,
// oldest first.
func (h *handler) listRefunds(w http.ResponseWriter, r *http.Request) {
	ms, p, ok := h.pathPurchase(w, r)
	if !ok {
		return
	}
	rs, err := ms.Refunds(r.Context(), p.ID)
	if err != nil {
		h.internal(w, r, "listing refunds", err)
		return
	}
	views := make([]refundView, 0, len(rs))
	for _, x := range rs {
		views = append(views, refundViewOf(x, p.Currency))
	}
	writeJSON(w, http.StatusOK, map[string][]refundView{"refunds": views})
}
