package ledger_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
)

// Reproduce, side by side on one machine (PostgreSQL with fsync on):
//
//	cp scripts/postgres.sh /tmp/pg.sh   # or use it directly if no one else does
//	eval "$(/tmp/pg.sh start)"          # NOT --fsync-off
//	go test -run '^$' -bench Transfer -benchtime 3s ./internal/server/ledger/
//	port=${CARDLINK_TEST_POSTGRES##*:}; port=${port%%/*}
//	psql -h 127.0.0.1 -p $port -U postgres -d cardlink -f internal/server/ledger/testdata/pgbench-setup.sql
//	for c in 8 32 64; do pgbench -n -c $c -j 2 -T 10 -h 127.0.0.1 -p $port -U postgres \
//		-f internal/server/ledger/testdata/pgbench.sql cardlink; done
//
// pgbench is in /usr/lib/postgresql/*/bin. Take pgbench's best tps.

// benchCallers is how many goroutines per GOMAXPROCS post at once.
const benchCallers = 32

const benchHolders, benchMerchants = 64, 8

// BenchmarkTransfer posts two-leg payments from many concurrent callers,
// each answered after its durable commit (SQLite synchronous=FULL;
// PostgreSQL as configured: benchmark with fsync on), with group commit.
func BenchmarkTransfer(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) { benchTransfer(b, be, ledger.Options{}) })
	}
}

// BenchmarkTransferWide is BenchmarkTransfer with four times the callers
// (128 per GOMAXPROCS): batches grow with the callers waiting.
func BenchmarkTransferWide(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) { benchTransferN(b, be, ledger.Options{}, 4*benchCallers) })
	}
}

// BenchmarkTransferNoGroup is BenchmarkTransfer with one commit per
// transfer (MaxBatch 1), for the ratio.
func BenchmarkTransferNoGroup(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) { benchTransfer(b, be, ledger.Options{MaxBatch: 1}) })
	}
}

func benchTransfer(b *testing.B, be backend, opt ledger.Options) {
	benchTransferN(b, be, opt, benchCallers)
}

// benchTransferN runs callers goroutines per GOMAXPROCS.
func benchTransferN(b *testing.B, be backend, opt ledger.Options, callers int) {
	ctx := context.Background()
	l := newLedger(b, be.open(b), opt)
	mustAccount(b, l, "float", store.KindFloat, -1e15)
	var fund []ledger.Leg
	for h := range benchHolders {
		id := fmt.Sprint("h", h)
		mustAccount(b, l, id, store.KindHolder, 0)
		fund = append(fund, ledger.Leg{Account: id, Amount: 1e12})
	}
	fund = append(fund, ledger.Leg{Account: "float", Amount: -1e12 * benchHolders})
	if _, err := l.Transfer(ctx, ledger.Transfer{Key: "fund", Currency: "EUR", Legs: fund}); err != nil {
		b.Fatalf("Transfer(fund) = %v", err)
	}
	for m := range benchMerchants {
		mustAccount(b, l, fmt.Sprint("m", m), store.KindMerchant, 0)
	}
	var seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	before := l.Stats()
	b.ReportAllocs()
	b.SetParallelism(callers)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			n := seq.Add(1)
			t := move(fmt.Sprint("k", n), fmt.Sprint("h", n%benchHolders), fmt.Sprint("m", n%benchMerchants), 1)
			t0 := time.Now()
			if _, err := l.Transfer(ctx, t); err != nil {
				b.Errorf("Transfer = %v", err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	s := l.Stats()
	batches := s.Batches - before.Batches
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "transfers/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	if batches > 0 {
		b.ReportMetric(float64(s.Transfers-before.Transfers)/float64(batches), "transfers/batch")
	}
}
