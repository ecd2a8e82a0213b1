package postgres

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"cardlink/internal/money"
	"cardlink/internal/store"
	"cardlink/internal/store/internal/ledgerplan"
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

// PostTransfers implements store.Ledger with a few set-based statements
// per batch instead of one subtransaction per transfer, in two round trips
// plus one per repeated key. In one transaction (READ COMMITTED), for each
// round of transfers with distinct keys (a batch that repeats a key has a
// round per repetition):
//
//  1. it inserts every transfer with one INSERT … SELECT FROM unnest(…)
//     ON CONFLICT (idem_key) DO NOTHING, in key order, and locks every
//     account the round names with one SELECT … ORDER BY id FOR UPDATE,
//     pipelined in one round trip (with the BEGIN);
//  2. a key that was not inserted exists: its transfer is a replay or a
//     conflict (one more statement, only then);
//  3. in Go, on the locked balances, it applies the new transfers one by
//     one, in key order, refusing alone any whose leg names an unknown
//     account, another currency or would go below the limit;
//  4. it writes the outcome with one UPDATE … FROM unnest(…) of the
//     changed balances (a compare-and-set on the locked balance, still
//     guarded by the limit, that fails the transaction if any row does not
//     match), one INSERT of all entries and, if some were refused, one
//     DELETE of their transfer rows, pipelined in one round trip (with the
//     COMMIT).
//
// The row locks make step 3 exact: no other transaction (another server
// instance) changes these balances until the commit, and one that waits
// for them reads the new balances. Every transaction takes its keys in key
// order and then its account locks in ID order, so two instances never
// deadlock (a later round's keys are keys of the first round, which this
// transaction already holds).
func (s *Store) PostTransfers(ctx context.Context, ts []store.Transfer, now time.Time) ([]store.Result, error) {
	now = now.UTC().Truncate(time.Microsecond)
	res := make([]store.Result, len(ts))
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("posting transfers: %w", err)
	}
	// Release closes the connection if it is still in a transaction.
	defer c.Release()
	rounds := ledgerRounds(ts)
	for n, round := range rounds {
		if err := postRound(ctx, c.Conn(), ts, round, now, n == 0, n == len(rounds)-1, res); err != nil {
			if _, rerr := c.Exec(ctx, `ROLLBACK`); rerr != nil {
				c.Conn().Close(ctx)
			}
			return nil, fmt.Errorf("posting transfers: %w", err)
		}
	}
	return res, nil
}

// postRound posts ts[i] for i in round (distinct keys, in key order) and
// sets res[i]. The first round begins the transaction, the last commits
// it.
func postRound(ctx context.Context, c *pgx.Conn, ts []store.Transfer, round []int, now time.Time, first, last bool, res []store.Result) error {
	keys := make([]string, len(round))
	digests := make([][]byte, len(round))
	curs := make([]string, len(round))
	memos := make([]string, len(round))
	var ids []string
	for j, i := range round {
		t := ts[i]
		keys[j], digests[j], curs[j], memos[j] = t.Key, blob(t.Digest), string(t.Currency), t.Memo
		for _, l := range t.Legs {
			ids = append(ids, l.Account)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	var b pgx.Batch
	if first {
		b.Queue(`BEGIN`)
	}
	b.Queue(`INSERT INTO ledger_transfers (idem_key, digest, currency, memo, posted)
		SELECT k, d, c, m, $5 FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[]) AS u(k, d, c, m)
		ON CONFLICT (idem_key) DO NOTHING RETURNING idem_key, id`, keys, digests, curs, memos, now)
	b.Queue(`SELECT id, currency, balance, lower_limit FROM ledger_accounts
		WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	br := c.SendBatch(ctx, &b)
	if first {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("beginning transaction: %w", err)
		}
	}
	inserted := make(map[string]int64, len(round))
	rows, _ := br.Query()
	for rows.Next() {
		var k string
		var id int64
		if err := rows.Scan(&k, &id); err != nil {
			rows.Close()
			br.Close()
			return fmt.Errorf("inserting transfers: %w", err)
		}
		inserted[k] = id
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return fmt.Errorf("inserting transfers: %w", err)
	}
	accts := make(map[string]*ledgerplan.Account, len(ids))
	rows, _ = br.Query()
	for rows.Next() {
		a := new(ledgerplan.Account)
		var id string
		if err := rows.Scan(&id, &a.Currency, &a.Balance, &a.Limit); err != nil {
			rows.Close()
			br.Close()
			return fmt.Errorf("locking accounts: %w", err)
		}
		a.Locked = a.Balance
		accts[id] = a
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return fmt.Errorf("locking accounts: %w", err)
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("locking accounts: %w", err)
	}

	if len(inserted) < len(round) {
		if err := replays(ctx, c, ts, round, inserted, res); err != nil {
			return err
		}
	}

	var p ledgerplan.Plan
	for _, i := range round {
		id, ok := inserted[ts[i].Key]
		if !ok {
			continue // answered by replays
		}
		res[i] = p.Apply(ts[i], id, now, accts)
	}
	b = pgx.Batch{}
	if len(p.Touched) > 0 {
		ups := make([]string, len(p.Touched))
		olds := make([]int64, len(p.Touched))
		news := make([]int64, len(p.Touched))
		for j, id := range p.Touched {
			a := accts[id]
			ups[j], olds[j], news[j] = id, a.Locked, a.Balance
		}
		// A row that does not match fails the cast, and so the
		// transaction: impossible while the rows are locked.
		b.Queue(`WITH u AS (
				UPDATE ledger_accounts a SET balance = u.b
				FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(id, o, b)
				WHERE a.id = u.id AND a.balance = u.o AND u.b >= a.lower_limit
				RETURNING 1)
			SELECT CASE WHEN count(*) = $4 THEN 1
				ELSE ('ledger: ' || count(*) || ' of ' || $4 || ' locked balances updated')::int END
			FROM u`, ups, olds, news, len(ups))
		et := make([]int64, len(p.Entries))
		ea := make([]string, len(p.Entries))
		em := make([]int64, len(p.Entries))
		eb := make([]int64, len(p.Entries))
		for j, e := range p.Entries {
			et[j], ea[j], em[j], eb[j] = e.Transfer, e.Account, e.Amount, e.Balance
		}
		b.Queue(`INSERT INTO ledger_entries (transfer, account, amount, balance, posted)
			SELECT t, a, m, b, $5 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS u(t, a, m, b)`,
			et, ea, em, eb, now)
	}
	if len(p.Refused) > 0 {
		b.Queue(`DELETE FROM ledger_transfers WHERE id = ANY($1)`, p.Refused)
	}
	if last {
		b.Queue(`COMMIT`)
	}
	if b.Len() == 0 {
		return nil
	}
	br = c.SendBatch(ctx, &b)
	defer br.Close()
	if len(p.Touched) > 0 {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("updating balances: %w", err)
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("inserting entries: %w", err)
		}
	}
	if len(p.Refused) > 0 {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("deleting refused transfers: %w", err)
		}
	}
	if last {
		tag, err := br.Exec()
		if err != nil {
			return fmt.Errorf("committing: %w", err)
		}
		if tag.String() != "COMMIT" {
			return fmt.Errorf("committing: %s", tag)
		}
	}
	return br.Close()
}

// replays answers the transfers of round whose key was not inserted: the
// key exists, posted before (by this batch's earlier round, another batch
// or another instance that committed meanwhile).
func replays(ctx context.Context, tx *pgx.Conn, ts []store.Transfer, round []int, inserted map[string]int64, res []store.Result) error {
	var keys []string
	for _, i := range round {
		if _, ok := inserted[ts[i].Key]; !ok {
			keys = append(keys, ts[i].Key)
		}
	}
	type prior struct {
		id     int64
		digest []byte
		posted time.Time
	}
	found := make(map[string]prior, len(keys))
	rows, err := tx.Query(ctx, `SELECT idem_key, id, digest, posted FROM ledger_transfers WHERE idem_key = ANY($1)`, keys)
	if err != nil {
		return fmt.Errorf("reading transfers: %w", err)
	}
	for rows.Next() {
		var k string
		var p prior
		if err := rows.Scan(&k, &p.id, &p.digest, &p.posted); err != nil {
			rows.Close()
			return fmt.Errorf("reading transfers: %w", err)
		}
		found[k] = p
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading transfers: %w", err)
	}
	for _, i := range round {
		t := ts[i]
		if _, ok := inserted[t.Key]; ok {
			continue
		}
		p, ok := found[t.Key]
		switch {
		case !ok:
			// Cannot happen: ON CONFLICT found a committed row.
			return fmt.Errorf("reading transfer %q: %w", t.Key, store.ErrNotFound)
		case !bytes.Equal(p.digest, t.Digest):
			res[i] = store.Result{Err: fmt.Errorf("transfer %q was posted with other content: %w", t.Key, store.ErrConflict)}
		default:
			res[i] = store.Result{Posted: store.Posted{ID: p.id, Key: t.Key, Time: p.posted.UTC(), Replayed: true}}
		}
	}
	return nil
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

// ledgerRounds splits the indexes of ts into rounds of distinct keys: the
// n-th round holds the n-th transfer with each key. Each round is in key
// order, the order in which transactions take key locks.
func ledgerRounds(ts []store.Transfer) [][]int {
	var rounds [][]int
	seen := make(map[string]int, len(ts))
	for i, t := range ts {
		n := seen[t.Key]
		seen[t.Key] = n + 1
		if n == len(rounds) {
			rounds = append(rounds, make([]int, 0, len(ts)))
		}
		rounds[n] = append(rounds[n], i)
	}
	for _, r := range rounds {
		slices.SortFunc(r, func(a, b int) int { return cmp.Compare(ts[a].Key, ts[b].Key) })
	}
	return rounds
}
