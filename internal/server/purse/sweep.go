package purse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cardlink/internal/server/auth"
	"cardlink/internal/store"
)

// Recovery bounds of Sweep (as package purchase's).
const (
	// SweepGrace is how long an operation may stay authorized, or a
	// redemption pending, before Sweep takes it for one a crash left half
	// done: far above what a live approval or redemption needs, so that
	// Sweep seldom races one; when it does, the ledger keys and the
	// store's conditional updates keep the outcome single.
	SweepGrace = 30 * time.Second
	sweepBatch = 100
	// sweepMaxBatches bounds one Sweep's work of each kind.
	sweepMaxBatches = 50
)

// Sweep finishes what a crash left half done: loads and unloads left
// authorized for longer than SweepGrace are posted under their keys (a
// posting the crash made is not made twice) and completed — a load
// signed, ready for the device's next request, or declined if the ledger
// refuses it; an unload done — and redemptions left pending as long are
// posted and recorded redeemed. It goes on after a failure and returns
// them all, joined. Several instances may sweep at once.
func (s *Service) Sweep(ctx context.Context) error {
	before := s.now().Add(-SweepGrace)
	var errs []error
	for range sweepMaxBatches {
		ops, err := s.ps.AuthorizedPurseOps(ctx, before, sweepBatch)
		if err != nil {
			errs = append(errs, fmt.Errorf("sweeping purse operations: %w", err))
			break
		}
		for _, op := range ops {
			if op.Kind == store.PurseLoad {
				_, _, err = s.settleLoad(ctx, op)
			} else {
				_, err = s.settleUnload(ctx, op)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.log.LogAttrs(ctx, slog.LevelInfo, "purse operation recovered", slog.String("op", op.ID),
				slog.String("kind", string(op.Kind)), slog.String("card", auth.MaskCard(op.Card)))
		}
		if len(ops) < sweepBatch || len(errs) > 0 {
			break
		}
	}
	for range sweepMaxBatches {
		rs, err := s.ps.PendingRedemptions(ctx, before, sweepBatch)
		if err != nil {
			errs = append(errs, fmt.Errorf("sweeping redemptions: %w", err))
			break
		}
		for _, r := range rs {
			m, err := s.ms.Merchant(ctx, r.Merchant)
			if err == nil {
				_, err = s.post(ctx, r, m.Account)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("sweeping redemption %s: %w", r.ID, err))
				continue
			}
			s.log.LogAttrs(ctx, slog.LevelInfo, "purse redemption recovered", slog.String("redemption", r.ID),
				slog.String("merchant", r.Merchant), slog.String("card", auth.MaskCard(r.Card)))
		}
		if len(rs) < sweepBatch || len(errs) > 0 {
			break
		}
	}
	return errors.Join(errs...)
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
			s.log.ErrorContext(ctx, "purse: sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
