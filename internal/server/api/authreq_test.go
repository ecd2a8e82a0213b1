package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/store"
)

func TestAuthRequestCreateAndGet(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "shop", "", "")
	r := e.do(t, "POST", "/v1/auth-requests", p.key, `{"card":"`+cardA+`","policy":"online-pin","ttl_seconds":60}`)
	wantStatus(t, "create auth request", r, http.StatusCreated)
	created := decodeBody[authRequestView](t, r)
	if want := formatTime(e.clock.Now().Add(time.Minute)); !strings.HasPrefix(created.ID, "ar_") || created.Status != "pending" ||
		created.Card != cardA || created.Policy != "online-pin" || created.Expires != want {
		t.Errorf("create = %+v, want ar_ id, pending, card %s, policy online-pin, expires %s", created, cardA, want)
	}
	if loc := r.header.Get("Location"); loc != "/v1/auth-requests/"+created.ID {
		t.Errorf("Location = %q, want /v1/auth-requests/%s", loc, created.ID)
	}
	stored, err := e.store.AuthRequest(context.Background(), created.ID)
	if err != nil || stored.RelyingParty != p.id || stored.Status != store.AuthPending {
		t.Fatalf("stored request = %+v, %v; want pending for %s", stored, err, p.id)
	}

	r = e.do(t, "GET", "/v1/auth-requests/"+created.ID, p.key, "")
	wantStatus(t, "get auth request", r, http.StatusOK)
	if got := decodeBody[authRequestView](t, r); !reflect.DeepEqual(got, created) {
		t.Errorf("get = %+v, want %+v", got, created)
	}

	// The device approves it: the result appears.
	result := `{"card":"` + cardA + `","cvm":"online-pin","counter":7}`
	e.clock.Add(time.Second)
	if err := e.store.FinishAuthRequest(context.Background(), created.ID, store.AuthApproved, []byte(result), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	r = e.do(t, "GET", "/v1/auth-requests/"+created.ID, p.key, "")
	got := decodeBody[authRequestView](t, r)
	if got.Status != "approved" || string(got.Result) != result || got.Updated != formatTime(e.clock.Now()) {
		t.Errorf("get after approval = %+v, want approved with result %s", got, result)
	}

	// Another party cannot see it, and cannot tell it exists.
	other := e.createParty(t, "other", "", "")
	r = e.do(t, "GET", "/v1/auth-requests/"+created.ID, other.key, "")
	wantProblem(t, "other party's GET", r, http.StatusNotFound, "not-found")
	if strings.Contains(string(r.body), cardA) {
		t.Errorf("other party's GET leaks the card number: %s", r.body)
	}
	wantProblem(t, "GET unknown", e.do(t, "GET", "/v1/auth-requests/ar_unknown", p.key, ""), http.StatusNotFound, "not-found")
}

func TestAuthRequestDefaultsAndPolicy(t *testing.T) {
	e := newEnv(t)
	strict := e.createParty(t, "strict", "", "online-pin,biometric")
	open := e.createParty(t, "open", "", "")
	tests := []struct {
		name       string
		p          testParty
		body       string
		wantPolicy string
		wantTTL    time.Duration
	}{
		{"party policy by default", strict, `{"card":"` + cardA + `"}`, "online-pin,biometric", defaultTTL},
		{"narrower policy", strict, `{"card":"` + cardA + `","policy":"biometric"}`, "biometric", defaultTTL},
		{"server default", open, `{"card":"` + cardA + `"}`, "", defaultTTL},
		{"any policy without party policy", open, `{"card":"` + cardB + `","policy":"offline-pin,none"}`, "none,offline-pin", defaultTTL},
		{"shortest ttl", open, `{"card":"` + cardA + `","ttl_seconds":10}`, "", 10 * time.Second},
		{"longest ttl", open, `{"card":"` + cardA + `","ttl_seconds":3600}`, "", time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/auth-requests", tt.p.key, tt.body)
			wantStatus(t, tt.name, r, http.StatusCreated)
			got := decodeBody[authRequestView](t, r)
			if want := formatTime(e.clock.Now().Add(tt.wantTTL)); got.Policy != tt.wantPolicy || got.Expires != want {
				t.Errorf("create %s = policy %q expires %s, want %q, %s", tt.body, got.Policy, got.Expires, tt.wantPolicy, want)
			}
		})
	}
}

func TestAuthRequestInvalid(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "strict", "", "online-pin")
	tests := []struct {
		name, body string
		status     int
		slug       string
	}{
		{"no card", `{}`, 422, "invalid-request"},
		{"short card", `{"card":"411111111111111"}`, 422, "invalid-request"},
		{"bad Luhn", `{"card":"4111111111111112"}`, 422, "invalid-request"},
		{"card as number", `{"card":4111111111111111}`, 400, "bad-request"},
		{"unknown card", `{"card":"4000000000000002"}`, 422, "card-unknown"},
		{"revoked card", `{"card":"` + cardRevoked + `"}`, 422, "card-revoked"},
		{"policy wider than party's", `{"card":"` + cardA + `","policy":"offline-pin"}`, 422, "invalid-request"},
		{"unknown policy", `{"card":"` + cardA + `","policy":"face"}`, 422, "invalid-request"},
		{"ttl too short", `{"card":"` + cardA + `","ttl_seconds":9}`, 422, "invalid-request"},
		{"ttl too long", `{"card":"` + cardA + `","ttl_seconds":3601}`, 422, "invalid-request"},
		{"ttl zero", `{"card":"` + cardA + `","ttl_seconds":0}`, 422, "invalid-request"},
		{"ttl fraction", `{"card":"` + cardA + `","ttl_seconds":1.5}`, 400, "bad-request"},
		{"ttl huge", `{"card":"` + cardA + `","ttl_seconds":1e30}`, 400, "bad-request"},
		{"unknown field", `{"card":"` + cardA + `","amount":5}`, 400, "bad-request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, tt.name, e.do(t, "POST", "/v1/auth-requests", p.key, tt.body), tt.status, tt.slug)
		})
	}
	pending, err := e.store.PendingAuthRequests(context.Background(), cardA, e.clock.Now())
	if err != nil || len(pending) != 0 {
		t.Errorf("PendingAuthRequests(%s) after refused creates = %d, %v; want none", cardA, len(pending), err)
	}
}

func TestAuthRequestIdempotency(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "shop", "", "")
	other := e.createParty(t, "other", "", "")
	body := `{"card":"` + cardA + `","policy":"online-pin"}`

	first := e.do(t, "POST", "/v1/auth-requests", p.key, body, "Idempotency-Key", "order-17")
	wantStatus(t, "first", first, http.StatusCreated)
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first call says Idempotent-Replayed")
	}
	a := decodeBody[authRequestView](t, first)

	e.clock.Add(time.Second)
	again := e.do(t, "POST", "/v1/auth-requests", p.key, body, "Idempotency-Key", "order-17")
	wantStatus(t, "replay", again, http.StatusCreated)
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: Idempotent-Replayed = %q, want true", again.header.Get("Idempotent-Replayed"))
	}
	if b := decodeBody[authRequestView](t, again); !reflect.DeepEqual(b, a) {
		t.Errorf("replay = %+v, want the first request %+v", b, a)
	}
	pending, err := e.store.PendingAuthRequests(context.Background(), cardA, e.clock.Now())
	if err != nil || len(pending) != 1 {
		t.Errorf("PendingAuthRequests after replay = %d, %v; want 1", len(pending), err)
	}

	// The same key for something else is refused.
	for _, b := range []string{`{"card":"` + cardB + `","policy":"online-pin"}`, `{"card":"` + cardA + `"}`} {
		r := e.do(t, "POST", "/v1/auth-requests", p.key, b, "Idempotency-Key", "order-17")
		wantProblem(t, "reuse for "+b, r, 422, "idempotency-key-reused")
	}
	// Another party's same key is its own request.
	r := e.do(t, "POST", "/v1/auth-requests", other.key, body, "Idempotency-Key", "order-17")
	wantStatus(t, "other party, same key", r, http.StatusCreated)
	if o := decodeBody[authRequestView](t, r); o.ID == a.ID || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("other party's request = %s (replayed %q), want a new one", o.ID, r.header.Get("Idempotent-Replayed"))
	}
	// Without a key, each call is new.
	x := decodeBody[authRequestView](t, e.do(t, "POST", "/v1/auth-requests", p.key, body))
	y := decodeBody[authRequestView](t, e.do(t, "POST", "/v1/auth-requests", p.key, body))
	if x.ID == y.ID || x.ID == a.ID {
		t.Errorf("keyless creates gave ids %s, %s (first %s), want distinct", x.ID, y.ID, a.ID)
	}

	// A finished request replays as it now is.
	if err := e.store.FinishAuthRequest(context.Background(), a.ID, store.AuthRefused, nil, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	fin := decodeBody[authRequestView](t, e.do(t, "POST", "/v1/auth-requests", p.key, body, "Idempotency-Key", "order-17"))
	if fin.ID != a.ID || fin.Status != "refused" {
		t.Errorf("replay after refusal = %s %s, want %s refused", fin.ID, fin.Status, a.ID)
	}

	bad := []struct{ name, value string }{
		{"empty", ""},
		{"too long", strings.Repeat("k", maxIdempotencyKey+1)},
		{"non-ASCII", "ordér"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/auth-requests", p.key, body, "Idempotency-Key", tt.value)
			wantProblem(t, "Idempotency-Key "+tt.name, r, 400, "bad-request")
		})
	}
	t.Run("twice", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/auth-requests", p.key, body, "Idempotency-Key", "a", "Idempotency-Key", "b")
		wantProblem(t, "two Idempotency-Key headers", r, 400, "bad-request")
	})
}

// TestAuthRequestIdempotencyConcurrent races many creates with one key:
// exactly one request exists afterwards and every caller sees it.
func TestAuthRequestIdempotencyConcurrent(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "shop", "", "")
	const n = 8
	ids := make([]string, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/auth-requests", strings.NewReader(`{"card":"`+cardB+`"}`))
			req.Header.Set("Authorization", "Bearer "+p.key)
			req.Header.Set("Idempotency-Key", "race")
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			var v authRequestView
			json.NewDecoder(resp.Body).Decode(&v)
			ids[i], codes[i] = v.ID, resp.StatusCode
		})
	}
	wg.Wait()
	for i := range n {
		if codes[i] != http.StatusCreated || ids[i] != ids[0] {
			t.Errorf("call %d = %d %q, want 201 %q", i, codes[i], ids[i], ids[0])
		}
	}
	pending, err := e.store.PendingAuthRequests(context.Background(), cardB, e.clock.Now())
	if err != nil || len(pending) != 1 {
		t.Errorf("PendingAuthRequests after %d racing creates = %d, %v; want 1", n, len(pending), err)
	}
}

func TestAuthRequestExpires(t *testing.T) {
	e := newEnv(t)
	p := e.createParty(t, "shop", "", "")
	a := decodeBody[authRequestView](t, e.do(t, "POST", "/v1/auth-requests", p.key, `{"card":"`+cardA+`","ttl_seconds":10}`))

	e.clock.Add(9 * time.Second)
	if got := decodeBody[authRequestView](t, e.do(t, "GET", "/v1/auth-requests/"+a.ID, p.key, "")); got.Status != "pending" {
		t.Errorf("status 1 s before expiry = %s, want pending", got.Status)
	}
	e.clock.Add(time.Second)
	for i := range 2 {
		got := decodeBody[authRequestView](t, e.do(t, "GET", "/v1/auth-requests/"+a.ID, p.key, ""))
		if got.Status != "expired" {
			t.Errorf("GET %d at expiry: status = %s, want expired", i, got.Status)
		}
	}
	stored, err := e.store.AuthRequest(context.Background(), a.ID)
	if err != nil || stored.Status != store.AuthExpired {
		t.Errorf("stored status = %v, %v; want expired", stored.Status, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.notified) != 1 || e.notified[0].ID != a.ID || e.notified[0].Status != store.AuthExpired {
		t.Errorf("notified = %+v, want one expired %s", e.notified, a.ID)
	}
}

// TestAuthRequestMany keeps every party's requests apart.
func TestAuthRequestMany(t *testing.T) {
	e := newEnv(t)
	parties := []testParty{e.createParty(t, "a", "", ""), e.createParty(t, "b", "", "")}
	owner := map[string]int{}
	for i := range 6 {
		v := decodeBody[authRequestView](t, e.do(t, "POST", "/v1/auth-requests", parties[i%2].key, fmt.Sprintf(`{"card":"%s"}`, cardA)))
		owner[v.ID] = i % 2
	}
	for id, o := range owner {
		for pi, p := range parties {
			r := e.do(t, "GET", "/v1/auth-requests/"+id, p.key, "")
			if want := map[bool]int{true: 200, false: 404}[pi == o]; r.status != want {
				t.Errorf("party %d GET %s (owner %d) = %d, want %d", pi, id, o, r.status, want)
			}
		}
	}
}
