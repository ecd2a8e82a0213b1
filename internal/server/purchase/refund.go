package purchase

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
)

// Errors of Refund and Deposit, possibly wrapped; branch with errors.Is.
var (
	// ErrNotPaid: the purchase is not approved or refunded-partially, so
	// there is nothing to refund. It comes wrapped together with
	// store.ErrConflict. Nothing was created.
	ErrNotPaid = errors.New("purchase: not paid")
	// ErrRefundFailed: the ledger refused the refund's posting (the
	// merchant's balance is too low…). The refund is recorded failed
	// with its reason and returned beside this error; nothing was posted.
	ErrRefundFailed = errors.New("purchase: refund refused by the ledger")
	// ErrInvalid: an argument is out of range (a negative amount, a
	// malformed card number, an empty key). Nothing was done.
	ErrInvalid = errors.New("purchase: invalid argument")
)

// Reasons a refund fails with, for the merchant.
const (
	reasonMerchantShort = "merchant balance too low"
	reasonNoAccount     = "no account"
	reasonRefused       = "refused by the ledger"
)

// finishTimeout bounds posting and finishing a refund once it is
// recorded: the caller giving up must not leave it half done when it
// need not.
const finishTimeout = 30 * time.Second

// RefundKey is the ledger idempotency key of the refund id.
func RefundKey(id string) string { return "refund:" + id }

// refundDigest hashes what a refund request asks for: the amount as
// requested (0 for the whole rest), so that a replay of its key must ask
// for the same.
func refundDigest(amount int64) []byte {
	h := sha256.New()
	h.Write([]byte("cardlink refund\x00"))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(amount)))
	return h.Sum(nil)
}

// paid reports whether a purchase in status st can be refunded.
func paid(st store.PurchaseStatus) bool {
	return st == store.PurchaseApproved || st == store.PurchaseRefundedPartially
}

// Refund refunds amount of the merchant's purchase id (the whole rest
// when amount is 0) under idemKey (may be empty).
//
// It records the refund pending (store.Merchants.CreateRefund), posts the
// ledger transfer RefundKey(refund id) from the merchant's account to the
// holder's, and finishes the refund: done, or failed when the ledger
// refuses (then r is the failed refund and err wraps ErrRefundFailed).
// After a refund is done it notifies with the purchase as stored.
//
// A key used before for this purchase returns that refund (replayed set)
// when the amount asked is the same — a refund it finds still pending it
// finishes — and an error wrapping store.ErrConflict otherwise. Other
// errors: store.ErrNotFound (no such purchase of the merchant), ErrNotPaid
// (with store.ErrConflict), store.ErrRefundTooLarge (the refunds pending
// and done would exceed the amount paid; nothing created), ErrInvalid (a
// negative amount). Any other error with r.ID set left the refund
// pending (the posting's outcome is unknown): Sweep finishes it.
func (s *Service) Refund(ctx context.Context, merchant store.Merchant, id string, amount int64, idemKey string) (r store.Refund, replayed bool, err error) {
	if amount < 0 {
		return store.Refund{}, false, fmt.Errorf("refunding %s: amount %d: %w", id, amount, ErrInvalid)
	}
	p, err := s.ms.Purchase(ctx, merchant.ID, id)
	if err != nil {
		return store.Refund{}, false, fmt.Errorf("refunding %s: %w", id, err)
	}
	digest := refundDigest(amount)
	refunds, err := s.ms.Refunds(ctx, p.ID)
	if err != nil {
		return store.Refund{}, false, fmt.Errorf("refunding %s: %w", id, err)
	}
	if prev, ok := byKey(refunds, idemKey); ok {
		return s.replay(ctx, prev, digest, p, merchant)
	}
	if !paid(p.Status) {
		return store.Refund{}, false, fmt.Errorf("refunding %s (%s): %w (%w)", id, p.Status, ErrNotPaid, store.ErrConflict)
	}
	if amount == 0 {
		amount = p.Amount - p.Refunded
		for _, x := range refunds {
			if x.Status == store.RefundPending {
				amount -= x.Amount
			}
		}
		if amount <= 0 {
			return store.Refund{}, false, fmt.Errorf("refunding the rest of %s: nothing left: %w", id, store.ErrRefundTooLarge)
		}
	}
	if merchant.Account == "" || p.Card == "" {
		return store.Refund{}, false, fmt.Errorf("refunding %s: merchant account %q, card %q: %w (%w)", id, merchant.Account, p.Card, ErrNotPaid, store.ErrConflict)
	}
	rid, err := s.newRefundID("ref_")
	if err != nil {
		return store.Refund{}, false, fmt.Errorf("refunding %s: %w", id, err)
	}
	now := s.now().UTC()
	r = store.Refund{ID: rid, Purchase: p.ID, Merchant: p.Merchant, Amount: amount, IdemKey: idemKey,
		Digest: digest, Status: store.RefundPending, Created: now, Updated: now}
	got, replayed, err := s.ms.CreateRefund(ctx, r)
	if errors.Is(err, store.ErrConflict) {
		// Either the key was taken meanwhile with another amount, or the
		// purchase left its paid state.
		if refunds, rerr := s.ms.Refunds(ctx, p.ID); rerr == nil {
			if _, ok := byKey(refunds, idemKey); ok {
				return store.Refund{}, false, fmt.Errorf("refunding %s: idempotency key used for another refund: %w", id, store.ErrConflict)
			}
		}
		return store.Refund{}, false, fmt.Errorf("refunding %s: %w (%w)", id, ErrNotPaid, err)
	}
	if err != nil {
		return store.Refund{}, false, fmt.Errorf("refunding %s: %w", id, err)
	}
	if replayed {
		return s.replay(ctx, got, digest, p, merchant)
	}
	r, err = s.postRefund(ctx, got, p, merchant.Account)
	return r, false, err
}

// byKey finds the refund with idempotency key key (never for "").
func byKey(refunds []store.Refund, key string) (store.Refund, bool) {
	if key == "" {
		return store.Refund{}, false
	}
	for _, r := range refunds {
		if r.IdemKey == key {
			return r, true
		}
	}
	return store.Refund{}, false
}

// replay answers a refund request whose key found prev.
func (s *Service) replay(ctx context.Context, prev store.Refund, digest []byte, p store.Purchase, m store.Merchant) (store.Refund, bool, error) {
	if !bytes.Equal(prev.Digest, digest) {
		return store.Refund{}, false, fmt.Errorf("refunding %s: idempotency key used for another refund: %w", p.ID, store.ErrConflict)
	}
	switch prev.Status {
	case store.RefundPending:
		r, err := s.postRefund(ctx, prev, p, m.Account)
		return r, true, err
	case store.RefundFailed:
		return prev, true, fmt.Errorf("refunding %s: %s: %w", p.ID, prev.Reason, ErrRefundFailed)
	}
	return prev, true, nil
}

// postRefund posts the pending refund r of purchase p from the merchant's
// account and finishes it. It returns the refund as stored then. When
// someone else (Sweep, a replay) finished it first, it returns theirs
// without notifying.
func (s *Service) postRefund(ctx context.Context, r store.Refund, p store.Purchase, account string) (store.Refund, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	posted, err := s.cfg.Ledger.Transfer(ctx, ledger.Transfer{
		Key:      RefundKey(r.ID),
		Currency: p.Currency,
		Legs: []ledger.Leg{
			{Account: account, Amount: -r.Amount},
			{Account: ledger.HolderAccount(p.Card, p.Currency), Amount: r.Amount},
		},
		Memo: "refund " + r.ID + " of purchase " + p.ID,
	})
	reason := ""
	switch {
	case err == nil:
	case errors.Is(err, store.ErrLimit):
		reason = reasonMerchantShort
	case errors.Is(err, store.ErrNotFound):
		reason = reasonNoAccount
	case errors.Is(err, ledger.ErrInvalid), errors.Is(err, store.ErrCurrency), errors.Is(err, store.ErrConflict):
		s.log.ErrorContext(ctx, "purchase: refund refused by the ledger", "refund", r.ID, "err", err)
		reason = reasonRefused
	default:
		// Outcome unknown (closed, timeout, database): Sweep retries.
		return r, fmt.Errorf("refunding %s: %w", p.ID, err)
	}
	fin, err := s.ms.FinishRefund(ctx, r.ID, posted.ID, reason, s.now().UTC())
	if errors.Is(err, store.ErrConflict) {
		if (fin.Status == store.RefundDone) != (reason == "") {
			s.log.ErrorContext(ctx, "purchase: refund finished elsewhere with another outcome",
				"refund", r.ID, "stored", fin.Status, "reason", reason)
		}
		if fin.Status == store.RefundFailed {
			return fin, fmt.Errorf("refunding %s: %s: %w", p.ID, fin.Reason, ErrRefundFailed)
		}
		return fin, nil
	}
	if err != nil {
		return r, fmt.Errorf("finishing refund %s: %w", r.ID, err)
	}
	if reason != "" {
		return fin, fmt.Errorf("refunding %s: %s: %w", p.ID, reason, ErrRefundFailed)
	}
	s.notifyStored(ctx, p.ID)
	return fin, nil
}

// notifyStored calls Notify, if set, with purchase id as stored now.
func (s *Service) notifyStored(ctx context.Context, id string) {
	if s.notify == nil {
		return
	}
	p, err := s.ms.Purchase(ctx, "", id)
	if err != nil {
		s.log.ErrorContext(ctx, "purchase: reading purchase to notify", "purchase", id, "err", err)
		return
	}
	s.notify(ctx, p)
}

// newRefundID returns prefix and 16 random bytes in hex.
func (s *Service) newRefundID(prefix string) (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return "", fmt.Errorf("drawing an ID: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}
