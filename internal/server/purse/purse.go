// Package purse is the server side of e-money: it loads a card's purse
// from the holder's ledger account, redeems the purse debit receipts
// merchants collect offline, and unloads a purse back to the account.
//
// # Loads
//
// The device reads the purse (balance, sequence number) and asks for a
// load (protocol.PurseRequest). The server offers it as a canonical
// txn.Transaction with the issuer as payee and "Purse load" as item
// (a store.PurseOp, status offered, for sequence number = the purse's +
// 1); the holder approves it like a purchase (SIGN TRANSACTION), and
// the server verifies the card's signature over its own copy, claims the
// sequence number (authorized: one live load per card and number, a
// unique index), posts holder → float under the ledger key
// "load:<card>:<seq>", signs the txn.Load with the issuer's key and
// records it (signed) before handing it out (protocol.PurseLoad). The
// card applies it and signs a load receipt (PurposeLoadReceipt), which
// the server verifies and records (applied). A device asking again for
// the same (card, seq) — its answer was lost — gets the same signed load
// and nothing is posted again; the card itself refuses a load whose
// sequence number is not its own + 1, so a replayed or reordered load
// never credits a purse twice.
//
// # Redemptions
//
// The card pays a merchant offline with a debit receipt: its signature
// over Envelope{PurposePurseDebit, card, counter, CVM, payload = the
// canonical transaction naming the merchant}. The merchant redeems it
// once (Redeem): the card is checked (known, not revoked, certificate
// valid), the signature verified, the transaction's payee must be the
// redeeming merchant's name and its currency the merchant account's; the
// redemption is recorded, unique by transaction and by (card, counter),
// and float → merchant is posted under "redeem:<card>:<counter>".
//
// # Unloads
//
// Offered like a load (item "Purse unload"); the card signs it with
// PURSE DEBIT, so the purse really goes down, and the server verifies
// Envelope{PurposePurseDebit, …, payload = its own offer} and posts
// float → holder under "unload:<id>".
//
// # The float
//
// With the legs as above, the float account of a currency holds the
// e-money outstanding: the sum of the purses' balances, plus the loads
// signed but not applied, plus the debit receipts not yet redeemed. Its
// lower limit is 0, so no redemption or unload can take out more e-money
// than was loaded.
//
// It imports auth, ledger, store, protocol, txn and money; it must not
// import a store backend, the HTTP API, the listener or the device.
package purse

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Defaults for Config's zero fields.
const (
	DefaultIssuer   = "Card issuer" // the payee shown for loads and unloads
	DefaultOfferTTL = 5 * time.Minute
)

// Items shown to the holder.
const (
	ItemLoad   = "Purse load"
	ItemUnload = "Purse unload"
)

// Config configures a Service.
type Config struct {
	// Store must implement store.Purses and store.Merchants beside
	// store.Store; required.
	Store store.Store
	// Ledger posts loads, unloads and redemptions; required.
	Ledger *ledger.Ledger
	// Auth checks cards and verifies their signatures; required.
	Auth *auth.Service
	// SignLoad signs a purse load with the issuer's operations key
	// (pki.Issuer.SignLoad); required.
	SignLoad func(*txn.Load) ([]byte, error)
	Issuer   string        // payee name of loads and unloads; "" means DefaultIssuer
	OfferTTL time.Duration // how long an offer may be approved; 0 means DefaultOfferTTL
	Now      func() time.Time
	Rand     io.Reader // nil: crypto/rand.Reader
	Logger   *slog.Logger
}

// Service runs purse loads, unloads and redemptions. It is safe for
// concurrent use; all its state is in the store and the ledger.
type Service struct {
	cfg  Config
	ps   store.Purses
	ms   store.Merchants
	now  func() time.Time
	rand io.Reader
	log  *slog.Logger
}

// New returns a Service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Ledger == nil || cfg.Auth == nil || cfg.SignLoad == nil {
		return nil, errors.New("creating purse service: Store, Ledger, Auth and SignLoad are required")
	}
	ps, ok := cfg.Store.(store.Purses)
	if !ok {
		return nil, fmt.Errorf("creating purse service: store %T keeps no purses", cfg.Store)
	}
	ms, ok := cfg.Store.(store.Merchants)
	if !ok {
		return nil, fmt.Errorf("creating purse service: store %T keeps no merchants", cfg.Store)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if err := (&txn.Transaction{Merchant: cfg.Issuer}).Validate(); err != nil && strings.HasPrefix(err.Error(), "merchant") {
		return nil, fmt.Errorf("creating purse service: issuer name: %w", err)
	}
	if cfg.OfferTTL <= 0 {
		cfg.OfferTTL = DefaultOfferTTL
	}
	s := &Service{cfg: cfg, ps: ps, ms: ms, now: cfg.Now, rand: cfg.Rand, log: cfg.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// ID prefixes: 32 hex digits of the transaction id follow.
const (
	opPrefix         = "po_"
	redemptionPrefix = "rd_"
)

// OpID returns the store ID of the purse operation with transaction id
// id.
func OpID(id [16]byte) string { return opPrefix + hex.EncodeToString(id[:]) }

// RedemptionID returns the store ID of the redemption of the receipt
// over the transaction with id id: one per transaction.
func RedemptionID(id [16]byte) string { return redemptionPrefix + hex.EncodeToString(id[:]) }

// Ledger idempotency keys.

// LoadKey is the key of the load of card's purse with sequence number
// seq: holder → float.
func LoadKey(card string, seq uint32) string { return fmt.Sprintf("load:%s:%d", card, seq) }

// RedeemKey is the key of the redemption of card's receipt with
// counter: float → merchant.
func RedeemKey(card string, counter uint32) string { return fmt.Sprintf("redeem:%s:%d", card, counter) }

// UnloadKey is the key of the unload id (OpID): float → holder.
func UnloadKey(id string) string { return "unload:" + id }
