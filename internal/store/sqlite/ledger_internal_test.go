package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"cardlink/internal/store"
)

// TestLedgerBatchInGroup runs ledger batches as members of one group
// commit beside other writes: a refused transfer is refused alone, a batch
// whose member fails rolls back alone (its transfers, entries, balances
// and transfer IDs), and a later batch of the group sees the earlier
// batches' transfers (a replay) and balances.
func TestLedgerBatchInGroup(t *testing.T) {
	s := scratch(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, a := range []store.Account{
		{ID: "float", Kind: store.KindFloat, Currency: "EUR", Limit: -1000},
		{ID: "h", Kind: store.KindHolder, Currency: "EUR"},
	} {
		if err := s.CreateAccount(ctx, a, now); err != nil {
			t.Fatal(err)
		}
	}
	xfer := func(key, from, to string, amount int64) store.Transfer {
		return store.Transfer{Key: key, Currency: "EUR", Memo: key, Digest: []byte(key),
			Legs: []store.Leg{{Account: from, Amount: -amount}, {Account: to, Amount: amount}}}
	}
	errRefused := errors.New("refused")
	post := func(ts []store.Transfer, res []store.Result, then error) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			if err := postBatch(ctx, tx, ts, now, res); err != nil {
				return err
			}
			return then
		}
	}
	first := []store.Transfer{xfer("t1", "float", "h", 300), xfer("t2", "h", "float", 500)}
	doomed := []store.Transfer{xfer("t3", "float", "h", 100)}
	second := []store.Transfer{xfer("t1", "float", "h", 300), xfer("t4", "h", "float", 300), xfer("t5", "h", "float", 1)}
	res1, resDoomed, res2 := make([]store.Result, len(first)), make([]store.Result, len(doomed)), make([]store.Result, len(second))
	fs := []func(context.Context, *sql.Tx) error{
		insert("a"),
		post(first, res1, nil),
		post(doomed, resDoomed, errRefused),
		post(second, res2, nil),
		insert("b"),
	}
	batch := make([]*groupWrite, len(fs))
	for i, f := range fs {
		batch[i] = &groupWrite{ctx: ctx, f: f, done: make(chan error, 1)}
	}
	s.commitGroup(batch)
	for i, want := range []error{nil, nil, errRefused, nil, nil} {
		if err := <-batch[i].done; !errors.Is(err, want) {
			t.Errorf("commitGroup: member %d = %v, want %v", i, err, want)
		}
	}

	checks := []struct {
		name string
		got  store.Result
		id   int64 // 0: refused
		err  error
	}{
		{"t1", res1[0], 1, nil},
		{"t2", res1[1], 0, store.ErrLimit},
		{"t1 again", res2[0], 1, nil},
		{"t4 (after t3 rolled back)", res2[1], 2, nil},
		{"t5", res2[2], 0, store.ErrLimit},
	}
	for _, c := range checks {
		if c.err != nil {
			if !errors.Is(c.got.Err, c.err) {
				t.Errorf("result of %s = %+v, want %v", c.name, c.got, c.err)
			}
			continue
		}
		if c.got.Err != nil || c.got.Posted.ID != c.id {
			t.Errorf("result of %s = %+v, want ID %d", c.name, c.got, c.id)
		}
	}
	if !res2[0].Posted.Replayed {
		t.Errorf("result of t1 again = %+v, want a replay", res2[0])
	}

	if got, want := keys(t, s), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("keys after commitGroup = %q, want %q", got, want)
	}
	for _, w := range []struct {
		id      string
		balance int64
	}{{"float", 0}, {"h", 0}} {
		a, err := s.Account(ctx, w.id)
		if err != nil || a.Balance != w.balance {
			t.Errorf("Account(%q) = %+v, %v; want balance %d", w.id, a, err, w.balance)
		}
	}
	_, es, err := s.Entries(ctx, "h", now, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Key)
	}
	if want := []string{"t1", "t4"}; !slices.Equal(got, want) {
		t.Errorf("Entries(h) = transfers %q, want %q", got, want)
	}
}
