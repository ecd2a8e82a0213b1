package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/store"
	"cardlink/internal/store/internal/ledgerplan"
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
	err := s.row(ctx, `SELECT id, kind, currency, balance, lower_limit, created
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

// PostTransfers implements store.Ledger with a few set-based statements
// per batch instead of a savepoint and five statements per transfer. The
// batch is one write of the group commit (gtx), so it shares its BEGIN
// IMMEDIATE transaction, which holds the database's only write lock until
// the commit, and its fsync with the purchase writes waiting at the same
// time; it runs in its own savepoint, which rolls back alone if the batch
// fails as a whole. In it:
//
//  1. it reads every account the batch names, every transfer with one of
//     its keys and the last transfer ID (three statements);
//  2. in Go it applies the transfers one by one, in batch order: a known
//     key is a replay or a conflict; a transfer whose leg names an unknown
//     account, another currency or would go below the limit is refused
//     alone; the others get the next transfer IDs and change the balances;
//  3. it writes the outcome: one INSERT of the posted transfers, one of
//     their entries (the rows go as a JSON array to json_each, so that the
//     statements' text is the same for every batch), one UPDATE of the
//     changed balances (a compare-and-set, still guarded by the limit).
//
// Nothing else writes between the reads and the writes (the group's
// writes run one after the other on the one writer connection, and the
// earlier ones are visible to the reads), so step 2 is exact and needs no
// savepoint per transfer.
func (s *Store) PostTransfers(ctx context.Context, ts []store.Transfer, now time.Time) ([]store.Result, error) {
	now = now.UTC().Truncate(time.Microsecond)
	res := make([]store.Result, len(ts))
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error { return postBatch(ctx, tx, ts, now, res) })
	if err != nil {
		return nil, fmt.Errorf("posting transfers: %w", err)
	}
	return res, nil
}

// postBatch posts ts in the open write transaction and sets res.
func postBatch(ctx context.Context, tx *sql.Tx, ts []store.Transfer, now time.Time, res []store.Result) error {
	var ids, keys []string
	for _, t := range ts {
		keys = append(keys, t.Key)
		for _, l := range t.Legs {
			ids = append(ids, l.Account)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	slices.Sort(keys)
	keys = slices.Compact(keys)

	accts := make(map[string]*ledgerplan.Account, len(ids))
	rows, err := tx.QueryContext(ctx, `SELECT id, currency, balance, lower_limit FROM ledger_accounts
		WHERE id IN (SELECT CAST(unhex(value) AS TEXT) FROM json_each(?))`, jsonStrings(ids))
	if err != nil {
		return fmt.Errorf("reading accounts: %w", err)
	}
	for rows.Next() {
		a := new(ledgerplan.Account)
		var id string
		if err := rows.Scan(&id, &a.Currency, &a.Balance, &a.Limit); err != nil {
			rows.Close()
			return fmt.Errorf("reading accounts: %w", err)
		}
		a.Locked = a.Balance
		accts[id] = a
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading accounts: %w", err)
	}

	// Keys posted before, and then by this batch.
	type prior struct {
		id     int64
		digest []byte
		posted time.Time
	}
	known := make(map[string]prior, len(keys))
	rows, err = tx.QueryContext(ctx, `SELECT idem_key, id, digest, posted FROM ledger_transfers
		WHERE idem_key IN (SELECT CAST(unhex(value) AS TEXT) FROM json_each(?))`, jsonStrings(keys))
	if err != nil {
		return fmt.Errorf("reading transfers: %w", err)
	}
	for rows.Next() {
		var k string
		var p prior
		var posted int64
		if err := rows.Scan(&k, &p.id, &p.digest, &posted); err != nil {
			rows.Close()
			return fmt.Errorf("reading transfers: %w", err)
		}
		p.posted = time.UnixMicro(posted).UTC()
		known[k] = p
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading transfers: %w", err)
	}
	var next int64
	if err := tx.QueryRowContext(ctx, `SELECT max(
		COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'ledger_transfers'), 0),
		COALESCE((SELECT max(id) FROM ledger_transfers), 0))`).Scan(&next); err != nil {
		return fmt.Errorf("reading transfer sequence: %w", err)
	}

	var p ledgerplan.Plan
	var posted []int // indexes into ts of the transfers posted now
	for i, t := range ts {
		if k, ok := known[t.Key]; ok {
			if !bytes.Equal(k.digest, t.Digest) {
				res[i] = store.Result{Err: fmt.Errorf("transfer %q was posted with other content: %w", t.Key, store.ErrConflict)}
			} else {
				res[i] = store.Result{Posted: store.Posted{ID: k.id, Key: t.Key, Time: k.posted, Replayed: true}}
			}
			continue
		}
		res[i] = p.Apply(t, next+1, now, accts)
		if res[i].Err == nil {
			next++
			posted = append(posted, i)
			known[t.Key] = prior{id: next, digest: t.Digest, posted: now}
		}
	}
	if len(posted) == 0 {
		return nil
	}
	// Any failure below fails the whole batch (its savepoint rolls back),
	// so no statement needs rolling back alone: OR FAIL. The foreign keys
	// are checked at once, and pass: the transfers are inserted before
	// their entries, and every account was read above. (Deferring them
	// with PRAGMA defer_foreign_keys would expire every statement prepared
	// on the writer connection, to be parsed again.)

	// The rows go as JSON arrays to fixed statements: a multi-row VALUES
	// would be parsed anew for every batch size.
	us := now.UnixMicro()
	js := make([]byte, 0, 128*len(posted))
	js = append(js, '[')
	for j, i := range posted {
		if j > 0 {
			js = append(js, ',')
		}
		t := ts[i]
		js = append(js, '[')
		js = strconv.AppendInt(js, res[i].Posted.ID, 10)
		js = append(js, ',')
		js = appendText(js, t.Key)
		js = append(js, ',', '"')
		js = hex.AppendEncode(js, t.Digest)
		js = append(js, '"', ',')
		js = appendText(js, string(t.Currency))
		js = append(js, ',')
		js = appendText(js, t.Memo)
		js = append(js, ']')
	}
	js = append(js, ']')
	if _, err := tx.ExecContext(ctx, `INSERT OR FAIL INTO ledger_transfers (id, idem_key, digest, currency, memo, posted)
		SELECT value ->> 0, CAST(unhex(value ->> 1) AS TEXT), unhex(value ->> 2),
			CAST(unhex(value ->> 3) AS TEXT), CAST(unhex(value ->> 4) AS TEXT), ?2
		FROM json_each(?1)`,
		string(js), us); err != nil {
		return fmt.Errorf("inserting transfers: %w", err)
	}
	js = js[:0]
	js = append(js, '[')
	for j, e := range p.Entries {
		if j > 0 {
			js = append(js, ',')
		}
		js = append(js, '[')
		js = strconv.AppendInt(js, e.Transfer, 10)
		js = append(js, ',')
		js = appendText(js, e.Account)
		js = append(js, ',')
		js = strconv.AppendInt(js, e.Amount, 10)
		js = append(js, ',')
		js = strconv.AppendInt(js, e.Balance, 10)
		js = append(js, ']')
	}
	js = append(js, ']')
	if _, err := tx.ExecContext(ctx, `INSERT OR FAIL INTO ledger_entries (transfer, account, amount, balance, posted)
		SELECT value ->> 0, CAST(unhex(value ->> 1) AS TEXT), value ->> 2, value ->> 3, ?2 FROM json_each(?1)`,
		string(js), us); err != nil {
		return fmt.Errorf("inserting entries: %w", err)
	}
	// One UPDATE of every changed balance: [id, old, new] triples.
	js = js[:0]
	js = append(js, '[')
	for j, id := range p.Touched {
		if j > 0 {
			js = append(js, ',')
		}
		a := accts[id]
		js = append(js, '[')
		js = appendText(js, id)
		js = append(js, ',')
		js = strconv.AppendInt(js, a.Locked, 10)
		js = append(js, ',')
		js = strconv.AppendInt(js, a.Balance, 10)
		js = append(js, ']')
	}
	js = append(js, ']')
	r, err := tx.ExecContext(ctx, `UPDATE OR FAIL ledger_accounts AS a SET balance = u.value ->> 2
		FROM json_each(?) AS u
		WHERE a.id = CAST(unhex(u.value ->> 0) AS TEXT) AND a.balance = u.value ->> 1 AND u.value ->> 2 >= a.lower_limit`, string(js))
	if err != nil {
		return fmt.Errorf("updating balances: %w", err)
	}
	if n, err := r.RowsAffected(); err != nil || n != int64(len(p.Touched)) {
		// Impossible while this transaction holds the write lock.
		return fmt.Errorf("updating balances: %d of %d accounts updated (%v)", n, len(p.Touched), err)
	}
	return nil
}

// jsonStrings encodes ss as a JSON array for json_each, each string as
// appendText does.
func jsonStrings(ss []string) string {
	b := make([]byte, 0, 24*len(ss))
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendText(b, s)
	}
	return string(append(b, ']'))
}

// appendText appends s to b as a JSON string of its bytes in hex, which
// SQL turns back into s with CAST(unhex(…) AS TEXT): any bytes, valid
// UTF-8 or not, come back unchanged (JSON would replace invalid UTF-8).
func appendText(b []byte, s string) []byte {
	b = append(b, '"')
	b = hex.AppendEncode(b, []byte(s))
	return append(b, '"')
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

// postOne posts t alone in the open write transaction, with postBatch's
// rules and ledgerplan's checks, in plain statements instead of postBatch's
// JSON arrays: the accounts, the checks, then the transfer (its ID from
// AUTOINCREMENT, as postBatch would number it; a key posted before adds no
// row and is answered from its row, as a replay or a conflict, before any
// other refusal), the entries and the balances in one statement (the same
// compare-and-set per account, guarded by the limit). t has at least one
// leg (ledger.Prepare: two or more). The error is non-nil only if a
// statement failed: the caller's write then rolls back.
func postOne(ctx context.Context, tx *sql.Tx, t store.Transfer, now time.Time) (store.Result, error) {
	if len(t.Legs) < 2 {
		// The statements below name a parameter per leg; and the writer
		// goroutine must never panic.
		return store.Result{Err: fmt.Errorf("transfer %q has %d legs, want at least two", t.Key, len(t.Legs))}, nil
	}
	// One statement per number of legs (the text names a parameter per
	// leg), prepared once on the writer connection.
	args := make([]any, 0, 5*len(t.Legs))
	for _, l := range t.Legs {
		args = append(args, l.Account)
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, currency, balance, lower_limit FROM ledger_accounts WHERE id IN (?`+
		strings.Repeat(", ?", len(t.Legs)-1)+`)`, args...)
	if err != nil {
		return store.Result{}, fmt.Errorf("reading accounts: %w", err)
	}
	accts := make(map[string]*ledgerplan.Account, len(t.Legs))
	for rows.Next() {
		a := new(ledgerplan.Account)
		var acct string
		if err := rows.Scan(&acct, &a.Currency, &a.Balance, &a.Limit); err != nil {
			rows.Close()
			return store.Result{}, fmt.Errorf("reading accounts: %w", err)
		}
		a.Locked = a.Balance
		accts[acct] = a
	}
	if err := rows.Err(); err != nil {
		return store.Result{}, fmt.Errorf("reading accounts: %w", err)
	}
	// Checked with a stand-in ID: the row gets its own below.
	var p ledgerplan.Plan
	res := p.Apply(t, 0, now, accts)
	if res.Err != nil {
		// A key posted before is a replay even if its legs no longer fit.
		if old, ok, err := postedBefore(ctx, tx, t); err != nil || ok {
			return old, err
		}
		return res, nil
	}
	us := now.UnixMicro()
	var id int64
	err = tx.QueryRowContext(ctx, `INSERT INTO ledger_transfers (idem_key, digest, currency, memo, posted)
		VALUES (?, ?, ?, ?, ?) RETURNING id`, t.Key, blob(t.Digest), string(t.Currency), t.Memo, us).Scan(&id)
	if isUnique(err) {
		// The failed statement undid itself, AUTOINCREMENT's count
		// included (ON CONFLICT DO NOTHING would spend an ID).
		if old, ok, err := postedBefore(ctx, tx, t); err != nil || ok {
			return old, err
		}
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("inserting transfer: %w", err)
	}
	res.Posted.ID = id
	args = args[:0]
	for _, e := range p.Entries {
		args = append(args, id, e.Account, e.Amount, e.Balance, us)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR FAIL INTO ledger_entries (transfer, account, amount, balance, posted)
		VALUES (?, ?, ?, ?, ?)`+strings.Repeat(", (?, ?, ?, ?, ?)", len(p.Entries)-1), args...); err != nil {
		return store.Result{}, fmt.Errorf("inserting entries: %w", err)
	}
	args = args[:0]
	for _, acct := range p.Touched {
		a := accts[acct]
		args = append(args, acct, a.Balance, a.Locked)
	}
	r, err := tx.ExecContext(ctx, updateBalances(len(p.Touched)), args...)
	if err != nil {
		return store.Result{}, fmt.Errorf("updating balances: %w", err)
	}
	if n, err := r.RowsAffected(); err != nil || n != int64(len(p.Touched)) {
		// Impossible while this transaction holds the write lock.
		return store.Result{}, fmt.Errorf("updating balances of %q: %d rows (%v)", p.Touched, n, err)
	}
	return res, nil
}

// balanceUpdates holds updateBalances' statements for up to four
// accounts (a purchase touches two), built once: postOne runs on the
// writer goroutine, the limit of the purchase rate.
var balanceUpdates = func() (u [5]string) {
	for n := 1; n < len(u); n++ {
		u[n] = buildUpdateBalances(n)
	}
	return u
}()

// updateBalances returns the one UPDATE that sets the balances of n
// accounts, each under the same compare-and-set guard as postBatch's:
// parameter 3i+1 is an account, 3i+2 its new balance, 3i+3 the balance it
// was read with.
func updateBalances(n int) string {
	if n < len(balanceUpdates) {
		return balanceUpdates[n]
	}
	return buildUpdateBalances(n)
}

func buildUpdateBalances(n int) string {
	var set, where strings.Builder
	for i := range n {
		fmt.Fprintf(&set, " WHEN ?%d THEN ?%d", 3*i+1, 3*i+2)
		if i > 0 {
			where.WriteString(" OR ")
		}
		fmt.Fprintf(&where, "(id = ?%d AND balance = ?%d AND ?%d >= lower_limit)", 3*i+1, 3*i+3, 3*i+2)
	}
	return `UPDATE OR FAIL ledger_accounts SET balance = CASE id` + set.String() + ` END WHERE ` + where.String()
}

// postedBefore answers t from the transfer posted before with its key:
// replayed with the same digest, ErrConflict with another; ok is false if
// there is none.
func postedBefore(ctx context.Context, tx *sql.Tx, t store.Transfer) (res store.Result, ok bool, err error) {
	var (
		id     int64
		digest []byte
		posted int64
	)
	err = tx.QueryRowContext(ctx, `SELECT id, digest, posted FROM ledger_transfers WHERE idem_key = ?`, t.Key).
		Scan(&id, &digest, &posted)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Result{}, false, nil
	case err != nil:
		return store.Result{}, false, fmt.Errorf("reading transfer: %w", err)
	case !bytes.Equal(digest, t.Digest):
		return store.Result{Err: fmt.Errorf("transfer %q was posted with other content: %w", t.Key, store.ErrConflict)}, true, nil
	}
	return store.Result{Posted: store.Posted{ID: id, Key: t.Key, Time: time.UnixMicro(posted).UTC(), Replayed: true}}, true, nil
}
