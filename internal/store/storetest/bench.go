package storetest

import (
	"context"
	"encoding/binary"
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
