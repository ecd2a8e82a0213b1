package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
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

// BenchmarkPostOne compares postBatch with one transfer and postOne, the
// ledger's share of ApprovePurchase's write: the statements only, in one
// open transaction (no commit, no fsync).
func BenchmarkPostOne(b *testing.B) {
	for _, tt := range []struct {
		name string
		post func(context.Context, *sql.Tx, store.Transfer, time.Time) (store.Result, error)
	}{
		{"batch", func(ctx context.Context, tx *sql.Tx, t store.Transfer, now time.Time) (store.Result, error) {
			res := make([]store.Result, 1)
			err := postBatch(ctx, tx, []store.Transfer{t}, now, res)
			return res[0], err
		}},
		{"direct", postOne},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, filepath.Join(b.TempDir(), "ledger.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
			for _, a := range []store.Account{
				{ID: "holder:4000001234567899:EUR", Kind: store.KindHolder, Currency: "EUR", Limit: -1 << 40},
				{ID: "merchant:m_shop:EUR", Kind: store.KindMerchant, Currency: "EUR"},
			} {
				if err := s.CreateAccount(ctx, a, now); err != nil {
					b.Fatal(err)
				}
			}
			tx, err := s.w.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer tx.Rollback()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				key := "purchase:pu_" + strconv.Itoa(i)
				t := store.Transfer{Key: key, Currency: "EUR", Memo: "purchase pu_" + strconv.Itoa(i) + " 12345678",
					Digest: make([]byte, 32), Legs: []store.Leg{
						{Account: "holder:4000001234567899:EUR", Amount: -100}, {Account: "merchant:m_shop:EUR", Amount: 100}}}
				res, err := tt.post(ctx, tx, t, now)
				if err != nil || res.Err != nil {
					b.Fatalf("posting %s = %v, %v", key, err, res.Err)
				}
			}
		})
	}
}

// TestPostOneAsBatch posts the same transfers one at a time with postOne
// on one database and postBatch on another: the results (posted IDs,
// replays, refusals with their errors) and the balances are the same.
func TestPostOneAsBatch(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	xfer := func(key, from, to string, amount int64, digest string) store.Transfer {
		return store.Transfer{Key: key, Currency: "EUR", Memo: key, Digest: []byte(digest),
			Legs: []store.Leg{{Account: from, Amount: -amount}, {Account: to, Amount: amount}}}
	}
	ts := []store.Transfer{
		xfer("a", "float", "h", 600, "a"),
		xfer("b", "float", "h", 600, "b"), // below float's limit
		xfer("c", "h", "float", 100, "c"),
		xfer("d", "float", "usd", 1, "d"), // other currency
		xfer("e", "h", "nobody", 1, "e"),  // unknown account
		xfer("a", "float", "h", 600, "a"), // replay
		xfer("c", "h", "float", 100, "x"), // key reused with other content
		xfer("f", "h", "float", 400, "f"),
		// Five accounts: one UPDATE statement beyond those built ahead.
		{Key: "g", Currency: "EUR", Memo: "g", Digest: []byte("g"), Legs: []store.Leg{{Account: "float", Amount: -40},
			{Account: "h", Amount: 10}, {Account: "h2", Amount: 10}, {Account: "h3", Amount: 10}, {Account: "h4", Amount: 10}}},
	}
	post := map[string]func(*sql.Tx, store.Transfer) (store.Result, error){
		"postOne": func(tx *sql.Tx, t store.Transfer) (store.Result, error) { return postOne(ctx, tx, t, now) },
		"postBatch": func(tx *sql.Tx, t store.Transfer) (store.Result, error) {
			res := make([]store.Result, 1)
			err := postBatch(ctx, tx, []store.Transfer{t}, now, res)
			return res[0], err
		},
	}
	results := map[string][]store.Result{}
	balances := map[string][]int64{}
	for name, f := range post {
		s, err := Open(ctx, filepath.Join(t.TempDir(), name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, a := range []store.Account{
			{ID: "float", Kind: store.KindFloat, Currency: "EUR", Limit: -1000},
			{ID: "h", Kind: store.KindHolder, Currency: "EUR"},
			{ID: "usd", Kind: store.KindHolder, Currency: "USD"},
			{ID: "h2", Kind: store.KindHolder, Currency: "EUR"},
			{ID: "h3", Kind: store.KindHolder, Currency: "EUR"},
			{ID: "h4", Kind: store.KindHolder, Currency: "EUR"},
		} {
			if err := s.CreateAccount(ctx, a, now); err != nil {
				t.Fatal(err)
			}
		}
		for _, tr := range ts {
			err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				r, err := f(tx, tr)
				results[name] = append(results[name], r)
				return err
			})
			if err != nil {
				t.Fatalf("%s(%s) = %v", name, tr.Key, err)
			}
		}
		for _, id := range []string{"float", "h", "usd", "h2", "h3", "h4"} {
			a, err := s.Account(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			balances[name] = append(balances[name], a.Balance)
		}
	}
	wantErrs := []error{nil, store.ErrLimit, nil, store.ErrCurrency, store.ErrNotFound, nil, store.ErrConflict, nil, nil}
	for i, tr := range ts {
		one, batch := results["postOne"][i], results["postBatch"][i]
		if !errors.Is(one.Err, wantErrs[i]) || (wantErrs[i] == nil) != (one.Err == nil) {
			t.Errorf("postOne(%s) = %v, want %v", tr.Key, one.Err, wantErrs[i])
		}
		if one.Posted != batch.Posted || (one.Err == nil) != (batch.Err == nil) || !errors.Is(one.Err, wantErrs[i]) || !errors.Is(batch.Err, wantErrs[i]) {
			t.Errorf("transfer %d (%s): postOne = %+v, %v; postBatch = %+v, %v; want the same", i, tr.Key, one.Posted, one.Err, batch.Posted, batch.Err)
		}
	}
	if want := []int64{-600 + 100 + 400 - 40, 600 - 100 - 400 + 10, 0, 10, 10, 10}; !slices.Equal(balances["postOne"], want) || !slices.Equal(balances["postBatch"], want) {
		t.Errorf("balances float, h, usd, h2, h3, h4: postOne %v, postBatch %v; want %v", balances["postOne"], balances["postBatch"], want)
	}
}

// TestPostOneNoLegs: a transfer without two legs is refused alone, as a
// result, and the writer goes on (it must not panic on the statements it
// builds per leg).
func TestPostOneNoLegs(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, legs := range [][]store.Leg{nil, {{Account: "h", Amount: 1}}} {
		var r store.Result
		err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var err error
			r, err = postOne(ctx, tx, store.Transfer{Key: "k", Currency: "EUR", Legs: legs}, time.Now())
			return err
		})
		if err != nil || r.Err == nil || r.Posted.ID != 0 {
			t.Errorf("postOne(%d legs) = %+v, %v; want a refusal in the result", len(legs), r, err)
		}
	}
	if err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error { return nil }); err != nil {
		t.Errorf("a write after the refusals = %v, want the writer still serving", err)
	}
}
