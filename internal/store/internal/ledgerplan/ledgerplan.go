// Package ledgerplan is the part of posting a ledger batch that both
// store backends share: with every account of the batch locked (its
// balance read inside the transaction), it applies the transfers one at a
// time in Go, refusing alone each that names an unknown account, another
// currency or would break a limit, and collects the entries to insert and
// the balances to update, which the backend then writes set-wise.
//
// It imports store only.
package ledgerplan

import (
	"fmt"
	"math"
	"time"

	"cardlink/internal/store"
)

// Account is an account row as a batch sees it: the backend fills
// Currency, Balance and Limit from the row it locked and sets Locked to
// Balance.
type Account struct {
	Currency string
	Locked   int64 // the balance when locked
	Balance  int64 // the balance after the transfers applied so far
	Limit    int64 // the lowest balance allowed
	touched  bool
}

// Entry is one entry to insert.
type Entry struct {
	Transfer int64
	Account  string
	Amount   int64
	Balance  int64 // the account's balance after it
}

// Plan applies transfers one at a time to locked balances and
// collects what to write.
type Plan struct {
	Entries []Entry
	Refused []int64  // IDs of refused transfers
	Touched []string // accounts changed, in order of first change
}

// Apply applies t (whose row has ID id) to accts if every leg names a
// known account in t's currency that stays within its limit; otherwise it
// refuses t alone, naming the first failing leg in account order.
func (p *Plan) Apply(t store.Transfer, id int64, now time.Time, accts map[string]*Account) store.Result {
	for _, l := range t.Legs {
		a := accts[l.Account]
		var err error
		switch {
		case a == nil:
			err = fmt.Errorf("posting %q: account %q: %w", t.Key, l.Account, store.ErrNotFound)
		case a.Currency != string(t.Currency):
			err = fmt.Errorf("posting %q: account %q is in %s, not %s: %w", t.Key, l.Account, a.Currency, t.Currency, store.ErrCurrency)
		case l.Amount > 0 && a.Balance > math.MaxInt64-l.Amount:
			err = fmt.Errorf("posting %q: account %q: balance overflows", t.Key, l.Account)
		case l.Amount < 0 && a.Balance < a.Limit-l.Amount:
			err = fmt.Errorf("posting %q: account %q: %w", t.Key, l.Account, store.ErrLimit)
		}
		if err != nil {
			p.Refused = append(p.Refused, id)
			return store.Result{Err: err}
		}
	}
	for _, l := range t.Legs {
		a := accts[l.Account]
		a.Balance += l.Amount
		if !a.touched {
			a.touched = true
			p.Touched = append(p.Touched, l.Account)
		}
		p.Entries = append(p.Entries, Entry{Transfer: id, Account: l.Account, Amount: l.Amount, Balance: a.Balance})
	}
	return store.Result{Posted: store.Posted{ID: id, Key: t.Key, Time: now}}
}
