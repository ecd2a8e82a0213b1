package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/store/postgres"
	"cardlink/internal/store/postgres/pgtest"
	"cardlink/internal/store/sqlite"
)

// backend opens a fresh ledger store for a test.
type backend struct {
	name string
	open func(tb testing.TB) store.Ledger
}

func backends() []backend {
	return []backend{
		{"sqlite", openSQLite},
		{"postgres", openPostgres},
	}
}

func openSQLite(tb testing.TB) store.Ledger {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "ledger.db"))
	if err != nil {
		tb.Fatalf("sqlite.Open = %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// pgSchema creates an empty schema, dropped when tb ends, and returns a
// DSN that uses it.
func pgSchema(tb testing.TB) string {
	tb.Helper()
	return pgtest.Schema(tb, pgtest.DSN(tb), "ledger_", 4)
}

func openPostgres(tb testing.TB) store.Ledger {
	tb.Helper()
	s, err := postgres.Open(context.Background(), pgSchema(tb))
	if err != nil {
		tb.Fatalf("postgres.Open = %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func newLedger(tb testing.TB, st store.Ledger, opt ledger.Options) *ledger.Ledger {
	l := ledger.New(st, opt)
	tb.Cleanup(func() { l.Close() })
	return l
}

func mustAccount(tb testing.TB, l *ledger.Ledger, id string, kind store.AccountKind, limit int64) {
	tb.Helper()
	if err := l.CreateAccount(context.Background(), store.Account{ID: id, Kind: kind, Currency: "EUR", Limit: limit}); err != nil {
		tb.Fatalf("CreateAccount(%q) = %v", id, err)
	}
}

func balance(tb testing.TB, l *ledger.Ledger, id string) int64 {
	tb.Helper()
	a, err := l.Balance(context.Background(), id)
	if err != nil {
		tb.Fatalf("Balance(%q) = %v", id, err)
	}
	return a.Minor
}

// move is a two-leg EUR transfer of amount from one account to another.
func move(key, from, to string, amount int64) ledger.Transfer {
	return ledger.Transfer{Key: key, Currency: "EUR", Memo: "move " + key,
		Legs: []ledger.Leg{{Account: from, Amount: -amount}, {Account: to, Amount: amount}}}
}

// setup makes a float (limit -1e12), holders h1, h2 and merchant m.
func setup(tb testing.TB, l *ledger.Ledger) {
	mustAccount(tb, l, "float", store.KindFloat, -1e12)
	mustAccount(tb, l, "h1", store.KindHolder, 0)
	mustAccount(tb, l, "h2", store.KindHolder, 0)
	mustAccount(tb, l, "m", store.KindMerchant, 0)
}

func TestInvalid(t *testing.T) {
	l := newLedger(t, openSQLite(t), ledger.Options{})
	setup(t, l)
	tests := []struct {
		name string
		t    ledger.Transfer
	}{
		{"NoKey", move("", "h1", "m", 1)},
		{"BadCurrency", ledger.Transfer{Key: "k", Currency: "eur", Legs: move("k", "h1", "m", 1).Legs}},
		{"OneLeg", ledger.Transfer{Key: "k", Currency: "EUR", Legs: []ledger.Leg{{Account: "h1", Amount: 0}}}},
		{"ZeroLegs", ledger.Transfer{Key: "k", Currency: "EUR", Legs: []ledger.Leg{{Account: "h1", Amount: 0}, {Account: "m", Amount: 0}}}},
		{"NotZeroSum", ledger.Transfer{Key: "k", Currency: "EUR", Legs: []ledger.Leg{{Account: "h1", Amount: -5}, {Account: "m", Amount: 4}}}},
		{"SameAccount", ledger.Transfer{Key: "k", Currency: "EUR", Legs: []ledger.Leg{{Account: "h1", Amount: -5}, {Account: "h1", Amount: 5}}}},
		{"KeyNotUTF8", move("k\xff", "h1", "m", 1)},
		{"MemoNUL", ledger.Transfer{Key: "k", Currency: "EUR", Memo: "a\x00b", Legs: move("k", "h1", "m", 1).Legs}},
		{"AccountNotUTF8", move("k", "h1", "m\xc3", 1)},
		{"Overflow", ledger.Transfer{Key: "k", Currency: "EUR", Legs: []ledger.Leg{{Account: "a", Amount: 1 << 62}, {Account: "b", Amount: 1 << 62}, {Account: "c", Amount: -(1 << 62)}, {Account: "d", Amount: -(1 << 62)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Transfer(context.Background(), tt.t); !errors.Is(err, ledger.ErrInvalid) {
				t.Errorf("Transfer(%+v) = %v, want ErrInvalid", tt.t, err)
			}
		})
	}
}

func TestTransfer(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			l := newLedger(t, be.open(t), ledger.Options{})
			setup(t, l)
			steps := []struct {
				name    string
				t       ledger.Transfer
				wantErr error
			}{
				{"Load", move("load", "float", "h1", 1000), nil},
				{"Pay", move("pay", "h1", "m", 300), nil},
				{"Overdraw", move("over", "h1", "m", 701), store.ErrLimit},
				{"UnknownAccount", move("unknown", "h1", "nobody", 1), store.ErrNotFound},
				{"OtherCurrency", ledger.Transfer{Key: "usd", Currency: "USD", Legs: move("usd", "float", "h2", 5).Legs}, store.ErrCurrency},
				{"ThreeLegs", ledger.Transfer{Key: "fee", Currency: "EUR", Legs: []ledger.Leg{{Account: "h1", Amount: -100}, {Account: "m", Amount: 90}, {Account: "h2", Amount: 10}}}, nil},
			}
			for _, s := range steps {
				if _, err := l.Transfer(ctx, s.t); !errors.Is(err, s.wantErr) {
					t.Fatalf("%s: Transfer = %v, want %v", s.name, err, s.wantErr)
				}
			}
			want := map[string]int64{"float": -1000, "h1": 600, "h2": 10, "m": 390}
			var sum int64
			for id, w := range want {
				got := balance(t, l, id)
				sum += got
				if got != w {
					t.Errorf("Balance(%q) = %d, want %d", id, got, w)
				}
			}
			if sum != 0 {
				t.Errorf("sum of balances = %d, want 0", sum)
			}
		})
	}
}

func TestIdempotency(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			l := newLedger(t, be.open(t), ledger.Options{})
			setup(t, l)
			p1, err := l.Transfer(ctx, move("k1", "float", "h1", 50))
			if err != nil || p1.Replayed {
				t.Fatalf("Transfer(k1) = %+v, %v; want posted", p1, err)
			}
			// Same content, legs in another order: the same posting.
			again := move("k1", "float", "h1", 50)
			again.Legs[0], again.Legs[1] = again.Legs[1], again.Legs[0]
			p2, err := l.Transfer(ctx, again)
			if err != nil || !p2.Replayed || p2.ID != p1.ID || !p2.Time.Equal(p1.Time) {
				t.Fatalf("Transfer(k1 again) = %+v, %v; want replay of %+v", p2, err, p1)
			}
			if _, err := l.Transfer(ctx, move("k1", "float", "h1", 51)); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Transfer(k1, other amount) = %v, want ErrConflict", err)
			}
			if got := balance(t, l, "h1"); got != 50 {
				t.Errorf("Balance(h1) = %d, want 50", got)
			}
		})
	}
}

// TestRace: N callers race for funds that cover K of them: exactly K
// succeed, the others get ErrLimit, and the balance ends exact.
func TestRace(t *testing.T) {
	const n, k, amount = 64, 23, 7
	for _, be := range backends() {
		for _, batch := range []int{1, 8, 256} {
			t.Run(fmt.Sprintf("%s/batch%d", be.name, batch), func(t *testing.T) {
				ctx := context.Background()
				l := newLedger(t, be.open(t), ledger.Options{MaxBatch: batch})
				setup(t, l)
				if _, err := l.Transfer(ctx, move("fund", "float", "h1", k*amount)); err != nil {
					t.Fatalf("Transfer(fund) = %v", err)
				}
				var wg sync.WaitGroup
				errs := make([]error, n)
				for i := range n {
					wg.Go(func() {
						_, errs[i] = l.Transfer(ctx, move(fmt.Sprint("buy", i), "h1", "m", amount))
					})
				}
				wg.Wait()
				ok := 0
				for i, err := range errs {
					switch {
					case err == nil:
						ok++
					case !errors.Is(err, store.ErrLimit):
						t.Errorf("Transfer(buy%d) = %v, want nil or ErrLimit", i, err)
					}
				}
				if ok != k {
					t.Errorf("%d transfers succeeded, want %d", ok, k)
				}
				if got := balance(t, l, "h1"); got != 0 {
					t.Errorf("Balance(h1) = %d, want 0", got)
				}
				if got := balance(t, l, "m"); got != k*amount {
					t.Errorf("Balance(m) = %d, want %d", got, k*amount)
				}
				if s := l.Stats(); s.Transfers != n+1 || s.Failed != 0 {
					t.Errorf("Stats() = %+v, want %d transfers, 0 failed", s, n+1)
				}
			})
		}
	}
}

// TestBatchIsolation: a refused transfer rolls back alone; the others of
// its database transaction post.
func TestBatchIsolation(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			st := be.open(t)
			l := newLedger(t, st, ledger.Options{})
			setup(t, l)
			if _, err := l.Transfer(ctx, move("fund", "float", "h1", 100)); err != nil {
				t.Fatalf("Transfer(fund) = %v", err)
			}
			tr := func(key, from, to string, amount int64) store.Transfer {
				return store.Transfer{Key: key, Currency: "EUR", Digest: []byte(key),
					Legs: []store.Leg{{Account: from, Amount: -amount}, {Account: to, Amount: amount}}}
			}
			batch := []store.Transfer{
				tr("a", "h1", "m", 60),
				tr("b", "h1", "m", 60), // refused: 40 left
				tr("c", "h1", "m", 40),
				tr("fund", "h1", "m", 1),  // key reused, other digest: refused
				tr("d", "m", "nobody", 1), // unknown account after a good leg: refused
				tr("a", "h1", "m", 60),    // replay within the batch
			}
			res, err := st.PostTransfers(ctx, batch, time.Now())
			if err != nil {
				t.Fatalf("PostTransfers = %v", err)
			}
			want := []error{nil, store.ErrLimit, nil, store.ErrConflict, store.ErrNotFound, nil}
			for i, r := range res {
				if !errors.Is(r.Err, want[i]) {
					t.Errorf("PostTransfers: result %d (%s) = %v, want %v", i, batch[i].Key, r.Err, want[i])
				}
			}
			if !res[5].Posted.Replayed || res[5].Posted.ID != res[0].Posted.ID {
				t.Errorf("PostTransfers: replay = %+v, want replay of %+v", res[5].Posted, res[0].Posted)
			}
			if got := balance(t, l, "h1"); got != 0 {
				t.Errorf("Balance(h1) = %d, want 0", got)
			}
			if got := balance(t, l, "m"); got != 100 {
				t.Errorf("Balance(m) = %d, want 100", got)
			}
		})
	}
}

func TestStatementCSV(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	l := newLedger(t, openSQLite(t), ledger.Options{Now: clock})
	setup(t, l)
	for _, tr := range []ledger.Transfer{
		move("t1", "float", "h1", 1000),
		move("t2", "h1", "m", 250),
		{Key: "t3", Currency: "EUR", Memo: "=HYPERLINK(\"x\")", Legs: move("t3", "h1", "m", 5).Legs},
	} {
		now = now.Add(time.Hour)
		if _, err := l.Transfer(ctx, tr); err != nil {
			t.Fatalf("Transfer(%s) = %v", tr.Key, err)
		}
	}
	from := time.Date(2026, 11, 28, 13, 30, 0, 0, time.UTC) // after t1
	s, err := l.Statement(ctx, "h1", from, from.Add(24*time.Hour))
	if err != nil {
		t.Fatalf("Statement = %v", err)
	}
	var b strings.Builder
	if err := s.WriteCSV(&b); err != nil {
		t.Fatalf("WriteCSV = %v", err)
	}
	want := `time,transfer,key,memo,amount,balance,currency
2026-11-28T13:30:00Z,,,opening,,10.00,EUR
2026-11-28T14:00:00Z,2,t2,move t2,-2.50,7.50,EUR
2026-11-28T15:00:00Z,3,t3,"'=HYPERLINK(""x"")",-0.05,7.45,EUR
2026-11-29T13:30:00Z,,,closing,,7.45,EUR
`
	if got := b.String(); got != want {
		t.Errorf("WriteCSV =\n%s\nwant\n%s", got, want)
	}
	if _, err := l.Statement(ctx, "nobody", from, from); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Statement(nobody) = %v, want ErrNotFound", err)
	}
}

func TestClose(t *testing.T) {
	l := ledger.New(openSQLite(t), ledger.Options{})
	setup(t, l)
	l.Close()
	if _, err := l.Transfer(context.Background(), move("k", "float", "h1", 1)); !errors.Is(err, ledger.ErrClosed) {
		t.Errorf("Transfer after Close = %v, want ErrClosed", err)
	}
	l.Close() // twice is fine
}

var (
	zeroTime  = time.Unix(0, 0)
	farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)
