package storetest

import (
	"context"
	"encoding/binary"
	"fmt"
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
