package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"cardlink/internal/server/auth"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Lifetimes of an authentication request.
const (
	defaultTTL = 5 * time.Minute
	minTTL     = 10 * time.Second
	maxTTL     = time.Hour
	// maxIdempotencyKey bounds the Idempotency-Key header.
	maxIdempotencyKey = 255
)

// createAuthRequestRequest is the body of POST /v1/auth-requests.
type createAuthRequestRequest struct {
	Card       string `json:"card"`
	Policy     string `json:"policy,omitempty"`
	TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
}

// authRequestView is how the API shows an authentication request, in
// responses and webhook calls alike.
type authRequestView struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Card    string          `json:"card"`
	Policy  string          `json:"policy,omitempty"`
	Created string          `json:"created"`
	Updated string          `json:"updated"`
	Expires string          `json:"expires"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// viewOf is the view of r. A result that is not JSON is left out.
func viewOf(r store.AuthRequest) authRequestView {
	v := authRequestView{
		ID:      r.ID,
		Status:  r.Status.String(),
		Card:    r.Card,
		Policy:  r.Policy,
		Created: formatTime(r.Created),
		Updated: formatTime(r.Updated),
		Expires: formatTime(r.Expires),
	}
	if len(r.Result) > 0 && json.Valid(r.Result) {
		v.Result = json.RawMessage(r.Result)
	}
	return v
}

// checked is a validated create request: what the store gets.
type checked struct {
	card   string
	policy string
	ttl    time.Duration
}

// checkAuthRequest validates req for the party rp. The message is for the
// client; "" means valid.
func checkAuthRequest(req *createAuthRequestRequest, rp store.RelyingParty) (checked, string) {
	if err := txn.ValidCardNumber(req.Card); err != nil {
		return checked{}, "card must be a 16-digit card number with a valid check digit."
	}
	c := checked{card: req.Card, policy: rp.Policy, ttl: defaultTTL}
	if req.Policy != "" {
		set, err := auth.ParsePolicy(req.Policy)
		if err != nil {
			return checked{}, "policy: " + err.Error()
		}
		if rp.Policy != "" {
			allowed, err := auth.ParsePolicy(rp.Policy)
			if err == nil && set&^allowed != 0 {
				return checked{}, "policy may only name methods of the relying party's policy (" + rp.Policy + ")."
			}
		}
		c.policy = auth.FormatPolicy(set)
	}
	if req.TTLSeconds != nil {
		s := *req.TTLSeconds
		if s < int64(minTTL/time.Second) || s > int64(maxTTL/time.Second) {
			return checked{}, "ttl_seconds must be between 10 and 3600."
		}
		c.ttl = time.Duration(s) * time.Second
	}
	return c, ""
}

// idempotentID is the request ID for a party's idempotency key: the same
// key from the same party always names the same request, on any server
// instance, and no other party can reach it.
func idempotentID(party, key string) string {
	h := sha256.New()
	h.Write([]byte("cardlink idempotency key\x00"))
	h.Write([]byte(party))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return "ar_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// validIdempotencyKey reports whether k is 1 to 255 printable ASCII bytes.
func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func (h *handler) createAuthRequest(w http.ResponseWriter, r *http.Request) {
	rp := relyingParty(r)
	idemKey, idempotent := r.Header["Idempotency-Key"]
	if idempotent && (len(idemKey) != 1 || !validIdempotencyKey(idemKey[0])) {
		writeProblem(w, probBadRequest, "Idempotency-Key must be one header of 1 to 255 printable ASCII characters.")
		return
	}
	var req createAuthRequestRequest
	if !decode(w, r, &req) {
		return
	}
	c, msg := checkAuthRequest(&req, rp)
	if msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	var id string
	if idempotent {
		id = idempotentID(rp.ID, idemKey[0])
		if prev, err := h.store.AuthRequest(r.Context(), id); err == nil {
			h.replay(w, r, rp, prev, c)
			return
		} else if !errors.Is(err, store.ErrNotFound) {
			h.internal(w, r, "reading auth request", err)
			return
		}
	} else {
		var err error
		if id, err = h.newID("ar_"); err != nil {
			h.internal(w, r, "creating auth request", err)
			return
		}
	}
	switch card, err := h.store.Card(r.Context(), c.card); {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probCardUnknown, "The server knows no card with this number.")
		return
	case err != nil:
		h.internal(w, r, "reading card", err)
		return
	case card.Revoked():
		writeProblem(w, probCardRevoked, "The card is revoked.")
		return
	}
	now := h.now().UTC()
	ar := store.AuthRequest{
		ID:           id,
		RelyingParty: rp.ID,
		Card:         c.card,
		Policy:       c.policy,
		Status:       store.AuthPending,
		Expires:      now.Add(c.ttl),
	}
	err := h.store.CreateAuthRequest(r.Context(), ar, now)
	if idempotent && errors.Is(err, store.ErrConflict) {
		// A concurrent call with the same key won the race.
		prev, err := h.store.AuthRequest(r.Context(), id)
		if err != nil {
			h.internal(w, r, "reading auth request", err)
			return
		}
		h.replay(w, r, rp, prev, c)
		return
	}
	if err != nil {
		h.internal(w, r, "storing auth request", err)
		return
	}
	ar.Created, ar.Updated = now, now
	w.Header().Set("Location", "/v1/auth-requests/"+id)
	writeJSON(w, http.StatusCreated, viewOf(ar))
}

// replay answers a repeated idempotent create with the request it made,
// as it is now, if the repeat asks for the same thing.
func (h *handler) replay(w http.ResponseWriter, r *http.Request, rp store.RelyingParty, prev store.AuthRequest, c checked) {
	if prev.RelyingParty != rp.ID || prev.Card != c.card || prev.Policy != c.policy {
		writeProblem(w, probIdempotency, "This Idempotency-Key was used for a different request.")
		return
	}
	prev, ok := h.expire(w, r, prev)
	if !ok {
		return
	}
	w.Header().Set("Idempotent-Replayed", "true")
	w.Header().Set("Location", "/v1/auth-requests/"+prev.ID)
	writeJSON(w, http.StatusCreated, viewOf(prev))
}

func (h *handler) getAuthRequest(w http.ResponseWriter, r *http.Request) {
	rp := relyingParty(r)
	ar, err := h.store.AuthRequest(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) || (err == nil && ar.RelyingParty != rp.ID) {
		// Another party's request does not exist for this one.
		writeProblem(w, probNotFound, "No such authentication request.")
		return
	}
	if err != nil {
		h.internal(w, r, "reading auth request", err)
		return
	}
	ar, ok := h.expire(w, r, ar)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, viewOf(ar))
}

// expire finishes ar as expired if it is pending past its lifetime, and
// returns it as it now is. On failure it has written the problem.
func (h *handler) expire(w http.ResponseWriter, r *http.Request, ar store.AuthRequest) (store.AuthRequest, bool) {
	now := h.now().UTC()
	if ar.Status != store.AuthPending || now.Before(ar.Expires) {
		return ar, true
	}
	err := h.store.FinishAuthRequest(r.Context(), ar.ID, store.AuthExpired, nil, now)
	if err != nil && !errors.Is(err, store.ErrConflict) {
		h.internal(w, r, "expiring auth request", err)
		return ar, false
	}
	won := err == nil
	ar, err = h.store.AuthRequest(r.Context(), ar.ID)
	if err != nil {
		h.internal(w, r, "reading auth request", err)
		return ar, false
	}
	if won && h.notify != nil {
		h.notify(r.Context(), ar)
	}
	return ar, true
}
