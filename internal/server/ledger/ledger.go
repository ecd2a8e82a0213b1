// Package ledger is the server's double-entry ledger: accounts in one
// currency each with a lower limit, transfers whose legs sum to zero, made
// idempotent by a key, posted durably with group commit, and balance and
// statement queries (with CSV export).
//
// # Model
//
// An account (store.Account) has a kind (holder, merchant, issuer float,
// fees, funding), a currency, a balance in minor units and a lower limit:
// 0 for a holder and for the issuer float, which holds the e-money
// outstanding, and very negative for funding, where deposits come from. A transfer has an idempotency key, two or more legs on
// distinct accounts that sum to zero, all in the transfer's currency, and
// a memo. No balance goes below its limit: the backend checks it in the
// same database transaction as the update, on balances that transaction
// holds locked, and the UPDATE is still guarded ("… SET balance = new
// WHERE balance = locked AND new >= lower_limit"; a CHECK constraint is
// the backstop).
//
// # Group commit
//
// Transfer hands the transfer to the batcher goroutine and waits. The
// batcher takes every transfer waiting (up to Options.MaxBatch, after at
// most Options.MaxDelay), posts them in ONE database transaction, as if
// one at a time, so that a refused transfer (below a limit, unknown
// account, key reused with other content) is refused alone and the others
// post, commits once, and only after the commit returned answers every
// caller of the batch. A transfer acknowledged is therefore durable
// (SQLite synchronous=FULL, PostgreSQL fsync on), and one fsync is shared
// by the whole batch. While a batch commits, the next one gathers, so
// batches grow with load and no delay is needed (MaxDelay 0, the
// default). A failed commit fails every transfer of its batch. A key
// posted before with the same content returns the first posting
// (Posted.Replayed); with other content it is refused with
// store.ErrConflict.
//
// Both backends post a batch set-wise, without a savepoint per transfer:
// they read (PostgreSQL: lock, FOR UPDATE, in account order) the balances
// of every account the batch names, apply the transfers to them in Go one
// by one, refusing those that would break a limit, and write the outcome
// with a few multi-row statements: the transfers, the entries, and one
// compare-and-set UPDATE of the changed balances, still guarded by the
// limits. SQLite holds its only write lock (BEGIN IMMEDIATE) for the
// whole batch. PostgreSQL inserts the keys first (ON CONFLICT DO NOTHING,
// in key order, which finds replays and serialises a key posted by two
// instances at once), then locks the accounts (in ID order, so that two
// instances never deadlock), in two round trips per batch.
//
// It imports store (the repository interface), money and the standard
// library; it must not import a store backend, nor the API or protocol
// packages: they call it.
package ledger

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

// Errors of the ledger besides the store's (store.ErrLimit,
// store.ErrNotFound, store.ErrConflict, store.ErrCurrency); branch with
// errors.Is.
var (
	// ErrInvalid: the transfer is malformed (no key, unknown currency,
	// fewer than two legs, a zero amount, an account twice, legs that do
	// not sum to zero, a key, memo or account that is not UTF-8 or holds
	// NUL). Nothing was sent to the store.
	ErrInvalid = errors.New("ledger: invalid transfer")
	// ErrClosed: the ledger is closed.
	ErrClosed = errors.New("ledger: closed")
)

// Leg is one account's share of a transfer: positive credits, negative
// debits.
type Leg = store.Leg

// Posted is the outcome of a posted transfer.
type Posted = store.Posted

// Transfer is a transfer to post.
type Transfer struct {
	Key      string         // idempotency key: a retry with the same key and content posts nothing new
	Currency money.Currency // of every leg
	Legs     []Leg          // two or more, distinct accounts, summing to zero
	Memo     string         // free text, shown on statements
}

// Options tune the batcher. The zero value is the default.
type Options struct {
	// MaxBatch caps the transfers in one database transaction; 0 means
	// 256. 1 disables group commit (one commit per transfer).
	MaxBatch int
	// MaxDelay is how long the batcher waits for more transfers once it
	// has one and fewer than MaxBatch; 0 (the default) posts at once what
	// is waiting: batches still grow while the previous commit runs.
	MaxDelay time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Stats are the batcher's counters since New.
type Stats struct {
	Batches   int64 // database transactions committed or failed
	Transfers int64 // transfers answered by those batches (posted, replayed or refused)
	Failed    int64 // batches whose transaction failed as a whole
}

// AvgBatch returns the average number of transfers per batch.
func (s Stats) AvgBatch() float64 {
	if s.Batches == 0 {
		return 0
	}
	return float64(s.Transfers) / float64(s.Batches)
}

// Ledger posts transfers with group commit and answers queries. It is safe
// for concurrent use; Close it to stop its batcher.
type Ledger struct {
	st   store.Ledger
	opt  Options
	reqs chan *request
	done chan struct{}

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool

	batches, transfers, failed atomic.Int64
}

type request struct {
	t   store.Transfer
	res chan store.Result // buffered: the batcher never blocks on it
}

// New starts a ledger over st.
func New(st store.Ledger, opt Options) *Ledger {
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 256
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	l := &Ledger{st: st, opt: opt, reqs: make(chan *request, opt.MaxBatch), done: make(chan struct{})}
	go l.run()
	return l
}

// Close stops accepting transfers, waits until every transfer already
// accepted is posted and answered, and stops the batcher. It does not
// close the store.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.reqs)
	}
	l.mu.Unlock()
	<-l.done
	return nil
}

// Stats returns the batcher's counters.
func (l *Ledger) Stats() Stats {
	return Stats{Batches: l.batches.Load(), Transfers: l.transfers.Load(), Failed: l.failed.Load()}
}

// CreateAccount creates an account with balance 0.
func (l *Ledger) CreateAccount(ctx context.Context, a store.Account) error {
	if _, err := money.ParseCurrency(string(a.Currency)); err != nil {
		return fmt.Errorf("creating account %q: %w", a.ID, err)
	}
	if a.ID == "" || a.Limit > 0 {
		return fmt.Errorf("creating account %q: empty ID or positive limit %d: %w", a.ID, a.Limit, ErrInvalid)
	}
	return l.st.CreateAccount(ctx, a, l.opt.Now())
}

// Transfer posts t and returns its posting once the database transaction
// that holds it has committed. A refused transfer changed nothing; its
// error wraps ErrInvalid, store.ErrLimit, store.ErrNotFound,
// store.ErrCurrency or store.ErrConflict. If ctx ends first, Transfer
// returns ctx's error and the transfer may or may not be posted: retry
// with the same key to learn which.
func (l *Ledger) Transfer(ctx context.Context, t Transfer) (Posted, error) {
	st, err := prepare(t)
	if err != nil {
		return Posted{}, err
	}
	r := &request{t: st, res: make(chan store.Result, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Posted{}, fmt.Errorf("posting %q: %w", t.Key, ErrClosed)
	}
	select {
	case l.reqs <- r:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return Posted{}, fmt.Errorf("posting %q: %w", t.Key, ctx.Err())
	}
	select {
	case res := <-r.res:
		return res.Posted, res.Err
	case <-ctx.Done():
		return Posted{}, fmt.Errorf("posting %q: outcome unknown: %w", t.Key, ctx.Err())
	}
}

// Prepare checks t and returns it as Transfer hands it to the store (legs
// in account order, the digest of its content), for a store that posts it
// inside a write of its own (store.PurchaseApprover). Its error wraps
// ErrInvalid.
func Prepare(t Transfer) (store.Transfer, error) { return prepare(t) }

// prepare checks t and returns it for the store: legs in account order and
// the digest of its content.
func prepare(t Transfer) (store.Transfer, error) {
	bad := func(format string, a ...any) (store.Transfer, error) {
		return store.Transfer{}, fmt.Errorf("posting %q: %s: %w", t.Key, fmt.Sprintf(format, a...), ErrInvalid)
	}
	if t.Key == "" {
		return bad("empty idempotency key")
	}
	// A string PostgreSQL's text refuses would fail the whole batch.
	if !goodText(t.Key) || !goodText(t.Memo) {
		return bad("key or memo not UTF-8 or holding NUL")
	}
	if _, err := money.ParseCurrency(string(t.Currency)); err != nil {
		return bad("%v", err)
	}
	if len(t.Legs) < 2 {
		return bad("%d legs, want at least 2", len(t.Legs))
	}
	legs := slices.Clone(t.Legs)
	slices.SortFunc(legs, func(a, b Leg) int { return cmp.Compare(a.Account, b.Account) })
	var sum int64
	for i, g := range legs {
		if !goodText(g.Account) {
			return bad("account %q not UTF-8 or holding NUL", g.Account)
		}
		if g.Amount == 0 {
			return bad("zero amount on account %q", g.Account)
		}
		if i > 0 && legs[i-1].Account == g.Account {
			return bad("account %q twice", g.Account)
		}
		s := sum + g.Amount
		if (g.Amount > 0 && s < sum) || (g.Amount < 0 && s > sum) {
			return bad("legs overflow")
		}
		sum = s
	}
	if sum != 0 {
		return bad("legs sum to %d, want 0", sum)
	}
	h := sha256.New()
	field := func(s string) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	field(string(t.Currency))
	field(t.Memo)
	for _, g := range legs {
		field(g.Account)
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(g.Amount)))
	}
	return store.Transfer{Key: t.Key, Currency: t.Currency, Legs: legs, Memo: t.Memo, Digest: h.Sum(nil)}, nil
}

// goodText reports whether s is valid UTF-8 without NUL, as a text column
// of both backends takes it unchanged.
func goodText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// run is the batcher: it gathers waiting requests into batches and posts
// each batch in one database transaction until reqs is closed and empty.
func (l *Ledger) run() {
	defer close(l.done)
	batch := make([]*request, 0, l.opt.MaxBatch)
	for {
		r, ok := <-l.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		open := l.gather(&batch)
		l.post(batch)
		if !open {
			// reqs is closed and drained.
			return
		}
	}
}

// gather appends waiting requests to *batch up to MaxBatch, waiting up to
// MaxDelay for more. It reports false once reqs is closed and empty.
func (l *Ledger) gather(batch *[]*request) bool {
	var timeout <-chan time.Time
	if l.opt.MaxDelay > 0 {
		t := time.NewTimer(l.opt.MaxDelay)
		defer t.Stop()
		timeout = t.C
	}
	for len(*batch) < l.opt.MaxBatch {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, r)
			continue
		default:
		}
		if timeout == nil {
			return true
		}
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, r)
		case <-timeout:
			return true
		}
	}
	return true
}

// post posts one batch and answers its callers after the commit.
func (l *Ledger) post(batch []*request) {
	ts := make([]store.Transfer, len(batch))
	for i, r := range batch {
		ts[i] = r.t
	}
	// Not the callers' contexts: one caller giving up must not fail the
	// others' transaction.
	// Both backends keep microseconds.
	now := l.opt.Now().UTC().Truncate(time.Microsecond)
	res, err := l.st.PostTransfers(context.Background(), ts, now)
	l.batches.Add(1)
	l.transfers.Add(int64(len(batch)))
	if err != nil {
		l.failed.Add(1)
	}
	for i, r := range batch {
		if err != nil {
			r.res <- store.Result{Err: fmt.Errorf("posting %q: %w", r.t.Key, err)}
			continue
		}
		r.res <- res[i]
	}
}
