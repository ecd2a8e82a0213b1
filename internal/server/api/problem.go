package api

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ProblemBase is the prefix of every problem type URI the API returns. The
// URIs are stable identifiers to branch on; nothing is served there.
const ProblemBase = "https://cardlink.dev/problems/"

// Problem is an RFC 9457 problem details object, the body of every error
// response (Content-Type application/problem+json).
type Problem struct {
	Type   string `json:"type"`             // ProblemBase + a slug such as "unauthorized"
	Title  string `json:"title"`            // short summary of the type; the same for every occurrence
	Status int    `json:"status"`           // the HTTP status code
	Detail string `json:"detail,omitempty"` // what went wrong this time, safe to show a user
}

// problemKind is one problem type: its slug, title and status.
type problemKind struct {
	slug   string
	title  string
	status int
}

// The problem types, append only: their slugs are contract.
var (
	probBadRequest       = problemKind{"bad-request", "Malformed request", http.StatusBadRequest}
	probUnauthorized     = problemKind{"unauthorized", "Missing or invalid API key", http.StatusUnauthorized}
	probNotFound         = problemKind{"not-found", "Not found", http.StatusNotFound}
	probMethodNotAllowed = problemKind{"method-not-allowed", "Method not allowed", http.StatusMethodNotAllowed}
	probConflict         = problemKind{"conflict", "Conflict", http.StatusConflict}
	probTooLarge         = problemKind{"too-large", "Request body too large", http.StatusRequestEntityTooLarge}
	probMediaType        = problemKind{"unsupported-media-type", "Unsupported media type", http.StatusUnsupportedMediaType}
	probInvalid          = problemKind{"invalid-request", "Invalid request", http.StatusUnprocessableEntity}
	probIdempotency      = problemKind{"idempotency-key-reused", "Idempotency key reused with a different request", http.StatusUnprocessableEntity}
	probCardUnknown      = problemKind{"card-unknown", "Unknown card", http.StatusUnprocessableEntity}
	probCardRevoked      = problemKind{"card-revoked", "Card revoked", http.StatusUnprocessableEntity}
	probNotReady         = problemKind{"not-ready", "Server not ready", http.StatusServiceUnavailable}
	probInternal         = problemKind{"internal", "Internal server error", http.StatusInternalServerError}
	probSoldOut          = problemKind{"sold-out", "Item sold out", http.StatusConflict}
	probNotImplemented   = problemKind{"not-implemented", "Not implemented by this server", http.StatusNotImplemented}
	probNotPaid          = problemKind{"not-paid", "Purchase not paid", http.StatusConflict}
	probRefundTooLarge   = problemKind{"refund-too-large", "Refund above the amount paid", http.StatusUnprocessableEntity}
	probRefundFailed     = problemKind{"refund-failed", "Refund refused by the ledger", http.StatusConflict}
)

// problem builds the Problem of kind k with detail.
func (k problemKind) problem(detail string) Problem {
	return Problem{Type: ProblemBase + k.slug, Title: k.title, Status: k.status, Detail: detail}
}

// writeProblem writes the problem of kind k with detail.
func writeProblem(w http.ResponseWriter, k problemKind, detail string) {
	p := k.problem(detail)
	body, err := json.Marshal(p)
	if err != nil { // cannot happen: only strings and an int
		panic(err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if k.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="cardlink"`)
	}
	w.WriteHeader(k.status)
	w.Write(append(body, '\n'))
}
