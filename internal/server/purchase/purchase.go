// Package purchase is the server side of remote purchasing: it offers a
// merchant's pending purchase request to the card holder's device (by the
// reference code the holder typed, or pushed to the card the merchant
// named), verifies the card's signature over the server's own copy of the
// transaction, its certificate, counter, holder verification and the
// deadline, and only then posts the payment in the ledger and delivers
// the item's e-goods, signed, for the card's store. It also refunds,
// takes operator deposits into holder accounts, expires requests whose
// deadline passed, and finishes postings a crash interrupted.
//
// # A purchase's life
//
// pending (created by the merchant) → bound to a card with an offer
// (OfferRequest) → authorized (the card's signature verified and stored,
// stock taken, in one store transaction) → approved (the ledger transfer
// "purchase:<id>" posted, holder → merchant) or declined (the transfer was
// refused: funds; stock given back). A pending request may also be
// declined by the holder or expire. Each step is one conditional update in
// the store, so two server instances cannot both move a request, and the
// ledger transfer's idempotency key makes a retried posting harmless: a
// request left authorized by a crash is settled by Sweep. With a
// store.PurchaseApprover (SQLite) the approval, the payment and
// the completion are one store transaction: pending → approved or
// declined, never left authorized on that path.
//
// It imports auth, ledger, store, protocol, txn and money; it must not
// import a store backend, the HTTP API, the listener or the device.
package purchase

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Config configures a Service.
type Config struct {
	// Store must implement store.Merchants beside store.Store; required.
	Store store.Store
	// Ledger posts payments and refunds; required. Its store must be
	// Store's: where Store is a store.PurchaseApprover, an approval's
	// payment is posted by Store itself, in the write that records the
	// approval, with the ledger's rules (ledger.Prepare) but not through
	// Ledger's batcher.
	Ledger *ledger.Ledger
	// Auth checks cards and verifies their signatures and holder
	// verification; required.
	Auth *auth.Service
	// SignItem signs an e-good with the issuer's operations key
	// (pki.Issuer.SignItem). Nil: no e-goods are delivered to cards.
	SignItem func(*txn.Item) ([]byte, error)
	// Notify, if set, is called after a purchase reached an end state
	// (approved, declined, expired) and after a refund finished, with the
	// purchase as stored then. It must not block.
	Notify func(ctx context.Context, p store.Purchase)
	Now    func() time.Time // nil: time.Now
	Rand   io.Reader        // nil: crypto/rand.Reader
	Logger *slog.Logger     // nil: discard
}

// Service runs purchases. It is safe for concurrent use; all its state is
// in the store and the ledger.
type Service struct {
	cfg    Config
	ms     store.Merchants
	now    func() time.Time
	rand   io.Reader
	log    *slog.Logger
	notify func(context.Context, store.Purchase)
}

// New returns a Service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Ledger == nil || cfg.Auth == nil {
		return nil, errors.New("creating purchase service: Store, Ledger and Auth are required")
	}
	ms, ok := cfg.Store.(store.Merchants)
	if !ok {
		return nil, fmt.Errorf("creating purchase service: store %T keeps no merchants", cfg.Store)
	}
	s := &Service{cfg: cfg, ms: ms, now: cfg.Now, rand: cfg.Rand, log: cfg.Logger, notify: cfg.Notify}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = randReader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// TransferKey is the ledger idempotency key of the payment of purchase
// id.
func TransferKey(id string) string { return "purchase:" + id }
