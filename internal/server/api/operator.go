package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"cardlink/internal/server/auth"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Limits on operator input.
const (
	maxName       = 200  // bytes of a name
	maxWebhookURL = 2048 // bytes of a webhook URL
	staticKeySize = 32   // a Noise (Curve25519) static public key
	apiKeyPrefix  = "clk_"
)

// createRelyingPartyRequest is the body of POST /v1/relying-parties.
type createRelyingPartyRequest struct {
	Name       string `json:"name"`
	WebhookURL string `json:"webhook_url,omitempty"`
	Policy     string `json:"policy,omitempty"`
}

// createRelyingPartyResponse carries the party's secrets, shown once.
type createRelyingPartyResponse struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	WebhookURL    string `json:"webhook_url,omitempty"`
	Policy        string `json:"policy,omitempty"`
	APIKey        string `json:"api_key"`
	WebhookSecret string `json:"webhook_secret"` // standard base64
	Created       string `json:"created"`
}

func (h *handler) createRelyingParty(w http.ResponseWriter, r *http.Request) {
	var req createRelyingPartyRequest
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
	set, err := auth.ParsePolicy(req.Policy)
	if err != nil {
		writeProblem(w, probInvalid, "policy: "+err.Error())
		return
	}
	c, err := h.newCredentials("rp_")
	if err != nil {
		h.internal(w, r, "creating relying party", err)
		return
	}
	now := h.now().UTC()
	rp := store.RelyingParty{
		ID:            c.id,
		Name:          req.Name,
		KeyHash:       c.keyHash,
		WebhookURL:    req.WebhookURL,
		WebhookSecret: c.secret,
		Policy:        auth.FormatPolicy(set),
	}
	if err := h.store.PutRelyingParty(r.Context(), rp, now); err != nil {
		h.internal(w, r, "storing relying party", err)
		return
	}
	writeJSON(w, http.StatusCreated, createRelyingPartyResponse{
		ID:            rp.ID,
		Name:          rp.Name,
		WebhookURL:    rp.WebhookURL,
		Policy:        rp.Policy,
		APIKey:        c.key,
		WebhookSecret: base64.StdEncoding.EncodeToString(c.secret),
		Created:       formatTime(now),
	})
}

// checkName returns why name is not acceptable, or "".
func checkName(name string) string {
	switch {
	case name == "":
		return "name is required."
	case len(name) > maxName:
		return "name is too long."
	case !utf8.ValidString(name):
		return "name is not valid UTF-8."
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return "name contains control characters."
		}
	}
	return ""
}

// checkWebhookURL returns why u is not an acceptable webhook URL, or "".
func checkWebhookURL(u string) string {
	if len(u) > maxWebhookURL {
		return "webhook_url is too long."
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.User != nil || p.Fragment != "" {
		return "webhook_url must be an absolute http or https URL without user info or fragment."
	}
	return ""
}

// createDeviceRequest is the body of POST /v1/devices.
type createDeviceRequest struct {
	Name      string `json:"name"`
	StaticKey []byte `json:"static_key"` // standard base64 in JSON
}

// deviceResponse describes a device; ServerKeys only when it is created.
type deviceResponse struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	StaticKey  []byte   `json:"static_key"`
	Created    string   `json:"created"`
	RevokedAt  string   `json:"revoked_at,omitempty"`
	ServerKeys [][]byte `json:"server_keys,omitempty"`
}

func (h *handler) createDevice(w http.ResponseWriter, r *http.Request) {
	var req createDeviceRequest
	if !decode(w, r, &req) {
		return
	}
	if msg := checkName(req.Name); msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	if len(req.StaticKey) != staticKeySize {
		writeProblem(w, probInvalid, "static_key must be 32 bytes in base64.")
		return
	}
	keys, err := h.store.ServerKeys(r.Context())
	if err != nil {
		h.internal(w, r, "listing server keys", err)
		return
	}
	if len(keys) == 0 {
		writeProblem(w, probNotReady, "The server has no static key yet.")
		return
	}
	id, err := h.newID("dev_")
	if err != nil {
		h.internal(w, r, "creating device", err)
		return
	}
	now := h.now().UTC()
	d := store.Device{ID: id, StaticKey: req.StaticKey, Name: req.Name}
	switch err := h.store.AddDevice(r.Context(), d, now); {
	case errors.Is(err, store.ErrConflict):
		writeProblem(w, probConflict, "A device with this static key is already registered.")
		return
	case err != nil:
		h.internal(w, r, "adding device", err)
		return
	}
	resp := deviceResponse{ID: id, Name: d.Name, StaticKey: d.StaticKey, Created: formatTime(now)}
	for _, k := range keys {
		resp.ServerKeys = append(resp.ServerKeys, k.Public)
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (h *handler) revokeDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	switch err := h.store.RevokeDevice(r.Context(), id, h.now().UTC()); {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such device.")
		return
	case err != nil:
		h.internal(w, r, "revoking device", err)
		return
	}
	d, err := h.store.Device(r.Context(), id)
	if err != nil {
		h.internal(w, r, "reading device", err)
		return
	}
	writeJSON(w, http.StatusOK, deviceResponse{
		ID: d.ID, Name: d.Name, StaticKey: d.StaticKey,
		Created: formatTime(d.Created), RevokedAt: formatTime(d.RevokedAt),
	})
}

// cardResponse describes a card's status.
type cardResponse struct {
	Number    string `json:"number"`
	Counter   uint32 `json:"counter"`
	Created   string `json:"created"`
	RevokedAt string `json:"revoked_at,omitempty"`
	ClonedAt  string `json:"cloned_at,omitempty"`
}

func (h *handler) revokeCard(w http.ResponseWriter, r *http.Request) {
	number := r.PathValue("number")
	if txn.ValidCardNumber(number) != nil {
		writeProblem(w, probNotFound, "No such card.")
		return
	}
	switch err := h.store.RevokeCard(r.Context(), number, h.now().UTC()); {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such card.")
		return
	case err != nil:
		h.internal(w, r, "revoking card", err)
		return
	}
	c, err := h.store.Card(r.Context(), number)
	if err != nil {
		h.internal(w, r, "reading card", err)
		return
	}
	writeJSON(w, http.StatusOK, cardResponse{
		Number: c.Number, Counter: c.Counter, Created: formatTime(c.Created),
		RevokedAt: formatTime(c.RevokedAt), ClonedAt: formatTime(c.ClonedAt),
	})
}

// formatTime is t in RFC 3339 UTC, or "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
