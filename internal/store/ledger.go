package store

import (
	"context"
	"errors"
	"time"

	"cardlink/internal/money"
)

// Errors of the ledger repository, possibly wrapped; branch with errors.Is.
var (
	// ErrLimit: a leg would take its account below the account's lower
	// limit. The transfer was not posted.
	ErrLimit = errors.New("store: below account limit")
	// ErrCurrency: a leg names an account kept in another currency than
	// the transfer's.
	ErrCurrency = errors.New("store: currency mismatch")
)

// AccountKind says what an account stands for; it is the caller's label
// and carries no policy in the store.
type AccountKind string

// Account kinds the server uses.
const (
	KindHolder   AccountKind = "holder"   // a card holder's money
	KindMerchant AccountKind = "merchant" // what a merchant is owed
	KindFloat    AccountKind = "float"    // issuer float: holds what purses hold (loads credit it, redemptions and unloads debit it); limit 0
	KindFees     AccountKind = "fees"     // fees collected
	KindFunding  AccountKind = "funding"  // money from outside the ledger (deposits, withdrawals); may go negative
)

// Account is one ledger account. Balance and Limit are in minor units of
// Currency; the balance never goes below Limit.
type Account struct {
	ID       string         // the caller's identifier; the key
	Kind     AccountKind    // what it stands for
	Currency money.Currency // every leg on it is in this currency
	Balance  int64          // minor units; set only by transfers (0 when created)
	Limit    int64          // lowest allowed balance: 0 for holders and the float, very negative for funding
	Created  time.Time      // when it was created
}

// Leg is one account's share of a transfer: positive credits the account,
// negative debits it.
type Leg struct {
	Account string
	Amount  int64 // minor units of the transfer's currency; never 0
}

// Transfer is one double-entry posting: its legs, each on a different
// account, sum to zero, all in one currency. Key makes it idempotent.
type Transfer struct {
	Key      string         // idempotency key, unique over the ledger
	Currency money.Currency // of every leg
	Legs     []Leg          // at least two; distinct accounts; sum zero
	Memo     string         // free text
	Digest   []byte         // hash of the content (currency, legs, memo); equal content, equal digest
}

// Posted is the outcome of a posted transfer.
type Posted struct {
	ID       int64     // the ledger's transfer number, growing
	Key      string    // idempotency key
	Time     time.Time // when it was posted (the first time, for a replay)
	Replayed bool      // the key was posted before with the same content: nothing changed now
}

// Entry is one leg as posted, with the account's balance right after it.
type Entry struct {
	Transfer int64     // Posted.ID
	Key      string    // the transfer's idempotency key
	Account  string    // the account
	Amount   int64     // signed minor units
	Balance  int64     // the account's balance after this entry
	Memo     string    // the transfer's memo
	Time     time.Time // when it was posted
}

// Result is the outcome of one transfer of a batch: Err is nil and Posted
// set, or Err says why the transfer was refused (then it changed nothing).
type Result struct {
	Posted Posted
	Err    error
}

// Ledger keeps double-entry accounts and their postings. A backend that
// has one implements it beside Store (find it by type assertion).
// Implementations are safe for concurrent use.
type Ledger interface {
	// CreateAccount creates a at now with balance 0 (a.Balance and
	// a.Created are ignored). It returns ErrConflict if the ID exists.
	CreateAccount(ctx context.Context, a Account, now time.Time) error
	// Account returns the account with this ID, or ErrNotFound.
	Account(ctx context.Context, id string) (Account, error)
	// PostTransfers posts ts in one database transaction at now, as if
	// one at a time in an order the backend picks (PostgreSQL: key
	// order), and commits once. A transfer is refused alone (its Result.Err: ErrLimit, ErrNotFound for an unknown
	// account, ErrCurrency, ErrConflict for a key posted with another
	// digest) and the others still post. A transfer whose key was posted
	// with the same digest is not posted again: its Result is the first
	// posting with Replayed set. The caller validates the legs (sum zero,
	// distinct accounts) beforehand. The error is non-nil only if the
	// database transaction failed as a whole: then nothing was posted and
	// the Results are meaningless. Results are in the order of ts.
	PostTransfers(ctx context.Context, ts []Transfer, now time.Time) ([]Result, error)
	// Entries returns the account's entries posted in [from, to), oldest
	// first, and the account's balance just before from (the opening
	// balance). It returns ErrNotFound for an unknown account.
	Entries(ctx context.Context, account string, from, to time.Time) (opening int64, es []Entry, err error)
}
