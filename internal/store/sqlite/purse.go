package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

// E-money purse loads, unloads and redemptions (store.Purses). Every
// change is one write transaction; the single writer serialises them.

var _ store.Purses = (*Store)(nil)

const purseOpRow = `id, kind, card, seq, amount, currency, offer, status, counter, load, transfer, reason, created, updated, expires`

func scanPurseOp(row scanner) (store.PurseOp, error) {
	var op store.PurseOp
	var kind, cur, status string
	var seq, counter, created, updated, expires int64
	if err := row.Scan(&op.ID, &kind, &op.Card, &seq, &op.Amount.Minor, &cur, &op.Offer, &status, &counter,
		&op.Load, &op.Transfer, &op.Reason, &created, &updated, &expires); err != nil {
		return store.PurseOp{}, err
	}
	op.Kind, op.Status, op.Amount.Currency = store.PurseOpKind(kind), store.PurseOpStatus(status), money.Currency(cur)
	op.Seq, op.Counter = uint32(seq), uint32(counter)
	op.Created, op.Updated, op.Expires = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC(), time.UnixMicro(expires).UTC()
	return op, nil
}

// CreatePurseOp implements store.Purses.
func (s *Store) CreatePurseOp(ctx context.Context, op store.PurseOp) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO purse_ops (`+purseOpRow+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			op.ID, op.Kind, op.Card, int64(op.Seq), op.Amount.Minor, op.Amount.Currency, blob(op.Offer), store.PurseOffered,
			int64(op.Counter), op.Load, op.Transfer, op.Reason, op.Created.UnixMicro(), op.Created.UnixMicro(), op.Expires.UnixMicro())
		if isUnique(err) {
			return fmt.Errorf("creating purse operation %q: %w", op.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("creating purse operation %q: %w", op.ID, err)
		}
		return nil
	})
}

// PurseOp implements store.Purses.
func (s *Store) PurseOp(ctx context.Context, id string) (store.PurseOp, error) {
	return onePurseOp(s.row(ctx, `SELECT `+purseOpRow+` FROM purse_ops WHERE id = ?`, id), "reading purse operation "+id)
}

// LoadBySeq implements store.Purses.
func (s *Store) LoadBySeq(ctx context.Context, card string, seq uint32) (store.PurseOp, error) {
	return onePurseOp(s.row(ctx, `SELECT `+purseOpRow+` FROM purse_ops
		WHERE card = ? AND seq = ? AND kind = 'load' AND status IN ('authorized', 'signed', 'applied')`, card, int64(seq)),
		fmt.Sprintf("reading load %d of card", seq))
}

func onePurseOp(row scanner, what string) (store.PurseOp, error) {
	op, err := scanPurseOp(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.PurseOp{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return store.PurseOp{}, fmt.Errorf("%s: %w", what, err)
	}
	return op, nil
}

// MovePurseOp implements store.Purses.
func (s *Store) MovePurseOp(ctx context.Context, id string, from, to store.PurseOpStatus, u store.PurseUpdate, now time.Time) (store.PurseOp, error) {
	var got store.PurseOp
	err := s.tx(ctx, func(tx *sql.Tx) error {
		op, err := onePurseOp(tx.QueryRowContext(ctx, `SELECT `+purseOpRow+` FROM purse_ops WHERE id = ?`, id), "moving purse operation "+id)
		if err != nil {
			return err
		}
		if op.Status != from {
			got = op
			return fmt.Errorf("moving purse operation %q: it is %s, not %s: %w", id, op.Status, from, store.ErrConflict)
		}
		if from == store.PurseOffered && !now.Before(op.Expires) {
			return fmt.Errorf("moving purse operation %q: %w", id, store.ErrExpired)
		}
		got, err = scanPurseOp(tx.QueryRowContext(ctx, `UPDATE purse_ops SET status = ?,
			counter = CASE WHEN ? = 0 THEN counter ELSE ? END, load = COALESCE(?, load),
			transfer = CASE WHEN ? = 0 THEN transfer ELSE ? END, reason = CASE WHEN ? = '' THEN reason ELSE ? END, updated = ?
			WHERE id = ? RETURNING `+purseOpRow, to, int64(u.Counter), int64(u.Counter), u.Load, u.Transfer, u.Transfer,
			u.Reason, u.Reason, now.UnixMicro(), id))
		if isUnique(err) {
			other, oerr := onePurseOp(tx.QueryRowContext(ctx, `SELECT `+purseOpRow+` FROM purse_ops
				WHERE card = ? AND seq = ? AND kind = 'load' AND status IN ('authorized', 'signed', 'applied')`, op.Card, int64(op.Seq)),
				"reading the load holding the sequence number")
			if oerr != nil {
				return oerr
			}
			got = other
			return fmt.Errorf("moving purse operation %q: load %d of the card taken by %s: %w", id, op.Seq, other.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("moving purse operation %q: %w", id, err)
		}
		return nil
	})
	return got, err
}

const redemptionRow = `id, merchant, card, counter, cvm, transaction_bytes, signature, amount, currency, status, transfer, created, updated`

func scanRedemption(row scanner) (store.Redemption, error) {
	var r store.Redemption
	var counter, cvm, created, updated int64
	var cur, status string
	if err := row.Scan(&r.ID, &r.Merchant, &r.Card, &counter, &cvm, &r.Transaction, &r.Signature, &r.Amount.Minor, &cur,
		&status, &r.Transfer, &created, &updated); err != nil {
		return store.Redemption{}, err
	}
	r.Counter, r.CVM, r.Amount.Currency, r.Status = uint32(counter), uint8(cvm), money.Currency(cur), store.RedemptionStatus(status)
	r.Created, r.Updated = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	return r, nil
}

func oneRedemption(row scanner, what string) (store.Redemption, error) {
	r, err := scanRedemption(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Redemption{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return store.Redemption{}, fmt.Errorf("%s: %w", what, err)
	}
	return r, nil
}

// CreateRedemption implements store.Purses.
func (s *Store) CreateRedemption(ctx context.Context, r store.Redemption) (store.Redemption, error) {
	var got store.Redemption
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		got, err = oneRedemption(tx.QueryRowContext(ctx, `SELECT `+redemptionRow+` FROM purse_redemptions
			WHERE id = ? OR (card = ? AND counter = ?) ORDER BY created LIMIT 1`, r.ID, r.Card, int64(r.Counter)), "reading redemption")
		if err == nil {
			return fmt.Errorf("creating redemption %q: redeemed before as %s: %w", r.ID, got.ID, store.ErrConflict)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		got, err = scanRedemption(tx.QueryRowContext(ctx, `INSERT INTO purse_redemptions (`+redemptionRow+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) RETURNING `+redemptionRow, r.ID, r.Merchant, r.Card, int64(r.Counter),
			int64(r.CVM), blob(r.Transaction), blob(r.Signature), r.Amount.Minor, r.Amount.Currency, store.RedemptionPending,
			r.Created.UnixMicro(), r.Created.UnixMicro()))
		if err != nil {
			return fmt.Errorf("creating redemption %q: %w", r.ID, err)
		}
		return nil
	})
	return got, err
}

// FinishRedemption implements store.Purses.
func (s *Store) FinishRedemption(ctx context.Context, id string, transfer int64, now time.Time) (store.Redemption, error) {
	var got store.Redemption
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := oneRedemption(tx.QueryRowContext(ctx, `SELECT `+redemptionRow+` FROM purse_redemptions WHERE id = ?`, id),
			"finishing redemption "+id)
		if err != nil {
			return err
		}
		if r.Status != store.RedemptionPending {
			got = r
			return fmt.Errorf("finishing redemption %q: it is %s: %w", id, r.Status, store.ErrConflict)
		}
		got, err = scanRedemption(tx.QueryRowContext(ctx, `UPDATE purse_redemptions SET status = ?, transfer = ?, updated = ?
			WHERE id = ? RETURNING `+redemptionRow, store.RedemptionRedeemed, transfer, now.UnixMicro(), id))
		if err != nil {
			return fmt.Errorf("finishing redemption %q: %w", id, err)
		}
		return nil
	})
	return got, err
}

// DeleteRedemption implements store.Purses.
func (s *Store) DeleteRedemption(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM purse_redemptions WHERE id = ? AND status = ?`, id, store.RedemptionPending)
		if err != nil {
			return fmt.Errorf("deleting redemption %q: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("deleting redemption %q: no pending one: %w", id, store.ErrNotFound)
		}
		return nil
	})
}

// Redemption implements store.Purses.
func (s *Store) Redemption(ctx context.Context, id string) (store.Redemption, error) {
	return oneRedemption(s.row(ctx, `SELECT `+redemptionRow+` FROM purse_redemptions WHERE id = ?`, id),
		"reading redemption "+id)
}

// AuthorizedPurseOps implements store.Purses.
func (s *Store) AuthorizedPurseOps(ctx context.Context, before time.Time, limit int) ([]store.PurseOp, error) {
	return list(ctx, s.r, scanPurseOp, "listing authorized purse operations", `SELECT `+purseOpRow+` FROM purse_ops
		WHERE status = ? AND updated < ? ORDER BY updated, id LIMIT ?`, store.PurseAuthorized, before.UnixMicro(), limit)
}

// PendingRedemptions implements store.Purses.
func (s *Store) PendingRedemptions(ctx context.Context, before time.Time, limit int) ([]store.Redemption, error) {
	return list(ctx, s.r, scanRedemption, "listing pending redemptions", `SELECT `+redemptionRow+` FROM purse_redemptions
		WHERE status = ? AND updated < ? ORDER BY updated, id LIMIT ?`, store.RedemptionPending, before.UnixMicro(), limit)
}
