package server_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// TestSessionBuysSeveral approves purchases, an authentication and a
// refused request one after another over one device session: the
// server's refusal leaves the session usable, and every purchase is paid
// once.
func TestSessionBuysSeveral(t *testing.T) {
	onEachMall(t, func(t *testing.T, m *mall) {
		m.fund(t, m.card.CardNumber, 10_000)
		s := m.session(t)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		pin := device.AuthOptions{PIN: wallettest.PIN}
		var last uint32
		for i := range 3 {
			p := m.newPurchase(t, 100, "", "")
			res, err := s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference})
			if err != nil || !res.OK() {
				t.Fatalf("purchase %d: Buy() = %v, %v", i, res.Code, err)
			}
			if res.Counter <= last {
				t.Errorf("purchase %d: counter %d, want above %d", i, res.Counter, last)
			}
			last = res.Counter
			if got := m.status(t, p.ID); got.Status != store.PurchaseApproved {
				t.Errorf("purchase %d: status %s, want approved", i, got.Status)
			}
		}
		ar, err := s.Authenticate(ctx, m.card.Client, pin)
		if err != nil || !ar.OK() {
			t.Fatalf("Authenticate() = %v, %v", ar.Code, err)
		}

		_, err = s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: "00000000"})
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != protocol.CodeTransactionUnknown {
			t.Fatalf("Buy(unknown reference) = %v, want CodeTransactionUnknown", err)
		}
		p := m.newPurchase(t, 250, "", "")
		res, err := s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference})
		if err != nil || !res.OK() {
			t.Fatalf("Buy() after a refusal = %v, %v; want the session still usable", res.Code, err)
		}
		if got, want := m.balance(t, m.holder(m.card)), int64(10_000-3*100-250); got != want {
			t.Errorf("holder balance %d, want %d", got, want)
		}
		if got := m.payments(t, m.holder(m.card)); got != 4 {
			t.Errorf("%d payments from the holder, want 4", got)
		}
	})
}

// TestSessionClosedByFailure: a failure that is not the server's refusal
// (a wrong PIN, ctx ended mid-exchange) closes the session, and Close
// closes it; later exchanges return ErrSessionClosed and the purchase
// stays pending.
func TestSessionClosedByFailure(t *testing.T) {
	m := newMall(t, servertest.SQLite(t))
	m.fund(t, m.card.CardNumber, 10_000)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pin := device.AuthOptions{PIN: wallettest.PIN}

	t.Run("wrong PIN", func(t *testing.T) {
		s := m.session(t)
		p := m.newPurchase(t, 100, "", "")
		_, err := s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: "0000"}, Reference: p.Reference})
		var pe *iso7816.PINError
		if !errors.As(err, &pe) {
			t.Fatalf("Buy(wrong PIN) = %v, want a *iso7816.PINError", err)
		}
		_, err = s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference})
		if !errors.Is(err, device.ErrSessionClosed) || !errors.As(err, &pe) {
			t.Fatalf("Buy() after a wrong PIN = %v, want ErrSessionClosed wrapping the PIN error", err)
		}
		if got := m.status(t, p.ID); got.Status != store.PurchasePending {
			t.Errorf("status %s, want pending", got.Status)
		}
		// The card is fine: a new session pays it.
		res, err := m.session(t).Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference})
		if err != nil || !res.OK() {
			t.Fatalf("Buy() on a new session = %v, %v", res.Code, err)
		}
	})

	t.Run("ctx ended", func(t *testing.T) {
		s := m.session(t)
		p := m.newPurchase(t, 100, "", "")
		bctx, stop := context.WithCancel(ctx)
		_, err := s.Buy(bctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference,
			Confirm: func(context.Context, txn.Transaction) (bool, error) {
				stop() // the holder's device gave up while the offer was shown
				return true, nil
			}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Buy() with ctx cancelled = %v, want context.Canceled", err)
		}
		_, err = s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference})
		if !errors.Is(err, device.ErrSessionClosed) {
			t.Fatalf("Buy() after ctx ended = %v, want ErrSessionClosed", err)
		}
	})

	t.Run("closed", func(t *testing.T) {
		s := m.session(t)
		s.Close()
		s.Close()
		p := m.newPurchase(t, 100, "", "")
		_, err := s.Buy(ctx, m.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference})
		if !errors.Is(err, device.ErrSessionClosed) {
			t.Fatalf("Buy() after Close = %v, want ErrSessionClosed", err)
		}
		if _, err := s.Authenticate(ctx, m.card.Client, pin); !errors.Is(err, device.ErrSessionClosed) {
			t.Fatalf("Authenticate() after Close = %v, want ErrSessionClosed", err)
		}
	})
}

// TestSessionConcurrent: exchanges started at once on one session take
// turns, each with its own card, and all are paid.
func TestSessionConcurrent(t *testing.T) {
	m := newMall(t, servertest.SQLite(t))
	s := m.session(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const n = 4
	cards := m.cards(t, n, 1_000)
	ps := make([]store.Purchase, n)
	for i := range cards {
		ps[i] = m.newPurchase(t, 100, "", "")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range cards {
		wg.Go(func() {
			res, err := s.Buy(ctx, c.Client, device.BuyOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: ps[i].Reference})
			if err == nil && !res.OK() {
				err = errors.New(res.Code.String())
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, c := range cards {
		if errs[i] != nil {
			t.Errorf("card %d: Buy() = %v", i, errs[i])
		}
		if got := m.balance(t, m.holder(c)); got != 900 {
			t.Errorf("card %d: balance %d, want 900", i, got)
		}
	}
}

// TestSessionPurse loads and unloads the purse over one session, then
// has the device refuse an unload offer whose holder verification the
// offer does not accept (it tells the server, which does not answer),
// then declines a purchase on the same session: the decline goes to the
// purchase, not to the purse offer left behind, and a load after it
// works.
func TestSessionPurse(t *testing.T) {
	b := newBank(t, servertest.SQLite(t))
	s := openSession(t, b.addr, b.id)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pin := device.AuthOptions{PIN: wallettest.PIN}
	eur := func(minor int64) money.Amount { return money.Amount{Minor: minor, Currency: "EUR"} }

	if r, err := s.Load(ctx, b.card.Client, device.LoadOptions{AuthOptions: pin, Amount: eur(300)}); err != nil || !r.OK() || r.After.Balance.Minor != 300 {
		t.Fatalf("Load(3.00) = %v (purse %v), %v", r.Code, r.After.Balance, err)
	}
	if r, err := s.Unload(ctx, b.card.Client, device.LoadOptions{AuthOptions: pin, Amount: eur(100)}); err != nil || !r.OK() || r.After.Balance.Minor != 200 {
		t.Fatalf("Unload(1.00) = %v (purse %v), %v", r.Code, r.After.Balance, err)
	}
	r, err := s.Unload(ctx, b.card.Client, device.LoadOptions{Amount: eur(100),
		Verify: func(_ context.Context, _ txn.Transaction, accepted protocol.CVMSet) (device.AuthOptions, error) {
			for _, o := range []device.AuthOptions{pin, {Biometric: make([]byte, 32)}, {OnlinePIN: wallettest.PIN}} {
				if !accepted.Has(method(o)) {
					return o, nil
				}
			}
			return device.AuthOptions{}, errors.New("the unload offer accepts every method; nothing to refuse")
		}})
	if err != nil || r.Code != protocol.CodeCVMNotAccepted {
		t.Fatalf("Unload(method not accepted) = %v, %v; want CodeCVMNotAccepted", r.Code, err)
	}

	now := time.Now()
	id, err := purchase.NewID(now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := store.Purchase{ID: id, Merchant: b.shop.ID, Description: "Two coffees", Amount: 100, Currency: "EUR", Digest: []byte(id),
		Reference: "12345678", Status: store.PurchasePending, Created: now, Expires: now.Add(10 * time.Minute)}
	if _, _, err := b.st.(store.Merchants).CreatePurchase(ctx, p); err != nil {
		t.Fatal(err)
	}
	br, err := s.Buy(ctx, b.card.Client, device.BuyOptions{AuthOptions: pin, Reference: p.Reference,
		Confirm: func(context.Context, txn.Transaction) (bool, error) { return false, nil }})
	if err != nil || br.Code != protocol.CodeHolderDeclined {
		t.Fatalf("Buy(declined) after a refused unload offer = %v, %v; want CodeHolderDeclined", br.Code, err)
	}
	if got, err := b.st.(store.Merchants).Purchase(ctx, "", p.ID); err != nil || got.Status != store.PurchaseDeclined {
		t.Errorf("purchase %s: %v; want declined", got.Status, err)
	}
	if r, err := s.Load(ctx, b.card.Client, device.LoadOptions{AuthOptions: pin, Amount: eur(50)}); err != nil || !r.OK() || r.After.Balance.Minor != 250 {
		t.Fatalf("Load(0.50) at the end = %v (purse %v), %v", r.Code, r.After.Balance, err)
	}
}

// method is the holder verification o asks for.
func method(o device.AuthOptions) txn.CVM {
	switch {
	case o.PIN != "":
		return txn.CVMOfflinePIN
	case o.OnlinePIN != "":
		return txn.CVMOnlinePIN
	default:
		return txn.CVMBiometric
	}
}
