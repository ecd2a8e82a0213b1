package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"cardlink/internal/store"
)

// Webhook headers.
const (
	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
	// t + "." + body)>".
	SignatureHeader = "Cardlink-Signature"
	// EventHeader names the event: "auth_request.finished" to a relying
	// party; "purchase.finished" (approved, declined or expired) or
	// "purchase.refunded" (a refund done) to a merchant.
	EventHeader           = "Cardlink-Event"
	eventFinished         = "auth_request.finished"
	eventPurchaseFinished = "purchase.finished"
	eventPurchaseRefunded = "purchase.refunded"
)

// NotifierConfig configures a Notifier. Zero fields take their defaults.
type NotifierConfig struct {
	// Store finds the relying party's webhook URL and secret; required.
	// For purchase webhooks it must also implement store.Merchants (the
	// merchant's URL and secret); else they are dropped and logged.
	Store store.RelyingParties
	// Client sends the calls; default: a client with a 10 s timeout that
	// follows no redirects.
	Client *http.Client
	// Attempts bounds the calls per notification; default 5.
	Attempts int
	// Backoff is the wait before attempt n+1 after attempt n (n from 1)
	// failed; default 1 s, 2 s, 4 s… at most 1 min, with up to 20 % jitter.
	Backoff func(n int) time.Duration
	// Queue bounds the notifications waiting to be sent; default 1024.
	// Notify drops (and logs) what does not fit.
	Queue int
	// Workers is the number of concurrent senders; default 4.
	Workers int
	// Logger gets failed deliveries; default discard.
	Logger *slog.Logger
	// Now is the clock that dates signatures; default time.Now.
	Now func() time.Time
}

// Notifier sends signed webhook calls in the background: to relying
// parties when their authentication requests finish (Notify), and to
// merchants when their purchases finish or are refunded (NotifyPurchase).
// Neither blocks. Close stops it. It is safe for concurrent use.
type Notifier struct {
	store    store.RelyingParties
	client   *http.Client
	ownTrans *http.Transport // closed on Close when the client is ours
	attempts int
	backoff  func(int) time.Duration
	log      *slog.Logger
	now      func() time.Time

	queue  chan job
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewNotifier starts a Notifier's workers. They stop when ctx is done or
// Close is called; Close also waits for them. It panics if cfg.Store is nil.
func NewNotifier(ctx context.Context, cfg NotifierConfig) *Notifier {
	if cfg.Store == nil {
		panic("api: NewNotifier without a Store")
	}
	n := &Notifier{
		store:    cfg.Store,
		client:   cfg.Client,
		attempts: cfg.Attempts,
		backoff:  cfg.Backoff,
		log:      cfg.Logger,
		now:      cfg.Now,
	}
	if n.client == nil {
		n.ownTrans = http.DefaultTransport.(*http.Transport).Clone()
		n.client = &http.Client{
			Transport: n.ownTrans,
			Timeout:   10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if n.attempts <= 0 {
		n.attempts = 5
	}
	if n.backoff == nil {
		n.backoff = defaultBackoff
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	queue, workers := cfg.Queue, cfg.Workers
	if queue <= 0 {
		queue = 1024
	}
	if workers <= 0 {
		workers = 4
	}
	n.queue = make(chan job, queue)
	n.ctx, n.cancel = context.WithCancel(ctx)
	n.wg.Add(workers)
	for range workers {
		go n.worker()
	}
	return n
}

// defaultBackoff doubles from 1 s up to 1 min, with up to 20 % jitter so
// that instances sharing a database do not call in step.
func defaultBackoff(n int) time.Duration {
	d := time.Minute
	if n < 7 {
		d = time.Second << (n - 1)
	}
	return d + rand.N(d/5+1)
}

// Notify queues a webhook call for the finished request req, to its
// relying party's webhook URL if it has one. It never blocks: when the
// queue is full or the Notifier is closed, the call is dropped and logged
// (the party can still poll). Its signature matches auth.Config.Notify;
// ctx is not kept.
func (n *Notifier) Notify(ctx context.Context, req store.AuthRequest) {
	body, err := json.Marshal(viewOf(req))
	if err != nil { // cannot happen: strings and raw JSON
		panic(err)
	}
	n.enqueue(ctx, job{id: req.ID, event: eventFinished, body: body, party: req.RelyingParty})
}

// NotifyPurchase queues a webhook call for purchase p, which reached an
// end state (approved, declined, expired: event "purchase.finished") or
// was refunded (refunded, refunded-partially: "purchase.refunded"). The
// body is the purchase's view as GET /v1/purchases/{id} shows it; it
// goes to p's callback URL, else its merchant's webhook URL (none: no
// call), signed with the merchant's webhook secret. A purchase in
// another status is ignored. It never blocks, like Notify; its signature
// matches purchase.Config.Notify.
func (n *Notifier) NotifyPurchase(ctx context.Context, p store.Purchase) {
	var event string
	switch p.Status {
	case store.PurchaseApproved, store.PurchaseDeclined, store.PurchaseExpired:
		event = eventPurchaseFinished
	case store.PurchaseRefunded, store.PurchaseRefundedPartially:
		event = eventPurchaseRefunded
	default:
		return
	}
	body, err := json.Marshal(purchaseViewOf(p))
	if err != nil { // cannot happen: strings and numbers
		panic(err)
	}
	n.enqueue(ctx, job{id: p.ID, event: event, body: body, merchant: p.Merchant, callback: p.CallbackURL})
}

// job is one webhook notification to deliver.
type job struct {
	id, event string // the request or purchase; the Cardlink-Event
	body      []byte
	party     string // the relying party to call, or
	merchant  string // the merchant to call, at
	callback  string // this URL if set (else the merchant's webhook URL)
}

// target is where a job's calls go.
type target struct {
	url    string // empty: nowhere
	secret []byte
}

// enqueue queues j without blocking, or drops and logs it.
func (n *Notifier) enqueue(ctx context.Context, j job) {
	if n.ctx.Err() != nil {
		n.log.WarnContext(ctx, "webhook: notifier closed, dropped", "request", j.id)
		return
	}
	select {
	case n.queue <- j:
	default:
		n.log.WarnContext(ctx, "webhook: queue full, dropped", "request", j.id)
	}
}

// Close stops the workers, abandoning queued and unfinished calls, and
// waits until they have returned. It is safe to call more than once.
func (n *Notifier) Close() error {
	n.once.Do(func() {
		n.cancel()
		n.wg.Wait()
		if n.ownTrans != nil {
			n.ownTrans.CloseIdleConnections()
		}
	})
	return nil
}

func (n *Notifier) worker() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case j := <-n.queue:
			n.deliver(j)
		}
	}
}

// deliver makes up to n.attempts calls for j, stopping at the first
// success, at an answer that retrying will not change, or on Close.
func (n *Notifier) deliver(j job) {
	var tgt *target
	for attempt := 1; ; attempt++ {
		retry, err := n.attempt(&tgt, j)
		if err == nil {
			return
		}
		if !retry || attempt >= n.attempts {
			n.log.Warn("webhook: giving up", "request", j.id, "party", j.party, "merchant", j.merchant,
				"attempts", attempt, "err", err)
			return
		}
		n.log.Info("webhook: will retry", "request", j.id, "attempt", attempt, "err", err)
		t := time.NewTimer(n.backoff(attempt))
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// resolve finds where j's calls go. It reports whether a failure is
// worth retrying.
func (n *Notifier) resolve(ctx context.Context, j job) (t target, retry bool, err error) {
	if j.merchant == "" {
		rp, err := n.store.RelyingParty(ctx, j.party)
		if err != nil {
			return target{}, !errors.Is(err, store.ErrNotFound), fmt.Errorf("finding relying party: %w", err)
		}
		return target{rp.WebhookURL, rp.WebhookSecret}, false, nil
	}
	ms, ok := n.store.(store.Merchants)
	if !ok {
		return target{}, false, errors.New("finding merchant: the store keeps no merchants")
	}
	m, err := ms.Merchant(ctx, j.merchant)
	if err != nil {
		return target{}, !errors.Is(err, store.ErrNotFound), fmt.Errorf("finding merchant: %w", err)
	}
	t = target{j.callback, m.WebhookSecret}
	if t.url == "" {
		t.url = m.WebhookURL
	}
	return t, false, nil
}

// attempt makes one call, first finding its target if *tgt is nil. It
// reports whether a failure is worth retrying. No webhook URL is success.
func (n *Notifier) attempt(tgt **target, j job) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	defer cancel()
	if *tgt == nil {
		t, retry, err := n.resolve(ctx, j)
		if err != nil {
			return retry, err
		}
		*tgt = &t
	}
	if (*tgt).url == "" {
		return false, nil
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, (*tgt).url, bytes.NewReader(j.body))
	if err != nil {
		return false, fmt.Errorf("building webhook call: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("User-Agent", "cardlink-webhook/1")
	hr.Header.Set(EventHeader, j.event)
	hr.Header.Set(SignatureHeader, Sign((*tgt).secret, j.body, n.now()))
	resp, err := n.client.Do(hr)
	if err != nil {
		return n.ctx.Err() == nil, fmt.Errorf("calling webhook: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
		return true, fmt.Errorf("calling webhook: status %d", c)
	default:
		return false, fmt.Errorf("calling webhook: status %d", c)
	}
}

// Sign returns the Cardlink-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of VerifySignature.
var (
	// ErrSignatureMalformed: the header is not "t=…,v1=…".
	ErrSignatureMalformed = errors.New("webhook signature: malformed header")
	// ErrSignatureMismatch: no v1 value is the HMAC of this body.
	ErrSignatureMismatch = errors.New("webhook signature: mismatch")
	// ErrSignatureStale: the signature's time is further than the tolerance
	// from now (a replay, or a clock far off).
	ErrSignatureStale = errors.New("webhook signature: outside the time tolerance")
)

// VerifySignature checks a Cardlink-Signature header, as a relying party
// does: the header must carry one t and at least one v1 (several are
// allowed, for secret rotation) of which one is the HMAC of body under
// secret, and t must be within tolerance of now. Unknown keys are ignored.
func VerifySignature(secret, body []byte, header string, now time.Time, tolerance time.Duration) error {
	if len(header) > 4096 {
		return ErrSignatureMalformed
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureMalformed
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrSignatureMalformed
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return ErrSignatureMalformed
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 || len(ts) > 19 || ts[0] == '-' || ts[0] == '+' {
		return ErrSignatureMalformed
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrSignatureMalformed
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return ErrSignatureMismatch
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrSignatureStale
	}
	return nil
}
