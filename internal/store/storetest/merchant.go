package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cardlink/internal/store"
)

// merchants returns the open store's Merchants, skipping t if the backend
// has none.
func merchants(t *testing.T, open OpenFunc) store.Merchants {
	t.Helper()
	m, ok := open(t).(store.Merchants)
	if !ok {
		t.Skip("backend has no store.Merchants")
	}
	return m
}

func testMerchants(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	ms := merchants(t, open)
	mA := store.Merchant{ID: "m_a", Name: "Shop A", KeyHash: bytes.Repeat([]byte{1}, 32),
		WebhookURL: "https://a.example/hook", WebhookSecret: []byte("secret-a"), Account: "acct_a", Created: t0.In(zone)}
	mB := store.Merchant{ID: "m_b", Name: "Shop B", KeyHash: bytes.Repeat([]byte{2}, 32),
		WebhookSecret: []byte("secret-b"), Created: t0}
	for _, m := range []store.Merchant{mA, mB} {
		if err := ms.CreateMerchant(ctx, m); err != nil {
			t.Fatalf("CreateMerchant(%s) = %v, want nil", m.ID, err)
		}
	}
	dupKey := mB
	dupKey.ID = "m_c"
	for _, m := range []store.Merchant{mA, dupKey} {
		if err := ms.CreateMerchant(ctx, m); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateMerchant(%s again) = %v, want ErrConflict", m.ID, err)
		}
	}
	got, err := ms.MerchantByKey(ctx, mA.KeyHash)
	want := mA
	want.Created = t0
	if err != nil || got.ID != want.ID || got.Name != want.Name || got.WebhookURL != want.WebhookURL ||
		!bytes.Equal(got.WebhookSecret, want.WebhookSecret) || got.Account != want.Account || !got.Created.Equal(t0) ||
		got.Created.Location() != time.UTC {
		t.Errorf("MerchantByKey(A) = %+v, %v; want %+v, nil", got, err, want)
	}
	if _, err := ms.MerchantByKey(ctx, bytes.Repeat([]byte{9}, 32)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MerchantByKey(unknown) = %v, want ErrNotFound", err)
	}

	zero, five := int64(0), int64(5)
	items := []store.Item{
		{ID: "it_1", Merchant: "m_a", Name: "Coffee", Price: 250, Currency: "EUR", Delivery: store.DeliverNone, Created: t0},
		{ID: "it_2", Merchant: "m_a", Name: "Ticket", Price: 1200, Currency: "EUR", Stock: &five,
			Delivery: store.DeliverTicket, Payload: []byte("row 5"), Created: t0.Add(time.Second)},
		{ID: "it_3", Merchant: "m_a", Name: "Gone", Price: 1, Currency: "EUR", Stock: &zero,
			Delivery: store.DeliverVoucher, Payload: []byte("V"), Created: t0.Add(2 * time.Second)},
	}
	for _, it := range items {
		if err := ms.CreateItem(ctx, it); err != nil {
			t.Fatalf("CreateItem(%s) = %v, want nil", it.ID, err)
		}
	}
	if err := ms.CreateItem(ctx, items[0]); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateItem(it_1 again) = %v, want ErrConflict", err)
	}
	orphan := items[0]
	orphan.ID, orphan.Merchant = "it_x", "m_nobody"
	if err := ms.CreateItem(ctx, orphan); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateItem(unknown merchant) = %v, want ErrNotFound", err)
	}
	list, err := ms.Items(ctx, "m_a")
	if err != nil || len(list) != 3 {
		t.Fatalf("Items(m_a) = %d items, %v; want 3, nil", len(list), err)
	}
	for i, it := range list {
		w := items[i]
		if it.ID != w.ID || it.Price != w.Price || it.Currency != w.Currency || it.Delivery != w.Delivery ||
			!bytes.Equal(it.Payload, w.Payload) || (it.Stock == nil) != (w.Stock == nil) ||
			(it.Stock != nil && *it.Stock != *w.Stock) || !it.Created.Equal(w.Created) {
			t.Errorf("Items(m_a)[%d] = %+v, want %+v", i, it, w)
		}
	}
	if list, err := ms.Items(ctx, "m_b"); err != nil || len(list) != 0 {
		t.Errorf("Items(m_b) = %v, %v; want none, nil", list, err)
	}

	p := store.Purchase{ID: "pu_1", Merchant: "m_a", Item: "it_2", Description: "a ticket", Amount: 1200,
		Currency: "EUR", IdemKey: "k1", Digest: []byte("d1"), CallbackURL: "https://a.example/cb",
		Reference: "12345674", Status: store.PurchasePending, Created: t0, Expires: t0.Add(10 * time.Minute)}
	gotP, replayed, err := ms.CreatePurchase(ctx, p)
	if err != nil || replayed || gotP.ID != p.ID {
		t.Fatalf("CreatePurchase(pu_1) = %s, %v, %v; want pu_1, false, nil", gotP.ID, replayed, err)
	}
	again := p
	again.ID, again.Reference = "pu_other", "99999999"
	gotP, replayed, err = ms.CreatePurchase(ctx, again)
	if err != nil || !replayed || gotP.ID != "pu_1" || gotP.Reference != p.Reference {
		t.Errorf("CreatePurchase(same key, same digest) = %s, %v, %v; want pu_1, true, nil", gotP.ID, replayed, err)
	}
	again.Digest = []byte("d2")
	if _, _, err := ms.CreatePurchase(ctx, again); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreatePurchase(same key, other digest) = %v, want ErrConflict", err)
	}
	cases := []struct {
		name string
		edit func(*store.Purchase)
		want error
	}{
		{"reference taken", func(q *store.Purchase) { q.Reference = p.Reference }, store.ErrReferenceTaken},
		{"sold out", func(q *store.Purchase) { q.Item = "it_3" }, store.ErrSoldOut},
		{"other merchant's item", func(q *store.Purchase) { q.Merchant = "m_b" }, store.ErrNotFound},
		{"unknown item", func(q *store.Purchase) { q.Item = "it_none" }, store.ErrNotFound},
		{"duplicate id", func(q *store.Purchase) { q.ID = "pu_1" }, store.ErrConflict},
	}
	for i, c := range cases {
		q := p
		q.ID, q.IdemKey, q.Reference = fmt.Sprintf("pu_c%d", i), fmt.Sprintf("kc%d", i), fmt.Sprintf("5000000%d", i)
		c.edit(&q)
		if _, _, err := ms.CreatePurchase(ctx, q); !errors.Is(err, c.want) {
			t.Errorf("CreatePurchase(%s) = %v, want %v", c.name, err, c.want)
		}
		if _, err := ms.Purchase(ctx, q.Merchant, q.ID); q.ID != "pu_1" && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Purchase after refused %s = %v, want ErrNotFound (no damage)", c.name, err)
		}
	}
	free := store.Purchase{ID: "pu_free", Merchant: "m_b", Description: "tip", Amount: 99, Currency: "USD",
		Digest: []byte("d"), Reference: "22222222", Status: store.PurchasePending, Created: t0.In(zone), Expires: t0.Add(time.Minute)}
	if _, _, err := ms.CreatePurchase(ctx, free); err != nil {
		t.Fatalf("CreatePurchase(free amount, no key) = %v, want nil", err)
	}
	free2 := free
	free2.ID, free2.Reference = "pu_free2", "33333333"
	if _, _, err := ms.CreatePurchase(ctx, free2); err != nil {
		t.Errorf("CreatePurchase(second without key) = %v, want nil", err)
	}
	gotP, err = ms.Purchase(ctx, "m_b", "pu_free")
	if err != nil || gotP.Item != "" || gotP.IdemKey != "" || gotP.Amount != 99 || gotP.Currency != "USD" ||
		gotP.Status != store.PurchasePending || !gotP.Created.Equal(t0) || gotP.Created.Location() != time.UTC {
		t.Errorf("Purchase(m_b, pu_free) = %+v, %v; want the free-amount request", gotP, err)
	}
	if _, err := ms.Purchase(ctx, "m_b", "pu_1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Purchase(m_b, A's pu_1) = %v, want ErrNotFound", err)
	}
	gotP, err = ms.Purchase(ctx, "m_a", "pu_1")
	if err != nil || gotP.Item != "it_2" || gotP.IdemKey != "k1" || gotP.CallbackURL != p.CallbackURL ||
		!gotP.Expires.Equal(p.Expires) || !bytes.Equal(gotP.Digest, p.Digest) {
		t.Errorf("Purchase(m_a, pu_1) = %+v, %v; want %+v", gotP, err, p)
	}
}

// testRaceIdempotentPurchase: goroutines on two Stores create a purchase
// with one idempotency key; exactly one request exists afterwards, and
// every caller that succeeded sees it.
func testRaceIdempotentPurchase(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	ms := merchants(t, open)
	ms2 := open(t).(store.Merchants)
	m := store.Merchant{ID: "m_r", Name: "R", KeyHash: bytes.Repeat([]byte{7}, 32), WebhookSecret: []byte("s"), Created: t0}
	if err := ms.CreateMerchant(ctx, m); err != nil {
		t.Fatalf("CreateMerchant = %v, want nil", err)
	}
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := ms
			if i%2 == 1 {
				s = ms2
			}
			p := store.Purchase{ID: fmt.Sprintf("pu_r%d", i), Merchant: "m_r", Description: "x", Amount: 1,
				Currency: "EUR", IdemKey: "same", Digest: []byte("d"), Reference: fmt.Sprintf("7000000%d", i),
				Status: store.PurchasePending, Created: t0, Expires: t0.Add(time.Minute)}
			for range 3 { // a lost race reports ErrReferenceTaken; the retry replays
				got, _, err := s.CreatePurchase(ctx, p)
				if errors.Is(err, store.ErrReferenceTaken) {
					continue
				}
				if err == nil {
					ids[i] = got.ID
				}
				return
			}
		}()
	}
	wg.Wait()
	winner := ""
	for i, id := range ids {
		if id == "" {
			t.Errorf("caller %d got no request", i)
			continue
		}
		if winner == "" {
			winner = id
		}
		if id != winner {
			t.Errorf("caller %d got %s, want %s (one request per key)", i, id, winner)
		}
	}
}
