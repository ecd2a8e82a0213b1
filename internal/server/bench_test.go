package server_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/store"
)

// BenchmarkAuthenticate is one whole authentication over loopback TCP:
// connect, Noise handshake, Hello, challenge, the card's offline PIN check
// and signature (the in-process virtual card), verification against a
// SQLite store, and the result. The card is known to the server.
func BenchmarkAuthenticate(b *testing.B) { benchAuthenticate(b, openSQLite(b)) }

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
// It reports p50 and p99 latency.
func BenchmarkBuy(b *testing.B) { benchBuy(b, mallStores[0].open(b), 1) }

// BenchmarkBuyPostgres is BenchmarkBuy on PostgreSQL
// (CARDLINK_TEST_POSTGRES; skipped when unset).
func BenchmarkBuyPostgres(b *testing.B) { benchBuy(b, mallStores[1].open(b), 1) }

// BenchmarkBuyParallel runs purchases of 8 cards, each with its own
// device connection per purchase, at once: the throughput of the server
// side (ledger group commit included) with the cards in the same process.
func BenchmarkBuyParallel(b *testing.B) { benchBuy(b, mallStores[0].open(b), 8) }

// BenchmarkBuyParallelPostgres is BenchmarkBuyParallel on PostgreSQL.
func BenchmarkBuyParallelPostgres(b *testing.B) { benchBuy(b, mallStores[1].open(b), 8) }

func benchBuy(b *testing.B, st store.Store, cards int) {
	m := newMall(b, st)
	pool := make(chan *wallettest.Env, cards)
	for i := range cards {
		c := m.card
		if i > 0 {
			c = siblingCard(b, m.card)
			m.register(b, c)
		}
		m.fund(b, c.CardNumber, 1<<40)
		pool <- c
	}
	var (
		mu    sync.Mutex
		times []time.Duration
	)
	buy := func(c *wallettest.Env) {
		p := m.newPurchase(b, 100, "", "")
		start := time.Now()
		res, err := m.buy(b, c, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
		d := time.Since(start)
		if err != nil || res.Code != protocol.CodeOK {
			b.Errorf("Buy() = %v, %v", res.Code, err)
			return
		}
		mu.Lock()
		times = append(times, d)
		mu.Unlock()
	}
	b.ReportAllocs()
	start := time.Now()
	if cards == 1 {
		c := <-pool
		for b.Loop() {
			buy(c)
		}
	} else {
		b.SetParallelism((cards + 1) / 2)
		b.RunParallel(func(pb *testing.PB) {
			c := <-pool
			defer func() { pool <- c }()
			for pb.Next() {
				buy(c)
			}
		})
	}
	elapsed := time.Since(start)
	if len(times) > 0 {
		slices.Sort(times)
		b.ReportMetric(float64(len(times))/elapsed.Seconds(), "purchases/s")
		b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "p99-ms")
	}
}
