package purchase

import (
	"context"
	"errors"
	"fmt"
	"math"

	"cardlink/internal/money"
	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// FundingLimit is the lower limit of the funding accounts Deposit
// creates: money from outside the ledger, so in effect unlimited, yet far
// from overflowing a balance.
const FundingLimit = math.MinInt64 / 2

// DepositKey is the ledger idempotency key of the deposit made under key.
func DepositKey(key string) string { return "deposit:" + key }

// Deposit credits amount to card's holder account from the funding
// account under key, creating both accounts if missing.
//
// The transfer's idempotency key is DepositKey(key): the same key with
// the same card and amount posts nothing new and returns the first
// posting (Posted.Replayed); with another card or amount it fails with
// store.ErrConflict. The card must be known to the store (else
// store.ErrNotFound); amount must be positive in a known currency and key
// not empty (else ErrInvalid).
func (s *Service) Deposit(ctx context.Context, card string, amount money.Amount, key string) (ledger.Posted, error) {
	if err := txn.ValidCardNumber(card); err != nil {
		return ledger.Posted{}, fmt.Errorf("depositing: %w: %w", ErrInvalid, err)
	}
	if _, err := money.ParseCurrency(string(amount.Currency)); err != nil || amount.Minor <= 0 || key == "" {
		return ledger.Posted{}, fmt.Errorf("depositing %d %s under %q: %w", amount.Minor, amount.Currency, key, ErrInvalid)
	}
	if _, err := s.cfg.Store.Card(ctx, card); err != nil {
		return ledger.Posted{}, fmt.Errorf("depositing to card %s: %w", card, err)
	}
	funding, holder := ledger.FundingAccount(amount.Currency), ledger.HolderAccount(card, amount.Currency)
	t := ledger.Transfer{
		Key:      DepositKey(key),
		Currency: amount.Currency,
		Legs:     []ledger.Leg{{Account: funding, Amount: -amount.Minor}, {Account: holder, Amount: amount.Minor}},
		Memo:     "deposit " + key,
	}
	posted, err := s.cfg.Ledger.Transfer(ctx, t)
	if !errors.Is(err, store.ErrNotFound) {
		if err != nil {
			return ledger.Posted{}, fmt.Errorf("depositing to card %s: %w", card, err)
		}
		return posted, nil
	}
	// First deposit in this currency, or to this card: open the accounts
	// (another instance may race us to it) and post again.
	for _, a := range []store.Account{
		{ID: funding, Kind: store.KindFunding, Currency: amount.Currency, Limit: FundingLimit},
		{ID: holder, Kind: store.KindHolder, Currency: amount.Currency},
	} {
		if err := s.cfg.Ledger.CreateAccount(ctx, a); err != nil && !errors.Is(err, store.ErrConflict) {
			return ledger.Posted{}, fmt.Errorf("depositing to card %s: opening account %s: %w", card, a.ID, err)
		}
	}
	posted, err = s.cfg.Ledger.Transfer(ctx, t)
	if err != nil {
		return ledger.Posted{}, fmt.Errorf("depositing to card %s: %w", card, err)
	}
	return posted, nil
}
