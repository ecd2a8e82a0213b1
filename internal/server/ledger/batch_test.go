package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/store/postgres"
	"cardlink/internal/store/sqlite"
)

// TestRepeatedKey: a batch that repeats a key posts as if one transfer at
// a time: the first try is refused (below the limit), so the second, with
// other content, posts; the third, with the second's content, replays it;
// the fourth, with the first's content, conflicts.
func TestRepeatedKey(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			st := be.open(t)
			l := newLedger(t, st, ledger.Options{})
			setup(t, l)
			if _, err := l.Transfer(ctx, move("fund", "float", "h1", 100)); err != nil {
				t.Fatalf("Transfer(fund) = %v", err)
			}
			tr := func(key string, amount int64) store.Transfer {
				return store.Transfer{Key: key, Currency: "EUR", Digest: fmt.Appendf(nil, "%s/%d", key, amount),
					Legs: []store.Leg{{Account: "h1", Amount: -amount}, {Account: "m", Amount: amount}}}
			}
			batch := []store.Transfer{tr("x", 500), tr("y", 10), tr("x", 30), tr("x", 30), tr("x", 500)}
			res, err := st.PostTransfers(ctx, batch, time.Now())
			if err != nil {
				t.Fatalf("PostTransfers = %v", err)
			}
			want := []error{store.ErrLimit, nil, nil, nil, store.ErrConflict}
			for i, r := range res {
				if !errors.Is(r.Err, want[i]) {
					t.Errorf("PostTransfers: result %d (%s) = %v, want %v", i, batch[i].Key, r.Err, want[i])
				}
			}
			if p := res[3].Posted; !p.Replayed || p.ID != res[2].Posted.ID || res[2].Posted.Replayed {
				t.Errorf("PostTransfers: results 2, 3 = %+v, %+v; want a posting and its replay", res[2].Posted, p)
			}
			if got := balance(t, l, "h1"); got != 60 {
				t.Errorf("Balance(h1) = %d, want 60", got)
			}
		})
	}
}

// TestTwoInstances: two server instances (two Stores, two ledgers) on one
// database post transfers that cross the same accounts in both directions,
// some with the same keys, under group commit. No batch fails (no
// deadlock), only ErrLimit refuses, a shared key posts once, and every
// balance ends as the postings say, at or above its limit, summing to
// zero.
func TestTwoInstances(t *testing.T) {
	const accounts, workers, perWorker, fund = 6, 8, 40, 50
	tests := []struct {
		name string
		open func(t *testing.T) (store.Ledger, store.Ledger)
	}{
		{"sqlite", func(t *testing.T) (store.Ledger, store.Ledger) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			var ss [2]store.Ledger
			for i := range ss {
				s, err := sqlite.Open(context.Background(), path)
				if err != nil {
					t.Fatalf("sqlite.Open = %v", err)
				}
				t.Cleanup(func() { s.Close() })
				ss[i] = s
			}
			return ss[0], ss[1]
		}},
		{"postgres", func(t *testing.T) (store.Ledger, store.Ledger) {
			dsn := pgSchema(t)
			var ss [2]store.Ledger
			for i := range ss {
				s, err := postgres.Open(context.Background(), dsn)
				if err != nil {
					t.Fatalf("postgres.Open = %v", err)
				}
				t.Cleanup(func() { s.Close() })
				ss[i] = s
			}
			return ss[0], ss[1]
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s1, s2 := tt.open(t)
			ls := []*ledger.Ledger{newLedger(t, s1, ledger.Options{}), newLedger(t, s2, ledger.Options{})}
			mustAccount(t, ls[0], "float", store.KindFloat, -1e12)
			for a := range accounts {
				id := fmt.Sprint("a", a)
				mustAccount(t, ls[0], id, store.KindHolder, 0)
				if _, err := ls[0].Transfer(ctx, move("fund "+id, "float", id, fund)); err != nil {
					t.Fatalf("Transfer(fund %s) = %v", id, err)
				}
			}
			var mu sync.Mutex
			net := make(map[string]int64) // what the successful postings moved
			posted := make(map[string]int)
			var wg sync.WaitGroup
			for w := range 2 * workers {
				l := ls[w%2]
				wg.Go(func() {
					for i := range perWorker {
						// Workers 2k and 2k+1 (one per instance) share keys
						// and content on every third transfer.
						key := fmt.Sprintf("w%d-%d", w, i)
						if i%3 == 0 {
							key = fmt.Sprintf("shared%d-%d", w/2, i)
						}
						from, to := fmt.Sprint("a", (w/2+i)%accounts), fmt.Sprint("a", (w/2+2*i+1)%accounts)
						if from == to {
							to = "float"
						}
						amount := int64(1 + (w/2+i)%17)
						p, err := l.Transfer(ctx, move(key, from, to, amount))
						if err != nil {
							if !errors.Is(err, store.ErrLimit) {
								t.Errorf("Transfer(%s) = %v, want nil or ErrLimit", key, err)
							}
							continue
						}
						mu.Lock()
						if !p.Replayed {
							net[from] -= amount
							net[to] += amount
							posted[key]++
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for i, l := range ls {
				if s := l.Stats(); s.Failed != 0 {
					t.Errorf("instance %d: Stats() = %+v, want 0 failed batches", i, s)
				}
			}
			for k, n := range posted {
				if n != 1 {
					t.Errorf("key %s posted %d times, want once", k, n)
				}
			}
			var sum int64
			for a := range accounts {
				id := fmt.Sprint("a", a)
				got := balance(t, ls[1], id)
				sum += got
				if want := fund + net[id]; got != want || got < 0 {
					t.Errorf("Balance(%s) = %d, want %d (and not below 0)", id, got, want)
				}
			}
			if got, want := balance(t, ls[1], "float"), -accounts*fund+net["float"]; got != want {
				t.Errorf("Balance(float) = %d, want %d", got, want)
			}
			if sum += balance(t, ls[1], "float"); sum != 0 {
				t.Errorf("sum of balances = %d, want 0", sum)
			}
		})
	}
}
