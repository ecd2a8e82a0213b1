package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/purse"
	"cardlink/internal/store"
)

// maxBody bounds every request body.
const maxBody = 64 << 10

// Config configures the HTTP API.
type Config struct {
	// Store keeps every record; required.
	Store store.Store
	// Auth is the authentication service. Currently (2026-11-28) the API
	// needs only its policy syntax (auth.ParsePolicy), so it may be nil.
	Auth *auth.Service
	// OperatorKeyHash is the SHA-256 of the operator's API key. Empty
	// disables the operator endpoints (every call gets 401).
	OperatorKeyHash []byte
	// Notify, if set, is called (and must not block) when the API itself
	// finishes a request: a pending request found expired on read. The
	// auth service calls its own Notify for the requests it finishes.
	Notify func(ctx context.Context, req store.AuthRequest)
	// Logger gets internal errors, never secrets; default discard.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Rand makes identifiers, API keys and webhook secrets; default
	// crypto/rand.
	Rand io.Reader
	// Purchases refunds purchases and takes deposits. Nil: those
	// endpoints answer 501 not-implemented.
	Purchases *purchase.Service
	// Ledger answers balance and statement queries; normally the one
	// Purchases posts with. Nil: the account, balance, statement and
	// deposit endpoints answer 501 not-implemented.
	Ledger *ledger.Ledger
	// Purses redeems purse debit receipts. Nil: that endpoint answers
	// 501 not-implemented.
	Purses *purse.Service
}

// handler serves the API; its methods are the endpoints.
type handler struct {
	store  store.Store
	opHash []byte
	notify func(ctx context.Context, req store.AuthRequest)
	log    *slog.Logger
	now    func() time.Time
	rand   io.Reader
	mux    *http.ServeMux
	routes []route

	purchases *purchase.Service // nil: refunds and deposits are not served
	ledger    *ledger.Ledger    // nil: accounts and statements are not served
	purses    *purse.Service    // nil: purse redemptions are not served
}

// access says which API key a route needs.
type access uint8

const (
	public   access = iota // no key
	operator               // the operator key
	party                  // a relying party's key
	merchant               // a merchant's key
)

// route is one endpoint. The OpenAPI document lists exactly these.
type route struct {
	method, path string
	access       access
	serve        func(w http.ResponseWriter, r *http.Request)
}

// New returns the API's handler. It panics if cfg.Store is nil
// (programmer error). The handler is safe for concurrent use.
func New(cfg Config) http.Handler {
	return newHandler(cfg)
}

func newHandler(cfg Config) *handler {
	if cfg.Store == nil {
		panic("api: New without a Store")
	}
	h := &handler{
		store:  cfg.Store,
		opHash: cfg.OperatorKeyHash,
		notify: cfg.Notify,
		log:    cfg.Logger,
		now:    cfg.Now,
		rand:   cfg.Rand,
		mux:    http.NewServeMux(),

		purchases: cfg.Purchases,
		ledger:    cfg.Ledger,
		purses:    cfg.Purses,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.rand == nil {
		h.rand = rand.Reader
	}
	h.routes = []route{
		{"GET", "/healthz", public, h.healthz},
		{"GET", "/openapi.json", public, h.openAPI},
		{"POST", "/v1/relying-parties", operator, h.createRelyingParty},
		{"POST", "/v1/devices", operator, h.createDevice},
		{"POST", "/v1/devices/{id}/revoke", operator, h.revokeDevice},
		{"POST", "/v1/cards/{number}/revoke", operator, h.revokeCard},
		{"PUT", "/v1/cards/{number}/online-pin", operator, h.setOnlinePIN},
		{"DELETE", "/v1/cards/{number}/online-pin", operator, h.deleteOnlinePIN},
		{"PUT", "/v1/cards/{number}/biometric", operator, h.setBiometric},
		{"DELETE", "/v1/cards/{number}/biometric", operator, h.deleteBiometric},
		{"POST", "/v1/auth-requests", party, h.createAuthRequest},
		{"GET", "/v1/auth-requests/{id}", party, h.getAuthRequest},
		{"POST", "/v1/merchants", operator, h.createMerchant},
		{"POST", "/v1/items", merchant, h.createItem},
		{"GET", "/v1/items", merchant, h.listItems},
		{"POST", "/v1/purchases", merchant, h.createPurchase},
		{"GET", "/v1/purchases/{id}", merchant, h.getPurchase},
		{"POST", "/v1/purchases/{id}/refunds", merchant, h.createRefund},
		{"GET", "/v1/purchases/{id}/refunds", merchant, h.listRefunds},
		{"GET", "/v1/balance", merchant, h.getBalance},
		{"GET", "/v1/statement", merchant, h.getStatement},
		{"POST", "/v1/cards/{number}/deposits", operator, h.createDeposit},
		{"GET", "/v1/accounts/{id}", operator, h.getAccount},
		{"GET", "/v1/accounts/{id}/statement", operator, h.getAccountStatement},
		{"POST", "/v1/purse-redemptions", merchant, h.createRedemption},
	}
	for _, rt := range h.routes {
		h.mux.Handle(rt.method+" "+rt.path, h.guard(rt))
	}
	return h
}

// ServeHTTP routes the request; unknown paths and methods get problems
// rather than the mux's plain text.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		// Not found, method not allowed, or a redirect to a clean path:
		// let the mux decide, then answer its verdict in our format.
		rec := &recorder{header: http.Header{}}
		h.mux.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			writeProblem(w, probNotFound, "No such endpoint.")
			return
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeProblem(w, probMethodNotAllowed, "The endpoint does not accept "+r.Method+".")
			return
		}
		if loc := rec.header.Get("Location"); loc != "" {
			w.Header().Set("Location", loc)
		}
		w.WriteHeader(rec.status)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// recorder keeps the status and header the mux's own handlers write.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

type partyKey struct{}

// guard checks the API key the route needs, then serves it.
func (h *handler) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch rt.access {
		case operator:
			key, ok := bearer(r)
			sum := sha256.Sum256([]byte(key))
			if !ok || len(h.opHash) != sha256.Size || subtle.ConstantTimeCompare(sum[:], h.opHash) != 1 {
				writeProblem(w, probUnauthorized, "This endpoint needs the operator key.")
				return
			}
		case party:
			key, ok := bearer(r)
			if !ok {
				writeProblem(w, probUnauthorized, "This endpoint needs a relying party's API key.")
				return
			}
			sum := sha256.Sum256([]byte(key))
			rp, err := h.store.RelyingPartyByKey(r.Context(), sum[:])
			if errors.Is(err, store.ErrNotFound) {
				writeProblem(w, probUnauthorized, "This endpoint needs a relying party's API key.")
				return
			}
			if err != nil {
				h.internal(w, r, "finding relying party", err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), partyKey{}, rp))
		case merchant:
			var ok bool
			if r, ok = h.authMerchant(w, r); !ok {
				return
			}
		}
		rt.serve(w, r)
	})
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// relyingParty returns the party the guard authenticated.
func relyingParty(r *http.Request) store.RelyingParty {
	rp, ok := r.Context().Value(partyKey{}).(store.RelyingParty)
	if !ok {
		panic("api: party route without its guard")
	}
	return rp
}

// internal logs err and answers a problem that says nothing about it.
func (h *handler) internal(w http.ResponseWriter, r *http.Request, doing string, err error) {
	h.log.ErrorContext(r.Context(), "api: "+doing, "method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, probInternal, "")
}

// decode reads the request body as exactly one JSON object into v,
// rejecting unknown fields. On failure it has written the problem.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			writeProblem(w, probMediaType, "Send the body as application/json.")
			return false
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := decodeJSON(r.Body, v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeProblem(w, probTooLarge, fmt.Sprintf("The body may be at most %d bytes.", maxBody))
			return false
		}
		writeProblem(w, probBadRequest, err.Error())
		return false
	}
	return true
}

// decodeJSON decodes one JSON object from rd into v, rejecting unknown
// fields and trailing data. Its errors are safe to show the client.
func decodeJSON(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooLarge):
			return err
		case errors.Is(err, io.EOF):
			return errors.New("the body is empty; want a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("the body is truncated JSON")
		case errors.As(err, &syn):
			return fmt.Errorf("the body is not valid JSON (at byte %d)", syn.Offset)
		case errors.As(err, &typ):
			if typ.Field == "" {
				return errors.New("the body must be a JSON object")
			}
			return fmt.Errorf("field %q must be a JSON %s", typ.Field, jsonKind(typ.Type.Kind().String()))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return errors.New("the body is not a valid JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		return errors.New("the body has data after the JSON object")
	}
	return nil
}

// jsonKind names a Go kind as a JSON type.
func jsonKind(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"), strings.HasPrefix(k, "float"):
		return "number"
	case k == "bool":
		return "boolean"
	case k == "slice", k == "array":
		return "array"
	case k == "map", k == "struct":
		return "object"
	}
	return k
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // our own response types always marshal
		panic(err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// newID returns prefix followed by 16 random bytes in hex.
func (h *handler) newID(prefix string) (string, error) {
	b, err := h.random(16)
	if err != nil {
		return "", err
	}
	return prefix + fmt.Sprintf("%x", b), nil
}

// credentials are what a new API client (relying party, merchant) gets:
// an id, an API key shown to it once (only its SHA-256 is kept), and a
// secret for signing webhooks to it.
type credentials struct {
	id      string
	key     string
	keyHash []byte
	secret  []byte
}

// newCredentials draws credentials for a client whose id starts with
// prefix.
func (h *handler) newCredentials(prefix string) (credentials, error) {
	id, err := h.newID(prefix)
	if err != nil {
		return credentials{}, err
	}
	keyBytes, err := h.random(32)
	if err != nil {
		return credentials{}, err
	}
	secret, err := h.random(32)
	if err != nil {
		return credentials{}, err
	}
	key := apiKeyPrefix + base64.RawURLEncoding.EncodeToString(keyBytes)
	sum := sha256.Sum256([]byte(key))
	return credentials{id: id, key: key, keyHash: sum[:], secret: secret}, nil
}

// random returns n bytes from the configured source.
func (h *handler) random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(h.rand, b); err != nil {
		return nil, fmt.Errorf("reading random bytes: %w", err)
	}
	return b, nil
}

// healthz answers that the server runs and its store answers.
func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := h.store.ServerKeys(ctx); err != nil {
		h.log.ErrorContext(r.Context(), "api: health check", "err", err)
		writeProblem(w, probNotReady, "The store does not answer.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
