package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

// purses returns open(t) as a store.Purses, or skips t.
func purses(t *testing.T, open OpenFunc) store.Purses {
	t.Helper()
	p, ok := open(t).(store.Purses)
	if !ok {
		t.Skip("backend has no store.Purses")
	}
	return p
}

func load(id, card string, seq uint32) store.PurseOp {
	return store.PurseOp{ID: id, Kind: store.PurseLoad, Card: card, Seq: seq, Amount: money.Amount{Minor: 500, Currency: "EUR"},
		Offer: []byte("offer " + id), Created: t0, Expires: t0.Add(time.Minute)}
}

func testPurses(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	ps := purses(t, open)
	l1, l1b := load("lo_1", cardA, 1), load("lo_1b", cardA, 1)
	must(t, "CreatePurseOp(lo_1)", ps.CreatePurseOp(ctx, l1))
	must(t, "CreatePurseOp(lo_1b)", ps.CreatePurseOp(ctx, l1b))
	wantErr(t, "CreatePurseOp(lo_1 again)", ps.CreatePurseOp(ctx, l1), store.ErrConflict)
	got, err := ps.PurseOp(ctx, "lo_1")
	must(t, "PurseOp(lo_1)", err)
	want := l1
	want.Status, want.Updated = store.PurseOffered, t0
	if got.ID != want.ID || got.Kind != want.Kind || got.Card != want.Card || got.Seq != 1 || got.Amount != want.Amount ||
		!bytes.Equal(got.Offer, want.Offer) || got.Status != want.Status || !got.Created.Equal(t0) || !got.Updated.Equal(t0) ||
		!got.Expires.Equal(want.Expires) || got.Load != nil || got.Transfer != 0 {
		t.Fatalf("PurseOp(lo_1) = %+v, want %+v", got, want)
	}
	_, err = ps.PurseOp(ctx, "nope")
	wantErr(t, "PurseOp(nope)", err, store.ErrNotFound)
	_, err = ps.LoadBySeq(ctx, cardA, 1)
	wantErr(t, "LoadBySeq before any authorized", err, store.ErrNotFound)

	// Expired offers cannot be authorized; the wrong from is a conflict.
	_, err = ps.MovePurseOp(ctx, "lo_1", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{Counter: 7}, t0.Add(time.Minute))
	wantErr(t, "MovePurseOp(expired)", err, store.ErrExpired)
	got, err = ps.MovePurseOp(ctx, "lo_1", store.PurseSigned, store.PurseApplied, store.PurseUpdate{}, t0)
	wantErr(t, "MovePurseOp(wrong from)", err, store.ErrConflict)
	if got.Status != store.PurseOffered {
		t.Errorf("MovePurseOp(wrong from) returned status %s, want offered", got.Status)
	}
	_, err = ps.MovePurseOp(ctx, "nope", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{}, t0)
	wantErr(t, "MovePurseOp(nope)", err, store.ErrNotFound)

	t1 := t0.Add(time.Second)
	got, err = ps.MovePurseOp(ctx, "lo_1", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{Counter: 7}, t1)
	must(t, "MovePurseOp(lo_1 authorized)", err)
	if got.Status != store.PurseAuthorized || got.Counter != 7 || !got.Updated.Equal(t1) {
		t.Errorf("MovePurseOp(lo_1 authorized) = %+v, want authorized, counter 7, updated %v", got, t1)
	}
	// A second load with the same sequence number cannot be authorized.
	got, err = ps.MovePurseOp(ctx, "lo_1b", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{Counter: 8}, t1)
	wantErr(t, "MovePurseOp(lo_1b authorized)", err, store.ErrConflict)
	if got.ID != "lo_1" {
		t.Errorf("MovePurseOp(lo_1b authorized) returned %q, want the holder lo_1", got.ID)
	}
	if b, err := ps.PurseOp(ctx, "lo_1b"); err != nil || b.Status != store.PurseOffered || b.Counter != 0 {
		t.Errorf("PurseOp(lo_1b) after the refusal = %+v, %v; want it offered, unchanged", b, err)
	}
	got, err = ps.MovePurseOp(ctx, "lo_1", store.PurseAuthorized, store.PurseSigned, store.PurseUpdate{Load: []byte("signed"), Transfer: 42}, t1)
	must(t, "MovePurseOp(lo_1 signed)", err)
	if got.Counter != 7 || got.Transfer != 42 || string(got.Load) != "signed" {
		t.Errorf("MovePurseOp(lo_1 signed) = %+v, want counter 7 kept, transfer 42, load", got)
	}
	if b, err := ps.LoadBySeq(ctx, cardA, 1); err != nil || b.ID != "lo_1" {
		t.Errorf("LoadBySeq(cardA, 1) = %+v, %v; want lo_1", b, err)
	}
	got, err = ps.MovePurseOp(ctx, "lo_1", store.PurseSigned, store.PurseApplied, store.PurseUpdate{Counter: 9}, t1)
	if err != nil || got.Status != store.PurseApplied || got.Counter != 9 || string(got.Load) != "signed" || got.Transfer != 42 {
		t.Errorf("MovePurseOp(lo_1 applied) = %+v, %v; want applied, counter 9", got, err)
	}
	// A declined load frees its number.
	l2, l2b := load("lo_2", cardA, 2), load("lo_2b", cardA, 2)
	must(t, "CreatePurseOp(lo_2)", ps.CreatePurseOp(ctx, l2))
	must(t, "CreatePurseOp(lo_2b)", ps.CreatePurseOp(ctx, l2b))
	_, err = ps.MovePurseOp(ctx, "lo_2", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{}, t1)
	must(t, "MovePurseOp(lo_2 authorized)", err)
	got, err = ps.MovePurseOp(ctx, "lo_2", store.PurseAuthorized, store.PurseDeclined, store.PurseUpdate{Reason: "funds"}, t1)
	if err != nil || got.Reason != "funds" {
		t.Errorf("MovePurseOp(lo_2 declined) = %+v, %v; want reason funds", got, err)
	}
	_, err = ps.MovePurseOp(ctx, "lo_2b", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{}, t1)
	must(t, "MovePurseOp(lo_2b authorized after lo_2 declined)", err)
	// Another card's load 1 is independent.
	must(t, "CreatePurseOp(lo_b1)", ps.CreatePurseOp(ctx, load("lo_b1", cardB, 1)))
	_, err = ps.MovePurseOp(ctx, "lo_b1", store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{}, t1)
	must(t, "MovePurseOp(lo_b1 authorized)", err)
	// Unloads have no sequence number.
	for _, id := range []string{"un_1", "un_2"} {
		u := store.PurseOp{ID: id, Kind: store.PurseUnload, Card: cardA, Amount: money.Amount{Minor: 100, Currency: "EUR"},
			Offer: []byte("u"), Created: t0, Expires: t0.Add(time.Minute)}
		must(t, "CreatePurseOp("+id+")", ps.CreatePurseOp(ctx, u))
		_, err = ps.MovePurseOp(ctx, id, store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{Counter: 11}, t1)
		must(t, "MovePurseOp("+id+" authorized)", err)
	}

	ops, err := ps.AuthorizedPurseOps(ctx, t1.Add(time.Microsecond), 10)
	var ids []string
	for _, op := range ops {
		ids = append(ids, op.ID)
	}
	if want := []string{"lo_2b", "lo_b1", "un_1", "un_2"}; err != nil || fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("AuthorizedPurseOps(after t1) = %v, %v; want %v", ids, err, want)
	}
	if ops, err := ps.AuthorizedPurseOps(ctx, t1, 10); err != nil || len(ops) != 0 {
		t.Errorf("AuthorizedPurseOps(t1) = %d ops, %v; want none (updated at t1)", len(ops), err)
	}
	if ops, err := ps.AuthorizedPurseOps(ctx, t1.Add(time.Microsecond), 1); err != nil || len(ops) != 1 || ops[0].ID != "lo_2b" {
		t.Errorf("AuthorizedPurseOps(limit 1) = %+v, %v; want lo_2b", ops, err)
	}

	// Redemptions: unique by id and by (card, counter).
	r := store.Redemption{ID: "rd_1", Merchant: "m1", Card: cardA, Counter: 5, CVM: 1, Transaction: []byte("t1"),
		Signature: []byte("s1"), Amount: money.Amount{Minor: 300, Currency: "EUR"}, Created: t0}
	got1, err := ps.CreateRedemption(ctx, r)
	must(t, "CreateRedemption(rd_1)", err)
	if got1.Status != store.RedemptionPending || got1.Counter != 5 || got1.Amount != r.Amount || !got1.Created.Equal(t0) {
		t.Errorf("CreateRedemption(rd_1) = %+v, want pending", got1)
	}
	for _, tt := range []struct {
		name string
		r    store.Redemption
	}{
		{"same id", func() store.Redemption { x := r; x.Counter = 6; x.Merchant = "m2"; return x }()},
		{"same card and counter", func() store.Redemption { x := r; x.ID = "rd_2"; return x }()},
	} {
		got, err := ps.CreateRedemption(ctx, tt.r)
		wantErr(t, "CreateRedemption("+tt.name+")", err, store.ErrConflict)
		if got.ID != "rd_1" || got.Merchant != "m1" {
			t.Errorf("CreateRedemption(%s) = %+v, want the first, rd_1", tt.name, got)
		}
	}
	other := r
	other.ID, other.Card = "rd_3", cardB
	_, err = ps.CreateRedemption(ctx, other)
	must(t, "CreateRedemption(other card, same counter)", err)
	rd, err := ps.FinishRedemption(ctx, "rd_1", 77, t1)
	if err != nil || rd.Status != store.RedemptionRedeemed || rd.Transfer != 77 || !rd.Updated.Equal(t1) {
		t.Errorf("FinishRedemption(rd_1) = %+v, %v; want redeemed, transfer 77", rd, err)
	}
	_, err = ps.FinishRedemption(ctx, "rd_1", 78, t1)
	wantErr(t, "FinishRedemption(rd_1 again)", err, store.ErrConflict)
	_, err = ps.FinishRedemption(ctx, "nope", 78, t1)
	wantErr(t, "FinishRedemption(nope)", err, store.ErrNotFound)
	wantErr(t, "DeleteRedemption(rd_1 redeemed)", ps.DeleteRedemption(ctx, "rd_1"), store.ErrNotFound)
	must(t, "DeleteRedemption(rd_3)", ps.DeleteRedemption(ctx, "rd_3"))
	_, err = ps.Redemption(ctx, "rd_3")
	wantErr(t, "Redemption(rd_3 deleted)", err, store.ErrNotFound)
	_, err = ps.CreateRedemption(ctx, other)
	must(t, "CreateRedemption(rd_3 again after delete)", err)
	rs, err := ps.PendingRedemptions(ctx, t1, 10)
	if err != nil || len(rs) != 1 || rs[0].ID != "rd_3" {
		t.Errorf("PendingRedemptions(t1) = %+v, %v; want rd_3 only (rd_1 is redeemed)", rs, err)
	}
	if rs, err := ps.PendingRedemptions(ctx, t0, 10); err != nil || len(rs) != 0 {
		t.Errorf("PendingRedemptions(t0) = %+v, %v; want none", rs, err)
	}
}

// testRaceRedemption: goroutines on two Stores redeem one receipt under
// distinct ids (as two merchants might): exactly one creates it.
func testRaceRedemption(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	stores := []store.Purses{purses(t, open), open(t).(store.Purses)}
	var wins atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			r := store.Redemption{ID: fmt.Sprintf("rd_%d", i%2), Merchant: fmt.Sprintf("m%d", i), Card: cardA, Counter: 3,
				Transaction: []byte("t"), Signature: []byte("s"), Amount: money.Amount{Minor: 1, Currency: "EUR"}, Created: t0}
			_, err := stores[i%2].CreateRedemption(ctx, r)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, store.ErrConflict):
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("CreateRedemption = %v, want nil or ErrConflict", err)
	}
	if n := wins.Load(); n != 1 {
		t.Errorf("CreateRedemption winners = %d, want 1", n)
	}
}

// testRaceLoadSeq: loads with one sequence number race to be
// authorized: exactly one is.
func testRaceLoadSeq(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	stores := []store.Purses{purses(t, open), open(t).(store.Purses)}
	for i := range 8 {
		must(t, "CreatePurseOp", stores[0].CreatePurseOp(ctx, load(fmt.Sprintf("lo_%d", i), cardA, 4)))
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := stores[i%2].MovePurseOp(ctx, fmt.Sprintf("lo_%d", i), store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{}, t0)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, store.ErrConflict):
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("MovePurseOp = %v, want nil or ErrConflict", err)
	}
	if n := wins.Load(); n != 1 {
		t.Errorf("MovePurseOp(authorized) winners = %d, want 1", n)
	}
}
