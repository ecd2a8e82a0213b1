package purchase_test

import (
	"context"
	"crypto/rand"
	"testing"

	"cardlink/internal/protocol"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

// TestApproveCounter: the card's counter is recorded with the approval
// (in one store transaction where the store can), and stands whatever
// the purchase's fate: an approval signed before one already accepted is
// refused as a possible clone and pays nothing; one refused after the
// signature verified (sold out) still moves the counter on.
func TestApproveCounter(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		counter := func() (uint32, bool) {
			t.Helper()
			c, err := s.st.Card(ctx, s.card.CardNumber)
			if err != nil {
				t.Fatal(err)
			}
			return c.Counter, c.Cloned()
		}
		stock := int64(1)
		item := store.Item{ID: "itm_" + rand.Text(), Merchant: s.merchant.ID, Name: "Last ticket", Price: 100, Currency: eur,
			Stock: &stock, Delivery: store.DeliverNone, Created: s.clock.Now()}
		if err := s.ms.CreateItem(ctx, item); err != nil {
			t.Fatal(err)
		}

		// Sold out: the second approval is declined, its counter recorded.
		first := s.newPurchase(t, purchaseOpts{amount: 100, item: item.ID})
		second := s.newPurchase(t, purchaseOpts{amount: 100, item: item.ID})
		o1, tx1 := s.mustOffer(t, s.card, first.Reference)
		o2, tx2 := s.mustOffer(t, s.card, second.Reference)
		s.fund(t, s.card.CardNumber, 1000) // the card is known now
		a1 := servertest.Approval(t, s.card, tx1.ID, o1.Transaction)
		if r, err := s.svc.Approve(ctx, s.sess, a1); err != nil || r.Code != protocol.CodeOK {
			t.Fatalf("Approve(first) = %+v, %v; want CodeOK", r, err)
		}
		if c, cloned := counter(); c != a1.Counter || cloned {
			t.Errorf("counter after the first approval = %d (cloned %v), want %d", c, cloned, a1.Counter)
		}
		a2 := servertest.Approval(t, s.card, tx2.ID, o2.Transaction)
		if r, err := s.svc.Approve(ctx, s.sess, a2); err != nil || r.Code != protocol.CodeTransactionDeclined {
			t.Fatalf("Approve(sold out) = %+v, %v; want CodeTransactionDeclined", r, err)
		}
		if c, cloned := counter(); c != a2.Counter || cloned {
			t.Errorf("counter after the sold-out approval = %d (cloned %v), want %d", c, cloned, a2.Counter)
		}

		// Out of order: B signed after A, approved first; A then is refused.
		pa := s.newPurchase(t, purchaseOpts{amount: 200})
		pb := s.newPurchase(t, purchaseOpts{amount: 300})
		oa, txa := s.mustOffer(t, s.card, pa.Reference)
		ob, txb := s.mustOffer(t, s.card, pb.Reference)
		aa := servertest.Approval(t, s.card, txa.ID, oa.Transaction)
		ab := servertest.Approval(t, s.card, txb.ID, ob.Transaction)
		if r, err := s.svc.Approve(ctx, s.sess, ab); err != nil || r.Code != protocol.CodeOK {
			t.Fatalf("Approve(B) = %+v, %v; want CodeOK", r, err)
		}
		if r, err := s.svc.Approve(ctx, s.sess, aa); err != nil || r.Code != protocol.CodeCounterNotIncreasing {
			t.Fatalf("Approve(A after B) = %+v, %v; want CodeCounterNotIncreasing", r, err)
		}
		if got := s.read(t, pa.ID); got.Status != store.PurchasePending || got.Approval != nil {
			t.Errorf("A after the refusal = %s (approval %v), want pending without approval", got.Status, got.Approval)
		}
		if c, cloned := counter(); c != ab.Counter || !cloned {
			t.Errorf("counter after A = %d (cloned %v), want %d, flagged", c, cloned, ab.Counter)
		}
		if got := s.balance(t, ledger.HolderAccount(s.card.CardNumber, eur)); got != 1000-100-300 {
			t.Errorf("holder balance = %d, want %d (the first and B paid)", got, 1000-100-300)
		}
	})
}
