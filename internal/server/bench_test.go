package server_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/store/storetest"
)

// BenchmarkAuthenticate is one whole authentication over loopback TCP:
// connect, Noise handshake, Hello, challenge, the card's offline PIN check
// and signature (the in-process virtual card), verification against a
// SQLite store, and the result. The card is known to the server.
func BenchmarkAuthenticate(b *testing.B) { benchAuthenticate(b, servertest.SQLite(b)) }

// BenchmarkAuthenticatePostgres is BenchmarkAuthenticate on PostgreSQL
// (CARDLINK_TEST_POSTGRES; skipped when unset). Benchmark against a server
// with fsync on: scripts/postgres.sh start, without --fsync-off.
func BenchmarkAuthenticatePostgres(b *testing.B) { benchAuthenticate(b, backends()[1].open(b)) }

func benchAuthenticate(b *testing.B, st store.Store) {
	bd := newBed(b, st, server.Config{})
	opts := device.AuthOptions{PIN: wallettest.PIN}
	if res, err := bd.authenticate(b, bd.id, opts); err != nil || !res.OK() {
		b.Fatalf("Authenticate() = %+v, %v", res, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := bd.authenticate(b, bd.id, opts)
		if err != nil || !res.OK() {
			b.Fatalf("Authenticate() = %+v, %v", res, err)
		}
	}
}

// BenchmarkBuy is one whole purchase over loopback TCP, one after
// another with one card: the merchant's request created in the store,
// connect, Noise handshake, Hello, OfferRequest (the server finds the
// request and binds its offer), the card's offline PIN check and SIGN
// TRANSACTION (the in-process virtual card), the server's checks of the
// signature over its own copy, certificate and counter, the approval
// recorded, the ledger posting (group commit, durable) and the result.
// It reports purchases/s, and the p50 and p99 latency of Buy as the
// device sees it (the merchant's request is made before the clock starts).
func BenchmarkBuy(b *testing.B) { benchBuy(b, mallStores[0].Open, 1, false) }

// BenchmarkBuyPostgres is BenchmarkBuy on PostgreSQL
// (CARDLINK_TEST_POSTGRES; skipped when unset).
func BenchmarkBuyPostgres(b *testing.B) { benchBuy(b, mallStores[1].Open, 1, false) }

// BenchmarkBuyParallel runs the purchases of 8, 32, 64 and 128 devices at once
// (sub-benchmarks devices=N), each with its own card, buying again and
// again, each purchase over a new connection: the throughput of the whole
// system on this machine. The devices and their cards run in this process,
// on the same cores as the server: the cpu-% metric is the process's CPU
// time over the wall time and the cores, and a CPU profile
// (-cpuprofile) carries the label side=device on the device and card
// work and side=merchant on the creation of the requests, so the server's
// own share can be read apart (go tool pprof -tagignore side=.).
func BenchmarkBuyParallel(b *testing.B) { benchBuyParallel(b, mallStores[0].Open, false) }

// BenchmarkBuyParallelPostgres is BenchmarkBuyParallel on PostgreSQL
// (CARDLINK_TEST_POSTGRES; skipped when unset): the database's own CPU
// is in its processes, not in cpu-%.
func BenchmarkBuyParallelPostgres(b *testing.B) { benchBuyParallel(b, mallStores[1].Open, false) }

// BenchmarkBuySession is BenchmarkBuyParallel with devices that stay
// connected: each opens one device.Session (one Noise handshake) and
// approves all its purchases over it, as a shop's terminal would.
func BenchmarkBuySession(b *testing.B) { benchBuyParallel(b, mallStores[0].Open, true) }

// BenchmarkBuySessionPostgres is BenchmarkBuySession on PostgreSQL
// (CARDLINK_TEST_POSTGRES; skipped when unset).
func BenchmarkBuySessionPostgres(b *testing.B) { benchBuyParallel(b, mallStores[1].Open, true) }

func benchBuyParallel(b *testing.B, open func(testing.TB) store.Store, kept bool) {
	for _, n := range []int{8, 32, 64, 128} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) { benchBuy(b, open, n, kept) })
	}
}

// benchBuy runs b.N purchases with cards devices at once on a new mall
// over the store open makes; with kept, each device keeps one session
// for all its purchases, else each purchase makes a channel of its own.
func benchBuy(b *testing.B, open func(testing.TB) store.Store, cards int, kept bool) {
	// RunParallel starts parallelism × GOMAXPROCS goroutines, each with a
	// card of its own: cards rounds up to a multiple of GOMAXPROCS.
	parallelism, asked := (cards+runtimeProcs()-1)/runtimeProcs(), cards
	if cards > 1 {
		cards = parallelism * runtimeProcs()
	}
	m := newMall(b, open(b))
	type terminal struct {
		card *wallettest.Env
		sess *device.Session // with kept
	}
	pool := make(chan *terminal, cards)
	for _, c := range m.cards(b, cards, 1<<40) {
		t := &terminal{card: c}
		if kept {
			t.sess = m.session(b)
		}
		pool <- t
	}
	var (
		mu    sync.Mutex
		times = make([]time.Duration, 0, b.N)
	)
	merchant := pprof.Labels("side", "merchant")
	dev := pprof.Labels("side", "device")
	buy := func(t *terminal) {
		var p store.Purchase
		pprof.Do(context.Background(), merchant, func(context.Context) { p = m.newPurchase(b, 100, "", "") })
		var (
			res device.BuyResult
			err error
			d   time.Duration
		)
		pprof.Do(context.Background(), dev, func(context.Context) {
			opts := device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference}
			start := time.Now()
			if t.sess != nil {
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				res, err = t.sess.Buy(ctx, t.card.Client, opts)
				cancel()
			} else {
				res, err = m.buy(b, t.card, opts)
			}
			d = time.Since(start)
		})
		if err != nil || res.Code != protocol.CodeOK {
			b.Errorf("Buy() = %v, %v", res.Code, err)
			return
		}
		mu.Lock()
		times = append(times, d)
		mu.Unlock()
	}
	b.ReportAllocs()
	cpu0 := storetest.CPUTime()
	start := time.Now()
	if cards == 1 {
		t := <-pool
		for b.Loop() {
			buy(t)
		}
	} else {
		b.ResetTimer()
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			t := <-pool
			defer func() { pool <- t }()
			for pb.Next() {
				buy(t)
			}
		})
	}
	elapsed := time.Since(start)
	cpu := storetest.CPUTime() - cpu0
	if len(times) > 0 {
		slices.Sort(times)
		b.ReportMetric(float64(len(times))/elapsed.Seconds(), "purchases/s")
		b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds()/float64(runtimeProcs()), "cpu-%")
		if cards != asked {
			b.ReportMetric(float64(cards), "devices")
		}
	}
}

// runtimeProcs is GOMAXPROCS.
func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
