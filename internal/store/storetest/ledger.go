package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cardlink/internal/store"
)

// ledgerOf returns s's ledger repository, or skips the test if the
// backend has none.
func ledgerOf(t testing.TB, s store.Store) store.Ledger {
	t.Helper()
	l, ok := s.(store.Ledger)
	if !ok {
		t.Skipf("%T does not implement store.Ledger", s)
	}
	return l
}

func xfer(key, from, to string, amount int64) store.Transfer {
	return store.Transfer{Key: key, Currency: "EUR", Memo: "memo " + key, Digest: []byte("digest " + key),
		Legs: []store.Leg{{Account: from, Amount: -amount}, {Account: to, Amount: amount}}}
}

// testLedger: accounts, a batch where refused transfers roll back alone,
// replays, and entries with the running balance.
func testLedger(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	l := ledgerOf(t, open(t))
	float := store.Account{ID: "float", Kind: store.KindFloat, Currency: "EUR", Limit: -1000, Balance: 99}
	must(t, "CreateAccount(float)", l.CreateAccount(ctx, float, t0.In(zone)))
	must(t, "CreateAccount(h)", l.CreateAccount(ctx, store.Account{ID: "h", Kind: store.KindHolder, Currency: "EUR"}, t0))
	must(t, "CreateAccount(usd)", l.CreateAccount(ctx, store.Account{ID: "usd", Kind: store.KindHolder, Currency: "USD"}, t0))
	wantErr(t, "CreateAccount(float again)", l.CreateAccount(ctx, float, t0), store.ErrConflict)
	_, err := l.Account(ctx, "nobody")
	wantErr(t, "Account(nobody)", err, store.ErrNotFound)
	a, err := l.Account(ctx, "float")
	must(t, "Account(float)", err)
	if want := (store.Account{ID: "float", Kind: store.KindFloat, Currency: "EUR", Limit: -1000, Created: t0}); a != want {
		t.Errorf("Account(float) = %+v, want %+v", a, want)
	}

	t1 := t0.Add(time.Second)
	batch := []store.Transfer{
		xfer("a", "float", "h", 600),
		xfer("b", "float", "h", 600), // float would reach -1200: refused
		xfer("c", "h", "float", 100),
		xfer("d", "float", "usd", 1), // other currency: refused after a good leg
		xfer("e", "h", "nobody", 1),  // unknown account: refused
		xfer("a", "float", "h", 600), // replay
		{Key: "c", Currency: "EUR", Digest: []byte("other"), Legs: xfer("c", "h", "float", 100).Legs}, // key reused: refused
	}
	res, err := l.PostTransfers(ctx, batch, t1)
	must(t, "PostTransfers", err)
	if len(res) != len(batch) {
		t.Fatalf("PostTransfers returned %d results, want %d", len(res), len(batch))
	}
	want := []error{nil, store.ErrLimit, nil, store.ErrCurrency, store.ErrNotFound, nil, store.ErrConflict}
	for i, r := range res {
		wantErr(t, fmt.Sprintf("PostTransfers: result %d (%s)", i, batch[i].Key), r.Err, want[i])
	}
	if p := res[5].Posted; !p.Replayed || p.ID != res[0].Posted.ID || !p.Time.Equal(t1) {
		t.Errorf("PostTransfers: replay = %+v, want replay of %+v", p, res[0].Posted)
	}
	if res[2].Posted.ID <= res[0].Posted.ID {
		t.Errorf("PostTransfers: IDs %d then %d, want growing", res[0].Posted.ID, res[2].Posted.ID)
	}
	for id, want := range map[string]int64{"float": -500, "h": 500, "usd": 0} {
		a, err := l.Account(ctx, id)
		must(t, "Account", err)
		if a.Balance != want {
			t.Errorf("Account(%q).Balance = %d, want %d", id, a.Balance, want)
		}
	}

	// A second batch later, then entries of h since between the two.
	t2 := t1.Add(time.Second)
	res, err = l.PostTransfers(ctx, []store.Transfer{xfer("f", "h", "float", 500), xfer("g", "h", "float", 1)}, t2)
	must(t, "PostTransfers", err)
	must(t, "PostTransfers: f", res[0].Err)
	wantErr(t, "PostTransfers: g", res[1].Err, store.ErrLimit)
	opening, es, err := l.Entries(ctx, "h", t1.Add(time.Microsecond), t2.Add(time.Microsecond))
	must(t, "Entries", err)
	if opening != 500 || len(es) != 1 || es[0].Key != "f" || es[0].Amount != -500 || es[0].Balance != 0 ||
		es[0].Memo != "memo f" || !es[0].Time.Equal(t2) || es[0].Transfer != res[0].Posted.ID {
		t.Errorf("Entries(h) = %d, %+v; want 500 and one entry f of -500 leaving 0", opening, es)
	}
	opening, es, err = l.Entries(ctx, "h", t0, t2.Add(time.Microsecond))
	must(t, "Entries", err)
	if opening != 0 || len(es) != 3 || es[0].Balance != 600 || es[1].Balance != 500 || es[2].Balance != 0 {
		t.Errorf("Entries(h, all) = %d, %+v; want 0 and balances 600, 500, 0", opening, es)
	}
	_, _, err = l.Entries(ctx, "nobody", t0, t2)
	wantErr(t, "Entries(nobody)", err, store.ErrNotFound)
}

// testRaceLedger: two Stores (server instances) on one database post
// batches that race for one holder's funds: exactly the funded number
// succeed.
func testRaceLedger(t *testing.T, open OpenFunc) {
	const k, amount, perBatch, batches = 17, 3, 5, 8
	ctx := context.Background()
	s1 := ledgerOf(t, open(t))
	s2 := ledgerOf(t, open(t))
	must(t, "CreateAccount", s1.CreateAccount(ctx, store.Account{ID: "float", Kind: store.KindFloat, Currency: "EUR", Limit: -1e9}, t0))
	must(t, "CreateAccount", s1.CreateAccount(ctx, store.Account{ID: "h", Kind: store.KindHolder, Currency: "EUR"}, t0))
	must(t, "CreateAccount", s1.CreateAccount(ctx, store.Account{ID: "m", Kind: store.KindMerchant, Currency: "EUR"}, t0))
	res, err := s1.PostTransfers(ctx, []store.Transfer{xfer("fund", "float", "h", k*amount)}, t0)
	must(t, "PostTransfers(fund)", err)
	must(t, "PostTransfers(fund)", res[0].Err)
	var mu sync.Mutex
	ok := 0
	var wg sync.WaitGroup
	for b := range batches {
		s := []store.Ledger{s1, s2}[b%2]
		wg.Go(func() {
			var ts []store.Transfer
			for i := range perBatch {
				ts = append(ts, xfer(fmt.Sprintf("buy %d.%d", b, i), "h", "m", amount))
			}
			res, err := s.PostTransfers(ctx, ts, t0)
			if err != nil {
				t.Errorf("PostTransfers = %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range res {
				if r.Err == nil {
					ok++
				} else if !errors.Is(r.Err, store.ErrLimit) {
					t.Errorf("PostTransfers: %v, want nil or ErrLimit", r.Err)
				}
			}
		})
	}
	wg.Wait()
	if ok != k {
		t.Errorf("%d transfers posted, want %d", ok, k)
	}
	a, err := s2.Account(ctx, "h")
	must(t, "Account(h)", err)
	if a.Balance != 0 {
		t.Errorf("Account(h).Balance = %d, want 0", a.Balance)
	}
}
