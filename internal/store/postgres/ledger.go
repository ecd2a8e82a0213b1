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

var _ store.Ledger = (*Store)(nil)

// CreateAccount implements store.Ledger.
func (s *Store) CreateAccount(ctx context.Context, a store.Account, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO ledger_accounts (id, kind, currency, balance, lower_limit, created)
		VALUES ($1, $2, $3, 0, $4, $5)`, a.ID, string(a.Kind), string(a.Currency), a.Limit, now.UTC())
	if isCode(err, sqlstateUnique) {
		return fmt.Errorf("creating account %q: %w", a.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("creating account %q: %w", a.ID, err)
	}
	return nil
}

// Account implements store.Ledger.
func (s *Store) Account(ctx context.Context, id string) (store.Account, error) {
	var a store.Account
	var kind, cur string
	err := s.pool.QueryRow(ctx, `SELECT id, kind, currency, balance, lower_limit, created
		FROM ledger_accounts WHERE id = $1`, id).Scan(&a.ID, &kind, &cur, &a.Balance, &a.Limit, &a.Created)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Account{}, fmt.Errorf("reading account %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Account{}, fmt.Errorf("reading account %q: %w", id, err)
	}
	a.Kind, a.Currency, a.Created = store.AccountKind(kind), money.Currency(cur), a.Created.UTC()
	return a, nil
}

// PostTransfers implements store.Ledger: one transaction, one call of
// the ledger_post function per transfer (each in its own subtransaction,
// a savepoint), all pipelined in one round trip, and one commit. The
// guarded UPDATE takes each account's row lock, so concurrent transactions
// (other server instances) on one account wait for each other and re-check
// the guard on the new balance.
func (s *Store) PostTransfers(ctx context.Context, ts []store.Transfer, now time.Time) ([]store.Result, error) {
	now = now.UTC().Truncate(time.Microsecond)
	res := make([]store.Result, len(ts))
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, t := range ts {
			accounts := make([]string, len(t.Legs))
			amounts := make([]int64, len(t.Legs))
			for i, l := range t.Legs {
				accounts[i], amounts[i] = l.Account, l.Amount
			}
			b.Queue(`SELECT o_id, o_posted, o_status, o_account FROM ledger_post($1, $2, $3, $4, $5, $6, $7)`,
				t.Key, blob(t.Digest), string(t.Currency), t.Memo, now, accounts, amounts)
		}
		br := tx.SendBatch(ctx, &b)
		for i, t := range ts {
			var id *int64
			var posted *time.Time
			var status string
			var account *string
			if err := br.QueryRow().Scan(&id, &posted, &status, &account); err != nil {
				br.Close()
				return fmt.Errorf("posting %q: %w", t.Key, err)
			}
			res[i] = result(t, id, posted, status, account)
		}
		if err := br.Close(); err != nil {
			return fmt.Errorf("posting transfers: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("posting transfers: %w", err)
	}
	return res, nil
}

// result turns one row of ledger_post into a Result.
func result(t store.Transfer, id *int64, posted *time.Time, status string, account *string) store.Result {
	var acct string
	if account != nil {
		acct = *account
	}
	switch status {
	case "ok", "replayed":
		if id == nil || posted == nil {
			return store.Result{Err: fmt.Errorf("posting %q: ledger_post returned %s without a transfer", t.Key, status)}
		}
		return store.Result{Posted: store.Posted{ID: *id, Key: t.Key, Time: posted.UTC(), Replayed: status == "replayed"}}
	case "conflict":
		return store.Result{Err: fmt.Errorf("transfer %q was posted with other content: %w", t.Key, store.ErrConflict)}
	case "notfound":
		return store.Result{Err: fmt.Errorf("posting %q: account %q: %w", t.Key, acct, store.ErrNotFound)}
	case "currency":
		return store.Result{Err: fmt.Errorf("posting %q: account %q is not in %s: %w", t.Key, acct, t.Currency, store.ErrCurrency)}
	case "limit":
		return store.Result{Err: fmt.Errorf("posting %q: account %q: %w", t.Key, acct, store.ErrLimit)}
	}
	return store.Result{Err: fmt.Errorf("posting %q: %s: %s", t.Key, status, acct)}
}

// Entries implements store.Ledger.
func (s *Store) Entries(ctx context.Context, account string, from, to time.Time) (int64, []store.Entry, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return 0, nil, fmt.Errorf("reading entries: %w", err)
	}
	defer tx.Rollback(ctx)
	var one int
	err = tx.QueryRow(ctx, `SELECT 1 FROM ledger_accounts WHERE id = $1`, account).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, store.ErrNotFound)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
	}
	var opening int64
	err = tx.QueryRow(ctx, `SELECT balance FROM ledger_entries WHERE account = $1 AND posted < $2
		ORDER BY id DESC LIMIT 1`, account, from.UTC()).Scan(&opening)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, fmt.Errorf("reading opening balance of %q: %w", account, err)
	}
	rows, err := tx.Query(ctx, `SELECT e.transfer, t.idem_key, e.amount, e.balance, t.memo, e.posted
		FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer
		WHERE e.account = $1 AND e.posted >= $2 AND e.posted < $3 ORDER BY e.id`,
		account, from.UTC(), to.UTC())
	if err != nil {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
	}
	defer rows.Close()
	var es []store.Entry
	for rows.Next() {
		e := store.Entry{Account: account}
		if err := rows.Scan(&e.Transfer, &e.Key, &e.Amount, &e.Balance, &e.Memo, &e.Time); err != nil {
			return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
		}
		e.Time = e.Time.UTC()
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("reading entries of %q: %w", account, err)
	}
	return opening, es, nil
}
