package purchase_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"testing"

	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

// splitStore hides the backend's store.PurchaseApprover: the service
// takes the path of a store without it (the approval recorded, then the
// payment through the ledger's batcher, then the completion).
type splitStore struct {
	store.Store
	store.Merchants
	store.Ledger
	store.CountingAuthorizer
}

// TestApproveOneWrite runs the approval's outcomes (paid, sold out,
// funds refused, a merchant without an account, another currency, a
// replayed approval) on each backend: through the
// store's one write where it is a store.PurchaseApprover, and through the
// path of a store without it (the store hidden behind splitStore, or
// PostgreSQL as it is): the answers, the purchases as stored, the
// notifications and the balances are the same; only the path without it
// posts the payments through the ledger's batcher.
func TestApproveOneWrite(t *testing.T) {
	for _, b := range stores {
		for _, split := range []bool{false, true} {
			name := b.Name + "/one-write"
			if split {
				name = b.Name + "/split"
			}
			t.Run(name, func(t *testing.T) {
				st := b.Open(t)
				_, approver := st.(store.PurchaseApprover)
				switch {
				case !approver && !split:
					t.Skipf("%T is no store.PurchaseApprover", st)
				case split:
					st = splitStore{st, st.(store.Merchants), st.(store.Ledger), st.(store.CountingAuthorizer)}
				}
				testApproveOutcomes(t, newShop(t, st), split)
			})
		}
	}
}

func testApproveOutcomes(t *testing.T, s *shop, split bool) {
	ctx := context.Background()
	stock := int64(1)
	item := store.Item{ID: "itm_" + rand.Text(), Merchant: s.merchant.ID, Name: "Last ticket", Price: 100, Currency: eur,
		Stock: &stock, Delivery: store.DeliverNone, Created: s.clock.Now()}
	if err := s.ms.CreateItem(ctx, item); err != nil {
		t.Fatal(err)
	}
	paid := s.newPurchase(t, purchaseOpts{amount: 100, item: item.ID})
	soldOut := s.newPurchase(t, purchaseOpts{amount: 100, item: item.ID})
	poor := s.newPurchase(t, purchaseOpts{amount: 100})
	// A merchant without a ledger account, and a purchase in a currency
	// the merchant's account is not in.
	unpaid := store.Merchant{ID: "mer_" + rand.Text(), Name: "Stall", KeyHash: randBytes(32), WebhookSecret: []byte("s"),
		Created: s.clock.Now()}
	if err := s.ms.CreateMerchant(ctx, unpaid); err != nil {
		t.Fatal(err)
	}
	like := func(merchant string, cur money.Currency) store.Purchase {
		p := poor
		p.ID, p.Merchant, p.Currency, p.Amount = "pur_"+hex.EncodeToString(randBytes(16)), merchant, cur, 10
		p.Reference = fmt.Sprintf("%08d", binary.BigEndian.Uint32(randBytes(4))%100_000_000)
		if _, _, err := s.ms.CreatePurchase(ctx, p); err != nil {
			t.Fatalf("CreatePurchase(%s) = %v", p.ID, err)
		}
		return p
	}
	noMerchant, dollars := like(unpaid.ID, eur), like(s.merchant.ID, "USD")
	var (
		as     []*protocol.TransactionApproval
		offers [][]byte
		ids    []string
	)
	for _, p := range []store.Purchase{paid, soldOut, poor, noMerchant, dollars} {
		o, tx := s.mustOffer(t, s.card, p.Reference)
		as = append(as, servertest.Approval(t, s.card, tx.ID, o.Transaction))
		offers = append(offers, o.Transaction)
		ids = append(ids, p.ID)
	}
	s.fund(t, s.card.CardNumber, 150)
	holder := ledger.HolderAccount(s.card.CardNumber, eur)
	before := s.ledger.Stats().Transfers

	for i, tt := range []struct {
		name   string
		code   protocol.Code
		status store.PurchaseStatus
		reason string
	}{
		{"paid", protocol.CodeOK, store.PurchaseApproved, ""},
		{"sold out", protocol.CodeTransactionDeclined, store.PurchaseDeclined, purchase.ReasonSoldOut},
		{"funds", protocol.CodeInsufficientFunds, store.PurchaseDeclined, purchase.ReasonFunds},
		{"no merchant account", protocol.CodeTransactionDeclined, store.PurchaseDeclined, "merchant has no ledger account"},
		{"other currency", protocol.CodeTransactionDeclined, store.PurchaseDeclined, "account currency differs"},
	} {
		// As the listener calls it, with the offer kept for the
		// connection.
		r, err := s.svc.ApproveOffered(ctx, s.sess, as[i], s.card.CardNumber, offers[i])
		if err != nil || r.Code != tt.code {
			t.Fatalf("ApproveOffered(%s) = %+v, %v; want %v", tt.name, r, err, tt.code)
		}
		got := s.read(t, ids[i])
		if got.Status != tt.status || got.Reason != tt.reason || (got.Transfer != 0) != (tt.status == store.PurchaseApproved) {
			t.Errorf("%s purchase = %s %q transfer %d; want %s %q, a transfer only if approved", tt.name, got.Status, got.Reason,
				got.Transfer, tt.status, tt.reason)
		}
		if n := s.takeNotified(); len(n) != 1 || n[0].ID != ids[i] || n[0].Status != tt.status {
			t.Errorf("notified after %s = %+v; want the purchase, %s", tt.name, n, tt.status)
		}
	}
	if n := s.stock(t, item.ID); n != 0 {
		t.Errorf("stock = %d, want 0 (the paid purchase took it)", n)
	}
	if got := s.balance(t, holder); got != 50 {
		t.Errorf("holder balance = %d, want 50 (one paid)", got)
	}
	if got := s.balance(t, s.merchant.Account); got != 100 {
		t.Errorf("merchant balance = %d, want 100", got)
	}

	// A replayed approval is refused before the counter: nothing moves.
	if r, err := s.svc.Approve(ctx, s.sess, as[0]); err != nil || r.Code != protocol.CodeTransactionUnknown {
		t.Fatalf("Approve(replayed) = %+v, %v; want CodeTransactionUnknown", r, err)
	}
	if got := s.balance(t, holder); got != 50 {
		t.Errorf("holder balance after the replay = %d, want 50", got)
	}
	if c, err := s.st.Card(ctx, s.card.CardNumber); err != nil || c.Counter != as[len(as)-1].Counter || c.Cloned() {
		t.Errorf("card after the replay = counter %d cloned %v, %v; want counter %d, not flagged", c.Counter, c.Cloned(), err, as[len(as)-1].Counter)
	}

	// The paid and the two payments the ledger refused went through the
	// ledger's batcher only on the split path (a merchant without an
	// account is declined before).
	want := int64(0)
	if split {
		want = 3
	}
	if got := s.ledger.Stats().Transfers - before; got != want {
		t.Errorf("transfers through the ledger's batcher = %d, want %d", got, want)
	}
}

// stock returns the item's stock (-1: unlimited).
func (s *shop) stock(t *testing.T, item string) int64 {
	t.Helper()
	it, err := s.ms.Item(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	if it.Stock == nil {
		return -1
	}
	return *it.Stock
}
