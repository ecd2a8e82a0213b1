package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

// wait bounds every wait for a background event.
const wait = 20 * time.Second

// call is one webhook call a receiver got.
type call struct {
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint on loopback that answers with the given
// statuses in turn (the last one repeats) and reports every call.
type receiver struct {
	srv      *httptest.Server
	calls    chan call
	mu       sync.Mutex
	statuses []int
	n        int
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	t.Helper()
	rc := &receiver{calls: make(chan call, 100), statuses: statuses}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		status := rc.statuses[min(rc.n, len(rc.statuses)-1)]
		rc.n++
		rc.mu.Unlock()
		rc.calls <- call{r.Header.Clone(), b}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// next returns the next call, failing the test after a bounded wait.
func (rc *receiver) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-rc.calls:
		return c
	case <-time.After(wait):
		t.Fatalf("no webhook call within %v", wait)
		return call{}
	}
}

// count is how many calls the receiver got.
func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n
}

func putParty(t *testing.T, st store.Store, id, url string, secret []byte) {
	t.Helper()
	rp := store.RelyingParty{ID: id, Name: id, KeyHash: []byte("hash of " + id), WebhookURL: url, WebhookSecret: secret}
	if err := st.PutRelyingParty(context.Background(), rp, time.Now()); err != nil {
		t.Fatalf("PutRelyingParty: %v", err)
	}
}

// newTestNotifier makes a Notifier with instant backoff that the test
// closes, and checks that none of its goroutines outlive Close.
func newTestNotifier(t *testing.T, cfg NotifierConfig) *Notifier {
	t.Helper()
	if cfg.Backoff == nil {
		cfg.Backoff = func(int) time.Duration { return time.Millisecond }
	}
	n := NewNotifier(context.Background(), cfg)
	t.Cleanup(func() {
		n.Close()
		if leaked := notifierGoroutines(); leaked != 0 {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d notifier goroutines left after Close, want 0\n%s", leaked, buf)
		}
	})
	return n
}

// notifierGoroutines counts goroutines running the Notifier's code. A
// worker that has called wg.Done may still be returning when Close
// returns, so it yields (boundedly) until the count is zero.
func notifierGoroutines() int {
	buf := make([]byte, 1<<20)
	n := 0
	for range 1000 {
		n = bytes.Count(buf[:runtime.Stack(buf, true)], []byte("api.(*Notifier).worker"))
		if n == 0 {
			break
		}
		runtime.Gosched()
	}
	return n
}

// checkSignature verifies a call's signature independently of
// VerifySignature.
func checkSignature(t *testing.T, c call, secret []byte, at time.Time) {
	t.Helper()
	h := c.header.Get(SignatureHeader)
	ts, sig, ok := strings.Cut(h, ",v1=")
	if !ok || ts != "t="+strconv.FormatInt(at.Unix(), 10) {
		t.Fatalf("%s = %q, want t=%d,v1=…", SignatureHeader, h, at.Unix())
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strings.TrimPrefix(ts, "t=") + "."))
	m.Write(c.body)
	if want := hex.EncodeToString(m.Sum(nil)); sig != want {
		t.Errorf("v1 = %s, want %s", sig, want)
	}
	if err := VerifySignature(secret, c.body, h, at, time.Minute); err != nil {
		t.Errorf("VerifySignature(call) = %v, want nil", err)
	}
}

func finished(id, party string) store.AuthRequest {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	return store.AuthRequest{
		ID: id, RelyingParty: party, Card: cardA, Policy: "online-pin", Status: store.AuthApproved,
		Result:  []byte(`{"card":"` + cardA + `","cvm":"online-pin","counter":3}`),
		Created: at, Updated: at.Add(time.Second), Expires: at.Add(time.Minute),
	}
}

func TestNotifierDeliversSigned(t *testing.T) {
	st := servertest.SQLite(t)
	rc := newReceiver(t, 500, 503, 200)
	secret := []byte("0123456789abcdef0123456789abcdef")
	putParty(t, st, "rp_1", rc.srv.URL+"/hook", secret)
	at := time.Unix(1_800_000_000, 0)
	n := newTestNotifier(t, NotifierConfig{Store: st, Now: func() time.Time { return at }, Attempts: 5})

	req := finished("ar_1", "rp_1")
	n.Notify(context.Background(), req)
	req.Result[0] = 'X' // the caller may reuse its buffers

	var calls []call
	for range 3 {
		calls = append(calls, rc.next(t))
	}
	n.Close() // waits: no call can follow
	if got := rc.count(); got != 3 {
		t.Errorf("calls = %d, want 3 (two 5xx retried, then success)", got)
	}
	for i, c := range calls {
		checkSignature(t, c, secret, at)
		if !bytes.Equal(c.body, calls[0].body) {
			t.Errorf("call %d body = %s, want %s", i, c.body, calls[0].body)
		}
		if c.header.Get(EventHeader) != "auth_request.finished" || c.header.Get("Content-Type") != "application/json" {
			t.Errorf("call %d headers = %v", i, c.header)
		}
	}
	var v authRequestView
	if err := json.Unmarshal(calls[0].body, &v); err != nil {
		t.Fatalf("webhook body %s: %v", calls[0].body, err)
	}
	if v.ID != "ar_1" || v.Status != "approved" || v.Card != cardA || !strings.Contains(string(v.Result), `"counter":3`) {
		t.Errorf("webhook body = %s, want the approved request with its result", calls[0].body)
	}
	if err := VerifySignature([]byte("another secret"), calls[0].body, calls[0].header.Get(SignatureHeader), at, time.Minute); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("VerifySignature with the wrong secret = %v, want ErrSignatureMismatch", err)
	}
}

func TestNotifierStops(t *testing.T) {
	tests := []struct {
		name      string
		statuses  []int
		attempts  int
		wantCalls int
	}{
		{"gives up after attempts", []int{500}, 3, 3},
		{"429 retried", []int{429, 429, 204}, 5, 3},
		{"client error not retried", []int{400}, 5, 1},
		{"gone not retried", []int{410}, 5, 1},
		{"redirect not followed", []int{302}, 5, 1},
		{"first success", []int{200}, 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := servertest.SQLite(t)
			rc := newReceiver(t, tt.statuses...)
			putParty(t, st, "rp_1", rc.srv.URL, []byte("s"))
			// The marker party is served after rp_1 by the only worker, so
			// its call proves rp_1's delivery is over.
			marker := newReceiver(t, 200)
			putParty(t, st, "rp_marker", marker.srv.URL, []byte("s"))
			n := newTestNotifier(t, NotifierConfig{Store: st, Attempts: tt.attempts, Workers: 1})
			n.Notify(context.Background(), finished("ar_1", "rp_1"))
			n.Notify(context.Background(), finished("ar_2", "rp_marker"))
			marker.next(t)
			n.Close()
			if got := rc.count(); got != tt.wantCalls {
				t.Errorf("calls answered %v = %d, want %d", tt.statuses, got, tt.wantCalls)
			}
		})
	}
}

func TestNotifierSkips(t *testing.T) {
	st := servertest.SQLite(t)
	rc := newReceiver(t, 200)
	putParty(t, st, "rp_polls", "", []byte("s"))
	putParty(t, st, "rp_hook", rc.srv.URL, []byte("s"))
	n := newTestNotifier(t, NotifierConfig{Store: st, Workers: 1})
	n.Notify(context.Background(), finished("ar_1", "rp_polls"))   // no webhook
	n.Notify(context.Background(), finished("ar_2", "rp_unknown")) // no party
	n.Notify(context.Background(), finished("ar_3", "rp_hook"))
	c := rc.next(t)
	n.Close()
	if !bytes.Contains(c.body, []byte(`"ar_3"`)) || rc.count() != 1 {
		t.Errorf("calls = %d, first %s; want only ar_3's", rc.count(), c.body)
	}
}

// TestNotifierNeverBlocks fills the queue behind a receiver that does not
// answer: Notify still returns, and Close abandons the stuck call.
func TestNotifierNeverBlocks(t *testing.T) {
	st := servertest.SQLite(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	putParty(t, st, "rp_1", srv.URL, []byte("s"))
	n := newTestNotifier(t, NotifierConfig{Store: st, Workers: 1, Queue: 2})

	n.Notify(context.Background(), finished("ar_0", "rp_1"))
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatalf("no webhook call within %v", wait)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 { // far more than the queue holds
			n.Notify(context.Background(), finished("ar_"+strconv.Itoa(i+1), "rp_1"))
		}
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("Notify blocked with a full queue")
	}
	closed := make(chan struct{})
	go func() { n.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatalf("Close did not return while a call was stuck")
	}
	n.Notify(context.Background(), finished("ar_after", "rp_1")) // dropped, no panic
	if got := len(entered); got != 0 {
		t.Errorf("%d more calls started after the first, want 0 (one worker, stuck)", got)
	}
}

// TestNotifierContext stops the workers with the context given to
// NewNotifier.
func TestNotifierContext(t *testing.T) {
	st := servertest.SQLite(t)
	ctx, cancel := context.WithCancel(context.Background())
	n := NewNotifier(ctx, NotifierConfig{Store: st})
	cancel()
	n.Notify(context.Background(), finished("ar_1", "rp_1")) // dropped
	n.Close()
	if leaked := notifierGoroutines(); leaked != 0 {
		t.Errorf("%d notifier goroutines after cancel and Close, want 0", leaked)
	}
}

func TestVerifySignature(t *testing.T) {
	secret := []byte("secret")
	body := []byte(`{"id":"ar_1"}`)
	at := time.Unix(1_800_000_000, 0)
	good := Sign(secret, body, at)
	_, goodSig, _ := strings.Cut(good, ",v1=")
	tests := []struct {
		name   string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", good, body, at, nil},
		{"valid at tolerance", good, body, at.Add(5 * time.Minute), nil},
		{"valid with spaces", "t=1800000000, v1=" + goodSig, body, at, nil},
		{"rotated secret", "t=1800000000,v1=" + strings.Repeat("00", 32) + ",v1=" + goodSig, body, at, nil},
		{"unknown key ignored", good + ",v0=abc", body, at, nil},
		{"tampered body", good, []byte(`{"id":"ar_2"}`), at, ErrSignatureMismatch},
		{"other time", "t=1800000001,v1=" + goodSig, body, at, ErrSignatureMismatch},
		{"stale", good, body, at.Add(5*time.Minute + time.Second), ErrSignatureStale},
		{"future", good, body, at.Add(-5*time.Minute - time.Second), ErrSignatureStale},
		{"empty", "", body, at, ErrSignatureMalformed},
		{"no v1", "t=1800000000", body, at, ErrSignatureMalformed},
		{"no t", "v1=" + goodSig, body, at, ErrSignatureMalformed},
		{"two t", "t=1,t=1800000000,v1=" + goodSig, body, at, ErrSignatureMalformed},
		{"short v1", "t=1800000000,v1=abcd", body, at, ErrSignatureMalformed},
		{"v1 not hex", "t=1800000000,v1=" + strings.Repeat("zz", 32), body, at, ErrSignatureMalformed},
		{"t not a number", "t=soon,v1=" + goodSig, body, at, ErrSignatureMalformed},
		{"t negative", "t=-1,v1=" + goodSig, body, at, ErrSignatureMalformed},
		{"t signed", "t=+1800000000,v1=" + goodSig, body, at, ErrSignatureMalformed},
		{"no equals", "t1800000000,v1=" + goodSig, body, at, ErrSignatureMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifySignature(secret, tt.body, tt.header, tt.now, 5*time.Minute); !errors.Is(err, tt.want) {
				t.Errorf("VerifySignature(%q) = %v, want %v", tt.header, err, tt.want)
			}
		})
	}
}

// blockingTransport holds every call until its context ends, then
// records that it returned.
type blockingTransport struct {
	entered  chan struct{}
	returned atomic.Bool
}

func (b *blockingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	b.entered <- struct{}{}
	<-r.Context().Done()
	for range 100 { // be slow to return, so that not waiting shows
		runtime.Gosched()
	}
	b.returned.Store(true)
	return nil, r.Context().Err()
}

// TestNotifierCloseWaits checks that Close returns only after the call in
// flight was abandoned and its worker is gone.
func TestNotifierCloseWaits(t *testing.T) {
	st := servertest.SQLite(t)
	putParty(t, st, "rp_1", "http://192.0.2.1/hook", []byte("s"))
	tr := &blockingTransport{entered: make(chan struct{}, 1)}
	n := newTestNotifier(t, NotifierConfig{Store: st, Client: &http.Client{Transport: tr}, Workers: 1})
	n.Notify(context.Background(), finished("ar_1", "rp_1"))
	select {
	case <-tr.entered:
	case <-time.After(wait):
		t.Fatalf("no webhook call within %v", wait)
	}
	n.Close()
	if !tr.returned.Load() {
		t.Errorf("Close returned before the call in flight did")
	}
}
