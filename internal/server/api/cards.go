package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"cardlink/internal/server/auth"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Limits and defaults of a card's online PIN and enrolled biometric.
const (
	defaultPINTries = 3
	maxPINTries     = 10
)

// setOnlinePINRequest is the body of PUT /v1/cards/{number}/online-pin.
// The PIN is hashed at once and never logged or echoed.
type setOnlinePINRequest struct {
	PIN      string `json:"pin"`
	MaxTries *int   `json:"max_tries,omitempty"`
}

// setBiometricRequest is the body of PUT /v1/cards/{number}/biometric.
type setBiometricRequest struct {
	Template  []byte `json:"template"` // standard base64 in JSON
	Threshold *int   `json:"threshold,omitempty"`
	MaxTries  *int   `json:"max_tries,omitempty"`
}

// orDefault returns *p, or def when p is nil.
func orDefault(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// knownCard checks that the card in the path is known and not revoked; on
// failure it has written the problem.
func (h *handler) knownCard(w http.ResponseWriter, r *http.Request) (string, bool) {
	number := r.PathValue("number")
	if txn.ValidCardNumber(number) != nil {
		writeProblem(w, probNotFound, "No such card.")
		return "", false
	}
	c, err := h.store.Card(r.Context(), number)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such card.")
		return "", false
	case err != nil:
		h.internal(w, r, "reading card", err)
		return "", false
	case c.Revoked():
		writeProblem(w, probCardRevoked, "The card is revoked.")
		return "", false
	}
	return number, true
}

// noContent answers 204.
func noContent(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// setOnlinePIN sets (or replaces) the card's online PIN: a slow salted
// hash (auth.NewPIN) with a fresh try counter.
func (h *handler) setOnlinePIN(w http.ResponseWriter, r *http.Request) {
	var req setOnlinePINRequest
	if !decode(w, r, &req) {
		return
	}
	tries := orDefault(req.MaxTries, defaultPINTries)
	if tries < 1 || tries > maxPINTries {
		writeProblem(w, probInvalid, fmt.Sprintf("max_tries must be between 1 and %d.", maxPINTries))
		return
	}
	number, ok := h.knownCard(w, r)
	if !ok {
		return
	}
	p, err := auth.NewPIN(number, req.PIN, tries)
	if errors.Is(err, auth.ErrMalformedPIN) {
		writeProblem(w, probInvalid, "pin must be 4 to 12 decimal digits.")
		return
	}
	if err != nil {
		h.internal(w, r, "making PIN record", err)
		return
	}
	switch err := h.store.SetPIN(r.Context(), p); {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such card.")
		return
	case err != nil:
		h.internal(w, r, "storing PIN", err)
		return
	}
	noContent(w)
}

// setBiometric enrolls (or replaces) the card's template for server-side
// matching, with a fresh try counter.
func (h *handler) setBiometric(w http.ResponseWriter, r *http.Request) {
	var req setBiometricRequest
	if !decode(w, r, &req) {
		return
	}
	threshold := orDefault(req.Threshold, auth.DefaultBiometricThreshold)
	tries := orDefault(req.MaxTries, auth.DefaultBiometricTries)
	switch {
	case len(req.Template) != auth.BiometricSize:
		writeProblem(w, probInvalid, fmt.Sprintf("template must be %d bytes in base64.", auth.BiometricSize))
		return
	case threshold < 0 || threshold > auth.MaxBiometricThreshold:
		writeProblem(w, probInvalid, fmt.Sprintf("threshold must be between 0 and %d bits.", auth.MaxBiometricThreshold))
		return
	case tries < 1 || tries > auth.MaxBiometricTries:
		writeProblem(w, probInvalid, fmt.Sprintf("max_tries must be between 1 and %d.", auth.MaxBiometricTries))
		return
	}
	number, ok := h.knownCard(w, r)
	if !ok {
		return
	}
	b, err := auth.NewBiometric(number, req.Template, threshold, tries)
	if err != nil { // checked above
		h.internal(w, r, "making biometric record", err)
		return
	}
	switch err := h.store.SetBiometric(r.Context(), b); {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, "No such card.")
		return
	case err != nil:
		h.internal(w, r, "storing biometric", err)
		return
	}
	noContent(w)
}

// deleteOnlinePIN removes the card's online PIN: authentications with
// CVM online PIN are refused from then on.
func (h *handler) deleteOnlinePIN(w http.ResponseWriter, r *http.Request) {
	h.deleteCredential(w, r, "online PIN", h.store.DeletePIN)
}

// deleteBiometric removes the card's enrolled template: server-side
// matching is refused for it from then on.
func (h *handler) deleteBiometric(w http.ResponseWriter, r *http.Request) {
	h.deleteCredential(w, r, "enrolled biometric", h.store.DeleteBiometric)
}

// deleteCredential deletes what del removes for the card in the path:
// 204, or 404 when the card is unknown or has none. A revoked card's may
// be removed too.
func (h *handler) deleteCredential(w http.ResponseWriter, r *http.Request, what string, del func(ctx context.Context, card string) error) {
	number := r.PathValue("number")
	notFound := "No such card, or it has no " + what + "."
	if txn.ValidCardNumber(number) != nil {
		writeProblem(w, probNotFound, notFound)
		return
	}
	switch err := del(r.Context(), number); {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, probNotFound, notFound)
		return
	case err != nil:
		h.internal(w, r, "deleting "+what, err)
		return
	}
	noContent(w)
}
