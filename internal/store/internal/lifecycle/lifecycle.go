// Package lifecycle holds the rules of the purchase lifecycle that do not
// depend on the SQL dialect: given a request (or refund) as a backend read
// it inside its transaction, why a change is refused. Both store backends
// apply them after a conditional update matched no row, or before they
// change anything, so that their errors agree.
//
// It imports only package store and the standard library.
package lifecycle

import (
	"bytes"
	"fmt"
	"time"

	"cardlink/internal/store"
)

// BindRefused says why binding p to card at now changed nothing: nil if
// p is already bound to card (a retry gets it as stored), else
// store.ErrExpired (expired, or pending past its Expires),
// store.ErrNotFound (otherwise not pending) or store.ErrConflict (another
// card).
func BindRefused(p store.Purchase, card string, now time.Time) error {
	switch {
	case expired(p, now):
		return fmt.Errorf("binding purchase %q: %w", p.ID, store.ErrExpired)
	case p.Status != store.PurchasePending:
		return fmt.Errorf("binding purchase %q: %s: %w", p.ID, p.Status, store.ErrNotFound)
	case p.Card != card:
		return fmt.Errorf("binding purchase %q: bound to another card: %w", p.ID, store.ErrConflict)
	}
	return nil
}

// AuthorizeRefused says why card may not authorize p at now, or returns
// nil: store.ErrNotFound if p is not bound to card, store.ErrExpired
// (expired, or pending past its Expires), store.ErrNotFound if not
// pending.
func AuthorizeRefused(p store.Purchase, card string, now time.Time) error {
	switch {
	case p.Card != card:
		return fmt.Errorf("authorizing purchase %q: not bound to the card: %w", p.ID, store.ErrNotFound)
	case expired(p, now):
		return fmt.Errorf("authorizing purchase %q: %w", p.ID, store.ErrExpired)
	case p.Status != store.PurchasePending:
		return fmt.Errorf("authorizing purchase %q: %s: %w", p.ID, p.Status, store.ErrNotFound)
	}
	return nil
}

// expired reports whether p has expired or, pending, is past its
// deadline at now. (A request ExpirePurchases has not reached yet, or one
// it reached first in a race, reads the same.)
func expired(p store.Purchase, now time.Time) bool {
	return p.Status == store.PurchaseExpired || p.Status == store.PurchasePending && !p.Expires.After(now)
}

// CompleteRefused says why p may not be completed (store.ErrConflict: it
// is not authorized), or returns nil.
func CompleteRefused(p store.Purchase) error {
	if p.Status != store.PurchaseAuthorized {
		return fmt.Errorf("completing purchase %q: %s: %w", p.ID, p.Status, store.ErrConflict)
	}
	return nil
}

// Refund prepares r for CreateRefund: status pending, times in UTC to the
// microsecond, Updated defaulting to Created. It refuses an amount that is
// not positive.
func Refund(r store.Refund) (store.Refund, error) {
	if r.Amount <= 0 {
		return store.Refund{}, fmt.Errorf("creating refund %q: amount %d, want more than 0", r.ID, r.Amount)
	}
	r.Status = store.RefundPending
	if r.Updated.IsZero() {
		r.Updated = r.Created
	}
	r.Created, r.Updated = r.Created.UTC().Truncate(time.Microsecond), r.Updated.UTC().Truncate(time.Microsecond)
	return r, nil
}

// RefundOf says why r may not refund p (store.ErrNotFound: another
// merchant's), or returns nil.
func RefundOf(p store.Purchase, r store.Refund) error {
	if p.Merchant != r.Merchant {
		return fmt.Errorf("creating refund: purchase %q of merchant %q: %w", r.Purchase, r.Merchant, store.ErrNotFound)
	}
	return nil
}

// RefundReplayed checks that r, whose idempotency key old was created
// with, asks for the same refund (else store.ErrConflict).
func RefundReplayed(old, r store.Refund) error {
	if !bytes.Equal(old.Digest, r.Digest) {
		return fmt.Errorf("idempotency key reused with another refund: %w", store.ErrConflict)
	}
	return nil
}

// RefundRefused says why p, of which taken is refunded or being refunded,
// may not be refunded amount more: store.ErrConflict (not paid) or
// store.ErrRefundTooLarge; or returns nil.
func RefundRefused(p store.Purchase, taken, amount int64) error {
	switch {
	case p.Status != store.PurchaseApproved && p.Status != store.PurchaseRefundedPartially:
		return fmt.Errorf("refunding purchase %q: %s: %w", p.ID, p.Status, store.ErrConflict)
	case amount > p.Amount-taken:
		return fmt.Errorf("refunding %d of purchase %q: %d of %d left: %w", amount, p.ID, p.Amount-taken, p.Amount,
			store.ErrRefundTooLarge)
	}
	return nil
}

// FinishRefused says why r may not be finished (store.ErrConflict: it is
// not pending), or returns nil.
func FinishRefused(r store.Refund) error {
	if r.Status != store.RefundPending {
		return fmt.Errorf("finishing refund %q: %s: %w", r.ID, r.Status, store.ErrConflict)
	}
	return nil
}
