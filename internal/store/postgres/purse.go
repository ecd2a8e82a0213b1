package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

// E-money purse loads, unloads and redemptions (store.Purses). Every
// change is one transaction that locks the row it changes (SELECT … FOR
// UPDATE) before deciding; the unique indexes decide races between
// instances over a load's sequence number and a receipt.

var _ store.Purses = (*Store)(nil)

const purseOpRow = `id, kind, card, seq, amount, currency, offer, status, counter, load, transfer, reason, created, updated, expires`

func scanPurseOp(row scanner) (store.PurseOp, error) {
	var op store.PurseOp
	var kind, cur, status string
	var seq, counter int64
	if err := row.Scan(&op.ID, &kind, &op.Card, &seq, &op.Amount.Minor, &cur, &op.Offer, &status, &counter,
		&op.Load, &op.Transfer, &op.Reason, &op.Created, &op.Updated, &op.Expires); err != nil {
		return store.PurseOp{}, err
	}
	op.Kind, op.Status, op.Amount.Currency = store.PurseOpKind(kind), store.PurseOpStatus(status), money.Currency(cur)
	op.Seq, op.Counter = uint32(seq), uint32(counter)
	op.Created, op.Updated, op.Expires = op.Created.UTC(), op.Updated.UTC(), op.Expires.UTC()
	return op, nil
}

func onePurseOp(row scanner, what string) (store.PurseOp, error) {
	op, err := scanPurseOp(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.PurseOp{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return store.PurseOp{}, fmt.Errorf("%s: %w", what, err)
	}
	return op, nil
}

// CreatePurseOp implements store.Purses.
func (s *Store) CreatePurseOp(ctx context.Context, op store.PurseOp) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO purse_ops (`+purseOpRow+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)`,
		op.ID, op.Kind, op.Card, int64(op.Seq), op.Amount.Minor, op.Amount.Currency, blob(op.Offer), store.PurseOffered,
		int64(op.Counter), op.Load, op.Transfer, op.Reason, op.Created.UTC(), op.Expires.UTC())
	if isCode(err, sqlstateUnique) {
		return fmt.Errorf("creating purse operation %q: %w", op.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("creating purse operation %q: %w", op.ID, err)
	}
	return nil
}

// PurseOp implements store.Purses.
func (s *Store) PurseOp(ctx context.Context, id string) (store.PurseOp, error) {
	return onePurseOp(s.pool.QueryRow(ctx, `SELECT `+purseOpRow+` FROM purse_ops WHERE id = $1`, id), "reading purse operation "+id)
}

// LoadBySeq implements store.Purses.
func (s *Store) LoadBySeq(ctx context.Context, card string, seq uint32) (store.PurseOp, error) {
	return onePurseOp(s.pool.QueryRow(ctx, `SELECT `+purseOpRow+` FROM purse_ops
		WHERE card = $1 AND seq = $2 AND kind = 'load' AND status IN ('authorized', 'signed', 'applied')`, card, int64(seq)),
		fmt.Sprintf("reading load %d of card", seq))
}

// errSeqTaken: the unique index refused a second live load with one
// sequence number; MovePurseOp reads the holder after the rollback.
var errSeqTaken = errors.New("sequence number taken")

// MovePurseOp implements store.Purses.
func (s *Store) MovePurseOp(ctx context.Context, id string, from, to store.PurseOpStatus, u store.PurseUpdate, now time.Time) (store.PurseOp, error) {
	var got, op store.PurseOp
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		op, err = onePurseOp(tx.QueryRow(ctx, `SELECT `+purseOpRow+` FROM purse_ops WHERE id = $1 FOR UPDATE`, id),
			"moving purse operation "+id)
		if err != nil {
			return err
		}
		got = op
		if op.Status != from {
			return fmt.Errorf("moving purse operation %q: it is %s, not %s: %w", id, op.Status, from, store.ErrConflict)
		}
		if from == store.PurseOffered && !now.Before(op.Expires) {
			return fmt.Errorf("moving purse operation %q: %w", id, store.ErrExpired)
		}
		got, err = scanPurseOp(tx.QueryRow(ctx, `UPDATE purse_ops SET status = $1,
			counter = CASE WHEN $2::bigint = 0 THEN counter ELSE $2::bigint END, load = COALESCE($3, load),
			transfer = CASE WHEN $4::bigint = 0 THEN transfer ELSE $4::bigint END,
			reason = CASE WHEN $5::text = '' THEN reason ELSE $5::text END, updated = $6
			WHERE id = $7 RETURNING `+purseOpRow, to, int64(u.Counter), u.Load, u.Transfer, u.Reason, now.UTC(), id))
		if isCode(err, sqlstateUnique) {
			return errSeqTaken
		}
		if err != nil {
			return fmt.Errorf("moving purse operation %q: %w", id, err)
		}
		return nil
	})
	if errors.Is(err, errSeqTaken) {
		other, oerr := s.LoadBySeq(ctx, op.Card, op.Seq)
		if oerr != nil {
			return store.PurseOp{}, fmt.Errorf("moving purse operation %q: %w", id, oerr)
		}
		return other, fmt.Errorf("moving purse operation %q: load %d of the card taken by %s: %w", id, op.Seq, other.ID, store.ErrConflict)
	}
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return store.PurseOp{}, err
	}
	return got, err
}

const redemptionRow = `id, merchant, card, counter, cvm, transaction_bytes, signature, amount, currency, status, transfer, created, updated`

func scanRedemption(row scanner) (store.Redemption, error) {
	var r store.Redemption
	var counter, cvm int64
	var cur, status string
	if err := row.Scan(&r.ID, &r.Merchant, &r.Card, &counter, &cvm, &r.Transaction, &r.Signature, &r.Amount.Minor, &cur,
		&status, &r.Transfer, &r.Created, &r.Updated); err != nil {
		return store.Redemption{}, err
	}
	r.Counter, r.CVM, r.Amount.Currency, r.Status = uint32(counter), uint8(cvm), money.Currency(cur), store.RedemptionStatus(status)
	r.Created, r.Updated = r.Created.UTC(), r.Updated.UTC()
	return r, nil
}

func oneRedemption(row scanner, what string) (store.Redemption, error) {
	r, err := scanRedemption(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Redemption{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return store.Redemption{}, fmt.Errorf("%s: %w", what, err)
	}
	return r, nil
}

// CreateRedemption implements store.Purses. The insert does nothing on
// a conflict with either unique key; the existing row is then read.
func (s *Store) CreateRedemption(ctx context.Context, r store.Redemption) (store.Redemption, error) {
	got, err := scanRedemption(s.pool.QueryRow(ctx, `INSERT INTO purse_redemptions (`+redemptionRow+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $11) ON CONFLICT DO NOTHING RETURNING `+redemptionRow,
		r.ID, r.Merchant, r.Card, int64(r.Counter), int64(r.CVM), blob(r.Transaction), blob(r.Signature), r.Amount.Minor,
		r.Amount.Currency, store.RedemptionPending, r.Created.UTC()))
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.Redemption{}, fmt.Errorf("creating redemption %q: %w", r.ID, err)
	}
	got, err = oneRedemption(s.pool.QueryRow(ctx, `SELECT `+redemptionRow+` FROM purse_redemptions
		WHERE id = $1 OR (card = $2 AND counter = $3) ORDER BY created LIMIT 1`, r.ID, r.Card, int64(r.Counter)), "reading redemption")
	if err != nil {
		return store.Redemption{}, fmt.Errorf("creating redemption %q: %w", r.ID, err)
	}
	return got, fmt.Errorf("creating redemption %q: redeemed before as %s: %w", r.ID, got.ID, store.ErrConflict)
}

// FinishRedemption implements store.Purses.
func (s *Store) FinishRedemption(ctx context.Context, id string, transfer int64, now time.Time) (store.Redemption, error) {
	got, err := scanRedemption(s.pool.QueryRow(ctx, `UPDATE purse_redemptions SET status = $1, transfer = $2, updated = $3
		WHERE id = $4 AND status = $5 RETURNING `+redemptionRow, store.RedemptionRedeemed, transfer, now.UTC(), id, store.RedemptionPending))
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.Redemption{}, fmt.Errorf("finishing redemption %q: %w", id, err)
	}
	got, err = s.Redemption(ctx, id)
	if err != nil {
		return store.Redemption{}, fmt.Errorf("finishing: %w", err)
	}
	return got, fmt.Errorf("finishing redemption %q: it is %s: %w", id, got.Status, store.ErrConflict)
}

// DeleteRedemption implements store.Purses.
func (s *Store) DeleteRedemption(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM purse_redemptions WHERE id = $1 AND status = $2`, id, store.RedemptionPending)
	if err != nil {
		return fmt.Errorf("deleting redemption %q: %w", id, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("deleting redemption %q: no pending one: %w", id, store.ErrNotFound)
	}
	return nil
}

// Redemption implements store.Purses.
func (s *Store) Redemption(ctx context.Context, id string) (store.Redemption, error) {
	return oneRedemption(s.pool.QueryRow(ctx, `SELECT `+redemptionRow+` FROM purse_redemptions WHERE id = $1`, id),
		"reading redemption "+id)
}

// AuthorizedPurseOps implements store.Purses.
func (s *Store) AuthorizedPurseOps(ctx context.Context, before time.Time, limit int) ([]store.PurseOp, error) {
	return list(ctx, s.pool, scanPurseOp, "listing authorized purse operations", `SELECT `+purseOpRow+` FROM purse_ops
		WHERE status = $1 AND updated < $2 ORDER BY updated, id LIMIT $3`, store.PurseAuthorized, before.UTC(), limit)
}

// PendingRedemptions implements store.Purses.
func (s *Store) PendingRedemptions(ctx context.Context, before time.Time, limit int) ([]store.Redemption, error) {
	return list(ctx, s.pool, scanRedemption, "listing pending redemptions", `SELECT `+redemptionRow+` FROM purse_redemptions
		WHERE status = $1 AND updated < $2 ORDER BY updated, id LIMIT $3`, store.RedemptionPending, before.UTC(), limit)
}
