package server_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/channel"
	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// mall is a running listener with a purchase service over a real store
// and a real ledger, a merchant with an account, a registered device and
// a personalized card the server knows, with a holder account.
type mall struct {
	st       store.Store
	ms       store.Merchants
	ledger   *ledger.Ledger
	svc      *purchase.Service
	addr     string
	id       device.Identity
	card     *wallettest.Env
	merchant store.Merchant
	// signItem signs e-goods; by default with the card issuer's
	// operations key.
	signItem func(*txn.Item) ([]byte, error)
}

// mallStores are the backends of the end-to-end purchase tests: SQLite,
// and PostgreSQL (a schema of its own) when CARDLINK_TEST_POSTGRES is set.
var mallStores = servertest.Backends("mall_")

func onEachMall(t *testing.T, f func(t *testing.T, m *mall)) {
	for _, b := range mallStores {
		t.Run(b.Name, func(t *testing.T) { f(t, newMall(t, b.Open(t))) })
	}
}

func newMall(t testing.TB, st store.Store) *mall {
	t.Helper()
	ctx := context.Background()
	m := &mall{st: st, ms: st.(store.Merchants)}
	m.card = servertest.Card(t)
	m.signItem = func(it *txn.Item) ([]byte, error) {
		_, sig, err := txn.ParseSignedItem(m.card.SignItem(it))
		return sig, err
	}
	as, err := auth.New(auth.Config{Store: st, CA: m.card.CA})
	if err != nil {
		t.Fatal(err)
	}
	m.ledger = ledger.New(st.(store.Ledger), ledger.Options{})
	m.svc, err = purchase.New(purchase.Config{Store: st, Ledger: m.ledger, Auth: as,
		SignItem: func(it *txn.Item) ([]byte, error) { return m.signItem(it) }})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.merchant = servertest.Merchant(t, m.ledger, m.ms, store.Merchant{ID: "mer_" + rand.Text(), Name: "Corner Shop", KeyHash: []byte(rand.Text()), WebhookSecret: []byte("s"), Created: now})
	m.register(t, m.card)

	pubs, l := listen(t, st)
	m.addr = l.Addr().String()
	m.id = servertest.Device(t, st, "test", pubs, m.addr, now)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{Auth: as, Store: st, Purchases: m.svc}).Serve(sctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
		m.ledger.Close()
	})
	return m
}

// register makes card known to the server (as its first exchange would)
// and opens its holder account, so that it can be funded.
func (m *mall) register(t testing.TB, card *wallettest.Env) {
	t.Helper()
	servertest.PutCard(t, m.st, card, time.Now())
}

// cards returns n cards the server knows, each funded with minor: the
// mall's own and n-1 siblings (same issuer, PIN and keys' kind).
func (m *mall) cards(t testing.TB, n int, minor int64) []*wallettest.Env {
	t.Helper()
	cs := []*wallettest.Env{m.card}
	for len(cs) < n {
		c := servertest.Sibling(t, m.card)
		m.register(t, c)
		cs = append(cs, c)
	}
	for _, c := range cs {
		m.fund(t, c.CardNumber, minor)
	}
	return cs
}

func (m *mall) fund(t testing.TB, card string, minor int64) {
	t.Helper()
	if _, err := m.svc.Deposit(context.Background(), card, money.Amount{Minor: minor, Currency: "EUR"}, rand.Text()); err != nil {
		t.Fatalf("Deposit(%s, %d) = %v", card, minor, err)
	}
}

func (m *mall) balance(t testing.TB, account string) int64 {
	t.Helper()
	return servertest.Balance(t, m.ledger, account)
}

// payments counts the purchase payments in account's statement of the
// last hour.
func (m *mall) payments(t testing.TB, account string) int {
	t.Helper()
	st, err := m.ledger.Statement(context.Background(), account, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range st.Entries {
		if strings.HasPrefix(e.Key, "purchase:") {
			n++
		}
	}
	return n
}

func (m *mall) holder(card *wallettest.Env) string {
	return ledger.HolderAccount(card.CardNumber, "EUR")
}

// newPurchase creates a pending request for minor units, for item (may
// be empty), pushed to card when not empty.
func (m *mall) newPurchase(t testing.TB, minor int64, item, card string) store.Purchase {
	t.Helper()
	now := time.Now()
	id, err := purchase.NewID(now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var r [4]byte
	rand.Read(r[:])
	p := store.Purchase{ID: id, Merchant: m.merchant.ID, Item: item, Description: "Two coffees",
		Amount: minor, Currency: "EUR", Digest: []byte(id), Card: card, Reference: fmt.Sprintf("%08d", binary.BigEndian.Uint32(r[:])%100_000_000),
		Status: store.PurchasePending, Created: now, Expires: now.Add(10 * time.Minute)}
	got, _, err := m.ms.CreatePurchase(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (m *mall) status(t testing.TB, id string) store.Purchase {
	t.Helper()
	p, err := m.ms.Purchase(context.Background(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// buy runs device.Buy with card over a new connection.
func (m *mall) buy(t testing.TB, card *wallettest.Env, opts device.BuyOptions) (device.BuyResult, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", m.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return device.Buy(ctx, c, m.id, card.Client, opts)
}

// session opens a device session to the mall's server over a new
// connection, closed with the test.
func (m *mall) session(t testing.TB) *device.Session {
	t.Helper()
	return openSession(t, m.addr, m.id)
}

// openSession opens a device session as id to the server at addr over a
// new connection, closed with the test.
func openSession(t testing.TB, addr string, id device.Identity) *device.Session {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := device.Open(ctx, c, id, device.AuthOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestBuy approves purchases end to end: device.Buy with a card over the
// real listener, the purchase service, the store and the ledger.
func TestBuy(t *testing.T) {
	onEachMall(t, func(t *testing.T, m *mall) {
		ctx := context.Background()
		m.fund(t, m.card.CardNumber, 10_000)
		pin, err := auth.NewPIN(m.card.CardNumber, "4321", 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.st.SetPIN(ctx, pin); err != nil {
			t.Fatal(err)
		}
		voucher := store.Item{ID: "itm_" + rand.Text(), Merchant: m.merchant.ID, Name: "Cinema voucher", Price: 900, Currency: "EUR",
			Delivery: store.DeliverVoucher, Payload: []byte("VOUCHER-1234"), Created: time.Now()}
		if err := m.ms.CreateItem(ctx, voucher); err != nil {
			t.Fatal(err)
		}
		decline := func(context.Context, txn.Transaction) (bool, error) { return false, nil }

		tests := []struct {
			name     string
			amount   int64
			item     string
			pushed   bool
			opts     device.BuyOptions
			code     protocol.Code
			cvm      txn.CVM
			tries    int
			status   store.PurchaseStatus
			paid     bool
			goods    int
			noSigned bool // the card did not sign
			again    bool // the previous case's purchase, once more
		}{
			{"offline PIN", 1000, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}},
				protocol.CodeOK, txn.CVMOfflinePIN, 0, store.PurchaseApproved, true, 0, false, false},
			{"biometric on the card", 100, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{Biometric: wallettest.Sample(wallettest.Template(), 3)}},
				protocol.CodeOK, txn.CVMBiometric, 0, store.PurchaseApproved, true, 0, false, false},
			{"online PIN", 200, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{OnlinePIN: "4321"}},
				protocol.CodeOK, txn.CVMOnlinePIN, 0, store.PurchaseApproved, true, 0, false, false},
			{"online PIN wrong", 200, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{OnlinePIN: "0000"}},
				protocol.CodePINIncorrect, 0, 2, store.PurchasePending, false, 0, false, false},
			{"online PIN right after a wrong one", 200, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{OnlinePIN: "4321"}},
				protocol.CodeOK, txn.CVMOnlinePIN, 0, store.PurchaseApproved, true, 0, false, true},
			{"pushed to the card", 300, "", true, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}},
				protocol.CodeOK, txn.CVMOfflinePIN, 0, store.PurchaseApproved, true, 0, false, false},
			{"declined on the device", 400, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Confirm: decline},
				protocol.CodeHolderDeclined, 0, 0, store.PurchaseDeclined, false, 0, true, false},
			{"e-goods into the card", 900, voucher.ID, false, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}},
				protocol.CodeOK, txn.CVMOfflinePIN, 0, store.PurchaseApproved, true, 1, false, false},
			{"insufficient funds", 1_000_000, "", false, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}},
				protocol.CodeInsufficientFunds, 0, 0, store.PurchaseDeclined, false, 0, false, false},
		}
		var p store.Purchase
		for _, tt := range tests {
			holder, merchant := m.balance(t, m.holder(m.card)), m.balance(t, m.merchant.Account)
			card := ""
			if tt.pushed {
				card = m.card.CardNumber
			}
			if !tt.again {
				p = m.newPurchase(t, tt.amount, tt.item, card)
			}
			opts := tt.opts
			if !tt.pushed {
				opts.Reference = p.Reference
			}
			var shown []txn.Transaction
			confirm := opts.Confirm
			opts.Confirm = func(ctx context.Context, tx txn.Transaction) (bool, error) {
				shown = append(shown, tx)
				if confirm != nil {
					return confirm(ctx, tx)
				}
				return true, nil
			}
			before, _ := m.card.Client.Counter(ctx)
			res, err := m.buy(t, m.card, opts)
			if err != nil {
				t.Fatalf("%s: Buy() = %+v, %v", tt.name, res, err)
			}
			if res.Code != tt.code || res.CVM != tt.cvm || res.TriesLeft != tt.tries || len(res.Goods) != tt.goods {
				t.Errorf("%s: Buy() = code %v cvm %v tries %d goods %d; want %v %v %d %d",
					tt.name, res.Code, res.CVM, res.TriesLeft, len(res.Goods), tt.code, tt.cvm, tt.tries, tt.goods)
			}
			wantID, _ := purchase.TransactionID(p.ID)
			if len(shown) != 1 || shown[0].ID != wantID || shown[0].Amount.Minor != tt.amount || shown[0].Merchant != "Corner Shop" ||
				res.Transaction.ID != wantID {
				t.Errorf("%s: shown %+v, result transaction %x; want one transaction %x of %d by Corner Shop", tt.name, shown, res.Transaction.ID, wantID, tt.amount)
			}
			after, _ := m.card.Client.Counter(ctx)
			if tt.noSigned != (res.Counter == 0) || (!tt.noSigned && res.Counter != after) || after < before {
				t.Errorf("%s: Buy().Counter = %d, card counter %d → %d; want the signature's counter (none: %v)", tt.name, res.Counter, before, after, tt.noSigned)
			}
			got := m.status(t, p.ID)
			if got.Status != tt.status || (got.Transfer != 0) != tt.paid {
				t.Errorf("%s: purchase = %s transfer %d, want %s, paid %v", tt.name, got.Status, got.Transfer, tt.status, tt.paid)
			}
			var paid int64
			if tt.paid {
				paid = tt.amount
			}
			if h, mer := m.balance(t, m.holder(m.card)), m.balance(t, m.merchant.Account); h != holder-paid || mer != merchant+paid {
				t.Errorf("%s: balances holder %d merchant %d, want %d and %d", tt.name, h, mer, holder-paid, merchant+paid)
			}
			if tt.goods > 0 {
				items, err := m.card.Client.Items(ctx)
				if err != nil || len(items) != 1 || items[0].ID != wantID || items[0].Title != "Cinema voucher" || items[0].Kind != txn.ItemVoucher {
					t.Errorf("%s: card items = %+v, %v; want the voucher with the transaction's id", tt.name, items, err)
				}
				if len(res.Goods) == 1 && (res.Goods[0].ID != wantID || string(res.Goods[0].Content) != "VOUCHER-1234") {
					t.Errorf("%s: Buy().Goods = %+v, want the voucher", tt.name, res.Goods)
				}
			}
		}

		// A reference nobody issued.
		_, err = m.buy(t, m.card, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: "00000000"})
		if perr := (*protocol.Error)(nil); !errors.As(err, &perr) || perr.Code != protocol.CodeTransactionUnknown {
			t.Errorf("Buy(unknown reference) = %v, want CodeTransactionUnknown", err)
		}
	})
}

// TestBuyOtherCard: a second card cannot take a reference the first one
// bound (it would pay another holder's purchase, or learn it).
func TestBuyOtherCard(t *testing.T) {
	onEachMall(t, func(t *testing.T, m *mall) {
		other := servertest.Sibling(t, m.card)
		m.register(t, other)
		m.fund(t, m.card.CardNumber, 1000)
		m.fund(t, other.CardNumber, 1000)
		p := m.newPurchase(t, 500, "", "")
		declineFirst := func(context.Context, txn.Transaction) (bool, error) { return false, errors.New("holder walked away") }
		// The first card fetches it (and binds it) but does not answer.
		if _, err := m.buy(t, m.card, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference, Confirm: declineFirst}); err == nil {
			t.Fatal("Buy() with a failing Confirm = nil error")
		}
		_, err := m.buy(t, other, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
		if perr := (*protocol.Error)(nil); !errors.As(err, &perr) || perr.Code != protocol.CodeTransactionUnknown {
			t.Errorf("Buy(other card) = %v, want CodeTransactionUnknown", err)
		}
		if got := m.status(t, p.ID); got.Status != store.PurchasePending || got.Card != m.card.CardNumber {
			t.Errorf("purchase = %s bound to %s, want pending bound to the first card", got.Status, got.Card)
		}
		if b := m.balance(t, m.holder(other)); b != 1000 {
			t.Errorf("other card's balance = %d, want 1000", b)
		}
		// The first card can still pay it.
		res, err := m.buy(t, m.card, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
		if err != nil || res.Code != protocol.CodeOK {
			t.Errorf("Buy(first card again) = %+v, %v; want CodeOK", res, err)
		}
	})
}

// rawDevice talks the protocol directly, as a device that does not
// follow device.Buy would.
type rawDevice struct {
	t testing.TB
	c *channel.Conn
}

func (m *mall) raw(t testing.TB) *rawDevice {
	t.Helper()
	nc, err := net.DialTimeout("tcp", m.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { nc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := channel.Dial(ctx, nc, channel.Config{Static: m.id.Static, ServerPub: m.id.ServerKeys[0]})
	if err != nil {
		t.Fatal(err)
	}
	return &rawDevice{t: t, c: c}
}

// ask sends req and returns the reply.
func (d *rawDevice) ask(req protocol.Message) protocol.Message {
	d.t.Helper()
	if err := d.c.WriteMessage(encode(d.t, req)); err != nil {
		d.t.Fatal(err)
	}
	b, err := d.c.ReadMessage()
	if err != nil {
		d.t.Fatal(err)
	}
	reply, err := protocol.Decode(b)
	if err != nil {
		d.t.Fatal(err)
	}
	return reply
}

// offer fetches the transaction of reference for card.
func (d *rawDevice) offer(card *wallettest.Env, reference string) (*protocol.TransactionOffer, txn.Transaction) {
	d.t.Helper()
	cert := card.CardCert.Raw
	reply := d.ask(&protocol.OfferRequest{Reference: reference, CardNumber: protocol.CardNumber(card.CardNumber), CertID: protocol.CertID(cert)})
	o, ok := reply.(*protocol.TransactionOffer)
	if !ok {
		d.t.Fatalf("OfferRequest reply = %#v, want a TransactionOffer", reply)
	}
	tx, err := txn.Parse(o.Transaction)
	if err != nil {
		d.t.Fatal(err)
	}
	return o, tx
}

// approve sends a and returns the result.
func (d *rawDevice) approve(a *protocol.TransactionApproval) *protocol.TransactionResult {
	d.t.Helper()
	reply := d.ask(a)
	r, ok := reply.(*protocol.TransactionResult)
	if !ok {
		d.t.Fatalf("approval reply = %#v, want a TransactionResult", reply)
	}
	return r
}

// TestBuyAttacks: a device that changes the transaction after display,
// and one that replays an approval, on the same connection and on a new
// one. Each is refused with its code and nothing is posted twice.
func TestBuyAttacks(t *testing.T) {
	onEachMall(t, func(t *testing.T, m *mall) {
		m.fund(t, m.card.CardNumber, 1000)
		holder := m.holder(m.card)

		// The amount and the payee changed after display: the card signs
		// what the device hands it, the server verifies its own copy.
		p := m.newPurchase(t, 600, "", "")
		d := m.raw(t)
		o, tx := d.offer(m.card, p.Reference)
		for _, change := range []struct {
			name string
			f    func(*txn.Transaction)
		}{
			{"amount", func(tx *txn.Transaction) { tx.Amount.Minor = 1 }},
			{"payee", func(tx *txn.Transaction) { tx.Merchant = "Evil Shop" }},
		} {
			forged := tx
			change.f(&forged)
			b, err := forged.Encode()
			if err != nil {
				t.Fatal(err)
			}
			// The listener takes one answer per offer: ask again.
			d.offer(m.card, p.Reference)
			if r := d.approve(servertest.Approval(t, m.card, tx.ID, b)); r.Code != protocol.CodeSignatureInvalid {
				t.Errorf("approval of a transaction with the %s changed = %v, want CodeSignatureInvalid", change.name, r.Code)
			}
		}
		if b := m.balance(t, holder); b != 1000 {
			t.Errorf("holder balance after forged approvals = %d, want 1000", b)
		}
		if got := m.status(t, p.ID); got.Status != store.PurchasePending {
			t.Errorf("purchase after forged approvals = %s, want pending", got.Status)
		}

		// The honest approval pays; replaying it does nothing.
		d.offer(m.card, p.Reference)
		a := servertest.Approval(t, m.card, tx.ID, o.Transaction)
		if r := d.approve(a); r.Code != protocol.CodeOK {
			t.Fatalf("honest approval = %v, want CodeOK", r.Code)
		}
		if r := d.approve(a); r.Code != protocol.CodeTransactionUnknown {
			t.Errorf("replayed approval, same connection = %v, want CodeTransactionUnknown", r.Code)
		}
		d2 := m.raw(t)
		if r := d2.approve(a); r.Code != protocol.CodeTransactionUnknown {
			t.Errorf("replayed approval, new connection = %v, want CodeTransactionUnknown", r.Code)
		}
		// Asking for it again gets its result again (TestBuyPaidBefore),
		// not a second offer.
		reply := d2.ask(&protocol.OfferRequest{Reference: p.Reference, CardNumber: protocol.CardNumber(m.card.CardNumber), CertID: protocol.CertID(m.card.CardCert.Raw)})
		if r, ok := reply.(*protocol.TransactionResult); !ok || r.Code != protocol.CodeOK || string(r.ID) != string(tx.ID[:]) {
			t.Errorf("OfferRequest for a paid purchase = %#v, want its TransactionResult again", reply)
		}
		if r := d2.approve(a); r.Code != protocol.CodeTransactionUnknown {
			t.Errorf("replayed approval after the result again = %v, want CodeTransactionUnknown", r.Code)
		}
		if b := m.balance(t, holder); b != 400 {
			t.Errorf("holder balance = %d, want 400 (paid once)", b)
		}
		if payments := m.payments(t, holder); payments != 1 {
			t.Errorf("%d payments in the holder's statement, want 1", payments)
		}
		if c, err := m.st.Card(context.Background(), m.card.CardNumber); err != nil || c.Cloned() {
			t.Errorf("card after replays = cloned %v, %v; want not flagged", c.Cloned(), err)
		}

		// A decline of a transaction not offered on the connection is
		// not taken.
		p2 := m.newPurchase(t, 100, "", "")
		d3 := m.raw(t)
		if err := d3.c.WriteMessage(encode(t, &protocol.Error{Code: protocol.CodeHolderDeclined})); err != nil {
			t.Fatal(err)
		}
		d3.offer(m.card, p2.Reference) // the connection is still served
		if got := m.status(t, p2.ID); got.Status != store.PurchasePending {
			t.Errorf("purchase after a stray decline = %s, want pending", got.Status)
		}
	})
}

// TestBuyPaidBefore: the connection drops after the server paid a
// purchase with an e-good but before the device stored the result (the
// raw device reads the TransactionResult and throws it away, as if lost).
// Buy with the same reference gets the result again: the good goes onto
// the card, nothing is paid twice and the card does not sign. Another card
// with the reference learns nothing.
func TestBuyPaidBefore(t *testing.T) {
	onEachMall(t, func(t *testing.T, m *mall) {
		ctx := context.Background()
		voucher := store.Item{ID: "itm_" + rand.Text(), Merchant: m.merchant.ID, Name: "Cinema voucher", Price: 900, Currency: "EUR",
			Delivery: store.DeliverVoucher, Payload: []byte("VOUCHER-5678"), Created: time.Now()}
		if err := m.ms.CreateItem(ctx, voucher); err != nil {
			t.Fatal(err)
		}
		other := servertest.Sibling(t, m.card)
		m.register(t, other)
		m.fund(t, m.card.CardNumber, 1000)
		m.fund(t, other.CardNumber, 1000)
		holder := m.holder(m.card)
		p := m.newPurchase(t, 900, voucher.ID, "")
		wantID, _ := purchase.TransactionID(p.ID)

		// Paid, and the answer lost.
		d := m.raw(t)
		o, tx := d.offer(m.card, p.Reference)
		if err := d.c.WriteMessage(encode(t, servertest.Approval(t, m.card, tx.ID, o.Transaction))); err != nil {
			t.Fatal(err)
		}
		if _, err := d.c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		d.c.Close()
		if got := m.status(t, p.ID); got.Status != store.PurchaseApproved {
			t.Fatalf("purchase after the lost answer = %s, want approved", got.Status)
		}
		if items, err := m.card.Client.Items(ctx); err != nil || len(items) != 0 {
			t.Fatalf("card items after the lost answer = %+v, %v; want none", items, err)
		}
		signed, _ := m.card.Client.Counter(ctx)
		stored, err := m.st.Card(ctx, m.card.CardNumber)
		if err != nil {
			t.Fatal(err)
		}

		// Twice: the second delivery finds the good on the card already.
		for _, round := range []string{"first", "second"} {
			res, err := m.buy(t, m.card, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
			if err != nil || res.Code != protocol.CodeOK || !res.PaidBefore || res.Counter != 0 || res.CVM != txn.CVMOfflinePIN ||
				len(res.Goods) != 1 || res.Goods[0].ID != wantID || string(res.Goods[0].Content) != "VOUCHER-5678" {
				t.Errorf("%s: Buy(paid reference) = %+v, %v; want CodeOK, PaidBefore, offline PIN, counter 0 and the voucher", round, res, err)
			}
			items, err := m.card.Client.Items(ctx)
			if err != nil || len(items) != 1 || items[0].ID != wantID || items[0].Kind != txn.ItemVoucher {
				t.Errorf("%s: card items = %+v, %v; want the voucher with the transaction's id", round, items, err)
			}
			if c, _ := m.card.Client.Counter(ctx); c != signed {
				t.Errorf("%s: card counter = %d, want %d (no new signature)", round, c, signed)
			}
		}
		if c, err := m.st.Card(ctx, m.card.CardNumber); err != nil || c.Counter != stored.Counter || c.Cloned() {
			t.Errorf("server's card record = counter %d cloned %v, %v; want counter %d, not flagged", c.Counter, c.Cloned(), err, stored.Counter)
		}
		if b := m.balance(t, holder); b != 100 {
			t.Errorf("holder balance = %d, want 100 (paid once)", b)
		}
		if payments := m.payments(t, holder); payments != 1 {
			t.Errorf("%d payments in the holder's statement, want 1", payments)
		}
		if got := m.status(t, p.ID); got.Status != store.PurchaseApproved {
			t.Errorf("purchase = %s, want approved", got.Status)
		}

		// Another card asking with the reference.
		before, _ := other.Client.Counter(ctx)
		res, err := m.buy(t, other, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
		if perr := (*protocol.Error)(nil); !errors.As(err, &perr) || perr.Code != protocol.CodeTransactionUnknown || res.PaidBefore {
			t.Errorf("Buy(other card, paid reference) = %+v, %v; want CodeTransactionUnknown", res, err)
		}
		if items, err := other.Client.Items(ctx); err != nil || len(items) != 0 {
			t.Errorf("other card items = %+v, %v; want none", items, err)
		}
		if after, _ := other.Client.Counter(ctx); after != before {
			t.Errorf("other card counter %d → %d, want no signature", before, after)
		}
		if b := m.balance(t, m.holder(other)); b != 1000 {
			t.Errorf("other card's balance = %d, want 1000", b)
		}
	})
}

// TestBuyConcurrent runs purchases of several cards, each with its own
// device connection, at once through one listener.
func TestBuyConcurrent(t *testing.T) {
	const cards = 4
	onEachMall(t, func(t *testing.T, m *mall) {
		cs := m.cards(t, cards, 500)
		ps := make([]store.Purchase, cards)
		for i := range cs {
			ps[i] = m.newPurchase(t, 500, "", "")
		}
		var wg sync.WaitGroup
		res := make([]device.BuyResult, cards)
		errs := make([]error, cards)
		for i, c := range cs {
			wg.Go(func() {
				nc, err := net.DialTimeout("tcp", m.addr, testTimeout)
				if err != nil {
					errs[i] = err
					return
				}
				defer nc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				res[i], errs[i] = device.Buy(ctx, nc, m.id, c.Client, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: ps[i].Reference})
			})
		}
		wg.Wait()
		for i, c := range cs {
			if errs[i] != nil || res[i].Code != protocol.CodeOK {
				t.Errorf("card %d: Buy() = %v, %v; want CodeOK", i, res[i].Code, errs[i])
			}
			if b := m.balance(t, m.holder(c)); b != 0 {
				t.Errorf("card %d: balance = %d, want 0", i, b)
			}
		}
		if b := m.balance(t, m.merchant.Account); b != cards*500 {
			t.Errorf("merchant balance = %d, want %d", b, cards*500)
		}
	})
}

// TestBuyRefusedGood: the server delivers an e-good the card refuses (not
// signed by its issuer). The payment stands, and Buy says so in its error.
func TestBuyRefusedGood(t *testing.T) {
	m := newMall(t, mallStores[0].Open(t))
	ctx := context.Background()
	stranger := servertest.Card(t) // another issuer
	m.signItem = func(it *txn.Item) ([]byte, error) {
		_, sig, err := txn.ParseSignedItem(stranger.SignItem(it))
		return sig, err
	}
	item := store.Item{ID: "itm_" + rand.Text(), Merchant: m.merchant.ID, Name: "Licence", Price: 100, Currency: "EUR",
		Delivery: store.DeliverLicence, Payload: []byte("KEY-1"), Created: time.Now()}
	if err := m.ms.CreateItem(ctx, item); err != nil {
		t.Fatal(err)
	}
	m.fund(t, m.card.CardNumber, 100)
	p := m.newPurchase(t, 100, item.ID, "")
	res, err := m.buy(t, m.card, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
	if err == nil || !strings.Contains(err.Error(), "payment was made") || !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("Buy() error = %v, want the card's refusal (security status) saying the payment was made", err)
	}
	if res.Code != protocol.CodeOK || len(res.Goods) != 0 {
		t.Errorf("Buy() = code %v, %d goods; want CodeOK and none stored", res.Code, len(res.Goods))
	}
	if got := m.status(t, p.ID); got.Status != store.PurchaseApproved {
		t.Errorf("purchase = %s, want approved", got.Status)
	}
	if items, err := m.card.Client.Items(ctx); err != nil || len(items) != 0 {
		t.Errorf("card items = %+v, %v; want none", items, err)
	}
}

// TestBuyOptions: Buy refuses, before any exchange, holder verifications
// the card cannot sign a transaction with.
func TestBuyOptions(t *testing.T) {
	m := newMall(t, mallStores[0].Open(t))
	tests := []struct {
		name string
		opts device.AuthOptions
	}{
		{"no holder verification", device.AuthOptions{}},
		{"server-matched biometric", device.AuthOptions{ServerBiometric: wallettest.Template()}},
		{"two methods", device.AuthOptions{PIN: wallettest.PIN, OnlinePIN: "1234"}},
	}
	for _, tt := range tests {
		before, _ := m.card.Client.Counter(context.Background())
		if res, err := m.buy(t, m.card, device.BuyOptions{AuthOptions: tt.opts, Reference: "12345678"}); err == nil {
			t.Errorf("%s: Buy() = %+v, nil; want an error", tt.name, res)
		}
		if after, _ := m.card.Client.Counter(context.Background()); after != before {
			t.Errorf("%s: card counter %d → %d, want no signature", tt.name, before, after)
		}
	}
}
