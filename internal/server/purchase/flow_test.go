package purchase_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/money"
	"cardlink/internal/pinblock"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

func TestMain(m *testing.M) {
	auth.PINIterations = 1000 // records keep their count; only speed changes
	m.Run()
}

const eur = money.Currency("EUR")

// shop is a purchase Service over a real store, a real ledger and a real
// auth service, with a merchant, a registered device and a session, and a
// personalized card whose issuer the auth service trusts.
type shop struct {
	st       store.Store
	ms       store.Merchants
	ledger   *ledger.Ledger
	auth     *auth.Service
	svc      *purchase.Service
	clock    *servertest.Clock
	card     *wallettest.Env
	merchant store.Merchant
	sess     *auth.Session

	mu       sync.Mutex
	notified []store.Purchase
}

// stores are the backends the tests run on: SQLite, and PostgreSQL when
// CARDLINK_TEST_POSTGRES is set (else that subtest skips).
var stores = servertest.Backends("flow_")

// onEachStore runs f on a fresh shop on each backend.
func onEachStore(t *testing.T, f func(t *testing.T, s *shop)) {
	for _, b := range stores {
		t.Run(b.Name, func(t *testing.T) { f(t, newShop(t, b.Open(t))) })
	}
}

func newShop(t *testing.T, st store.Store) *shop {
	t.Helper()
	ctx := context.Background()
	s := &shop{st: st, ms: st.(store.Merchants), clock: servertest.NewClock(time.Now().Truncate(time.Second))}
	s.card = servertest.Card(t)
	var err error
	s.auth, err = auth.New(auth.Config{Store: st, CA: s.card.CA, Now: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.ledger = ledger.New(st.(store.Ledger), ledger.Options{})
	t.Cleanup(func() { s.ledger.Close() })
	s.svc, err = purchase.New(purchase.Config{
		Store: st, Ledger: s.ledger, Auth: s.auth, Now: s.clock.Now,
		SignItem: func(it *txn.Item) ([]byte, error) {
			_, sig, err := txn.ParseSignedItem(s.card.SignItem(it))
			return sig, err
		},
		Notify: func(_ context.Context, p store.Purchase) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.notified = append(s.notified, p)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.merchant = servertest.Merchant(t, s.ledger, s.ms, store.Merchant{ID: "mer_" + rand.Text(), Name: "Corner Shop", KeyHash: randBytes(32), WebhookSecret: []byte("s"), Created: s.clock.Now()})
	dev := store.Device{ID: "dev-" + rand.Text(), StaticKey: randBytes(32), Name: "test"}
	if err := st.AddDevice(ctx, dev, s.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if s.sess, err = s.auth.NewSession(dev, randBytes(32)); err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fund deposits minor units into card's holder account.
func (s *shop) fund(t *testing.T, card string, minor int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.st.Card(ctx, card); errors.Is(err, store.ErrNotFound) {
		t.Fatalf("fund(%s): the card must be known first (make an offer)", card)
	}
	if _, err := s.svc.Deposit(ctx, card, money.Amount{Minor: minor, Currency: eur}, rand.Text()); err != nil {
		t.Fatalf("Deposit(%s, %d) = %v", card, minor, err)
	}
}

// balance is an account's balance; an account that does not exist is 0.
func (s *shop) balance(t *testing.T, account string) int64 {
	t.Helper()
	return servertest.Balance(t, s.ledger, account)
}

// purchaseOpts shape the purchase request newPurchase creates.
type purchaseOpts struct {
	amount int64
	card   string // pushed to this card
	item   string
	desc   string
	ttl    time.Duration // 0: 10 minutes
}

// newPurchase creates a pending purchase request of the shop's merchant.
func (s *shop) newPurchase(t *testing.T, o purchaseOpts) store.Purchase {
	t.Helper()
	if o.ttl == 0 {
		o.ttl = 10 * time.Minute
	}
	if o.desc == "" && o.item == "" {
		o.desc = "Two coffees"
	}
	now := s.clock.Now()
	var ref [4]byte
	rand.Read(ref[:])
	p := store.Purchase{
		ID: "pur_" + hex.EncodeToString(randBytes(16)), Merchant: s.merchant.ID, Item: o.item, Description: o.desc,
		Amount: o.amount, Currency: eur, Digest: randBytes(32), Card: o.card,
		Reference: fmt.Sprintf("%08d", (uint32(ref[0])<<24|uint32(ref[1])<<16|uint32(ref[2])<<8|uint32(ref[3]))%100_000_000),
		Status:    store.PurchasePending, Created: now, Expires: now.Add(o.ttl),
	}
	got, _, err := s.ms.CreatePurchase(context.Background(), p)
	if err != nil {
		t.Fatalf("CreatePurchase: %v", err)
	}
	return got
}

// offer asks for p's transaction for card by its reference.
func (s *shop) offer(t *testing.T, card *wallettest.Env, reference string) (*protocol.TransactionOffer, error) {
	t.Helper()
	m, err := s.svc.Offer(context.Background(), s.sess, &protocol.OfferRequest{
		Reference: reference, CardNumber: protocol.CardNumber(card.CardNumber),
		CertID: protocol.CertID(card.CardCert.Raw), Certificate: card.CardCert.Raw,
	})
	if err != nil {
		return nil, err
	}
	o, ok := m.(*protocol.TransactionOffer)
	if !ok {
		t.Fatalf("Offer(%s) = %T, want a *protocol.TransactionOffer", reference, m)
	}
	return o, nil
}

// mustOffer is offer that fails the test on a refusal.
func (s *shop) mustOffer(t *testing.T, card *wallettest.Env, reference string) (*protocol.TransactionOffer, txn.Transaction) {
	t.Helper()
	o, err := s.offer(t, card, reference)
	if err != nil {
		t.Fatalf("Offer(%s) = %v", reference, err)
	}
	tx, err := txn.Parse(o.Transaction)
	if err != nil {
		t.Fatalf("Offer(%s): transaction does not parse: %v", reference, err)
	}
	return o, tx
}

func (s *shop) read(t *testing.T, id string) store.Purchase {
	t.Helper()
	p, err := s.ms.Purchase(context.Background(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *shop) takeNotified() []store.Purchase {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.notified
	s.notified = nil
	return n
}

func TestApprove(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		p := s.newPurchase(t, purchaseOpts{amount: 1234, desc: "Two coffees"})
		o, tx := s.mustOffer(t, s.card, p.Reference)
		holder := ledger.HolderAccount(s.card.CardNumber, eur)
		s.fund(t, s.card.CardNumber, 5000)

		wantID, _ := purchase.TransactionID(p.ID)
		if tx.ID != wantID || tx.Merchant != "Corner Shop" || tx.Item != "Two coffees" ||
			tx.Amount != (money.Amount{Minor: 1234, Currency: eur}) || !tx.Time.Equal(s.clock.Now()) || len(tx.Nonce) != 16 {
			t.Errorf("Offer() transaction = %+v, want id %x, Corner Shop, Two coffees, 12.34 EUR, now, 16-byte nonce", tx, wantID)
		}
		if o.TTL != 600 || o.CVMs != s.auth.DefaultCVMs() {
			t.Errorf("Offer() TTL, CVMs = %d, %v; want 600, %v", o.TTL, o.CVMs, s.auth.DefaultCVMs())
		}
		// A retry, later, gets the same bytes.
		s.clock.Add(5 * time.Second)
		again, _ := s.mustOffer(t, s.card, p.Reference)
		if !bytes.Equal(again.Transaction, o.Transaction) || again.TTL != 595 {
			t.Errorf("Offer() again = %x ttl %d, want the same bytes, ttl 595", again.Transaction, again.TTL)
		}

		a := servertest.Approval(t, s.card, tx.ID, o.Transaction)
		r, err := s.svc.Approve(ctx, s.sess, a)
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != protocol.CodeOK || r.CVM != txn.CVMOfflinePIN || !bytes.Equal(r.ID, tx.ID[:]) || len(r.Goods) != 0 {
			t.Fatalf("Approve() = %+v, want CodeOK, offline PIN, no goods", r)
		}
		if got, want := s.balance(t, holder), int64(5000-1234); got != want {
			t.Errorf("holder balance = %d, want %d", got, want)
		}
		if got := s.balance(t, s.merchant.Account); got != 1234 {
			t.Errorf("merchant balance = %d, want 1234", got)
		}
		got := s.read(t, p.ID)
		if got.Status != store.PurchaseApproved || got.Transfer == 0 || got.Card != s.card.CardNumber ||
			got.Approval == nil || got.Approval.Counter != a.Counter || got.Approval.Device != s.sess.Device.ID {
			t.Errorf("purchase after Approve() = %+v, want approved by the card with a transfer and the approval", got)
		}
		if n := s.takeNotified(); len(n) != 1 || n[0].ID != p.ID || n[0].Status != store.PurchaseApproved {
			t.Errorf("notified %+v, want %s approved once", n, p.ID)
		}
	})
}

// TestApproveRefused runs the attacks and failures on Approve: each is
// refused with its code, nothing is posted, and the purchase is not
// approved.
func TestApproveRefused(t *testing.T) {
	type setup struct {
		s  *shop
		p  store.Purchase
		o  *protocol.TransactionOffer
		tx txn.Transaction
	}
	// modified has the card sign tx changed by f: what a device that
	// showed the holder something else would send.
	modified := func(f func(*txn.Transaction)) func(t *testing.T, u *setup) *protocol.TransactionApproval {
		return func(t *testing.T, u *setup) *protocol.TransactionApproval {
			tx := u.tx
			f(&tx)
			b, err := tx.Encode()
			if err != nil {
				t.Fatal(err)
			}
			return servertest.Approval(t, u.s.card, u.tx.ID, b)
		}
	}
	honest := func(t *testing.T, u *setup) *protocol.TransactionApproval {
		return servertest.Approval(t, u.s.card, u.tx.ID, u.o.Transaction)
	}
	tests := []struct {
		name       string
		funds      int64
		approval   func(t *testing.T, u *setup) *protocol.TransactionApproval
		before     func(t *testing.T, u *setup) // just before Approve
		code       protocol.Code
		triesLeft  uint8
		wantStatus store.PurchaseStatus
	}{
		{"amount lowered", 5000, modified(func(tx *txn.Transaction) { tx.Amount.Minor = 1 }), nil, protocol.CodeSignatureInvalid, 0, store.PurchasePending},
		{"payee changed", 5000, modified(func(tx *txn.Transaction) { tx.Merchant = "Evil Shop" }), nil, protocol.CodeSignatureInvalid, 0, store.PurchasePending},
		{"item changed", 5000, modified(func(tx *txn.Transaction) { tx.Item = "One coffee" }), nil, protocol.CodeSignatureInvalid, 0, store.PurchasePending},
		{"another transaction id", 5000, modified(func(tx *txn.Transaction) { tx.ID[0] ^= 1 }), nil, protocol.CodeSignatureInvalid, 0, store.PurchasePending},
		{"after the deadline", 5000, honest, func(t *testing.T, u *setup) { u.s.clock.Add(10 * time.Minute) }, protocol.CodeTransactionExpired, 0, store.PurchasePending},
		{"insufficient funds", 1233, honest, nil, protocol.CodeInsufficientFunds, 0, store.PurchaseDeclined},
		{"no holder account", 0, honest, nil, protocol.CodeInsufficientFunds, 0, store.PurchaseDeclined},
		{"declined meanwhile", 5000, honest, func(t *testing.T, u *setup) {
			if _, err := u.s.ms.DeclinePurchase(context.Background(), u.p.ID, "", "by the merchant", u.s.clock.Now()); err != nil {
				t.Fatal(err)
			}
		}, protocol.CodeTransactionUnknown, 0, store.PurchaseDeclined},
		{"online PIN wrong", 5000, func(t *testing.T, u *setup) *protocol.TransactionApproval {
			// The card declares online PIN; the block carries a wrong PIN
			// under the session's key.
			pin, err := auth.NewPIN(u.s.card.CardNumber, "4321", 3)
			if err != nil {
				t.Fatal(err)
			}
			if err := u.s.st.SetPIN(context.Background(), pin); err != nil {
				t.Fatal(err)
			}
			sig, err := u.s.card.Client.SignTransaction(context.Background(), u.o.Transaction, true)
			if err != nil {
				t.Fatal(err)
			}
			block, err := pinblockFor(u.s.sess, "0000", u.s.card.CardNumber)
			if err != nil {
				t.Fatal(err)
			}
			return &protocol.TransactionApproval{ID: u.tx.ID[:], Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig, PINBlock: block}
		}, nil, protocol.CodePINIncorrect, 2, store.PurchasePending},
	}
	for _, tt := range tests {
		// Through Approve, and through ApproveOffered as the listener
		// calls it with the offer it sent on the connection.
		for _, offered := range []bool{false, true} {
			name := tt.name
			if offered {
				name += "/offered"
			}
			t.Run(name, func(t *testing.T) {
				onEachStore(t, func(t *testing.T, s *shop) {
					ctx := context.Background()
					u := &setup{s: s, p: s.newPurchase(t, purchaseOpts{amount: 1234})}
					u.o, u.tx = s.mustOffer(t, s.card, u.p.Reference)
					if tt.funds > 0 {
						s.fund(t, s.card.CardNumber, tt.funds)
					}
					a := tt.approval(t, u)
					if tt.before != nil {
						tt.before(t, u)
					}
					s.takeNotified()
					var (
						r   *protocol.TransactionResult
						err error
					)
					if offered {
						r, err = s.svc.ApproveOffered(ctx, s.sess, a, s.card.CardNumber, u.o.Transaction)
					} else {
						r, err = s.svc.Approve(ctx, s.sess, a)
					}
					if err != nil {
						t.Fatal(err)
					}
					if r.Code != tt.code || r.TriesLeft != tt.triesLeft || len(r.Goods) != 0 {
						t.Errorf("Approve() = %+v, want %v with %d tries left", r, tt.code, tt.triesLeft)
					}
					if got := s.balance(t, ledger.HolderAccount(s.card.CardNumber, eur)); got != tt.funds {
						t.Errorf("holder balance = %d, want %d (unchanged)", got, tt.funds)
					}
					if got := s.balance(t, s.merchant.Account); got != 0 {
						t.Errorf("merchant balance = %d, want 0", got)
					}
					if got := s.read(t, u.p.ID); got.Status != tt.wantStatus || got.Transfer != 0 {
						t.Errorf("purchase status = %s (transfer %d), want %s without transfer", got.Status, got.Transfer, tt.wantStatus)
					}
					if n := s.takeNotified(); (tt.wantStatus == store.PurchaseDeclined && tt.code != protocol.CodeTransactionUnknown) != (len(n) == 1) {
						t.Errorf("notified %d purchases after a refusal leaving it %s", len(n), tt.wantStatus)
					}
				})
			})
		}
	}
}

// TestApproveOfferedMismatch: an approval whose transaction is not the
// offer kept for the connection is an internal error, and nothing moves.
func TestApproveOfferedMismatch(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		p1, p2 := s.newPurchase(t, purchaseOpts{amount: 100}), s.newPurchase(t, purchaseOpts{amount: 200})
		o1, tx1 := s.mustOffer(t, s.card, p1.Reference)
		o2, _ := s.mustOffer(t, s.card, p2.Reference)
		s.fund(t, s.card.CardNumber, 5000)
		a := servertest.Approval(t, s.card, tx1.ID, o1.Transaction)
		if r, err := s.svc.ApproveOffered(ctx, s.sess, a, s.card.CardNumber, o2.Transaction); err == nil {
			t.Fatalf("ApproveOffered(approval of 1, offer 2) = %+v, want an error", r)
		}
		for _, p := range []store.Purchase{p1, p2} {
			if got := s.read(t, p.ID); got.Status != store.PurchasePending {
				t.Errorf("%s is %s, want pending", p.ID, got.Status)
			}
		}
		if got := s.balance(t, ledger.HolderAccount(s.card.CardNumber, eur)); got != 5000 {
			t.Errorf("holder balance %d, want 5000", got)
		}
	})
}

// TestApproveReplay sends one approval twice: the second is refused as
// unknown before the card's counter is looked at (the card is not
// flagged as cloned), and the ledger holds the payment once.
func TestApproveReplay(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		p := s.newPurchase(t, purchaseOpts{amount: 700})
		o, tx := s.mustOffer(t, s.card, p.Reference)
		s.fund(t, s.card.CardNumber, 1000)
		a := servertest.Approval(t, s.card, tx.ID, o.Transaction)
		if r, err := s.svc.Approve(ctx, s.sess, a); err != nil || r.Code != protocol.CodeOK {
			t.Fatalf("Approve() = %+v, %v; want CodeOK", r, err)
		}
		r, err := s.svc.Approve(ctx, s.sess, a)
		if err != nil || r.Code != protocol.CodeTransactionUnknown {
			t.Fatalf("Approve(replayed) = %+v, %v; want CodeTransactionUnknown", r, err)
		}
		if got := s.balance(t, ledger.HolderAccount(s.card.CardNumber, eur)); got != 300 {
			t.Errorf("holder balance = %d, want 300 (paid once)", got)
		}
		if c, err := s.st.Card(ctx, s.card.CardNumber); err != nil || c.Cloned() {
			t.Errorf("card after a replay = %+v, %v; want not flagged as cloned", c, err)
		}
	})
}

func TestOfferRefused(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		other := servertest.Sibling(t, s.card)
		bound := s.newPurchase(t, purchaseOpts{amount: 100})
		s.mustOffer(t, s.card, bound.Reference)
		s.clock.Add(time.Millisecond) // created after bound
		pushed := s.newPurchase(t, purchaseOpts{amount: 100, card: s.card.CardNumber})
		expired := s.newPurchase(t, purchaseOpts{amount: 100, ttl: time.Second})
		tests := []struct {
			name string
			card *wallettest.Env
			ref  string
			code protocol.Code
		}{
			{"unknown reference", s.card, "00000000", protocol.CodeTransactionUnknown},
			{"bound to another card", other, bound.Reference, protocol.CodeTransactionUnknown},
			{"pushed to another card, by reference", other, pushed.Reference, protocol.CodeTransactionUnknown},
			{"nothing pushed to this card", other, "", protocol.CodeTransactionUnknown},
			{"expired", s.card, expired.Reference, protocol.CodeTransactionUnknown},
		}
		s.clock.Add(time.Second)
		for _, tt := range tests {
			o, err := s.offer(t, tt.card, tt.ref)
			var perr *protocol.Error
			if !errors.As(err, &perr) || perr.Code != tt.code {
				t.Errorf("%s: Offer() = %+v, %v; want %v", tt.name, o, err, tt.code)
			}
		}
		// The bound request is still the first card's.
		if got := s.read(t, bound.ID); got.Card != s.card.CardNumber || got.Status != store.PurchasePending {
			t.Errorf("bound purchase = card %s, %s; want %s, pending", got.Card, got.Status, s.card.CardNumber)
		}
		// Without a reference the card gets its oldest pending request:
		// the one it bound, then the one pushed to it.
		for _, p := range []store.Purchase{bound, pushed} {
			_, tx := s.mustOffer(t, s.card, "")
			if want, _ := purchase.TransactionID(p.ID); tx.ID != want {
				t.Errorf("Offer(no reference) = transaction %x, want %x", tx.ID, want)
			}
			if _, err := s.svc.Decline(context.Background(), s.sess, tx.ID[:]); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestDecline(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		p := s.newPurchase(t, purchaseOpts{amount: 100})
		_, tx := s.mustOffer(t, s.card, p.Reference)
		r, err := s.svc.Decline(ctx, s.sess, tx.ID[:])
		if err != nil || r.Code != protocol.CodeHolderDeclined {
			t.Fatalf("Decline() = %+v, %v; want CodeHolderDeclined", r, err)
		}
		if got := s.read(t, p.ID); got.Status != store.PurchaseDeclined || got.Reason != purchase.ReasonHolder {
			t.Errorf("purchase = %s %q, want declined %q", got.Status, got.Reason, purchase.ReasonHolder)
		}
		if n := s.takeNotified(); len(n) != 1 || n[0].Status != store.PurchaseDeclined {
			t.Errorf("notified %+v, want the decline once", n)
		}
		if r, err := s.svc.Decline(ctx, s.sess, tx.ID[:]); err != nil || r.Code != protocol.CodeTransactionUnknown {
			t.Errorf("Decline() again = %+v, %v; want CodeTransactionUnknown", r, err)
		}
	})
}

// TestGoods buys an item that delivers a voucher: the result carries it
// signed for the card, which stores it.
func TestGoods(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		stock := int64(1)
		item := store.Item{ID: "itm_" + rand.Text(), Merchant: s.merchant.ID, Name: "Cinema voucher", Price: 900, Currency: eur,
			Stock: &stock, Delivery: store.DeliverVoucher, Payload: []byte("VOUCHER-1234"), Created: s.clock.Now()}
		if err := s.ms.CreateItem(ctx, item); err != nil {
			t.Fatal(err)
		}
		p := s.newPurchase(t, purchaseOpts{amount: 900, item: item.ID})
		o, tx := s.mustOffer(t, s.card, p.Reference)
		if tx.Item != "Cinema voucher" {
			t.Errorf("offered item = %q, want the item's name", tx.Item)
		}
		s.fund(t, s.card.CardNumber, 900)
		r, err := s.svc.Approve(ctx, s.sess, servertest.Approval(t, s.card, tx.ID, o.Transaction))
		if err != nil || r.Code != protocol.CodeOK || len(r.Goods) != 1 {
			t.Fatalf("Approve() = %+v, %v; want CodeOK with one good", r, err)
		}
		it, _, err := txn.ParseSignedItem(r.Goods[0])
		if err != nil || it.CardNumber != s.card.CardNumber || it.ID != tx.ID || it.Kind != txn.ItemVoucher ||
			it.Title != "Cinema voucher" || string(it.Content) != "VOUCHER-1234" {
			t.Fatalf("good = %+v, %v; want the voucher for the card with the transaction's id", it, err)
		}
		if err := s.card.Client.StoreItem(ctx, r.Goods[0]); err != nil {
			t.Fatalf("StoreItem(good) = %v", err)
		}
		// The stock was one: the approval took it.
		if got, err := s.ms.Item(ctx, item.ID); err != nil || got.Stock == nil || *got.Stock != 0 {
			t.Errorf("stock after the sale = %v, %v; want 0", got.Stock, err)
		}
	})
}

// TestOfferText cuts long and odd merchant names and descriptions to the
// canonical limits on rune boundaries.
func TestOfferText(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		m := store.Merchant{ID: "mer_" + rand.Text(), Name: "Ünïcödé Bäckerei und Konditorei am Marktplatz", KeyHash: randBytes(32),
			WebhookSecret: []byte("s"), Account: "acct_x", Created: s.clock.Now()}
		if err := s.ms.CreateMerchant(ctx, m); err != nil {
			t.Fatal(err)
		}
		s.merchant = m
		p := s.newPurchase(t, purchaseOpts{amount: 100, desc: "  Brötchen\tund " + strings.Repeat("€", 30)})
		_, tx := s.mustOffer(t, s.card, p.Reference)
		if len(tx.Merchant) > 40 || !utf8.ValidString(tx.Merchant) || tx.Merchant != "Ünïcödé Bäckerei und Konditorei am" {
			t.Errorf("merchant = %q (%d bytes), want the name cut to 40 bytes on a rune boundary", tx.Merchant, len(tx.Merchant))
		}
		// 14 bytes of text, then 16 euro signs of 3 bytes: a 17th would
		// straddle byte 64.
		if want := "Brötchen und " + strings.Repeat("€", 16); tx.Item != want {
			t.Errorf("item = %q (%d bytes), want %q: the description cleaned and cut to 64 bytes", tx.Item, len(tx.Item), want)
		}
	})
}

// pinblockFor encrypts pin for card under the session's key, as a device
// does for an online PIN.
func pinblockFor(sess *auth.Session, pin, card string) ([]byte, error) {
	b, err := pinblock.Encrypt(pinblock.SessionKey(sess.Binding), pin, card, nil)
	if err != nil {
		return nil, err
	}
	return b[:], nil
}

// TestSoldOut: two requests for the last item in stock were created; the
// first approval takes it, the second is declined with nothing posted.
func TestSoldOut(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		stock := int64(1)
		item := store.Item{ID: "itm_" + rand.Text(), Merchant: s.merchant.ID, Name: "Last ticket", Price: 500, Currency: eur,
			Stock: &stock, Delivery: store.DeliverNone, Created: s.clock.Now()}
		if err := s.ms.CreateItem(ctx, item); err != nil {
			t.Fatal(err)
		}
		first := s.newPurchase(t, purchaseOpts{amount: 500, item: item.ID})
		second := s.newPurchase(t, purchaseOpts{amount: 500, item: item.ID})
		o1, tx1 := s.mustOffer(t, s.card, first.Reference)
		o2, tx2 := s.mustOffer(t, s.card, second.Reference)
		s.fund(t, s.card.CardNumber, 1000)
		if r, err := s.svc.Approve(ctx, s.sess, servertest.Approval(t, s.card, tx1.ID, o1.Transaction)); err != nil || r.Code != protocol.CodeOK || len(r.Goods) != 0 {
			t.Fatalf("Approve(first) = %+v, %v; want CodeOK without goods (the item delivers nothing)", r, err)
		}
		s.takeNotified()
		r, err := s.svc.Approve(ctx, s.sess, servertest.Approval(t, s.card, tx2.ID, o2.Transaction))
		if err != nil || r.Code != protocol.CodeTransactionDeclined {
			t.Fatalf("Approve(second) = %+v, %v; want CodeTransactionDeclined", r, err)
		}
		if got := s.read(t, second.ID); got.Status != store.PurchaseDeclined || got.Reason != purchase.ReasonSoldOut || got.Transfer != 0 {
			t.Errorf("second purchase = %s %q transfer %d, want declined %q without transfer", got.Status, got.Reason, got.Transfer, purchase.ReasonSoldOut)
		}
		if n := s.takeNotified(); len(n) != 1 || n[0].ID != second.ID {
			t.Errorf("notified %+v, want the second purchase's decline", n)
		}
		if got := s.balance(t, ledger.HolderAccount(s.card.CardNumber, eur)); got != 500 {
			t.Errorf("holder balance = %d, want 500 (one paid)", got)
		}
	})
}

// TestPushedPaidAgain pays a purchase pushed to the card: a request with
// no reference that finds nothing pending and names the paid transaction
// (OfferRequest.Paid) gets the purchase's result again with its goods
// (the device lost the first answer) — only for that card, only while it
// is paid; without Paid nothing; a newer pending push is offered instead.
func TestPushedPaidAgain(t *testing.T) {
	onEachStore(t, func(t *testing.T, s *shop) {
		ctx := context.Background()
		item := store.Item{ID: "itm_" + rand.Text(), Merchant: s.merchant.ID, Name: "Cinema voucher", Price: 900, Currency: eur,
			Delivery: store.DeliverVoucher, Payload: []byte("VOUCHER-1234"), Created: s.clock.Now()}
		if err := s.ms.CreateItem(ctx, item); err != nil {
			t.Fatal(err)
		}
		// Nothing paid yet: unknown, as before.
		if _, err := s.offer(t, s.card, ""); !isCode(err, protocol.CodeTransactionUnknown) {
			t.Fatalf("Offer(no reference, nothing pushed) = %v, want CodeTransactionUnknown", err)
		}
		p := s.newPurchase(t, purchaseOpts{amount: 900, item: item.ID, card: s.card.CardNumber})
		o, tx := s.mustOffer(t, s.card, "")
		s.fund(t, s.card.CardNumber, 1000)
		if r, err := s.svc.Approve(ctx, s.sess, servertest.Approval(t, s.card, tx.ID, o.Transaction)); err != nil || r.Code != protocol.CodeOK {
			t.Fatalf("Approve() = %+v, %v; want CodeOK", r, err)
		}
		again := func() (protocol.Message, error) {
			return s.svc.Offer(ctx, s.sess, &protocol.OfferRequest{CardNumber: protocol.CardNumber(s.card.CardNumber),
				CertID: protocol.CertID(s.card.CardCert.Raw), Certificate: s.card.CardCert.Raw, Paid: tx.ID[:]})
		}
		// A request that names nothing learns nothing.
		if _, err := s.offer(t, s.card, ""); !isCode(err, protocol.CodeTransactionUnknown) {
			t.Errorf("Offer(no reference, no Paid) after paying = %v, want CodeTransactionUnknown", err)
		}
		s.clock.Add(time.Hour)
		m, err := again()
		r, ok := m.(*protocol.TransactionResult)
		if err != nil || !ok || r.Code != protocol.CodeOK || !bytes.Equal(r.ID, tx.ID[:]) || r.CVM != txn.CVMOfflinePIN || len(r.Goods) != 1 {
			t.Fatalf("Offer(no reference) after paying = %+v, %v; want the result again with the good", m, err)
		}
		if it, _, err := txn.ParseSignedItem(r.Goods[0]); err != nil || it.ID != tx.ID || it.CardNumber != s.card.CardNumber {
			t.Errorf("good sent again = %+v, %v; want the voucher of the transaction for the card", it, err)
		}
		// Nothing was posted twice.
		if got := s.balance(t, ledger.HolderAccount(s.card.CardNumber, eur)); got != 100 {
			t.Errorf("holder balance = %d, want 100 (paid once)", got)
		}
		// Another card naming the transaction learns nothing.
		other := servertest.Sibling(t, s.card)
		if m, err := s.svc.Offer(ctx, s.sess, &protocol.OfferRequest{CardNumber: protocol.CardNumber(other.CardNumber),
			CertID: protocol.CertID(other.CardCert.Raw), Certificate: other.CardCert.Raw, Paid: tx.ID[:]}); !isCode(err, protocol.CodeTransactionUnknown) {
			t.Errorf("Offer(other card, Paid) = %+v, %v; want CodeTransactionUnknown", m, err)
		}
		// A newer push pending is offered first.
		next := s.newPurchase(t, purchaseOpts{amount: 50, card: s.card.CardNumber})
		if _, tx2 := s.mustOffer(t, s.card, ""); tx2.ID == tx.ID {
			t.Errorf("Offer(no reference) with %s pending = the paid transaction, want the pending one", next.ID)
		} else if _, err := s.svc.Decline(ctx, s.sess, tx2.ID[:]); err != nil {
			t.Fatal(err)
		}
		// Refunded in full: not paid any more.
		if _, _, err := s.svc.Refund(ctx, s.merchant, p.ID, 900, rand.Text()); err != nil {
			t.Fatal(err)
		}
		if m, err := again(); !isCode(err, protocol.CodeTransactionUnknown) {
			t.Errorf("Offer(no reference) after a full refund = %+v, %v; want CodeTransactionUnknown", m, err)
		}
	})
}

// isCode reports whether err is a *protocol.Error with code.
func isCode(err error, code protocol.Code) bool {
	var perr *protocol.Error
	return errors.As(err, &perr) && perr.Code == code
}
