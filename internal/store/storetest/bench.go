package storetest

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/store"
)

// BenchTakeChallenge measures one PutChallenge plus one TakeChallenge, the
// store's share of one authentication, on a store from open.
func BenchTakeChallenge(b *testing.B, open OpenFunc) {
	ctx := context.Background()
	s := open(b)
	c := store.Challenge{Value: make([]byte, store.ChallengeSize), Card: cardA, Session: []byte("bench"), Purpose: 1, Expires: t0.Add(time.Minute)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint64(c.Value, uint64(i))
		if err := s.PutChallenge(ctx, c); err != nil {
			b.Fatalf("PutChallenge = %v", err)
		}
		if _, err := s.TakeChallenge(ctx, c.Value, c.Card, c.Session, t0); err != nil {
			b.Fatalf("TakeChallenge = %v", err)
		}
	}
}

// BenchAdvanceCounter measures AdvanceCounter on one card, each call
// growing the counter.
func BenchAdvanceCounter(b *testing.B, open OpenFunc) {
	ctx := context.Background()
	s := open(b)
	addCard(b, s, cardA)
	b.ReportAllocs()
	b.ResetTimer()
	for i := uint32(1); b.Loop(); i++ {
		if err := s.AdvanceCounter(ctx, cardA, i, t0); err != nil {
			b.Fatalf("AdvanceCounter(%d) = %v", i, err)
		}
	}
}

// BenchPurchase measures the store's share of one paid purchase:
// CreatePurchase, BindPurchase, AuthorizePurchase (taking stock) and
// CompletePurchase, on a store from open.
func BenchPurchase(b *testing.B, open OpenFunc) {
	ctx := context.Background()
	ms, ok := open(b).(store.Merchants)
	if !ok {
		b.Skip("backend has no store.Merchants")
	}
	if err := ms.CreateMerchant(ctx, store.Merchant{ID: "m", Name: "M", KeyHash: []byte{1}, WebhookSecret: []byte{2}, Created: t0}); err != nil {
		b.Fatalf("CreateMerchant = %v", err)
	}
	stock := int64(1 << 40)
	if err := ms.CreateItem(ctx, store.Item{ID: "it", Merchant: "m", Name: "I", Price: 1, Currency: "EUR", Stock: &stock,
		Delivery: store.DeliverNone, Created: t0}); err != nil {
		b.Fatalf("CreateItem = %v", err)
	}
	a := store.PurchaseApproval{Counter: 1, CVM: 1, Signature: make([]byte, 72), Device: "dev"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("pu_%d", i)
		p := store.Purchase{ID: id, Merchant: "m", Item: "it", Description: "bench", Amount: 1, Currency: "EUR",
			Digest: []byte("d"), Reference: fmt.Sprintf("%08d", i%1e8), Status: store.PurchasePending, Created: t0,
			Expires: t0.Add(time.Minute)}
		if _, _, err := ms.CreatePurchase(ctx, p); err != nil {
			b.Fatalf("CreatePurchase = %v", err)
		}
		if _, err := ms.BindPurchase(ctx, id, cardA, make([]byte, 200), t0); err != nil {
			b.Fatalf("BindPurchase = %v", err)
		}
		if _, err := ms.AuthorizePurchase(ctx, id, cardA, a, t0); err != nil {
			b.Fatalf("AuthorizePurchase = %v", err)
		}
		if _, err := ms.CompletePurchase(ctx, id, int64(i+1), "", t0); err != nil {
			b.Fatalf("CompletePurchase = %v", err)
		}
	}
}

// BenchApprovePurchase measures the store's share of one purchase on the
// path the server takes with a store.PurchaseApprover (CreatePurchase,
// BindPurchase, then ApprovePurchase: counter, approval, payment and
// completion in one write), from 64 goroutines at once, as many devices
// buy: the writes meet in the group commit. Each goroutine buys with its
// own card (its counter grows). The throughput is the store's ceiling for
// end-to-end purchases; it reports purchases/s and the process's CPU time
// per purchase (nearly all the store's: the callers only wait).
func BenchApprovePurchase(b *testing.B, open OpenFunc) {
	ctx := context.Background()
	s := open(b)
	ms, ok := s.(store.Merchants)
	if !ok {
		b.Skip("backend has no store.Merchants")
	}
	pa, ok := s.(store.PurchaseApprover)
	if !ok {
		b.Skip("backend is no store.PurchaseApprover")
	}
	l := ledgerOf(b, s)
	if err := ms.CreateMerchant(ctx, store.Merchant{ID: "m_shop", Name: "Shop", KeyHash: []byte{1}, WebhookSecret: []byte{2},
		Account: shopAccount, Created: t0}); err != nil {
		b.Fatalf("CreateMerchant = %v", err)
	}
	if err := l.CreateAccount(ctx, store.Account{ID: shopAccount, Kind: store.KindMerchant, Currency: "EUR"}, t0); err != nil {
		b.Fatalf("CreateAccount = %v", err)
	}
	const workers = 64
	cards := make(chan string, workers)
	for i := range workers {
		number := fmt.Sprintf("40000000000%05d", i)
		addCard(b, s, number)
		if err := l.CreateAccount(ctx, store.Account{ID: holder(number), Kind: store.KindHolder, Currency: "EUR",
			Limit: -1 << 50}, t0); err != nil {
			b.Fatalf("CreateAccount = %v", err)
		}
		cards <- number
	}
	var next atomic.Int64
	b.SetParallelism(workers / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	start, cpu := time.Now(), CPUTime()
	b.RunParallel(func(pb *testing.PB) {
		card := <-cards
		var counter uint32
		for pb.Next() {
			n := next.Add(1)
			id := fmt.Sprintf("pu_%016d", n)
			p := store.Purchase{ID: id, Merchant: "m_shop", Description: "bench", Amount: 100, Currency: "EUR",
				Digest: []byte("d"), Reference: fmt.Sprintf("%010d", n), Status: store.PurchasePending, Created: t0,
				Expires: t0.Add(time.Hour)}
			if _, _, err := ms.CreatePurchase(ctx, p); err != nil {
				b.Errorf("CreatePurchase = %v", err)
				return
			}
			if _, err := ms.BindPurchase(ctx, id, card, make([]byte, 300), t0); err != nil {
				b.Errorf("BindPurchase = %v", err)
				return
			}
			counter++
			a := store.PurchaseApproval{Counter: counter, CVM: 1, Signature: make([]byte, 72), Device: "dev"}
			got, err := pa.ApprovePurchase(ctx, id, card, a, true, testPayment, t0)
			if err != nil || got.Status != store.PurchaseApproved {
				b.Errorf("ApprovePurchase = %s, %v; want approved", got.Status, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "purchases/s")
	b.ReportMetric(float64((CPUTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/purchase")
}
