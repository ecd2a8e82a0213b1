package purchase

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Recovery bounds of Sweep.
const (
	// sweepGrace is how long a purchase may stay authorized, or a refund
	// pending, before Sweep takes it for one a crash left half done. It
	// is far above the time a live Approve or Refund needs (their ledger
	// posting is bounded by finishTimeout), so that Sweep does not race
	// a call that is still running; if it does, the idempotency key and
	// the store's conditional updates keep the outcome single.
	sweepGrace = 30 * time.Second
	// sweepBatch is how many records Sweep reads at a time.
	sweepBatch = 100
	// sweepMaxBatches bounds the batches of one kind one Sweep works
	// through, so that a Sweep ends; the next one continues.
	sweepMaxBatches = 50
)

// Sweep expires pending purchases whose deadline passed and finishes the
// purchases and refunds a crash left half done.
//
// It sets every pending purchase whose Expires passed to expired and
// notifies each; settles the purchases left authorized for longer than a
// grace period (30 s) — posting their payment under its idempotency key,
// so a payment a crash posted is not posted twice; and finishes the
// refunds left pending as long, reposting their transfer under its key.
// It goes on after a failure and returns them all, joined. Several
// instances may sweep at once: each record ends once.
func (s *Service) Sweep(ctx context.Context) error {
	var errs []error
	if err := s.sweepExpired(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.sweepAuthorized(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.sweepRefunds(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Service) sweepExpired(ctx context.Context) error {
	return sweepBatches(func() (int, error) {
		ps, err := s.ms.ExpirePurchases(ctx, s.now().UTC(), sweepBatch)
		if err != nil {
			return 0, fmt.Errorf("expiring purchases: %w", err)
		}
		for _, p := range ps {
			if s.notify != nil {
				s.notify(ctx, p)
			}
		}
		return len(ps), nil
	})
}

func (s *Service) sweepAuthorized(ctx context.Context) error {
	return sweepBatches(func() (int, error) {
		ps, err := s.ms.AuthorizedPurchases(ctx, s.now().UTC().Add(-sweepGrace), sweepBatch)
		if err != nil {
			return 0, fmt.Errorf("finding purchases left authorized: %w", err)
		}
		var errs []error
		for _, p := range ps {
			if _, err := s.settle(ctx, p); err != nil {
				errs = append(errs, fmt.Errorf("settling purchase %s: %w", p.ID, err))
			}
		}
		return len(ps), errors.Join(errs...)
	})
}

func (s *Service) sweepRefunds(ctx context.Context) error {
	return sweepBatches(func() (int, error) {
		rs, err := s.ms.PendingRefunds(ctx, s.now().UTC().Add(-sweepGrace), sweepBatch)
		if err != nil {
			return 0, fmt.Errorf("finding refunds left pending: %w", err)
		}
		var errs []error
		for _, r := range rs {
			p, err := s.ms.Purchase(ctx, "", r.Purchase)
			if err != nil {
				errs = append(errs, fmt.Errorf("finishing refund %s: %w", r.ID, err))
				continue
			}
			m, err := s.ms.Merchant(ctx, r.Merchant)
			if err != nil {
				errs = append(errs, fmt.Errorf("finishing refund %s: %w", r.ID, err))
				continue
			}
			if _, err := s.postRefund(ctx, r, p, m.Account); err != nil && !errors.Is(err, ErrRefundFailed) {
				errs = append(errs, err)
			}
		}
		return len(rs), errors.Join(errs...)
	})
}

// sweepBatches calls batch, which works through one batch of at most
// sweepBatch records and says how many it read, until a batch is short,
// fails (its records would only come back), or sweepMaxBatches ran.
func sweepBatches(batch func() (int, error)) error {
	for range sweepMaxBatches {
		n, err := batch()
		if err != nil || n < sweepBatch {
			return err
		}
	}
	return nil
}

// Run calls Sweep at once and then every interval until ctx ends,
// logging what fails. An interval of 0 or less means 10 s.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "purchase: sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
