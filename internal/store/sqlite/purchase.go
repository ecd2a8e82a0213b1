package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cardlink/internal/store"
	"cardlink/internal/store/internal/lifecycle"
)

// The purchase lifecycle and refunds. Every change is one write
// transaction (the single writer serialises them), with the same
// conditional updates as the PostgreSQL backend, committed with the other
// changes waiting at the same time (group commit, Store.gtx).

// pending is the pending status as an SQL literal. The partial indexes on
// pending requests (WHERE status = 'pending') serve a query only when it
// names the literal: with a bound parameter SQLite prepares the statement
// again at every run to check the value against the index.
const pending = `'` + string(store.PurchasePending) + `'`

// authorized and paid are the statuses of the other partial indexes
// (migration 0008) as SQL literals, for the same reason: a request
// authorized, and the paid ones (approved, refunded partially).
const (
	authorized = `'` + string(store.PurchaseAuthorized) + `'`
	paid       = `('` + string(store.PurchaseApproved) + `', '` + string(store.PurchaseRefundedPartially) + `')`
)

// paidQuery (card, reference) and authorizedQuery (before, limit) are the
// statements of PaidPurchase and AuthorizedPurchases, whose partial
// indexes serve them (TestPartialIndexPlans).
const (
	paidQuery = `SELECT ` + purchaseRow + ` FROM purchases
		WHERE card = ? AND reference = ? AND status IN ` + paid + `
		ORDER BY created DESC, id DESC LIMIT 1`
	authorizedQuery = `SELECT ` + purchaseRow + ` FROM purchases
		WHERE status = ` + authorized + ` AND updated < ? ORDER BY updated, id LIMIT ?`
)

// PendingPurchase implements store.Merchants.
func (s *Store) PendingPurchase(ctx context.Context, reference string, now time.Time) (store.Purchase, error) {
	p, err := scanPurchase(s.row(ctx, `SELECT `+purchaseRow+` FROM purchases
		WHERE reference = ? AND status = `+pending+` AND expires > ?`, reference, now.UnixMicro()))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Purchase{}, fmt.Errorf("reading pending purchase by reference: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Purchase{}, fmt.Errorf("reading pending purchase by reference: %w", err)
	}
	return p, nil
}

// PaidPurchase implements store.Merchants. The partial index on (card,
// reference, created, id) of paid requests serves it (migration 0008).
func (s *Store) PaidPurchase(ctx context.Context, reference, card string) (store.Purchase, error) {
	p, err := scanPurchase(s.row(ctx, paidQuery, card, reference))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Purchase{}, fmt.Errorf("reading paid purchase by reference: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Purchase{}, fmt.Errorf("reading paid purchase by reference: %w", err)
	}
	return p, nil
}

// PendingPurchasesForCard implements store.Merchants.
func (s *Store) PendingPurchasesForCard(ctx context.Context, card string, now time.Time, limit int) ([]store.Purchase, error) {
	return list(ctx, s.r, scanPurchase, "listing pending purchases of card", `SELECT `+purchaseRow+` FROM purchases
		WHERE card = ? AND status = `+pending+` AND expires > ? ORDER BY created, id LIMIT ?`,
		card, now.UnixMicro(), limit)
}

// AuthorizedPurchases implements store.Merchants. The partial index on
// (updated, id) of authorized requests serves it (migration 0008).
func (s *Store) AuthorizedPurchases(ctx context.Context, before time.Time, limit int) ([]store.Purchase, error) {
	return list(ctx, s.r, scanPurchase, "listing authorized purchases", authorizedQuery, before.UnixMicro(), limit)
}

// ExpirePurchases implements store.Merchants.
func (s *Store) ExpirePurchases(ctx context.Context, now time.Time, limit int) ([]store.Purchase, error) {
	var ps []store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		ps, err = list(ctx, tx, scanPurchase, "expiring purchases", `UPDATE purchases SET status = ?1, reason = 'expired', updated = ?2
			WHERE id IN (SELECT id FROM purchases WHERE status = `+pending+` AND expires <= ?2 ORDER BY expires, id LIMIT ?3)
			RETURNING `+purchaseRow, store.PurchaseExpired, now.UnixMicro(), limit)
		return err
	})
	return ps, err
}

// querier is a read connection pool or a write transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// list runs query and scans the rows it returns.
func list[T any](ctx context.Context, q querier, scan func(scanner) (T, error), what, query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var vs []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return vs, nil
}

// lockPurchase reads purchase id in tx (the writer holds the lock),
// ErrNotFound if there is none.
func lockPurchase(ctx context.Context, tx *sql.Tx, id string) (store.Purchase, error) {
	p, err := scanPurchase(tx.QueryRowContext(ctx, `SELECT `+purchaseRow+` FROM purchases WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Purchase{}, fmt.Errorf("purchase %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Purchase{}, fmt.Errorf("reading purchase %q: %w", id, err)
	}
	return p, nil
}

// BindPurchase implements store.Merchants.
func (s *Store) BindPurchase(ctx context.Context, id, card string, offer []byte, now time.Time) (store.Purchase, error) {
	var got store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		p, err := scanPurchase(tx.QueryRowContext(ctx, `UPDATE purchases SET card = ?1, offer = ?2
			WHERE id = ?3 AND status = `+pending+` AND expires > ?4 AND card IN ('', ?1) AND offer IS NULL
			RETURNING `+purchaseRow, card, blob(offer), id, now.UnixMicro()))
		if err == nil {
			got = p
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("binding purchase %q: %w", id, err)
		}
		// Refused: the read names the reason, or finds a retry.
		if p, err = lockPurchase(ctx, tx, id); err != nil {
			return fmt.Errorf("binding: %w", err)
		}
		if err := lifecycle.BindRefused(p, card, now); err != nil {
			return err
		}
		got = p
		return nil
	})
	return got, err
}

// AuthorizePurchase implements store.Merchants.
func (s *Store) AuthorizePurchase(ctx context.Context, id, card string, a store.PurchaseApproval, now time.Time) (store.Purchase, error) {
	var got store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		got, err = authorize(ctx, tx, id, card, a, now)
		return err
	})
	return got, err
}

var _ store.CountingAuthorizer = (*Store)(nil)

// AuthorizePurchaseCounting implements store.CountingAuthorizer: the
// counter's conditional UPDATE, then AuthorizePurchase's statements, in
// one transaction; a refused authorization keeps the counter (commit).
func (s *Store) AuthorizePurchaseCounting(ctx context.Context, id, card string, a store.PurchaseApproval, now time.Time) (store.Purchase, error) {
	var got store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := advanceIn(ctx, tx, card, a.Counter, now); err != nil {
			return err
		}
		var err error
		got, err = authorize(ctx, tx, id, card, a, now)
		return keepCounter(err)
	})
	return got, err
}

// keepCounter makes the refusals of authorize, which changed nothing, a
// commit of the counter advanced before; other errors roll back.
func keepCounter(err error) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExpired) || errors.Is(err, store.ErrSoldOut) {
		return commit{err}
	}
	return err
}

// advanceIn is AdvanceCounter in tx: ErrCounterReplay comes as a commit
// (the clone flag stays).
func advanceIn(ctx context.Context, tx *sql.Tx, number string, counter uint32, now time.Time) error {
	res, err := tx.ExecContext(ctx, advanceSQL, counter, number, counter)
	if err != nil {
		return fmt.Errorf("advancing card counter: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var revoked sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT revoked_at FROM cards WHERE number = ?`, number).Scan(&revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("advancing card counter: %w", store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("advancing card counter: %w", err)
	case revoked.Valid:
		return fmt.Errorf("advancing card counter: %w", store.ErrRevoked)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE cards SET cloned_at = COALESCE(cloned_at, ?) WHERE number = ?`,
		now.UnixMicro(), number); err != nil {
		return fmt.Errorf("flagging card: %w", err)
	}
	return commit{fmt.Errorf("advancing card counter: %w", store.ErrCounterReplay)}
}

// authorize is AuthorizePurchase in tx.
func authorize(ctx context.Context, tx *sql.Tx, id, card string, a store.PurchaseApproval, now time.Time) (store.Purchase, error) {
	p, err := lockPurchase(ctx, tx, id)
	if err != nil {
		return store.Purchase{}, fmt.Errorf("authorizing: %w", err)
	}
	if err := lifecycle.AuthorizeRefused(p, card, now); err != nil {
		return store.Purchase{}, err
	}
	if p.Item != "" {
		if err := takeStock(ctx, tx, p.Item); err != nil {
			return store.Purchase{}, fmt.Errorf("authorizing purchase %q: %w", id, err)
		}
	}
	got, err := scanPurchase(tx.QueryRowContext(ctx, `UPDATE purchases SET status = ?, approval_counter = ?,
		approval_cvm = ?, approval_signature = ?, approval_device = ?, approval_matched_by = ?, updated = ?
		WHERE id = ? RETURNING `+purchaseRow, store.PurchaseAuthorized, int64(a.Counter), int64(a.CVM),
		blob(a.Signature), a.Device, a.MatchedBy, now.UnixMicro(), id))
	if err != nil {
		return store.Purchase{}, fmt.Errorf("authorizing purchase %q: %w", id, err)
	}
	return got, nil
}

// giveBackStock puts back the one authorize took off the stock of item
// ("": none); an unlimited stock stays so.
func giveBackStock(ctx context.Context, tx *sql.Tx, item string) error {
	if item == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE merchant_items SET stock = stock + 1 WHERE id = ? AND stock IS NOT NULL`, item); err != nil {
		return fmt.Errorf("giving back stock of %q: %w", item, err)
	}
	return nil
}

// takeStock takes one off the item's stock, ErrSoldOut if it is 0; an
// unlimited stock stays so.
func takeStock(ctx context.Context, tx *sql.Tx, item string) error {
	res, err := tx.ExecContext(ctx, `UPDATE merchant_items SET stock = stock - 1 WHERE id = ? AND stock > 0`, item)
	if err != nil {
		return fmt.Errorf("taking stock of %q: %w", item, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var unlimited bool
	if err := tx.QueryRowContext(ctx, `SELECT stock IS NULL FROM merchant_items WHERE id = ?`, item).Scan(&unlimited); err != nil {
		return fmt.Errorf("reading stock of %q: %w", item, err)
	}
	if !unlimited {
		return fmt.Errorf("item %q: %w", item, store.ErrSoldOut)
	}
	return nil
}

// CompletePurchase implements store.Merchants.
func (s *Store) CompletePurchase(ctx context.Context, id string, transfer int64, reason string, now time.Time) (store.Purchase, error) {
	var got store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		p, err := lockPurchase(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("completing: %w", err)
		}
		if err := lifecycle.CompleteRefused(p); err != nil {
			got = p
			return err
		}
		got, err = complete(ctx, tx, p, transfer, reason, now)
		return err
	})
	return got, err
}

// complete is CompletePurchase in tx once the authorized purchase p is
// read.
func complete(ctx context.Context, tx *sql.Tx, p store.Purchase, transfer int64, reason string, now time.Time) (store.Purchase, error) {
	status := store.PurchaseApproved
	if reason != "" {
		status, transfer = store.PurchaseDeclined, 0
		if err := giveBackStock(ctx, tx, p.Item); err != nil {
			return store.Purchase{}, err
		}
	}
	got, err := scanPurchase(tx.QueryRowContext(ctx, `UPDATE purchases SET status = ?, transfer = ?, reason = ?, updated = ?
		WHERE id = ? RETURNING `+purchaseRow, status, transfer, reason, now.UnixMicro(), p.ID))
	if err != nil {
		return store.Purchase{}, fmt.Errorf("completing purchase %q: %w", p.ID, err)
	}
	return got, nil
}

var _ store.PurchaseApprover = (*Store)(nil)

// ApprovePurchase implements store.PurchaseApprover in one write of the
// group commit, where the path through the ledger's batcher took three
// (the authorization, the batch, the completion), and with fewer
// statements than those three: AuthorizePurchaseCounting's counter, one
// read of the request with its merchant's account, the stock, postOne
// with the one transfer (plain statements: 0.59 of postBatch's JSON form
// for one transfer, BenchmarkPostOne), and ONE update of the request that
// records the approval and the outcome together (authorized, then
// completed, as AuthorizePurchase and CompletePurchase would leave it).
func (s *Store) ApprovePurchase(ctx context.Context, id, card string, a store.PurchaseApproval, advance bool, pay store.PurchasePayment, now time.Time) (store.Purchase, error) {
	// The ledger keeps microseconds (as ledger.Ledger hands them).
	now = now.UTC().Truncate(time.Microsecond)
	var got store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if advance {
			if err := advanceIn(ctx, tx, card, a.Counter, now); err != nil {
				return err
			}
		}
		var account sql.NullString
		p, err := scanPurchase(with{tx.QueryRowContext(ctx, `SELECT `+purchaseRow+`,
			(SELECT account FROM merchants WHERE id = purchases.merchant) FROM purchases WHERE id = ?`, id), &account})
		if errors.Is(err, sql.ErrNoRows) {
			return commit{fmt.Errorf("authorizing: purchase %q: %w", id, store.ErrNotFound)}
		}
		if err != nil {
			return fmt.Errorf("reading purchase %q: %w", id, err)
		}
		if err := lifecycle.AuthorizeRefused(p, card, now); err != nil {
			return keepCounter(err)
		}
		if p.Item != "" {
			err := takeStock(ctx, tx, p.Item)
			if errors.Is(err, store.ErrSoldOut) {
				if reason := pay.Reason(err); reason != "" {
					got, err = declineIn(ctx, tx, id, card, reason, now)
					return err
				}
			}
			if err != nil {
				return keepCounter(fmt.Errorf("authorizing purchase %q: %w", id, err))
			}
		}
		p.Status, p.Approval, p.Updated = store.PurchaseAuthorized, &a, now
		var posted store.Posted
		t, err := pay.Transfer(p, account.String)
		if err == nil {
			res, perr := postOne(ctx, tx, t, now)
			if perr != nil {
				return fmt.Errorf("paying purchase %q: %w", id, perr)
			}
			posted, err = res.Posted, res.Err
		}
		status, reason := store.PurchaseApproved, ""
		var keep error
		if err != nil {
			if reason = pay.Reason(err); reason == "" {
				// Left authorized, as a crash on the path through the
				// ledger would leave it: a later settlement posts the
				// same key.
				status, keep = store.PurchaseAuthorized, commit{fmt.Errorf("paying purchase %q: %w", id, err)}
			} else {
				status = store.PurchaseDeclined
				if err := giveBackStock(ctx, tx, p.Item); err != nil {
					return err
				}
			}
			posted.ID = 0
		}
		// The row read above, as this statement leaves it: no RETURNING
		// to scan back (it held the write lock since the read).
		if _, err := tx.ExecContext(ctx, `UPDATE purchases SET status = ?, approval_counter = ?,
			approval_cvm = ?, approval_signature = ?, approval_device = ?, approval_matched_by = ?,
			transfer = ?, reason = ?, updated = ? WHERE id = ?`,
			status, int64(a.Counter), int64(a.CVM), blob(a.Signature), a.Device, a.MatchedBy,
			posted.ID, reason, now.UnixMicro(), id); err != nil {
			return fmt.Errorf("approving purchase %q: %w", id, err)
		}
		a.Signature = bytes.Clone(a.Signature)
		p.Status, p.Approval, p.Transfer, p.Reason = status, &a, posted.ID, reason
		got = p
		return keep
	})
	return got, err
}

// with scans a row into a scan function's destinations followed by one
// more, extra: the column a query adds after a known row.
type with struct {
	row   scanner
	extra any
}

func (w with) Scan(dest ...any) error { return w.row.Scan(append(dest, w.extra)...) }

// DeclinePurchase implements store.Merchants.
func (s *Store) DeclinePurchase(ctx context.Context, id, card, reason string, now time.Time) (store.Purchase, error) {
	var got store.Purchase
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		got, err = declineIn(ctx, tx, id, card, reason, now)
		return err
	})
	return got, err
}

// declineIn is DeclinePurchase in tx.
func declineIn(ctx context.Context, tx *sql.Tx, id, card, reason string, now time.Time) (store.Purchase, error) {
	p, err := scanPurchase(tx.QueryRowContext(ctx, `UPDATE purchases SET status = ?1, reason = ?2, updated = ?3
		WHERE id = ?4 AND status = `+pending+` AND (?5 = '' OR card = ?5) RETURNING `+purchaseRow,
		store.PurchaseDeclined, reason, now.UnixMicro(), id, card))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Purchase{}, fmt.Errorf("declining purchase %q: no pending request (bound to the card): %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Purchase{}, fmt.Errorf("declining purchase %q: %w", id, err)
	}
	return p, nil
}

const refundColumns = `id, purchase, merchant, amount, idem_key, digest, status, transfer, reason, created, updated`

func scanRefund(row scanner) (store.Refund, error) {
	var r store.Refund
	var key sql.NullString
	var status string
	var created, updated int64
	if err := row.Scan(&r.ID, &r.Purchase, &r.Merchant, &r.Amount, &key, &r.Digest, &status, &r.Transfer,
		&r.Reason, &created, &updated); err != nil {
		return store.Refund{}, err
	}
	r.IdemKey, r.Status = key.String, store.RefundStatus(status)
	r.Created = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	r.Updated = fromMicros(sql.NullInt64{Int64: updated, Valid: true})
	return r, nil
}

// CreateRefund implements store.Merchants. Updated is Created unless set.
func (s *Store) CreateRefund(ctx context.Context, r store.Refund) (store.Refund, bool, error) {
	r, err := lifecycle.Refund(r)
	if err != nil {
		return store.Refund{}, false, err
	}
	var got store.Refund
	var replayed bool
	err = s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		p, err := lockPurchase(ctx, tx, r.Purchase)
		if err != nil {
			return fmt.Errorf("creating refund: %w", err)
		}
		if err := lifecycle.RefundOf(p, r); err != nil {
			return err
		}
		if r.IdemKey != "" {
			old, err := scanRefund(tx.QueryRowContext(ctx, `SELECT `+refundColumns+` FROM refunds
				WHERE purchase = ? AND idem_key = ?`, r.Purchase, r.IdemKey))
			if err == nil {
				got, replayed = old, true
				return lifecycle.RefundReplayed(old, r)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("reading refund by key: %w", err)
			}
		}
		var taken int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE purchase = ? AND status IN (?, ?)`,
			r.Purchase, store.RefundPending, store.RefundDone).Scan(&taken); err != nil {
			return fmt.Errorf("summing refunds of %q: %w", r.Purchase, err)
		}
		if err := lifecycle.RefundRefused(p, taken, r.Amount); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO refunds (`+refundColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?)`,
			r.ID, r.Purchase, r.Merchant, r.Amount, sql.NullString{String: r.IdemKey, Valid: r.IdemKey != ""},
			blob(r.Digest), r.Status, r.Created.UnixMicro(), r.Updated.UnixMicro())
		if isUnique(err) {
			return fmt.Errorf("creating refund %q: %w", r.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("creating refund %q: %w", r.ID, err)
		}
		got = r
		return nil
	})
	if err != nil {
		return store.Refund{}, false, err
	}
	return got, replayed, nil
}

// FinishRefund implements store.Merchants.
func (s *Store) FinishRefund(ctx context.Context, id string, transfer int64, reason string, now time.Time) (store.Refund, error) {
	var got store.Refund
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		r, err := scanRefund(tx.QueryRowContext(ctx, `SELECT `+refundColumns+` FROM refunds WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("finishing refund %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("finishing refund %q: %w", id, err)
		}
		if err := lifecycle.FinishRefused(r); err != nil {
			got = r
			return err
		}
		status := store.RefundDone
		if reason != "" {
			status, transfer = store.RefundFailed, 0
		} else if _, err := tx.ExecContext(ctx, `UPDATE purchases SET refunded = refunded + ?1,
			status = CASE WHEN refunded + ?1 >= amount THEN ?2 ELSE ?3 END, updated = ?4 WHERE id = ?5`,
			r.Amount, store.PurchaseRefunded, store.PurchaseRefundedPartially, now.UnixMicro(), r.Purchase); err != nil {
			return fmt.Errorf("finishing refund %q: updating purchase: %w", id, err)
		}
		got, err = scanRefund(tx.QueryRowContext(ctx, `UPDATE refunds SET status = ?, transfer = ?, reason = ?, updated = ?
			WHERE id = ? RETURNING `+refundColumns, status, transfer, reason, now.UnixMicro(), id))
		if err != nil {
			return fmt.Errorf("finishing refund %q: %w", id, err)
		}
		return nil
	})
	return got, err
}

// Refunds implements store.Merchants.
func (s *Store) Refunds(ctx context.Context, purchase string) ([]store.Refund, error) {
	return list(ctx, s.r, scanRefund, "listing refunds", `SELECT `+refundColumns+` FROM refunds
		WHERE purchase = ? ORDER BY created, id`, purchase)
}

// PendingRefunds implements store.Merchants.
func (s *Store) PendingRefunds(ctx context.Context, before time.Time, limit int) ([]store.Refund, error) {
	return list(ctx, s.r, scanRefund, "listing pending refunds", `SELECT `+refundColumns+` FROM refunds
		WHERE status = ? AND updated < ? ORDER BY updated, id LIMIT ?`, store.RefundPending, before.UnixMicro(), limit)
}
