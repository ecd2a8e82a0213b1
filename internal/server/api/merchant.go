package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"time"

	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/purchase"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Limits and lifetimes of the merchant API.
const (
	maxDescription   = 500      // bytes of a purchase description
	maxPayload       = 16 << 10 // bytes of an item's delivery payload
	maxAmount        = 1e12     // minor units of a price or amount
	purchaseTTL      = 15 * time.Minute
	referenceDigits  = 8 // of a reference code, the check digit included
	referenceRetries = 8 // draws of a reference code before giving up
)

// Reference codes are referenceDigits decimal digits: random digits and,
// last, a Verhoeff check digit, which catches every single-digit error
// and every transposition of adjacent digits.
var (
	verhoeffD = [10][10]byte{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
		{2, 3, 4, 0, 1, 7, 8, 9, 5, 6}, {3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
		{4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
		{6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
		{8, 7, 6, 5, 9, 3, 2, 1, 0, 4}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
	}
	verhoeffP = [8][10]byte{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
		{5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
		{9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
		{2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8},
	}
	verhoeffInv = [10]byte{0, 4, 3, 2, 1, 5, 6, 7, 8, 9}
)

// verhoeff returns the Verhoeff checksum of the decimal digits s (0 when s
// ends with its valid check digit), or -1 if s has a non-digit.
func verhoeff(s string, withCheck bool) int {
	c := byte(0)
	off := 1
	if withCheck {
		off = 0
	}
	for i := len(s) - 1; i >= 0; i-- {
		d := s[i] - '0'
		if d > 9 {
			return -1
		}
		c = verhoeffD[c][verhoeffP[(len(s)-1-i+off)%8][d]]
	}
	return int(c)
}

// verhoeffDigit returns the check digit to append to the digits s.
func verhoeffDigit(s string) byte {
	return '0' + verhoeffInv[verhoeff(s, false)]
}

// ValidReference reports whether ref is a well-formed reference code:
// eight decimal digits whose last is the Verhoeff check digit of the
// others.
func ValidReference(ref string) bool {
	return len(ref) == referenceDigits && verhoeff(ref, true) == 0
}

// newReference draws a random reference code.
func (h *handler) newReference() (string, error) {
	b, err := h.random(8)
	if err != nil {
		return "", err
	}
	n := binary.BigEndian.Uint64(b) % 1e7 // slight bias: irrelevant for a lookup code
	s := fmt.Sprintf("%07d", n)
	return s + string(verhoeffDigit(s)), nil
}

// merchants returns the store's merchant repository. On failure it has
// written the problem.
func (h *handler) merchants(w http.ResponseWriter, r *http.Request) (store.Merchants, bool) {
	ms, ok := h.store.(store.Merchants)
	if !ok {
		writeProblem(w, probNotReady, "This server's store keeps no merchants.")
		return nil, false
	}
	return ms, true
}

type merchantKey struct{}

// merchantOf returns the merchant the guard authenticated.
func merchantOf(r *http.Request) store.Merchant {
	m, ok := r.Context().Value(merchantKey{}).(store.Merchant)
	if !ok {
		panic("api: merchant route without its guard")
	}
	return m
}

// authMerchant finds the merchant of the request's API key and returns
// the request carrying it. On failure it has written the problem.
func (h *handler) authMerchant(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	key, ok := bearer(r)
	if !ok {
		writeProblem(w, probUnauthorized, "This endpoint needs a merchant's API key.")
		return nil, false
	}
	ms, ok := h.store.(store.Merchants)
	if !ok {
		writeProblem(w, probUnauthorized, "This endpoint needs a merchant's API key.")
		return nil, false
	}
	sum := sha256.Sum256([]byte(key))
	m, err := ms.MerchantByKey(r.Context(), sum[:])
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, probUnauthorized, "This endpoint needs a merchant's API key.")
		return nil, false
	}
	if err != nil {
		h.internal(w, r, "finding merchant", err)
		return nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), merchantKey{}, m)), true
}

// createMerchantRequest is the body of POST /v1/merchants.
type createMerchantRequest struct {
	Name       string `json:"name"`
	WebhookURL string `json:"webhook_url,omitempty"`
	// Currency, if set, opens the merchant's ledger account in it.
	Currency string `json:"currency,omitempty"`
}

// createMerchantResponse carries the merchant's secrets, shown once.
type createMerchantResponse struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	WebhookURL    string `json:"webhook_url,omitempty"`
	Account       string `json:"account,omitempty"`
	APIKey        string `json:"api_key"`
	WebhookSecret string `json:"webhook_secret"` // standard base64
	Created       string `json:"created"`
}

func (h *handler) createMerchant(w http.ResponseWriter, r *http.Request) {
	ms, ok := h.merchants(w, r)
	if !ok {
		return
	}
	var req createMerchantRequest
	if !decode(w, r, &req) {
		return
	}
	if msg := checkName(req.Name); msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	if req.WebhookURL != "" {
		if msg := checkWebhookURL(req.WebhookURL); msg != "" {
			writeProblem(w, probInvalid, msg)
			return
		}
	}
	var cur money.Currency
	if req.Currency != "" {
		var err error
		if cur, err = money.ParseCurrency(req.Currency); err != nil {
			writeProblem(w, probInvalid, "currency must be a known ISO 4217 code.")
			return
		}
	}
	ledger, hasLedger := h.store.(store.Ledger)
	if cur != "" && !hasLedger {
		writeProblem(w, probNotReady, "This server's store keeps no ledger.")
		return
	}
	c, err := h.newCredentials("mer_")
	if err != nil {
		h.internal(w, r, "creating merchant", err)
		return
	}
	id := c.id
	now := h.now().UTC()
	m := store.Merchant{ID: id, Name: req.Name, KeyHash: c.keyHash, WebhookURL: req.WebhookURL,
		WebhookSecret: c.secret, Created: now}
	if cur != "" {
		// The account first: a merchant never names a missing account.
		m.Account = "acct_" + id
		a := store.Account{ID: m.Account, Kind: store.KindMerchant, Currency: cur}
		if err := ledger.CreateAccount(r.Context(), a, now); err != nil {
			h.internal(w, r, "creating merchant account", err)
			return
		}
	}
	if err := ms.CreateMerchant(r.Context(), m); err != nil {
		h.internal(w, r, "storing merchant", err)
		return
	}
	w.Header().Set("Location", "/v1/merchants/"+id)
	writeJSON(w, http.StatusCreated, createMerchantResponse{
		ID: id, Name: m.Name, WebhookURL: m.WebhookURL, Account: m.Account, APIKey: c.key,
		WebhookSecret: base64.StdEncoding.EncodeToString(c.secret), Created: formatTime(now),
	})
}

// createItemRequest is the body of POST /v1/items.
type createItemRequest struct {
	Name     string `json:"name"`
	Price    int64  `json:"price"` // minor units
	Currency string `json:"currency"`
	Stock    *int64 `json:"stock,omitempty"` // absent: unlimited
	Delivery string `json:"delivery,omitempty"`
	Payload  string `json:"payload,omitempty"` // for a file, standard base64
}

// itemView is how the API shows a catalogue item; the payload is not
// shown back.
type itemView struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Price    int64  `json:"price"`
	Currency string `json:"currency"`
	Stock    *int64 `json:"stock,omitempty"`
	Delivery string `json:"delivery"`
	Created  string `json:"created"`
}

func itemViewOf(it store.Item) itemView {
	return itemView{ID: it.ID, Name: it.Name, Price: it.Price, Currency: string(it.Currency), Stock: it.Stock,
		Delivery: string(it.Delivery), Created: formatTime(it.Created)}
}

// checkItem validates req; the message is for the client, "" means valid.
func checkItem(req *createItemRequest) (store.Item, string) {
	if msg := checkName(req.Name); msg != "" {
		return store.Item{}, msg
	}
	if req.Price <= 0 || req.Price > maxAmount {
		return store.Item{}, "price must be a positive number of minor units, at most 10^12."
	}
	cur, err := money.ParseCurrency(req.Currency)
	if err != nil {
		return store.Item{}, "currency must be a known ISO 4217 code."
	}
	if req.Stock != nil && *req.Stock < 0 {
		return store.Item{}, "stock must not be negative."
	}
	it := store.Item{Name: req.Name, Price: req.Price, Currency: cur, Stock: req.Stock, Delivery: store.DeliverNone}
	switch d := store.DeliveryKind(req.Delivery); d {
	case "", store.DeliverNone:
		if req.Payload != "" {
			return store.Item{}, "payload needs a delivery other than none."
		}
		return it, ""
	case store.DeliverVoucher, store.DeliverTicket, store.DeliverLicence:
		it.Delivery, it.Payload = d, []byte(req.Payload)
	case store.DeliverFile:
		b, err := base64.StdEncoding.DecodeString(req.Payload)
		if err != nil {
			return store.Item{}, "payload of a file must be standard base64."
		}
		it.Delivery, it.Payload = d, b
	default:
		return store.Item{}, "delivery must be none, voucher, ticket, licence or file."
	}
	switch {
	case len(it.Payload) == 0:
		return store.Item{}, "payload is required for this delivery."
	case len(it.Payload) > maxPayload:
		return store.Item{}, fmt.Sprintf("payload may be at most %d bytes.", maxPayload)
	case it.Delivery != store.DeliverFile && !utf8.Valid(it.Payload):
		return store.Item{}, "payload is not valid UTF-8."
	}
	return it, ""
}

func (h *handler) createItem(w http.ResponseWriter, r *http.Request) {
	m := merchantOf(r)
	ms, ok := h.merchants(w, r)
	if !ok {
		return
	}
	var req createItemRequest
	if !decode(w, r, &req) {
		return
	}
	it, msg := checkItem(&req)
	if msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	id, err := h.newID("item_")
	if err != nil {
		h.internal(w, r, "creating item", err)
		return
	}
	it.ID, it.Merchant, it.Created = id, m.ID, h.now().UTC()
	if err := ms.CreateItem(r.Context(), it); err != nil {
		h.internal(w, r, "storing item", err)
		return
	}
	writeJSON(w, http.StatusCreated, itemViewOf(it))
}

func (h *handler) listItems(w http.ResponseWriter, r *http.Request) {
	m := merchantOf(r)
	ms, ok := h.merchants(w, r)
	if !ok {
		return
	}
	items, err := ms.Items(r.Context(), m.ID)
	if err != nil {
		h.internal(w, r, "listing items", err)
		return
	}
	views := make([]itemView, 0, len(items))
	for _, it := range items {
		views = append(views, itemViewOf(it))
	}
	writeJSON(w, http.StatusOK, map[string][]itemView{"items": views})
}

// createPurchaseRequest is the body of POST /v1/purchases: an item, or a
// free amount and currency.
type createPurchaseRequest struct {
	ItemID      string `json:"item_id,omitempty"`
	Amount      int64  `json:"amount,omitempty"` // minor units
	Currency    string `json:"currency,omitempty"`
	Description string `json:"description,omitempty"`
	CallbackURL string `json:"callback_url,omitempty"`
	// Card, if set, pushes the request to this card's device; only that
	// card may pay it.
	Card string `json:"card,omitempty"`
}

// purchaseView is how the API shows a purchase request.
type purchaseView struct {
	ID          string `json:"id"`
	Reference   string `json:"reference"`
	Status      string `json:"status"`
	ItemID      string `json:"item_id,omitempty"`
	Description string `json:"description,omitempty"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	CallbackURL string `json:"callback_url,omitempty"`
	Created     string `json:"created"`
	Expires     string `json:"expires"`

	CardLast4 string        `json:"card_last4,omitempty"` // of the card bound (or pushed to)
	Transfer  int64         `json:"transfer,omitempty"`   // the ledger transfer that paid it
	Refunded  int64         `json:"refunded"`             // minor units refunded so far
	Reason    string        `json:"reason,omitempty"`     // why it was declined or expired
	Updated   string        `json:"updated,omitempty"`    // last status change
	Approval  *approvalView `json:"approval,omitempty"`   // once the card signed
}

// approvalView is how the API shows the card's approval of a purchase.
type approvalView struct {
	CVM       string `json:"cvm"` // as in a policy: offline-pin, online-pin, biometric, none
	Counter   uint32 `json:"counter"`
	Device    string `json:"device,omitempty"`
	MatchedBy string `json:"matched_by,omitempty"` // "server" for a biometric the server matched
}

func purchaseViewOf(p store.Purchase) purchaseView {
	v := purchaseView{ID: p.ID, Reference: p.Reference, Status: string(p.Status), ItemID: p.Item,
		Description: p.Description, Amount: p.Amount, Currency: string(p.Currency), CallbackURL: p.CallbackURL,
		Created: formatTime(p.Created), Expires: formatTime(p.Expires),
		Transfer: p.Transfer, Refunded: p.Refunded, Reason: p.Reason, Updated: formatTime(p.Updated)}
	if len(p.Card) >= 4 {
		v.CardLast4 = p.Card[len(p.Card)-4:]
	}
	if a := p.Approval; a != nil {
		v.Approval = &approvalView{CVM: auth.FormatPolicy(protocol.CVMs(txn.CVM(a.CVM))), Counter: a.Counter,
			Device: a.Device, MatchedBy: a.MatchedBy}
	}
	return v
}

// checkPurchase validates req; the message is for the client, "" means
// valid. The amount of an item is filled in by the store's item.
func checkPurchase(req *createPurchaseRequest) string {
	if req.ItemID != "" {
		if req.Amount != 0 || req.Currency != "" {
			return "give either item_id or amount and currency, not both."
		}
		if len(req.ItemID) > maxName {
			return "item_id is too long."
		}
	} else {
		if req.Amount <= 0 || req.Amount > maxAmount {
			return "amount must be a positive number of minor units, at most 10^12 (or give item_id)."
		}
		if _, err := money.ParseCurrency(req.Currency); err != nil {
			return "currency must be a known ISO 4217 code."
		}
		if req.Description == "" {
			return "description is required for a free amount."
		}
	}
	if len(req.Description) > maxDescription || !utf8.ValidString(req.Description) {
		return fmt.Sprintf("description must be valid UTF-8 of at most %d bytes.", maxDescription)
	}
	for _, c := range req.Description {
		if c < 0x20 || c == 0x7f {
			return "description contains control characters."
		}
	}
	if req.CallbackURL != "" {
		if msg := checkWebhookURL(req.CallbackURL); msg != "" {
			return "callback_url: " + msg
		}
	}
	if req.Card != "" && txn.ValidCardNumber(req.Card) != nil {
		return "card must be a card number: 16 digits with a valid Luhn check digit."
	}
	return ""
}

// purchaseDigest hashes what a purchase request asks for: a replay of its
// idempotency key must ask for the same.
func purchaseDigest(req *createPurchaseRequest) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "cardlink purchase\x00%q\x00%d\x00%q\x00%q\x00%q", req.ItemID, req.Amount, req.Currency,
		req.Description, req.CallbackURL)
	if req.Card != "" { // absent: the digest of requests made before cards could be named
		fmt.Fprintf(h, "\x00%q", req.Card)
	}
	return h.Sum(nil)
}

func (h *handler) createPurchase(w http.ResponseWriter, r *http.Request) {
	m := merchantOf(r)
	ms, ok := h.merchants(w, r)
	if !ok {
		return
	}
	idemKey, idempotent := r.Header["Idempotency-Key"]
	if idempotent && (len(idemKey) != 1 || !validIdempotencyKey(idemKey[0])) {
		writeProblem(w, probBadRequest, "Idempotency-Key must be one header of 1 to 255 printable ASCII characters.")
		return
	}
	var req createPurchaseRequest
	if !decode(w, r, &req) {
		return
	}
	if msg := checkPurchase(&req); msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	now := h.now().UTC()
	p := store.Purchase{Merchant: m.ID, Item: req.ItemID, Description: req.Description, Amount: req.Amount,
		Currency: money.Currency(req.Currency), Digest: purchaseDigest(&req), CallbackURL: req.CallbackURL,
		Status: store.PurchasePending, Created: now, Expires: now.Add(purchaseTTL), Card: req.Card}
	if req.Card != "" {
		c, err := h.store.Card(r.Context(), req.Card)
		switch {
		case errors.Is(err, store.ErrNotFound):
			writeProblem(w, probCardUnknown, "The server knows no such card.")
			return
		case err != nil:
			h.internal(w, r, "reading card", err)
			return
		case c.Revoked():
			writeProblem(w, probCardRevoked, "The card is revoked.")
			return
		}
	}
	if idempotent {
		p.IdemKey = idemKey[0]
	}
	if req.ItemID != "" {
		it, found, err := h.item(r.Context(), ms, m.ID, req.ItemID)
		if err != nil {
			h.internal(w, r, "reading item", err)
			return
		}
		if !found {
			writeProblem(w, probInvalid, "item_id names none of your items.")
			return
		}
		p.Amount, p.Currency = it.Price, it.Currency
		if p.Description == "" {
			p.Description = it.Name
		}
	}
	for range referenceRetries {
		id, err := purchase.NewID(now, h.rand)
		if err != nil {
			h.internal(w, r, "creating purchase", err)
			return
		}
		ref, err := h.newReference()
		if err != nil {
			h.internal(w, r, "creating purchase", err)
			return
		}
		p.ID, p.Reference = id, ref
		got, replayed, err := ms.CreatePurchase(r.Context(), p)
		switch {
		case errors.Is(err, store.ErrReferenceTaken):
			continue // a pending request has this code (or a racing call took the key): draw again
		case errors.Is(err, store.ErrConflict) && !idempotent:
			continue // the drawn ID exists
		case errors.Is(err, store.ErrConflict):
			writeProblem(w, probIdempotency, "This Idempotency-Key was used for a different request.")
			return
		case errors.Is(err, store.ErrSoldOut):
			writeProblem(w, probSoldOut, "The item is out of stock.")
			return
		case errors.Is(err, store.ErrNotFound):
			writeProblem(w, probInvalid, "item_id names none of your items.")
			return
		case err != nil:
			h.internal(w, r, "storing purchase", err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		w.Header().Set("Location", "/v1/purchases/"+got.ID)
		writeJSON(w, http.StatusCreated, purchaseViewOf(got))
		return
	}
	h.internal(w, r, "storing purchase", errors.New("no free reference code after retries"))
}

// item returns the merchant's item id, found reports whether it exists.
func (h *handler) item(ctx context.Context, ms store.Merchants, merchant, id string) (store.Item, bool, error) {
	items, err := ms.Items(ctx, merchant)
	if err != nil {
		return store.Item{}, false, err
	}
	for _, it := range items {
		if it.ID == id {
			return it, true, nil
		}
	}
	return store.Item{}, false, nil
}

func (h *handler) getPurchase(w http.ResponseWriter, r *http.Request) {
	if _, p, ok := h.pathPurchase(w, r); ok {
		writeJSON(w, http.StatusOK, purchaseViewOf(p))
	}
}

// pathPurchase reads the merchant's purchase named by the path's {id}; when
// ok is false it has answered with a problem.
func (h *handler) pathPurchase(w http.ResponseWriter, r *http.Request) (store.Merchants, store.Purchase, bool) {
	ms, ok := h.merchants(w, r)
	if !ok {
		return nil, store.Purchase{}, false
	}
	p, err := ms.Purchase(r.Context(), merchantOf(r).ID, r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, probNotFound, "No such purchase request.")
		return nil, store.Purchase{}, false
	}
	if err != nil {
		h.internal(w, r, "reading purchase", err)
		return nil, store.Purchase{}, false
	}
	return ms, p, true
}
