package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

var _ store.Ledger = (*Store)(nil)

// CreateAccount implements store.Ledger.
func (s *Store) CreateAccount(ctx context.Context, a store.Account, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (id, kind, currency, balance, lower_limit, created)
			VALUES (?, ?, ?, 0, ?, ?)`, a.ID, string(a.Kind), string(a.Currency), a.Limit, now.UnixMicro())
		if isUnique(err) {
			return fmt.Errorf("creating account %q: %w", a.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("creating account %q: %w", a.ID, err)
		}
		return nil
	})
}

// Account implements store.Ledger.
func (s *Store) Account(ctx context.Context, id string) (store.Account, error) {
	var a store.Account
	var kind, cur string
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT id, kind, currency, balance, lower_limit, created
		FROM ledger_accounts WHERE id = ?`, id).Scan(&a.ID, &kind, &cur, &a.Balance, &a.Limit, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Account{}, fmt.Errorf("reading account %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Account{}, fmt.Errorf("reading account %q: %w", id, err)
	}
	a.Kind, a.Currency, a.Created = store.AccountKind(kind), money.Currency(cur), time.UnixMicro(created).UTC()
	return a, nil
}

// PostTransfers implements store.Ledger: one BEGIN IMMEDIATE transaction,
// a SAVEPOINT per transfer, one commit (one fsync of the WAL).
func (s *Store) PostTransfers(ctx context.Context, ts []store.Transfer, now time.Time) ([]store.Result, error) {
	res := make([]store.Result, len(ts))
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for i, t := range ts {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT t`); err != nil {
				return fmt.Errorf("opening savepoint: %w", err)
			}
			p, err := postOne(ctx, tx, t, now)
			if err != nil {
				if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO t`); rerr != nil {
					return fmt.Errorf("rolling back to savepoint: %w", rerr)
				}
			}
			if _, rerr := tx.ExecContext(ctx, `RELEASE t`); rerr != nil {
				return fmt.Errorf("releasing savepoint: %w", rerr)
			}
			res[i] = store.Result{Posted: p, Err: err}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("posting transfers: %w", err)
	}
	return res, nil
}

// postOne posts t inside the open savepoint; on error the caller rolls
// back to it.
func postOne(ctx context.Context, tx *sql.Tx, t store.Transfer, now time.Time) (store.Posted, error) {
	now = now.UTC().Truncate(time.Microsecond)
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO ledger_transfers (idem_key, digest, currency, memo, posted)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING RETURNING id`,
		t.Key, blob(t.Digest), string(t.Currency), t.Memo, now.UnixMicro()).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		var digest []byte
		var posted int64
		if err := tx.QueryRowContext(ctx, `SELECT id, digest, posted FROM ledger_transfers WHERE idem_key = ?`,
			t.Key).Scan(&id, &digest, &posted); err != nil {
			return store.Posted{}, fmt.Errorf("reading transfer %q: %w", t.Key, err)
		}
		if !bytes.Equal(digest, t.Digest) {
			return store.Posted{}, fmt.Errorf("transfer %q was posted with other content: %w", t.Key, store.ErrConflict)
		}
		return store.Posted{ID: id, Key: t.Key, Time: time.UnixMicro(posted).UTC(), Replayed: true}, nil
	}
	if err != nil {
		return store.Posted{}, fmt.Errorf("inserting transfer %q: %w", t.Key, err)
	}
	for _, l := range t.Legs {
		var bal int64
		err := tx.QueryRowContext(ctx, `UPDATE ledger_accounts SET balance = balance + ?1
			WHERE id = ?2 AND currency = ?3 AND balance + ?1 >= lower_limit RETURNING balance`,
			l.Amount, l.Account, string(t.Currency)).Scan(&bal)
		if errors.Is(err, sql.ErrNoRows) {
			return store.Posted{}, legRefused(ctx, tx, t, l)
		}
		if err != nil {
			return store.Posted{}, fmt.Errorf("updating account %q: %w", l.Account, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_entries (transfer, account, amount, balance, posted)
			VALUES (?, ?, ?, ?, ?)`, id, l.Account, l.Amount, bal, now.UnixMicro()); err != nil {
			return store.Posted{}, fmt.Errorf("inserting entry: %w", err)
		}
	}
	return store.Posted{ID: id, Key: t.Key, Time: now.UTC()}, nil
}

// legRefused says why the guarded update of leg l matched no row.
func legRefused(ctx context.Context, tx *sql.Tx, t store.Transfer, l store.Leg) error {
	var cur string
	err := tx.QueryRowContext(ctx, `SELECT currency FROM ledger_accounts WHERE id = ?`, l.Account).Scan(&cur)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("posting %q: account %q: %w", t.Key, l.Account, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("posting %q: reading account %q: %w", t.Key, l.Account, err)
	case cur != string(t.Currency):
		return fmt.Errorf("posting %q: account %q is in %s, not %s: %w", t.Key, l.Account, cur, t.Currency, store.ErrCurrency)
	}
	return fmt.Errorf("posting %q: account %q: %w", t.Key, l.Account, store.ErrLimit)
}

// Entries implements store.Ledger.
func (s *Store) Entries(ctx context.Context, account string, from, to time.Time) (int64, []store.Entry, error) {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, nil, fmt.Errorf("reading entries: %w", err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM ledger_accounts WHERE id = ?`, account).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, store.ErrNotFound)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
	}
	var opening int64
	err = tx.QueryRowContext(ctx, `SELECT balance FROM ledger_entries WHERE account = ? AND posted < ?
		ORDER BY id DESC LIMIT 1`, account, from.UnixMicro()).Scan(&opening)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, nil, fmt.Errorf("reading opening balance of %q: %w", account, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT e.transfer, t.idem_key, e.amount, e.balance, t.memo, e.posted
		FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer
		WHERE e.account = ? AND e.posted >= ? AND e.posted < ? ORDER BY e.id`,
		account, from.UnixMicro(), to.UnixMicro())
	if err != nil {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
	}
	defer rows.Close()
	var es []store.Entry
	for rows.Next() {
		e := store.Entry{Account: account}
		var posted int64
		if err := rows.Scan(&e.Transfer, &e.Key, &e.Amount, &e.Balance, &e.Memo, &posted); err != nil {
			return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
		}
		e.Time = time.UnixMicro(posted).UTC()
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
	}
	return opening, es, nil
}
