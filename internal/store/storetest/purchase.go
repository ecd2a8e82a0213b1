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

// shop is a merchant with a catalogue on a fresh database, for the
// purchase lifecycle tests.
type shop struct {
	t  *testing.T
	ms store.Merchants
}

// Items of every shop: stocked has a stock of 2, unlimited none.
const stocked, unlimited = "it_stocked", "it_unlimited"

func newShop(t *testing.T, open OpenFunc) shop {
	t.Helper()
	ctx := context.Background()
	ms := merchants(t, open)
	for _, m := range []store.Merchant{
		{ID: "m_shop", Name: "Shop", KeyHash: bytes.Repeat([]byte{3}, 32), WebhookURL: "https://shop.example/hook",
			WebhookSecret: []byte("s"), Account: "merchant:m_shop:EUR", Created: t0},
		{ID: "m_other", Name: "Other", KeyHash: bytes.Repeat([]byte{4}, 32), WebhookSecret: []byte("o"), Created: t0},
	} {
		must(t, "CreateMerchant("+m.ID+")", ms.CreateMerchant(ctx, m))
	}
	two := int64(2)
	for _, it := range []store.Item{
		{ID: stocked, Merchant: "m_shop", Name: "Seat", Price: 1000, Currency: "EUR", Stock: &two,
			Delivery: store.DeliverTicket, Payload: []byte("row 1"), Created: t0},
		{ID: unlimited, Merchant: "m_shop", Name: "Song", Price: 100, Currency: "EUR",
			Delivery: store.DeliverFile, Payload: []byte("la"), Created: t0},
	} {
		must(t, "CreateItem("+it.ID+")", ms.CreateItem(ctx, it))
	}
	return shop{t, ms}
}

// create creates the pending request id of m_shop for item (or a free
// amount of 1000 if empty) with reference ref, pushed to card (if not
// empty), created created seconds after t0 and expiring ten minutes after
// t0.
func (s shop) create(id, item, ref, card string, created int) store.Purchase {
	s.t.Helper()
	p := store.Purchase{ID: id, Merchant: "m_shop", Item: item, Description: "buy " + id, Amount: 1000,
		Currency: "EUR", Digest: []byte("d " + id), Reference: ref, Status: store.PurchasePending, Card: card,
		Created: t0.Add(time.Duration(created) * time.Second), Expires: t0.Add(10 * time.Minute)}
	got, _, err := s.ms.CreatePurchase(context.Background(), p)
	must(s.t, "CreatePurchase("+id+")", err)
	return got
}

// approval is the approval card gives purchase id in the tests.
func approval(id string) store.PurchaseApproval {
	return store.PurchaseApproval{Counter: 7, CVM: 2, Signature: []byte("sig " + id), Device: "dev_1", MatchedBy: "server"}
}

// pay takes the pending request id through binding to cardA,
// authorization and approval with transfer 99.
func (s shop) pay(id string) store.Purchase {
	s.t.Helper()
	ctx := context.Background()
	_, err := s.ms.BindPurchase(ctx, id, cardA, []byte("offer "+id), t0)
	must(s.t, "BindPurchase("+id+")", err)
	_, err = s.ms.AuthorizePurchase(ctx, id, cardA, approval(id), t0)
	must(s.t, "AuthorizePurchase("+id+")", err)
	p, err := s.ms.CompletePurchase(ctx, id, 99, "", t0)
	must(s.t, "CompletePurchase("+id+")", err)
	return p
}

// read returns the purchase as stored.
func (s shop) read(id string) store.Purchase {
	s.t.Helper()
	p, err := s.ms.Purchase(context.Background(), "", id)
	must(s.t, "Purchase(\"\", "+id+")", err)
	return p
}

// wantAsStored fails unless got, a purchase a call returned, is the
// purchase as stored, field by field.
func (s shop) wantAsStored(what string, got store.Purchase) {
	s.t.Helper()
	if g, w := describe(got), describe(s.read(got.ID)); g != w {
		s.t.Errorf("%s =\n%s\nwant it as stored:\n%s", what, g, w)
	}
}

// describe prints every field of p, the approval's too.
func describe(p store.Purchase) string {
	a := "none"
	if p.Approval != nil {
		a = fmt.Sprintf("%+v", *p.Approval)
	}
	p.Approval = nil
	return fmt.Sprintf("%+v, approval %s", p, a)
}

// stock returns the item's stock, -1 for unlimited.
func (s shop) stock(item string) int64 {
	s.t.Helper()
	it, err := s.ms.Item(context.Background(), item)
	must(s.t, "Item("+item+")", err)
	if it.Stock == nil {
		return -1
	}
	return *it.Stock
}

func ids(ps []store.Purchase) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.ID)
	}
	return s
}

func wantIDs(t testing.TB, what string, ps []store.Purchase, err error, want ...string) {
	t.Helper()
	if got := ids(ps); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s = %v, %v; want %v, nil", what, got, err, want)
	}
}

// testPurchaseReads: Merchant, Item, Purchase for any merchant, the new
// fields after creation, pending requests by reference and by card.
func testPurchaseReads(t *testing.T, open OpenFunc) {
	t.Run("Paid", func(t *testing.T) { testPaidPurchase(t, open) })
	ctx := context.Background()
	s := newShop(t, open)
	if m, err := s.ms.Merchant(ctx, "m_shop"); err != nil || m.Name != "Shop" || m.Account != "merchant:m_shop:EUR" ||
		!bytes.Equal(m.WebhookSecret, []byte("s")) {
		t.Errorf("Merchant(m_shop) = %+v, %v; want Shop", m, err)
	}
	_, err := s.ms.Merchant(ctx, "m_none")
	wantErr(t, "Merchant(m_none)", err, store.ErrNotFound)
	if it, err := s.ms.Item(ctx, stocked); err != nil || it.Merchant != "m_shop" || it.Price != 1000 ||
		it.Stock == nil || *it.Stock != 2 || !bytes.Equal(it.Payload, []byte("row 1")) {
		t.Errorf("Item(%s) = %+v, %v; want the seat with stock 2", stocked, it, err)
	}
	_, err = s.ms.Item(ctx, "it_none")
	wantErr(t, "Item(it_none)", err, store.ErrNotFound)

	p1 := s.create("pu_1", stocked, "11111111", "", 0)
	pushed := s.create("pu_pushed", "", "22222222", cardA, 1)
	if pushed.Card != cardA || !pushed.Updated.Equal(pushed.Created) {
		t.Errorf("CreatePurchase(pushed) = Card %q, Updated %v; want %s, the creation time", pushed.Card, pushed.Updated, cardA)
	}
	got := s.read("pu_pushed")
	if got.Card != cardA || got.Offer != nil || got.Approval != nil || got.Transfer != 0 || got.Refunded != 0 ||
		got.Reason != "" {
		t.Errorf("Purchase(pu_pushed) = %+v; want Card %s and no later fields", got, cardA)
	}
	wantTime(t, "Purchase(pu_pushed).Updated", got.Updated, t0.Add(time.Second))
	if got, err := s.ms.Purchase(ctx, "m_shop", "pu_1"); err != nil || got.ID != "pu_1" {
		t.Errorf("Purchase(m_shop, pu_1) = %+v, %v; want pu_1", got, err)
	}
	_, err = s.ms.Purchase(ctx, "m_other", "pu_1")
	wantErr(t, "Purchase(m_other, pu_1)", err, store.ErrNotFound)
	_, err = s.ms.Purchase(ctx, "", "pu_none")
	wantErr(t, `Purchase("", pu_none)`, err, store.ErrNotFound)

	byRef := []struct {
		name, ref string
		now       time.Time
		want      string // "" for ErrNotFound
	}{
		{"pending", "11111111", t0, p1.ID},
		{"last instant", "11111111", p1.Expires.Add(-time.Microsecond), p1.ID},
		{"at expiry", "11111111", p1.Expires, ""},
		{"unknown", "99999999", t0, ""},
	}
	for _, tt := range byRef {
		got, err := s.ms.PendingPurchase(ctx, tt.ref, tt.now)
		if tt.want == "" {
			wantErr(t, "PendingPurchase("+tt.name+")", err, store.ErrNotFound)
		} else if err != nil || got.ID != tt.want {
			t.Errorf("PendingPurchase(%s) = %s, %v; want %s, nil", tt.name, got.ID, err, tt.want)
		}
	}

	ps, err := s.ms.PendingPurchasesForCard(ctx, cardA, t0, 10)
	wantIDs(t, "PendingPurchasesForCard(A)", ps, err, "pu_pushed")
	_, err = s.ms.BindPurchase(ctx, "pu_1", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_1)", err)
	s.create("pu_3", "", "33333333", cardA, 2)
	ps, err = s.ms.PendingPurchasesForCard(ctx, cardA, t0, 10)
	wantIDs(t, "PendingPurchasesForCard(A, after binding)", ps, err, "pu_1", "pu_pushed", "pu_3")
	ps, err = s.ms.PendingPurchasesForCard(ctx, cardA, t0, 2)
	wantIDs(t, "PendingPurchasesForCard(A, limit 2)", ps, err, "pu_1", "pu_pushed")
	ps, err = s.ms.PendingPurchasesForCard(ctx, cardB, t0, 10)
	wantIDs(t, "PendingPurchasesForCard(B)", ps, err)
	ps, err = s.ms.PendingPurchasesForCard(ctx, cardA, p1.Expires, 10)
	wantIDs(t, "PendingPurchasesForCard(A, at expiry)", ps, err)
}

// testPaidPurchase: a paid request by reference and card, the newest of
// those that reuse a reference, and what it never returns (pending,
// authorized, declined, refunded in full, another card's).
func testPaidPurchase(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := newShop(t, open)
	s.create("pu_old", stocked, "11111111", "", 0)
	s.pay("pu_old")
	s.create("pu_new", unlimited, "11111111", "", 5) // the reference is free again once paid
	s.pay("pu_new")
	s.create("pu_pend", "", "11111111", cardA, 9) // newer, but pending

	s.create("pu_refund", "", "22222222", "", 0)
	s.pay("pu_refund")
	_, _, err := s.ms.CreateRefund(ctx, store.Refund{ID: "rf_part", Purchase: "pu_refund", Merchant: "m_shop",
		Amount: 400, Digest: []byte("400"), Created: t0})
	must(t, "CreateRefund(rf_part)", err)
	_, err = s.ms.FinishRefund(ctx, "rf_part", 98, "", t0)
	must(t, "FinishRefund(rf_part)", err)

	s.create("pu_full", "", "33333333", "", 0)
	s.pay("pu_full")
	_, _, err = s.ms.CreateRefund(ctx, store.Refund{ID: "rf_full", Purchase: "pu_full", Merchant: "m_shop",
		Amount: 1000, Digest: []byte("1000"), Created: t0})
	must(t, "CreateRefund(rf_full)", err)
	_, err = s.ms.FinishRefund(ctx, "rf_full", 97, "", t0)
	must(t, "FinishRefund(rf_full)", err)

	s.create("pu_declined", "", "44444444", "", 0)
	_, err = s.ms.BindPurchase(ctx, "pu_declined", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_declined)", err)
	_, err = s.ms.DeclinePurchase(ctx, "pu_declined", cardA, "no", t0)
	must(t, "DeclinePurchase(pu_declined)", err)

	s.create("pu_auth", "", "55555555", "", 0)
	_, err = s.ms.BindPurchase(ctx, "pu_auth", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_auth)", err)
	_, err = s.ms.AuthorizePurchase(ctx, "pu_auth", cardA, approval("pu_auth"), t0)
	must(t, "AuthorizePurchase(pu_auth)", err)

	cases := []struct {
		name, ref, card string
		want            string // "" for ErrNotFound
		status          store.PurchaseStatus
	}{
		{"newest approved", "11111111", cardA, "pu_new", store.PurchaseApproved},
		{"refunded partially", "22222222", cardA, "pu_refund", store.PurchaseRefundedPartially},
		{"refunded in full", "33333333", cardA, "", ""}, // its money is back: no goods again
		{"declined", "44444444", cardA, "", ""},
		{"authorized", "55555555", cardA, "", ""},
		{"another card", "11111111", cardB, "", ""},
		{"unknown", "99999999", cardA, "", ""},
	}
	for _, tt := range cases {
		got, err := s.ms.PaidPurchase(ctx, tt.ref, tt.card)
		if tt.want == "" {
			wantErr(t, "PaidPurchase("+tt.name+")", err, store.ErrNotFound)
			continue
		}
		if err != nil || got.ID != tt.want || got.Status != tt.status || got.Card != tt.card || got.Approval == nil ||
			got.Approval.CVM != approval(tt.want).CVM || got.Item != s.read(tt.want).Item {
			t.Errorf("PaidPurchase(%s) = %s %s (card %q, approval %+v), %v; want %s %s with its approval",
				tt.name, got.ID, got.Status, got.Card, got.Approval, err, tt.want, tt.status)
		}
	}
}

// testBindPurchase: binding, its idempotent retry, and the refusals.
func testBindPurchase(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := newShop(t, open)
	p := s.create("pu_1", "", "11111111", "", 0)
	s.create("pu_pushed", "", "22222222", cardA, 0)
	s.create("pu_declined", "", "33333333", "", 0)
	_, err := s.ms.DeclinePurchase(ctx, "pu_declined", "", "merchant cancelled", t0)
	must(t, "DeclinePurchase(pu_declined)", err)

	tests := []struct {
		name, id, card, offer string
		now                   time.Time
		want                  error
		wantOffer             string
	}{
		{"first", "pu_1", cardA, "offer 1", t0, nil, "offer 1"},
		{"retry: the stored offer", "pu_1", cardA, "offer 2", t0, nil, "offer 1"},
		{"other card", "pu_1", cardB, "offer 3", t0, store.ErrConflict, ""},
		{"retry after expiry", "pu_1", cardA, "offer 1", p.Expires, store.ErrExpired, ""},
		{"pushed, other card", "pu_pushed", cardB, "offer 4", t0, store.ErrConflict, ""},
		{"pushed, expired", "pu_pushed", cardA, "offer 5", p.Expires.Add(time.Hour), store.ErrExpired, ""},
		{"pushed, its card", "pu_pushed", cardA, "offer 6", t0, nil, "offer 6"},
		{"not pending", "pu_declined", cardA, "offer 7", t0, store.ErrNotFound, ""},
		{"unknown", "pu_none", cardA, "offer 8", t0, store.ErrNotFound, ""},
	}
	for _, tt := range tests {
		got, err := s.ms.BindPurchase(ctx, tt.id, tt.card, []byte(tt.offer), tt.now)
		if tt.want != nil {
			wantErr(t, "BindPurchase("+tt.name+")", err, tt.want)
			continue
		}
		if err != nil || got.ID != tt.id || got.Card != tt.card || string(got.Offer) != tt.wantOffer ||
			got.Status != store.PurchasePending {
			t.Errorf("BindPurchase(%s) = %+v, %v; want it pending, bound to %s with %q", tt.name, got, err, tt.card, tt.wantOffer)
		}
		if stored := s.read(tt.id); stored.Card != tt.card || string(stored.Offer) != tt.wantOffer {
			t.Errorf("Purchase(%s) after BindPurchase(%s) = card %s offer %q; want %s %q", tt.id, tt.name,
				stored.Card, stored.Offer, tt.card, tt.wantOffer)
		}
	}
}

// testAuthorizePurchase: authorization takes the stock; completion
// approves, or declines and gives it back; the refusals change nothing.
func testAuthorizePurchase(t *testing.T, open OpenFunc) {
	t.Run("Counting", func(t *testing.T) { testAuthorizePurchaseCounting(t, open) })
	t.Run("Approve", func(t *testing.T) { testApprovePurchase(t, open) })
	ctx := context.Background()
	s := newShop(t, open)
	for _, id := range []string{"pu_1", "pu_2", "pu_3"} {
		s.create(id, stocked, "1000000"+id[3:], "", 0)
		_, err := s.ms.BindPurchase(ctx, id, cardA, []byte("offer "+id), t0)
		must(t, "BindPurchase("+id+")", err)
	}
	s.create("pu_song", unlimited, "20000000", cardA, 0)
	s.create("pu_unbound", stocked, "30000000", "", 0)
	t1 := t0.Add(time.Minute)
	expires := t0.Add(10 * time.Minute)

	refused := []struct {
		name, id, card string
		now            time.Time
		want           error
	}{
		{"other card", "pu_1", cardB, t1, store.ErrNotFound},
		{"unbound", "pu_unbound", cardA, t1, store.ErrNotFound},
		{"unknown", "pu_none", cardA, t1, store.ErrNotFound},
		{"expired", "pu_1", cardA, expires, store.ErrExpired},
	}
	for _, tt := range refused {
		_, err := s.ms.AuthorizePurchase(ctx, tt.id, tt.card, approval(tt.id), tt.now)
		wantErr(t, "AuthorizePurchase("+tt.name+")", err, tt.want)
	}
	if p, n := s.read("pu_1"), s.stock(stocked); p.Status != store.PurchasePending || p.Approval != nil || n != 2 {
		t.Fatalf("after refusals: pu_1 %s approval %v, stock %d; want pending, none, 2 (no damage)", p.Status, p.Approval, n)
	}

	a := approval("pu_1")
	got, err := s.ms.AuthorizePurchase(ctx, "pu_1", cardA, a, t1)
	must(t, "AuthorizePurchase(pu_1)", err)
	if got.Status != store.PurchaseAuthorized || got.Approval == nil || got.Approval.Counter != a.Counter ||
		got.Approval.CVM != a.CVM || !bytes.Equal(got.Approval.Signature, a.Signature) || got.Approval.Device != a.Device ||
		got.Approval.MatchedBy != a.MatchedBy || string(got.Offer) != "offer pu_1" {
		t.Errorf("AuthorizePurchase(pu_1) = %+v (approval %+v); want authorized with %+v", got, got.Approval, a)
	}
	wantTime(t, "AuthorizePurchase(pu_1).Updated", got.Updated, t1)
	if stored := s.read("pu_1"); stored.Approval == nil || stored.Approval.Counter != a.Counter ||
		!bytes.Equal(stored.Approval.Signature, a.Signature) || stored.Status != store.PurchaseAuthorized {
		t.Errorf("Purchase(pu_1) = %+v; want it authorized as returned", stored)
	}
	_, err = s.ms.AuthorizePurchase(ctx, "pu_1", cardA, a, t1)
	wantErr(t, "AuthorizePurchase(pu_1 again)", err, store.ErrNotFound)
	_, err = s.ms.BindPurchase(ctx, "pu_1", cardA, []byte("offer pu_1"), t1)
	wantErr(t, "BindPurchase(authorized)", err, store.ErrNotFound)
	_, err = s.ms.PendingPurchase(ctx, "10000001", t1)
	wantErr(t, "PendingPurchase(authorized)", err, store.ErrNotFound)
	_, err = s.ms.DeclinePurchase(ctx, "pu_1", "", "no", t1)
	wantErr(t, "DeclinePurchase(authorized)", err, store.ErrNotFound)

	ps, err := s.ms.AuthorizedPurchases(ctx, t1.Add(time.Microsecond), 10)
	wantIDs(t, "AuthorizedPurchases(after t1)", ps, err, "pu_1")
	ps, err = s.ms.AuthorizedPurchases(ctx, t1, 10)
	wantIDs(t, "AuthorizedPurchases(at t1)", ps, err)

	_, err = s.ms.AuthorizePurchase(ctx, "pu_2", cardA, approval("pu_2"), t1.Add(time.Second))
	must(t, "AuthorizePurchase(pu_2)", err)
	if n := s.stock(stocked); n != 0 {
		t.Fatalf("stock after two authorizations = %d, want 0", n)
	}
	_, err = s.ms.AuthorizePurchase(ctx, "pu_3", cardA, approval("pu_3"), t1)
	wantErr(t, "AuthorizePurchase(sold out)", err, store.ErrSoldOut)
	if p := s.read("pu_3"); p.Status != store.PurchasePending || p.Approval != nil {
		t.Errorf("pu_3 after ErrSoldOut = %s, approval %v; want pending, none", p.Status, p.Approval)
	}
	ps, err = s.ms.AuthorizedPurchases(ctx, t0.Add(time.Hour), 1)
	wantIDs(t, "AuthorizedPurchases(limit 1)", ps, err, "pu_1")

	t2 := t1.Add(time.Minute)
	got, err = s.ms.CompletePurchase(ctx, "pu_1", 42, "", t2)
	must(t, "CompletePurchase(pu_1, approved)", err)
	if got.Status != store.PurchaseApproved || got.Transfer != 42 || got.Reason != "" || got.Approval == nil {
		t.Errorf("CompletePurchase(pu_1) = %+v; want approved with transfer 42", got)
	}
	wantTime(t, "CompletePurchase(pu_1).Updated", got.Updated, t2)
	got, err = s.ms.CompletePurchase(ctx, "pu_1", 43, "insufficient funds", t2)
	wantErr(t, "CompletePurchase(pu_1 again)", err, store.ErrConflict)
	if got.Status != store.PurchaseApproved || got.Transfer != 42 {
		t.Errorf("CompletePurchase(pu_1 again) = %+v; want it as stored (approved, 42)", got)
	}
	_, err = s.ms.CompletePurchase(ctx, "pu_none", 1, "", t2)
	wantErr(t, "CompletePurchase(unknown)", err, store.ErrNotFound)
	_, err = s.ms.CompletePurchase(ctx, "pu_3", 1, "", t2)
	wantErr(t, "CompletePurchase(pending)", err, store.ErrConflict)
	if n := s.stock(stocked); n != 0 {
		t.Errorf("stock after approval = %d, want 0", n)
	}

	got, err = s.ms.CompletePurchase(ctx, "pu_2", 0, "insufficient funds", t2)
	must(t, "CompletePurchase(pu_2, declined)", err)
	if got.Status != store.PurchaseDeclined || got.Reason != "insufficient funds" || got.Transfer != 0 {
		t.Errorf("CompletePurchase(pu_2, declined) = %+v; want declined with the reason", got)
	}
	if n := s.stock(stocked); n != 1 {
		t.Errorf("stock after a declined completion = %d, want 1 (given back)", n)
	}
	_, err = s.ms.AuthorizePurchase(ctx, "pu_3", cardA, approval("pu_3"), t2)
	must(t, "AuthorizePurchase(pu_3, stock given back)", err)

	got, err = s.ms.AuthorizePurchase(ctx, "pu_song", cardA, approval("pu_song"), t2)
	if err != nil || got.Status != store.PurchaseAuthorized {
		t.Errorf("AuthorizePurchase(unlimited item) = %s, %v; want authorized", got.Status, err)
	}
	_, err = s.ms.CompletePurchase(ctx, "pu_song", 0, "no account", t2)
	must(t, "CompletePurchase(unlimited item, declined)", err)
	if n := s.stock(unlimited); n != -1 {
		t.Errorf("unlimited stock after authorize and decline = %d, want unlimited", n)
	}
}

// testDeclineAndExpire: declining (by the card or the server) and
// expiring pending requests.
func testDeclineAndExpire(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := newShop(t, open)
	s.create("pu_pushed", "", "11111111", cardA, 0)
	s.create("pu_free", "", "22222222", "", 1)
	t1 := t0.Add(time.Minute)

	_, err := s.ms.DeclinePurchase(ctx, "pu_pushed", cardB, "holder declined", t1)
	wantErr(t, "DeclinePurchase(other card)", err, store.ErrNotFound)
	_, err = s.ms.DeclinePurchase(ctx, "pu_free", cardA, "holder declined", t1)
	wantErr(t, "DeclinePurchase(unbound, with a card)", err, store.ErrNotFound)
	_, err = s.ms.DeclinePurchase(ctx, "pu_none", "", "x", t1)
	wantErr(t, "DeclinePurchase(unknown)", err, store.ErrNotFound)
	got, err := s.ms.DeclinePurchase(ctx, "pu_pushed", cardA, "holder declined", t1)
	if err != nil || got.Status != store.PurchaseDeclined || got.Reason != "holder declined" {
		t.Errorf("DeclinePurchase(pushed, its card) = %+v, %v; want declined", got, err)
	}
	wantTime(t, "DeclinePurchase().Updated", got.Updated, t1)
	_, err = s.ms.DeclinePurchase(ctx, "pu_pushed", cardA, "again", t1)
	wantErr(t, "DeclinePurchase(again)", err, store.ErrNotFound)
	if p := s.read("pu_pushed"); p.Reason != "holder declined" {
		t.Errorf("Purchase(pu_pushed).Reason = %q, want the first decline's", p.Reason)
	}
	// The reference of a request no longer pending is free again.
	s.create("pu_again", "", "11111111", "", 2)
	got, err = s.ms.DeclinePurchase(ctx, "pu_free", "", "merchant cancelled", t1)
	if err != nil || got.Status != store.PurchaseDeclined {
		t.Errorf("DeclinePurchase(server, no card) = %s, %v; want declined", got.Status, err)
	}

	// Expiry: three pending requests expire at +10 min, one later; one
	// authorized request expires but is not pending.
	late := store.Purchase{ID: "pu_late", Merchant: "m_shop", Description: "late", Amount: 1, Currency: "EUR",
		Digest: []byte("l"), Reference: "44444444", Status: store.PurchasePending, Created: t0, Expires: t0.Add(time.Hour)}
	_, _, err = s.ms.CreatePurchase(ctx, late)
	must(t, "CreatePurchase(pu_late)", err)
	s.create("pu_e1", "", "50000001", "", 3)
	s.create("pu_e2", "", "50000002", "", 4)
	s.create("pu_auth", unlimited, "60000000", cardA, 5)
	_, err = s.ms.AuthorizePurchase(ctx, "pu_auth", cardA, approval("pu_auth"), t1)
	must(t, "AuthorizePurchase(pu_auth)", err)

	now := t0.Add(10 * time.Minute)
	ps, err := s.ms.ExpirePurchases(ctx, now.Add(-time.Microsecond), 10)
	wantIDs(t, "ExpirePurchases(before the deadline)", ps, err)
	ps, err = s.ms.ExpirePurchases(ctx, now, 2)
	if err != nil || len(ps) != 2 {
		t.Fatalf("ExpirePurchases(limit 2) = %v, %v; want 2 requests", ids(ps), err)
	}
	more, err := s.ms.ExpirePurchases(ctx, now, 10)
	if err != nil || len(more) != 1 {
		t.Fatalf("ExpirePurchases(the rest) = %v, %v; want 1 request", ids(more), err)
	}
	ps = append(ps, more...)
	seen := map[string]bool{}
	for _, p := range ps {
		seen[p.ID] = true
		if p.Status != store.PurchaseExpired || p.Reason != "expired" || !p.Updated.Equal(now) {
			t.Errorf("ExpirePurchases: %s = %s, %q, updated %v; want expired, \"expired\", %v", p.ID, p.Status, p.Reason, p.Updated, now)
		}
		if stored := s.read(p.ID); stored.Status != store.PurchaseExpired {
			t.Errorf("Purchase(%s) after expiry = %s, want expired", p.ID, stored.Status)
		}
	}
	for _, id := range []string{"pu_again", "pu_e1", "pu_e2"} {
		if !seen[id] {
			t.Errorf("ExpirePurchases did not expire %s (expired: %v)", id, ids(ps))
		}
	}
	ps, err = s.ms.ExpirePurchases(ctx, now, 10)
	wantIDs(t, "ExpirePurchases(nothing left)", ps, err)
	// A device that fetched an expired request before its expiry hears
	// ErrExpired, whatever its clock says.
	_, err = s.ms.BindPurchase(ctx, "pu_e1", cardA, []byte("offer"), t0)
	wantErr(t, "BindPurchase(expired)", err, store.ErrExpired)
	s.create("pu_e3", "", "50000003", cardA, 6)
	_, err = s.ms.ExpirePurchases(ctx, now, 10)
	must(t, "ExpirePurchases(pu_e3)", err)
	_, err = s.ms.AuthorizePurchase(ctx, "pu_e3", cardA, approval("pu_e3"), t0)
	wantErr(t, "AuthorizePurchase(expired)", err, store.ErrExpired)
	for id, want := range map[string]store.PurchaseStatus{"pu_late": store.PurchasePending, "pu_auth": store.PurchaseAuthorized,
		"pu_pushed": store.PurchaseDeclined} {
		if p := s.read(id); p.Status != want {
			t.Errorf("Purchase(%s) after expiry = %s, want %s (untouched)", id, p.Status, want)
		}
	}
}

// testRefunds: the checks of CreateRefund, idempotency keys, and
// FinishRefund moving the purchase to refunded-partially and refunded.
func testRefunds(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := newShop(t, open)
	s.create("pu_paid", "", "11111111", "", 0)
	s.create("pu_pending", "", "22222222", "", 0)
	p := s.pay("pu_paid")
	if p.Status != store.PurchaseApproved || p.Amount != 1000 {
		t.Fatalf("paid purchase = %+v, want approved, 1000", p)
	}
	refund := func(id string, amount int64, key string, created int) store.Refund {
		return store.Refund{ID: id, Purchase: "pu_paid", Merchant: "m_shop", Amount: amount, IdemKey: key,
			Digest: []byte(fmt.Sprintf("%d", amount)), Created: t0.Add(time.Duration(created) * time.Second).In(zone)}
	}

	r1 := refund("rf_1", 300, "k1", 1)
	got, replayed, err := s.ms.CreateRefund(ctx, r1)
	if err != nil || replayed || got.ID != "rf_1" || got.Status != store.RefundPending || got.Amount != 300 ||
		got.Merchant != "m_shop" || got.IdemKey != "k1" {
		t.Fatalf("CreateRefund(rf_1) = %+v, %v, %v; want it pending, not replayed", got, replayed, err)
	}
	wantTime(t, "CreateRefund(rf_1).Created", got.Created, r1.Created)
	wantTime(t, "CreateRefund(rf_1).Updated", got.Updated, r1.Created)

	replay := refund("rf_replay", 300, "k1", 2)
	got, replayed, err = s.ms.CreateRefund(ctx, replay)
	if err != nil || !replayed || got.ID != "rf_1" {
		t.Errorf("CreateRefund(same key, same digest) = %s, %v, %v; want rf_1, true, nil", got.ID, replayed, err)
	}
	cases := []struct {
		name string
		edit func(*store.Refund)
		want error
	}{
		{"same key, other digest", func(r *store.Refund) { r.IdemKey, r.Digest = "k1", []byte("other") }, store.ErrConflict},
		{"too large", func(r *store.Refund) { r.Amount = 701 }, store.ErrRefundTooLarge},
		{"other merchant", func(r *store.Refund) { r.Merchant = "m_other" }, store.ErrNotFound},
		{"unknown purchase", func(r *store.Refund) { r.Purchase = "pu_none" }, store.ErrNotFound},
		{"not paid", func(r *store.Refund) { r.Purchase = "pu_pending" }, store.ErrConflict},
		{"duplicate id", func(r *store.Refund) { r.ID = "rf_1" }, store.ErrConflict},
	}
	for i, c := range cases {
		r := refund(fmt.Sprintf("rf_c%d", i), 100, fmt.Sprintf("kc%d", i), 3)
		c.edit(&r)
		_, _, err := s.ms.CreateRefund(ctx, r)
		wantErr(t, "CreateRefund("+c.name+")", err, c.want)
	}
	for _, amount := range []int64{0, -5} {
		if _, _, err := s.ms.CreateRefund(ctx, refund("rf_bad", amount, "", 3)); err == nil {
			t.Errorf("CreateRefund(amount %d) = nil, want an error", amount)
		}
	}
	if rs, err := s.ms.Refunds(ctx, "pu_paid"); err != nil || len(rs) != 1 {
		t.Fatalf("Refunds after refusals = %d, %v; want 1 (no damage)", len(rs), err)
	}

	r2 := refund("rf_2", 700, "", 4)
	_, _, err = s.ms.CreateRefund(ctx, r2)
	must(t, "CreateRefund(rf_2, the rest)", err)
	_, _, err = s.ms.CreateRefund(ctx, refund("rf_3", 1, "", 5))
	wantErr(t, "CreateRefund(above, with refunds pending)", err, store.ErrRefundTooLarge)

	t1 := t0.Add(time.Minute)
	rs, err := s.ms.PendingRefunds(ctx, t1, 10)
	if err != nil || len(rs) != 2 || rs[0].ID != "rf_1" || rs[1].ID != "rf_2" {
		t.Errorf("PendingRefunds = %+v, %v; want rf_1, rf_2", rs, err)
	}
	rs, err = s.ms.PendingRefunds(ctx, r1.Created, 10)
	if err != nil || len(rs) != 0 {
		t.Errorf("PendingRefunds(before rf_1) = %+v, %v; want none", rs, err)
	}

	failed, err := s.ms.FinishRefund(ctx, "rf_2", 0, "merchant balance short", t1)
	if err != nil || failed.Status != store.RefundFailed || failed.Reason != "merchant balance short" {
		t.Errorf("FinishRefund(rf_2, failed) = %+v, %v; want failed with the reason", failed, err)
	}
	wantTime(t, "FinishRefund(rf_2).Updated", failed.Updated, t1)
	if p := s.read("pu_paid"); p.Status != store.PurchaseApproved || p.Refunded != 0 {
		t.Errorf("purchase after a failed refund = %s, refunded %d; want approved, 0", p.Status, p.Refunded)
	}
	r4 := refund("rf_4", 700, "", 6)
	_, _, err = s.ms.CreateRefund(ctx, r4)
	must(t, "CreateRefund(rf_4, the failed one's amount is free again)", err)

	done, err := s.ms.FinishRefund(ctx, "rf_1", 7, "", t1)
	if err != nil || done.Status != store.RefundDone || done.Transfer != 7 {
		t.Errorf("FinishRefund(rf_1) = %+v, %v; want done with transfer 7", done, err)
	}
	if p := s.read("pu_paid"); p.Status != store.PurchaseRefundedPartially || p.Refunded != 300 || !p.Updated.Equal(t1) {
		t.Errorf("purchase after refunding 300 = %s, refunded %d, updated %v; want refunded-partially, 300, %v",
			p.Status, p.Refunded, p.Updated, t1)
	}
	again, err := s.ms.FinishRefund(ctx, "rf_1", 8, "", t1)
	wantErr(t, "FinishRefund(rf_1 again)", err, store.ErrConflict)
	if again.Status != store.RefundDone || again.Transfer != 7 {
		t.Errorf("FinishRefund(rf_1 again) = %+v; want it as stored", again)
	}
	_, err = s.ms.FinishRefund(ctx, "rf_none", 1, "", t1)
	wantErr(t, "FinishRefund(unknown)", err, store.ErrNotFound)
	if p := s.read("pu_paid"); p.Refunded != 300 {
		t.Errorf("purchase after refused finishes: refunded %d, want 300", p.Refunded)
	}

	_, err = s.ms.FinishRefund(ctx, "rf_4", 9, "", t1)
	must(t, "FinishRefund(rf_4)", err)
	if p := s.read("pu_paid"); p.Status != store.PurchaseRefunded || p.Refunded != 1000 {
		t.Errorf("purchase after refunding all = %s, refunded %d; want refunded, 1000", p.Status, p.Refunded)
	}
	_, _, err = s.ms.CreateRefund(ctx, refund("rf_5", 1, "", 7))
	wantErr(t, "CreateRefund(all refunded)", err, store.ErrConflict)
	got, replayed, err = s.ms.CreateRefund(ctx, replay)
	if err != nil || !replayed || got.ID != "rf_1" || got.Status != store.RefundDone {
		t.Errorf("CreateRefund(replay after all refunded) = %+v, %v, %v; want rf_1 done, replayed", got, replayed, err)
	}

	rs, err = s.ms.Refunds(ctx, "pu_paid")
	if err != nil || len(rs) != 3 {
		t.Fatalf("Refunds = %d, %v; want 3", len(rs), err)
	}
	for i, want := range []struct {
		id     string
		status store.RefundStatus
	}{{"rf_1", store.RefundDone}, {"rf_2", store.RefundFailed}, {"rf_4", store.RefundDone}} {
		if rs[i].ID != want.id || rs[i].Status != want.status || rs[i].Purchase != "pu_paid" {
			t.Errorf("Refunds[%d] = %s %s, want %s %s", i, rs[i].ID, rs[i].Status, want.id, want.status)
		}
	}
	if rs, err := s.ms.Refunds(ctx, "pu_pending"); err != nil || len(rs) != 0 {
		t.Errorf("Refunds(pu_pending) = %v, %v; want none", rs, err)
	}
	if rs, err := s.ms.PendingRefunds(ctx, t0.Add(time.Hour), 10); err != nil || len(rs) != 0 {
		t.Errorf("PendingRefunds(all finished) = %v, %v; want none", rs, err)
	}
}

// both returns the Merchants of two Stores on one database: two server
// instances.
func both(t *testing.T, open OpenFunc) (shop, store.Merchants) {
	s := newShop(t, open)
	return s, open(t).(store.Merchants)
}

// successes counts the nil errors of a race, and reports any error but
// refused; what formats the call with the goroutine's number.
func successes(t testing.TB, what string, errs []error, refused error) int {
	t.Helper()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, refused):
			t.Errorf(what+" = %v, want nil or %v", i, err, refused)
		}
	}
	return ok
}

// testRaceAuthorizePurchase: goroutines on two Stores authorize n
// purchases of an item with a stock of k: exactly k succeed, the others
// get ErrSoldOut, and the stock ends at 0.
func testRaceAuthorizePurchase(t *testing.T, open OpenFunc) {
	t.Run("Counting", func(t *testing.T) { testRaceAuthorizePurchaseCounting(t, open) })
	t.Run("Approve", func(t *testing.T) { testRaceApprovePurchase(t, open) })
	ctx := context.Background()
	s, other := both(t, open)
	const n, k = 8, 2 // the shop's stocked item has 2
	for i := range n {
		id := fmt.Sprintf("pu_%d", i)
		s.create(id, stocked, fmt.Sprintf("1000000%d", i), cardA, 0)
		_, err := s.ms.BindPurchase(ctx, id, cardA, []byte("offer"), t0)
		must(t, "BindPurchase("+id+")", err)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ms := []store.Merchants{s.ms, other}[i%2]
		wg.Go(func() {
			id := fmt.Sprintf("pu_%d", i)
			_, errs[i] = ms.AuthorizePurchase(ctx, id, cardA, approval(id), t0)
		})
	}
	wg.Wait()
	if ok := successes(t, "AuthorizePurchase(pu_%d)", errs, store.ErrSoldOut); ok != k {
		t.Errorf("%d of %d authorizations succeeded, want %d (the stock)", ok, n, k)
	}
	if got := s.stock(stocked); got != 0 {
		t.Errorf("stock after the race = %d, want 0", got)
	}
	ps, err := s.ms.AuthorizedPurchases(ctx, t0.Add(time.Hour), n)
	if err != nil || len(ps) != k {
		t.Errorf("AuthorizedPurchases = %v, %v; want %d", ids(ps), err, k)
	}
}

// testRaceRefund: goroutines on two Stores refund more than a purchase's
// amount in parts: the refunds created stay within it, the others get
// ErrRefundTooLarge.
func testRaceRefund(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s, other := both(t, open)
	s.create("pu_paid", "", "11111111", "", 0)
	s.pay("pu_paid")
	const n, part = 8, 300 // 1000 allows 3 parts
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ms := []store.Merchants{s.ms, other}[i%2]
		wg.Go(func() {
			_, _, errs[i] = ms.CreateRefund(ctx, store.Refund{ID: fmt.Sprintf("rf_%d", i), Purchase: "pu_paid",
				Merchant: "m_shop", Amount: part, Digest: []byte("d"), Created: t0})
		})
	}
	wg.Wait()
	ok := successes(t, "CreateRefund(rf_%d)", errs, store.ErrRefundTooLarge)
	rs, err := s.ms.Refunds(ctx, "pu_paid")
	must(t, "Refunds", err)
	var sum int64
	for _, r := range rs {
		sum += r.Amount
	}
	if ok != 3 || len(rs) != 3 || sum > 1000 {
		t.Errorf("after the race: %d succeeded, %d refunds of %d in all; want 3, 3, at most 1000", ok, len(rs), sum)
	}
}

// testRaceBindPurchase: goroutines on two Stores bind one request to two
// cards: one card wins; every binding with it returns the same offer, and
// every binding with the other gets ErrConflict.
func testRaceBindPurchase(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s, other := both(t, open)
	s.create("pu_1", "", "11111111", "", 0)
	const n = 8
	got := make([]store.Purchase, n)
	errs := make([]error, n)
	cards := []string{cardA, cardB}
	var wg sync.WaitGroup
	for i := range n {
		ms := []store.Merchants{s.ms, other}[i%2]
		card := cards[(i/2)%2]
		wg.Go(func() {
			got[i], errs[i] = ms.BindPurchase(ctx, "pu_1", card, []byte(fmt.Sprintf("offer %d", i)), t0)
		})
	}
	wg.Wait()
	stored := s.read("pu_1")
	if stored.Card != cardA && stored.Card != cardB {
		t.Fatalf("Purchase(pu_1).Card = %q after the race, want one of the two cards", stored.Card)
	}
	for i, err := range errs {
		card := cards[(i/2)%2]
		switch {
		case card != stored.Card:
			wantErr(t, fmt.Sprintf("BindPurchase(#%d, losing card)", i), err, store.ErrConflict)
		case err != nil:
			t.Errorf("BindPurchase(#%d, winning card) = %v, want nil", i, err)
		case got[i].Card != stored.Card || !bytes.Equal(got[i].Offer, stored.Offer):
			t.Errorf("BindPurchase(#%d) = card %s offer %q; want the stored %s %q", i, got[i].Card, got[i].Offer,
				stored.Card, stored.Offer)
		}
	}
}

// counting returns the shop's store as a store.CountingAuthorizer and a
// store.Store, with cardA and cardB known at counter 0; it skips a
// backend without the ability.
func (s shop) counting(t *testing.T) (store.CountingAuthorizer, store.Store) {
	t.Helper()
	ca, ok := s.ms.(store.CountingAuthorizer)
	if !ok {
		t.Skip("backend is no store.CountingAuthorizer")
	}
	st := s.ms.(store.Store)
	addCard(t, st, cardA)
	addCard(t, st, cardB)
	return ca, st
}

// card returns the card as stored.
func card(t *testing.T, st store.Store, number string) store.Card {
	t.Helper()
	c, err := st.Card(context.Background(), number)
	must(t, "Card("+number+")", err)
	return c
}

// testAuthorizePurchaseCounting: the counter advances with the
// authorization in one transaction; a counter that did not grow flags the
// card and authorizes nothing; a refused authorization keeps the counter
// advanced, as two calls one after the other would.
func testAuthorizePurchaseCounting(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := newShop(t, open)
	ca, st := s.counting(t)
	for i, id := range []string{"pu_1", "pu_2", "pu_3", "pu_4"} {
		s.create(id, stocked, fmt.Sprintf("1000000%d", i), "", 0)
		_, err := s.ms.BindPurchase(ctx, id, cardA, []byte("offer "+id), t0)
		must(t, "BindPurchase("+id+")", err)
	}
	t1 := t0.Add(time.Minute)
	with := func(id string, counter uint32) store.PurchaseApproval {
		a := approval(id)
		a.Counter = counter
		return a
	}

	got, err := ca.AuthorizePurchaseCounting(ctx, "pu_1", cardA, with("pu_1", 5), t1)
	must(t, "AuthorizePurchaseCounting(pu_1, 5)", err)
	if got.Status != store.PurchaseAuthorized || got.Approval == nil || got.Approval.Counter != 5 {
		t.Errorf("AuthorizePurchaseCounting(pu_1, 5) = %s, %+v; want authorized with counter 5", got.Status, got.Approval)
	}
	if c := card(t, st, cardA); c.Counter != 5 || c.Cloned() {
		t.Errorf("card after pu_1 = counter %d, cloned %v; want 5, false", c.Counter, c.Cloned())
	}

	// Refusals of the purchase keep the counter, change nothing else.
	refused := []struct {
		name, id, card string
		counter        uint32
		now            time.Time
		want           error
		wantCounter    uint32
	}{
		{"not pending", "pu_1", cardA, 6, t1, store.ErrNotFound, 6},
		{"other card's purchase", "pu_2", cardB, 1, t1, store.ErrNotFound, 1},
		{"expired", "pu_2", cardA, 7, t0.Add(10 * time.Minute), store.ErrExpired, 7},
		{"unknown card", "pu_2", "4000000000000000", 9, t1, store.ErrNotFound, 0},
	}
	for _, tt := range refused {
		_, err := ca.AuthorizePurchaseCounting(ctx, tt.id, tt.card, with(tt.id, tt.counter), tt.now)
		wantErr(t, "AuthorizePurchaseCounting("+tt.name+")", err, tt.want)
		if tt.wantCounter == 0 {
			continue
		}
		if c := card(t, st, tt.card); c.Counter != tt.wantCounter || c.Cloned() {
			t.Errorf("card after %s = counter %d, cloned %v; want %d, false", tt.name, c.Counter, c.Cloned(), tt.wantCounter)
		}
	}
	if p := s.read("pu_2"); p.Status != store.PurchasePending || p.Approval != nil {
		t.Errorf("pu_2 after refusals = %s, approval %v; want pending, none", p.Status, p.Approval)
	}

	// A counter that did not grow: the card is flagged, nothing authorized.
	_, err = ca.AuthorizePurchaseCounting(ctx, "pu_2", cardA, with("pu_2", 7), t1)
	wantErr(t, "AuthorizePurchaseCounting(counter 7 again)", err, store.ErrCounterReplay)
	if p, n := s.read("pu_2"), s.stock(stocked); p.Status != store.PurchasePending || p.Approval != nil || n != 1 {
		t.Errorf("after the replay: pu_2 %s approval %v, stock %d; want pending, none, 1", p.Status, p.Approval, n)
	}
	if c := card(t, st, cardA); c.Counter != 7 || !c.Cloned() {
		t.Errorf("card after the replay = counter %d, cloned %v; want 7, true", c.Counter, c.Cloned())
	}

	// Sold out: the counter stands, the purchase stays pending.
	_, err = ca.AuthorizePurchaseCounting(ctx, "pu_2", cardA, with("pu_2", 8), t1)
	must(t, "AuthorizePurchaseCounting(pu_2, 8)", err)
	_, err = ca.AuthorizePurchaseCounting(ctx, "pu_3", cardA, with("pu_3", 9), t1)
	wantErr(t, "AuthorizePurchaseCounting(sold out)", err, store.ErrSoldOut)
	if c, p := card(t, st, cardA), s.read("pu_3"); c.Counter != 9 || p.Status != store.PurchasePending {
		t.Errorf("after sold out: counter %d, pu_3 %s; want 9, pending", c.Counter, p.Status)
	}

	// A revoked card: nothing changes.
	must(t, "RevokeCard", st.RevokeCard(ctx, cardA, t1))
	_, err = ca.AuthorizePurchaseCounting(ctx, "pu_4", cardA, with("pu_4", 10), t1)
	wantErr(t, "AuthorizePurchaseCounting(revoked)", err, store.ErrRevoked)
	if c, p := card(t, st, cardA), s.read("pu_4"); c.Counter != 9 || p.Status != store.PurchasePending {
		t.Errorf("after revocation: counter %d, pu_4 %s; want 9, pending", c.Counter, p.Status)
	}
}

// testRaceAuthorizePurchaseCounting: goroutines on two Stores authorize
// one purchase with one signature (counter) at once: exactly one wins;
// the others find it authorized or the counter used.
func testRaceAuthorizePurchaseCounting(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s, other := both(t, open)
	ca, st := s.counting(t)
	oca, ok := other.(store.CountingAuthorizer)
	if !ok {
		t.Skip("backend is no store.CountingAuthorizer")
	}
	s.create("pu_r", unlimited, "10000000", cardA, 0)
	_, err := s.ms.BindPurchase(ctx, "pu_r", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_r)", err)
	oneAuthorizes(t, "AuthorizePurchaseCounting", func(i int) error {
		_, err := []store.CountingAuthorizer{ca, oca}[i%2].AuthorizePurchaseCounting(ctx, "pu_r", cardA, approval("pu_r"), t0)
		return err
	})
	if c, p := card(t, st, cardA), s.read("pu_r"); c.Counter != approval("pu_r").Counter || p.Status != store.PurchaseAuthorized {
		t.Errorf("after the race: counter %d, pu_r %s; want %d, authorized", c.Counter, p.Status, approval("pu_r").Counter)
	}
}

// oneAuthorizes runs call(0) … call(7) at once, each authorizing one
// purchase with one signature (the caller alternates two Stores by i),
// and fails unless exactly one returns nil and every other finds the
// purchase taken (ErrNotFound) or the signature's counter used
// (ErrCounterReplay). race and oneWins are the same for two callers and
// one way to lose.
func oneAuthorizes(t *testing.T, what string, call func(i int) error) {
	t.Helper()
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = call(i) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, store.ErrCounterReplay), errors.Is(err, store.ErrNotFound):
		default:
			t.Errorf("%s #%d = %v, want nil, ErrCounterReplay or ErrNotFound", what, i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d calls of %s succeeded, want 1", won, n, what)
	}
}

// The ledger accounts of the ApprovePurchase tests.
const (
	shopAccount = "merchant:m_shop:EUR" // the shop's Merchant.Account
	fundAccount = "funding"
)

// holder is the ledger account of card in the ApprovePurchase tests.
func holder(card string) string { return "holder:" + card }

// testPayment is the caller's part of ApprovePurchase in the tests: the
// amount from the card's holder account to the merchant's, under the key
// purchase:<id>, and the refusals that decline a purchase.
var testPayment = store.PurchasePayment{
	Transfer: func(p store.Purchase, account string) (store.Transfer, error) {
		if account == "" {
			return store.Transfer{}, errNoShopAccount
		}
		t := store.Transfer{Key: "purchase:" + p.ID, Currency: p.Currency, Memo: "purchase " + p.ID,
			Legs: []store.Leg{{Account: account, Amount: p.Amount}, {Account: holder(p.Card), Amount: -p.Amount}}}
		if t.Legs[1].Account < t.Legs[0].Account {
			t.Legs[0], t.Legs[1] = t.Legs[1], t.Legs[0]
		}
		t.Digest = []byte(fmt.Sprintf("digest %s %s %d", p.ID, account, p.Amount))
		return t, nil
	},
	Reason: func(err error) string {
		switch {
		case errors.Is(err, errNoShopAccount):
			return "no shop account"
		case errors.Is(err, store.ErrLimit):
			return "funds"
		case errors.Is(err, store.ErrNotFound):
			return "no account"
		case errors.Is(err, store.ErrSoldOut):
			return "sold out"
		}
		return ""
	},
}

var errNoShopAccount = errors.New("merchant has no account")

// approver returns the shop's store as a store.PurchaseApprover, its
// ledger and store, with cardA and cardB known at counter 0 and the
// ledger accounts of the shop, a funding account and the holders of
// cardA and cardB, funded with fundA and fundB; it skips a backend
// without the ability.
func (s shop) approver(t *testing.T, fundA, fundB int64) (store.PurchaseApprover, store.Ledger, store.Store) {
	t.Helper()
	ctx := context.Background()
	pa, ok := s.ms.(store.PurchaseApprover)
	if !ok {
		t.Skip("backend is no store.PurchaseApprover")
	}
	st := s.ms.(store.Store)
	l := ledgerOf(t, st)
	addCard(t, st, cardA)
	addCard(t, st, cardB)
	for _, a := range []store.Account{
		{ID: shopAccount, Kind: store.KindMerchant, Currency: "EUR"},
		{ID: fundAccount, Kind: store.KindFunding, Currency: "EUR", Limit: -1 << 40},
		{ID: holder(cardA), Kind: store.KindHolder, Currency: "EUR"},
		{ID: holder(cardB), Kind: store.KindHolder, Currency: "EUR"},
	} {
		must(t, "CreateAccount("+a.ID+")", l.CreateAccount(ctx, a, t0))
	}
	res, err := l.PostTransfers(ctx, []store.Transfer{
		xfer("fund A", fundAccount, holder(cardA), fundA), xfer("fund B", fundAccount, holder(cardB), fundB)}, t0)
	must(t, "PostTransfers(funding)", err)
	for _, r := range res {
		must(t, "PostTransfers(funding)", r.Err)
	}
	return pa, l, st
}

// balance returns the account's balance.
func balance(t *testing.T, l store.Ledger, account string) int64 {
	t.Helper()
	a, err := l.Account(context.Background(), account)
	must(t, "Account("+account+")", err)
	return a.Balance
}

// testApprovePurchase: one write advances the counter, records the
// approval, posts the payment and completes the purchase: approved with
// the transfer; declined with the stock back when the ledger refuses it;
// a sold-out item declined; a key posted before with the same content is
// the payment, with other content the purchase stays authorized; the
// refusals of the counter and of the purchase post nothing.
func testApprovePurchase(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := newShop(t, open)
	pa, l, st := s.approver(t, 3000, 1000)
	for i, tt := range []struct{ id, item, card string }{
		{"pu_1", stocked, cardA}, {"pu_2", stocked, cardB}, {"pu_3", unlimited, cardA}, {"pu_4", unlimited, cardA},
		{"pu_5", unlimited, cardA}, {"pu_6", stocked, cardA}, {"pu_7", stocked, cardA}, {"pu_8", unlimited, cardB},
	} {
		s.create(tt.id, tt.item, fmt.Sprintf("2000000%d", i), "", 0)
		_, err := s.ms.BindPurchase(ctx, tt.id, tt.card, []byte("offer "+tt.id), t0)
		must(t, "BindPurchase("+tt.id+")", err)
	}
	t1 := t0.Add(time.Minute)
	with := func(id string, counter uint32) store.PurchaseApproval {
		a := approval(id)
		a.Counter = counter
		return a
	}
	wantBalances := func(when string, a, b, shop int64) {
		t.Helper()
		if ga, gb, gs := balance(t, l, holder(cardA)), balance(t, l, holder(cardB)), balance(t, l, shopAccount); ga != a || gb != b || gs != shop {
			t.Errorf("balances %s = A %d, B %d, shop %d; want %d, %d, %d", when, ga, gb, gs, a, b, shop)
		}
	}
	wantCounter := func(when, number string, counter uint32, cloned bool) {
		t.Helper()
		if c := card(t, st, number); c.Counter != counter || c.Cloned() != cloned {
			t.Errorf("card %s %s = counter %d, cloned %v; want %d, %v", number, when, c.Counter, c.Cloned(), counter, cloned)
		}
	}

	// Approved: the counter, the approval, the stock, the payment.
	got, err := pa.ApprovePurchase(ctx, "pu_1", cardA, with("pu_1", 5), true, testPayment, t1)
	must(t, "ApprovePurchase(pu_1)", err)
	if got.Status != store.PurchaseApproved || got.Transfer == 0 || got.Approval == nil || got.Approval.Counter != 5 ||
		got.Reason != "" || !got.Updated.Equal(t1) {
		t.Errorf("ApprovePurchase(pu_1) = %s, transfer %d, approval %+v, reason %q, updated %v; want approved with a transfer and counter 5 at %v",
			got.Status, got.Transfer, got.Approval, got.Reason, got.Updated, t1)
	}
	s.wantAsStored("ApprovePurchase(pu_1)", got)
	wantCounter("after pu_1", cardA, 5, false)
	wantBalances("after pu_1", 2000, 1000, 1000)
	if n := s.stock(stocked); n != 1 {
		t.Errorf("stock after pu_1 = %d, want 1", n)
	}
	_, es, err := l.Entries(ctx, shopAccount, t0, t1.Add(time.Second))
	must(t, "Entries(shop)", err)
	if len(es) != 1 || es[0].Transfer != got.Transfer || es[0].Key != "purchase:pu_1" || es[0].Amount != 1000 {
		t.Errorf("Entries(shop) after pu_1 = %+v; want one of 1000 by transfer %d, purchase:pu_1", es, got.Transfer)
	}

	// The caller advanced the counter already: it stays.
	got, err = pa.ApprovePurchase(ctx, "pu_8", cardB, with("pu_8", 50), false, testPayment, t1)
	must(t, "ApprovePurchase(pu_8, counted)", err)
	if got.Status != store.PurchaseApproved || got.Approval == nil || got.Approval.Counter != 50 {
		t.Errorf("ApprovePurchase(pu_8, counted) = %s, approval %+v; want approved, counter 50", got.Status, got.Approval)
	}
	s.wantAsStored("ApprovePurchase(pu_8, counted)", got)
	wantCounter("after pu_8", cardB, 0, false)
	wantBalances("after pu_8", 2000, 0, 2000)

	// Funds refused: declined, the stock back, the counter advanced.
	got, err = pa.ApprovePurchase(ctx, "pu_2", cardB, with("pu_2", 1), true, testPayment, t1)
	must(t, "ApprovePurchase(pu_2, no funds)", err)
	if got.Status != store.PurchaseDeclined || got.Reason != "funds" || got.Transfer != 0 || got.Approval == nil {
		t.Errorf("ApprovePurchase(pu_2, no funds) = %s, reason %q, transfer %d, approval %+v; want declined, funds, 0, recorded",
			got.Status, got.Reason, got.Transfer, got.Approval)
	}
	s.wantAsStored("ApprovePurchase(pu_2, no funds)", got)
	if n := s.stock(stocked); n != 1 {
		t.Errorf("stock after the decline = %d, want 1 (given back)", n)
	}
	wantCounter("after pu_2", cardB, 1, false)
	wantBalances("after pu_2", 2000, 0, 2000)

	// Refusals of the purchase keep the counter and post nothing.
	_, err = pa.ApprovePurchase(ctx, "pu_3", cardA, with("pu_3", 6), true, testPayment, t0.Add(10*time.Minute))
	wantErr(t, "ApprovePurchase(expired)", err, store.ErrExpired)
	wantCounter("after expired", cardA, 6, false)
	_, err = pa.ApprovePurchase(ctx, "pu_1", cardA, with("pu_1", 7), true, testPayment, t1)
	wantErr(t, "ApprovePurchase(not pending)", err, store.ErrNotFound)
	wantCounter("after not pending", cardA, 7, false)
	_, err = pa.ApprovePurchase(ctx, "pu_3", cardB, with("pu_3", 7), true, testPayment, t1)
	wantErr(t, "ApprovePurchase(other card's)", err, store.ErrNotFound)
	if p := s.read("pu_3"); p.Status != store.PurchasePending || p.Approval != nil {
		t.Errorf("pu_3 after refusals = %s, approval %v; want pending, none", p.Status, p.Approval)
	}
	wantBalances("after the refusals", 2000, 0, 2000)

	// A key posted before with the same content is the payment.
	pu4 := s.read("pu_4")
	pu4.Status = store.PurchaseAuthorized
	t4, err := testPayment.Transfer(pu4, shopAccount)
	must(t, "testPayment.Transfer(pu_4)", err)
	res, err := l.PostTransfers(ctx, []store.Transfer{t4}, t0)
	must(t, "PostTransfers(purchase:pu_4)", err)
	must(t, "PostTransfers(purchase:pu_4)", res[0].Err)
	wantBalances("after posting purchase:pu_4", 1000, 0, 3000)
	got, err = pa.ApprovePurchase(ctx, "pu_4", cardA, with("pu_4", 8), true, testPayment, t1)
	must(t, "ApprovePurchase(pu_4, key posted)", err)
	if got.Status != store.PurchaseApproved || got.Transfer != res[0].Posted.ID {
		t.Errorf("ApprovePurchase(pu_4, key posted) = %s, transfer %d; want approved, %d", got.Status, got.Transfer, res[0].Posted.ID)
	}
	s.wantAsStored("ApprovePurchase(pu_4, key posted)", got)
	wantBalances("after pu_4", 1000, 0, 3000)

	// The key posted with other content: the approval stays recorded,
	// authorized, and ErrConflict says why it is not paid.
	res, err = l.PostTransfers(ctx, []store.Transfer{xfer("purchase:pu_5", fundAccount, holder(cardA), 1)}, t0)
	must(t, "PostTransfers(purchase:pu_5, other content)", err)
	must(t, "PostTransfers(purchase:pu_5, other content)", res[0].Err)
	_, err = pa.ApprovePurchase(ctx, "pu_5", cardA, with("pu_5", 9), true, testPayment, t1)
	wantErr(t, "ApprovePurchase(pu_5, key taken)", err, store.ErrConflict)
	if p := s.read("pu_5"); p.Status != store.PurchaseAuthorized || p.Approval == nil || p.Approval.Counter != 9 || p.Transfer != 0 {
		t.Errorf("pu_5 after the conflict = %s, approval %+v, transfer %d; want authorized, counter 9, 0", p.Status, p.Approval, p.Transfer)
	}
	wantCounter("after pu_5", cardA, 9, false)
	wantBalances("after pu_5", 1001, 0, 3000)

	// Sold out: declined with the caller's reason, the counter advanced.
	_, err = pa.ApprovePurchase(ctx, "pu_6", cardA, with("pu_6", 10), true, testPayment, t1)
	must(t, "ApprovePurchase(pu_6)", err)
	got, err = pa.ApprovePurchase(ctx, "pu_7", cardA, with("pu_7", 11), true, testPayment, t1)
	must(t, "ApprovePurchase(pu_7, sold out)", err)
	if got.Status != store.PurchaseDeclined || got.Reason != "sold out" || got.Transfer != 0 {
		t.Errorf("ApprovePurchase(pu_7, sold out) = %s, reason %q, transfer %d; want declined, sold out, 0", got.Status, got.Reason, got.Transfer)
	}
	if n := s.stock(stocked); n != 0 {
		t.Errorf("stock after sold out = %d, want 0", n)
	}
	wantCounter("after pu_7", cardA, 11, false)
	wantBalances("after pu_7", 1, 0, 4000)

	// A counter that did not grow: the card is flagged, nothing else.
	_, err = pa.ApprovePurchase(ctx, "pu_3", cardA, with("pu_3", 11), true, testPayment, t1)
	wantErr(t, "ApprovePurchase(counter 11 again)", err, store.ErrCounterReplay)
	wantCounter("after the replay", cardA, 11, true)
	if p := s.read("pu_3"); p.Status != store.PurchasePending || p.Approval != nil {
		t.Errorf("pu_3 after the replay = %s, approval %v; want pending, none", p.Status, p.Approval)
	}
	wantBalances("after the replay", 1, 0, 4000)
}

// testRaceApprovePurchase: goroutines on two Stores approve one purchase
// at once: exactly one wins, and the holder pays once. With advance, they
// bring one signature (counter), which the counter alone lets through
// once; without (the counter advanced by the online PIN's check), only the
// purchase's own check under the lock stands between them.
func testRaceApprovePurchase(t *testing.T, open OpenFunc) {
	for _, advance := range []bool{true, false} {
		t.Run(fmt.Sprintf("advance=%v", advance), func(t *testing.T) { raceApprovePurchase(t, open, advance) })
	}
}

func raceApprovePurchase(t *testing.T, open OpenFunc, advance bool) {
	ctx := context.Background()
	s, other := both(t, open)
	pa, l, _ := s.approver(t, 5000, 0)
	opa, ok := other.(store.PurchaseApprover)
	if !ok {
		t.Skip("backend is no store.PurchaseApprover")
	}
	s.create("pu_r", unlimited, "20000000", cardA, 0)
	_, err := s.ms.BindPurchase(ctx, "pu_r", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_r)", err)
	oneAuthorizes(t, "ApprovePurchase", func(i int) error {
		_, err := []store.PurchaseApprover{pa, opa}[i%2].ApprovePurchase(ctx, "pu_r", cardA, approval("pu_r"), advance, testPayment, t0)
		return err
	})
	if p := s.read("pu_r"); p.Status != store.PurchaseApproved || p.Transfer == 0 {
		t.Errorf("after the race: pu_r %s, transfer %d; want approved, a transfer", p.Status, p.Transfer)
	}
	if a, m := balance(t, l, holder(cardA)), balance(t, l, shopAccount); a != 4000 || m != 1000 {
		t.Errorf("after the race: holder %d, shop %d; want 4000, 1000 (paid once)", a, m)
	}
}
