package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// scratch opens a store with an extra table t (k TEXT PRIMARY KEY).
func scratch(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "group.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.tx(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// keys returns the keys of table t, sorted, read through the readers.
func keys(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.r.Query(`SELECT k FROM t ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ks []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ks
}

func insert(k string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO t (k) VALUES (?)`, k)
		return err
	}
}

// TestCommitGroup runs one group by hand: each member's refusal rolls back
// only its own savepoint, a commit outcome keeps its writes, a member
// whose context ended never runs, and later members see earlier ones'
// writes.
func TestCommitGroup(t *testing.T) {
	s := scratch(t)
	errRefused, errKept := errors.New("refused"), errors.New("kept")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	members := []struct {
		name string
		ctx  context.Context
		f    func(context.Context, *sql.Tx) error
		want error // errors.Is; nil wants nil
	}{
		{"insert a", context.Background(), insert("a"), nil},
		{"insert b then refuse", context.Background(), func(ctx context.Context, tx *sql.Tx) error {
			if err := insert("b")(ctx, tx); err != nil {
				return err
			}
			return errRefused
		}, errRefused},
		{"insert a again", context.Background(), insert("a"), nil}, // a constraint error: checked below
		{"cancelled", cancelled, func(context.Context, *sql.Tx) error { ran = true; return nil }, context.Canceled},
		{"insert c, commit with an outcome", context.Background(), func(ctx context.Context, tx *sql.Tx) error {
			if err := insert("c")(ctx, tx); err != nil {
				return err
			}
			return commit{errKept}
		}, errKept},
		{"sees a and c", context.Background(), func(ctx context.Context, tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM t WHERE k IN ('a', 'b', 'c')`).Scan(&n); err != nil {
				return err
			}
			if n != 2 {
				return fmt.Errorf("%d of a, b, c visible, want 2", n)
			}
			return insert("d")(ctx, tx)
		}, nil},
	}
	batch := make([]*groupWrite, len(members))
	for i, m := range members {
		batch[i] = &groupWrite{ctx: m.ctx, f: m.f, done: make(chan error, 1)}
	}
	s.commitGroup(batch)
	for i, m := range members {
		err := <-batch[i].done
		switch {
		case m.name == "insert a again":
			if !isUnique(err) {
				t.Errorf("commitGroup: %s = %v, want a unique constraint error", m.name, err)
			}
		case m.want == nil && err != nil, m.want != nil && !errors.Is(err, m.want):
			t.Errorf("commitGroup: %s = %v, want %v", m.name, err, m.want)
		}
	}
	if ran {
		t.Error("commitGroup ran the member whose context had ended")
	}
	if got, want := keys(t, s), []string{"a", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("keys after commitGroup = %q, want %q", got, want)
	}
}

// TestGroupCommitConcurrent: many writers at once, each answered after a
// commit that holds its write; one refused among them changes nothing.
func TestGroupCommitConcurrent(t *testing.T) {
	s := scratch(t)
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := fmt.Sprintf("k%02d", i)
			if i == 7 {
				k = "k06" // taken by #6 (or #6 fails: one of them does)
			}
			errs[i] = s.gtx(context.Background(), insert(k))
		})
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if !isUnique(err) || (i != 6 && i != 7) {
				t.Errorf("gtx(#%d) = %v, want nil (or a unique error for #6 or #7)", i, err)
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d writes failed, want 1", failed)
	}
	if got := len(keys(t, s)); got != n-1 {
		t.Errorf("%d keys after the writes, want %d", got, n-1)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := s.gtx(context.Background(), insert("late")); !errors.Is(err, errClosed) {
		t.Errorf("gtx after Close = %v, want %v", err, errClosed)
	}
}

// TestStatementCache: a cached statement run again while its rows are
// open (on the same connection, in one transaction) is prepared afresh;
// scripts and errors pass through.
func TestStatementCache(t *testing.T) {
	s := scratch(t)
	ctx := context.Background()
	for _, k := range []string{"a", "b"} {
		if err := s.gtx(ctx, insert(k)); err != nil {
			t.Fatal(err)
		}
	}
	const q = `SELECT k FROM t ORDER BY k`
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for range 2 { // the second time, from the cache
			outer, err := tx.QueryContext(ctx, q)
			if err != nil {
				return err
			}
			var got []string
			for outer.Next() {
				var k string
				if err := outer.Scan(&k); err != nil {
					return err
				}
				var n int
				// The same text while outer is open, then another.
				if err := tx.QueryRowContext(ctx, q).Scan(new(string)); err != nil {
					return fmt.Errorf("nested query: %w", err)
				}
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
					return err
				}
				got = append(got, fmt.Sprintf("%s/%d", k, n))
			}
			if err := outer.Close(); err != nil {
				return err
			}
			if want := []string{"a/2", "b/2"}; !slices.Equal(got, want) {
				return fmt.Errorf("rows = %q, want %q", got, want)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO t (k) VALUES ('x'); INSERT INTO t (k) VALUES ('y')`); err != nil {
			return fmt.Errorf("script: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `SELEC nothing`); err == nil {
			return errors.New("a syntax error passed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(t, s), []string{"a", "b", "x", "y"}; !slices.Equal(got, want) {
		t.Errorf("keys = %q, want %q", got, want)
	}
}
