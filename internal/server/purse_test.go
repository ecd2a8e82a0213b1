package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/api"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/purse"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// bank is a running device listener and HTTP API with the purchase and
// purse services over a real store and ledger, two merchants with
// accounts and API keys, a registered device and a personalized card the
// server knows, with a funded holder account.
type bank struct {
	st       store.Store
	ledger   *ledger.Ledger
	purses   *purse.Service
	addr     string
	api      string // base URL
	id       device.Identity
	card     *wallettest.Env
	shop     store.Merchant // "Corner Shop"
	other    store.Merchant // "Other Shop"
	keys     map[string]string
	deposits *purchase.Service
}

func newBank(t *testing.T, st store.Store) *bank {
	t.Helper()
	ctx := context.Background()
	b := &bank{st: st, keys: map[string]string{}}
	b.card = servertest.Card(t)
	as, err := auth.New(auth.Config{Store: st, CA: b.card.CA})
	if err != nil {
		t.Fatal(err)
	}
	b.ledger = ledger.New(st.(store.Ledger), ledger.Options{})
	if b.deposits, err = purchase.New(purchase.Config{Store: st, Ledger: b.ledger, Auth: as}); err != nil {
		t.Fatal(err)
	}
	b.purses, err = purse.New(purse.Config{Store: st, Ledger: b.ledger, Auth: as, SignLoad: func(l *txn.Load) ([]byte, error) {
		_, sig, err := txn.ParseSignedLoad(b.card.SignLoad(l))
		return sig, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, m := range []*store.Merchant{&b.shop, &b.other} {
		name := map[*store.Merchant]string{&b.shop: "Corner Shop", &b.other: "Other Shop"}[m]
		key := "key-" + rand.Text()
		sum := sha256.Sum256([]byte(key))
		*m = servertest.Merchant(t, b.ledger, st.(store.Merchants), store.Merchant{ID: "mer_" + rand.Text(), Name: name, KeyHash: sum[:], WebhookSecret: []byte("s"), Created: now})
		b.keys[m.ID] = key
	}
	servertest.PutCard(t, st, b.card, now)
	if _, err := b.deposits.Deposit(ctx, b.card.CardNumber, money.Amount{Minor: 10_000, Currency: "EUR"}, rand.Text()); err != nil {
		t.Fatal(err)
	}
	pubs, l := listen(t, st)
	b.addr = l.Addr().String()
	b.id = servertest.Device(t, st, "test", pubs, b.addr, now)
	hs := httptest.NewServer(api.New(api.Config{Store: st, Ledger: b.ledger, Purchases: b.deposits, Purses: b.purses}))
	b.api = hs.URL
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- server.New(server.Config{Auth: as, Store: st, Purchases: b.deposits, Purses: b.purses}).Serve(sctx, l)
	}()
	t.Cleanup(func() {
		hs.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
		b.ledger.Close()
	})
	return b
}

func (b *bank) balance(t testing.TB, account string) int64 {
	t.Helper()
	return servertest.Balance(t, b.ledger, account)
}

// run runs device.Load or device.Unload with card over a new connection.
func (b *bank) run(t testing.TB, f func(context.Context, net.Conn) (device.PurseResult, error)) (device.PurseResult, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", b.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return f(ctx, c)
}

func (b *bank) load(t testing.TB, card *wallettest.Env, minor int64) (device.PurseResult, error) {
	return b.run(t, func(ctx context.Context, c net.Conn) (device.PurseResult, error) {
		return device.Load(ctx, c, b.id, card.Client, device.LoadOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN},
			Amount: money.Amount{Minor: minor, Currency: "EUR"}})
	})
}

func (b *bank) unload(t testing.TB, card *wallettest.Env, minor int64) (device.PurseResult, error) {
	return b.run(t, func(ctx context.Context, c net.Conn) (device.PurseResult, error) {
		return device.Unload(ctx, c, b.id, card.Client, device.LoadOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN},
			Amount: money.Amount{Minor: minor, Currency: "EUR"}})
	})
}

// pay has the card pay merchant offline at a point of sale: the holder
// verifies the PIN and the card signs a debit receipt.
func pay(t testing.TB, card *wallettest.Env, merchant string, minor int64) wallet.DebitReceipt {
	t.Helper()
	ctx := context.Background()
	tx := txn.Transaction{Merchant: merchant, Item: "Groceries", Amount: money.Amount{Minor: minor, Currency: "EUR"},
		Time: time.Now().Truncate(time.Second).UTC(), Nonce: make([]byte, 16)}
	rand.Read(tx.ID[:])
	rand.Read(tx.Nonce)
	if err := card.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatal(err)
	}
	r, err := card.Client.Debit(ctx, &tx)
	if err != nil {
		t.Fatalf("Debit(%d to %s) = %v", minor, merchant, err)
	}
	return r
}

// redemption is the JSON body of a redemption of r by card.
func redemption(card string, r wallet.DebitReceipt) map[string]any {
	return map[string]any{"card": card, "transaction": base64.StdEncoding.EncodeToString(r.Transaction),
		"counter": r.Counter, "cvm": int(r.CVM), "signature": base64.StdEncoding.EncodeToString(r.Sig)}
}

// redeem posts body to /v1/purse-redemptions with merchant m's key and
// returns the status and the problem type or redemption status.
func (b *bank) redeem(t testing.TB, m store.Merchant, body map[string]any) (int, string) {
	t.Helper()
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", b.api+"/v1/purse-redemptions", bytes.NewReader(j))
	req.Header.Set("Authorization", "Bearer "+b.keys[m.ID])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Type, Status, Detail string }
	json.NewDecoder(resp.Body).Decode(&v)
	if v.Type != "" {
		return resp.StatusCode, strings.TrimPrefix(v.Type, api.ProblemBase) + ": " + v.Detail
	}
	return resp.StatusCode, v.Status
}

// TestPurse runs e-money end to end on each backend: a load, an offline
// payment, its redemption, an unload, with the float checked after each
// step, and the attacks and faults, each refused with no damage.
func TestPurse(t *testing.T) {
	for _, be := range mallStores {
		t.Run(be.Name, func(t *testing.T) { testPurse(t, newBank(t, be.Open(t))) })
	}
}

func testPurse(t *testing.T, b *bank) {
	ctx := context.Background()
	card := b.card
	holder, float := ledger.HolderAccount(card.CardNumber, "EUR"), ledger.FloatAccount("EUR")
	var signedNotApplied, unredeemed int64
	// check asserts the float invariant and the balances the test expects.
	check := func(step string, wantHolder, wantShop, wantPurse int64) {
		t.Helper()
		st, err := card.Client.Purse(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f := b.balance(t, float)
		if want := st.Balance.Minor + signedNotApplied + unredeemed; f != want {
			t.Errorf("%s: float = %d, want purse %d + loads signed not applied %d + receipts not redeemed %d = %d",
				step, f, st.Balance.Minor, signedNotApplied, unredeemed, want)
		}
		if h, s := b.balance(t, holder), b.balance(t, b.shop.Account); h != wantHolder || s != wantShop || st.Balance.Minor != wantPurse {
			t.Errorf("%s: holder %d, shop %d, purse %d; want %d, %d, %d", step, h, s, st.Balance.Minor, wantHolder, wantShop, wantPurse)
		}
	}
	check("start", 10_000, 0, 0)

	// Load 3000.
	snap := card.Snapshot() // the card before the load: seq 0
	res, err := b.load(t, card, 3000)
	if err != nil || !res.OK() || res.After.Balance.Minor != 3000 || res.After.Seq != 1 || res.Loaded.Seq != 1 || res.Counter == 0 ||
		res.Transaction.Merchant != purse.DefaultIssuer || res.Transaction.Item != purse.ItemLoad {
		t.Fatalf("Load(3000) = %+v, %v; want CodeOK, purse 3000 at seq 1, an approved transaction from the issuer", res, err)
	}
	op, err := b.st.(store.Purses).PurseOp(ctx, purse.OpID(res.Transaction.ID))
	if err != nil || op.Status != store.PurseApplied || op.Seq != 1 || op.Transfer == 0 {
		t.Errorf("PurseOp(load 1) = %+v, %v; want applied with a transfer", op, err)
	}
	check("load", 7000, 0, 3000)
	signedLoad := res.Load

	t.Run("replayed load command", func(t *testing.T) {
		_, err := card.Client.Load(ctx, signedLoad)
		if !errors.Is(err, iso7816.ErrConditions) {
			t.Errorf("card.Load(replayed) = %v, want ErrConditions", err)
		}
		// A clone of the card from before the load asks for the same
		// sequence number: the server sees it applied and posts nothing.
		clone := card.Fork(t, snap)
		res, err := b.load(t, clone, 3000)
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != protocol.CodePurseState {
			t.Errorf("Load(clone at seq 0) = %+v, %v; want CodePurseState", res, err)
		}
		check("replayed load", 7000, 0, 3000)
	})
	t.Run("sequence number never signed", func(t *testing.T) {
		sess := &auth.Session{Device: store.Device{ID: b.id.ID, StaticKey: b.id.Static.Public}}
		req := &protocol.PurseRequest{Kind: protocol.PurseKindLoad, CardNumber: protocol.CardNumber(card.CardNumber),
			CertID: protocol.CertID(card.CardCert.Raw), Amount: 100, Currency: "EUR", Seq: 9, Balance: 3000}
		m, err := b.purses.Request(ctx, sess, req)
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != protocol.CodePurseState {
			t.Errorf("Request(seq 9, never signed) = %+v, %v; want CodePurseState", m, err)
		}
		check("seq never signed", 7000, 0, 3000)
	})
	t.Run("reordered load", func(t *testing.T) {
		_, err := card.Client.Load(ctx, card.SignLoad(&txn.Load{CardNumber: card.CardNumber, Seq: 3, Amount: money.Amount{Minor: 100, Currency: "EUR"}}))
		if !errors.Is(err, iso7816.ErrConditions) {
			t.Errorf("card.Load(seq 3 before 2) = %v, want ErrConditions", err)
		}
		check("reordered load", 7000, 0, 3000)
	})
	t.Run("load not covered", func(t *testing.T) {
		res, err := b.load(t, card, 8000)
		if err != nil || res.Code != protocol.CodeInsufficientFunds || res.Load != nil || res.After.Seq != 1 {
			t.Errorf("Load(8000 of 7000) = %+v, %v; want CodeInsufficientFunds, nothing signed", res, err)
		}
		op, err := b.st.(store.Purses).PurseOp(ctx, purse.OpID(res.Transaction.ID))
		if err != nil || op.Status != store.PurseDeclined || op.Load != nil || op.Reason != purse.ReasonFunds {
			t.Errorf("PurseOp(uncovered load) = %+v, %v; want declined for funds, unsigned", op, err)
		}
		check("uncovered load", 7000, 0, 3000)
	})

	t.Run("load declined on the device", func(t *testing.T) {
		var shown txn.Transaction
		res, err := b.run(t, func(ctx context.Context, c net.Conn) (device.PurseResult, error) {
			return device.Load(ctx, c, b.id, card.Client, device.LoadOptions{AuthOptions: device.AuthOptions{PIN: wallettest.PIN},
				Amount:  money.Amount{Minor: 500, Currency: "EUR"},
				Confirm: func(_ context.Context, tx txn.Transaction) (bool, error) { shown = tx; return false, nil }})
		})
		if err != nil || res.Code != protocol.CodeHolderDeclined || res.Counter != 0 || shown.Amount.Minor != 500 || shown.Item != purse.ItemLoad {
			t.Errorf("Load(declined) = %+v, %v, shown %+v; want CodeHolderDeclined after showing the load of 500, no signature", res, err, shown)
		}
		if op, err := b.st.(store.Purses).PurseOp(ctx, purse.OpID(shown.ID)); err != nil || op.Status != store.PurseDeclined || op.Reason != purse.ReasonHolder {
			t.Errorf("PurseOp(declined load) = %+v, %v; want declined by the holder", op, err)
		}
		check("declined load", 7000, 0, 3000)
	})

	// Pay the shop offline, then redeem.
	r1 := pay(t, card, "Corner Shop", 1200)
	unredeemed += 1200
	check("offline payment", 7000, 0, 1800)
	if code, status := b.redeem(t, b.shop, redemption(card.CardNumber, r1)); code != http.StatusCreated || status != "redeemed" {
		t.Fatalf("redeem(r1) = %d %q, want 201 redeemed", code, status)
	}
	unredeemed -= 1200
	check("redemption", 7000, 1200, 1800)

	t.Run("second redemption", func(t *testing.T) {
		want := "already-redeemed: This receipt was redeemed before, as " + purse.RedemptionID(mustParse(t, r1.Transaction).ID) + " (by you)."
		if code, p := b.redeem(t, b.shop, redemption(card.CardNumber, r1)); code != http.StatusConflict || p != want {
			t.Errorf("redeem(r1 again) = %d %q, want 409 %q", code, p, want)
		}
		// Another merchant is refused before the store is asked: not its
		// payee.
		if code, p := b.redeem(t, b.other, redemption(card.CardNumber, r1)); code != 422 || !strings.HasPrefix(p, "receipt-refused") {
			t.Errorf("redeem(r1 again by Other Shop) = %d %q, want 422 receipt-refused", code, p)
		}
		check("second redemption", 7000, 1200, 1800)
	})
	t.Run("concurrent redemptions", func(t *testing.T) {
		r := pay(t, card, "Corner Shop", 100)
		body := redemption(card.CardNumber, r)
		codes := make([]int, 8)
		var wg sync.WaitGroup
		for i := range codes {
			wg.Go(func() { codes[i], _ = b.redeem(t, b.shop, body) })
		}
		wg.Wait()
		won, lost := 0, 0
		for _, c := range codes {
			switch c {
			case http.StatusCreated:
				won++
			case http.StatusConflict:
				lost++
			}
		}
		if won != 1 || lost != 7 {
			t.Errorf("8 concurrent redemptions: codes %v; want exactly one 201 and seven 409", codes)
		}
		check("concurrent redemptions", 7000, 1300, 1700)
	})
	t.Run("altered receipts", func(t *testing.T) {
		r := pay(t, card, "Corner Shop", 300)
		unredeemed += 300
		tx, err := txn.Parse(r.Transaction)
		if err != nil {
			t.Fatal(err)
		}
		alter := func(f func(*txn.Transaction)) map[string]any {
			a := tx
			f(&a)
			ar := r
			if ar.Transaction, err = a.Encode(); err != nil {
				t.Fatal(err)
			}
			return redemption(card.CardNumber, ar)
		}
		tests := []struct {
			name string
			m    store.Merchant
			body map[string]any
			code int
			prob string
		}{
			{"amount raised", b.shop, alter(func(a *txn.Transaction) { a.Amount.Minor = 3000 }), 422, "receipt-refused: The card or its signature was refused: card signature not valid."},
			{"payee changed, by the new payee", b.other, alter(func(a *txn.Transaction) { a.Merchant = "Other Shop" }), 422, "receipt-refused: The card or its signature was refused: card signature not valid."},
			{"payee changed, by the payee", b.shop, alter(func(a *txn.Transaction) { a.Merchant = "Other Shop" }), 422, "receipt-refused: The receipt pays another merchant."},
			{"redeemed by another merchant", b.other, redemption(card.CardNumber, r), 422, "receipt-refused: The receipt pays another merchant."},
			{"counter changed", b.shop, func() map[string]any { x := redemption(card.CardNumber, r); x["counter"] = r.Counter + 1000; return x }(), 422, "receipt-refused: The card or its signature was refused: card signature not valid."},
			{"unknown card", b.shop, redemption(servertest.CardNumber(t), r), 422, "card-unknown: No such card."},
		}
		for _, tt := range tests {
			if code, p := b.redeem(t, tt.m, tt.body); code != tt.code || p != tt.prob {
				t.Errorf("redeem(%s) = %d %q, want %d %q", tt.name, code, p, tt.code, tt.prob)
			}
		}
		check("altered receipts", 7000, 1300, 1400)
		// The genuine receipt is still redeemable, once, by its payee.
		if code, status := b.redeem(t, b.shop, redemption(card.CardNumber, r)); code != http.StatusCreated || status != "redeemed" {
			t.Errorf("redeem(genuine after the altered ones) = %d %q, want 201", code, status)
		}
		unredeemed -= 300
		check("genuine receipt", 7000, 1600, 1400)
	})
	t.Run("out of order redemptions", func(t *testing.T) {
		early, late := pay(t, card, "Corner Shop", 50), pay(t, card, "Corner Shop", 60)
		unredeemed += 110
		for _, r := range []wallet.DebitReceipt{late, early} {
			if code, status := b.redeem(t, b.shop, redemption(card.CardNumber, r)); code != http.StatusCreated {
				t.Errorf("redeem(counter %d) = %d %q, want 201 whatever the order", r.Counter, code, status)
			}
		}
		unredeemed -= 110
		check("out of order", 7000, 1710, 1290)
	})

	// Unload 500 back to the account.
	res, err = b.unload(t, card, 500)
	if err != nil || !res.OK() || res.After.Balance.Minor != 790 || res.Transaction.Item != purse.ItemUnload || res.Counter == 0 {
		t.Fatalf("Unload(500) = %+v, %v; want CodeOK and purse 790", res, err)
	}
	check("unload", 7500, 1710, 790)
	t.Run("unload above the purse", func(t *testing.T) {
		_, err := b.unload(t, card, 5000)
		if !errors.Is(err, iso7816.ErrConditions) {
			t.Errorf("Unload(5000 of 790) = %v, want the card's ErrConditions", err)
		}
		check("unload refused", 7500, 1710, 790)
	})

	t.Run("load signed, not applied, handed out again", func(t *testing.T) {
		// The purse is nearly full: the card refuses the load, which the
		// server has posted and signed; it stays in flight.
		if _, err := b.deposits.Deposit(ctx, card.CardNumber, money.Amount{Minor: 100_000, Currency: "EUR"}, rand.Text()); err != nil {
			t.Fatal(err)
		}
		res, err := b.load(t, card, wallettest.MaxBalance)
		if !errors.Is(err, iso7816.ErrNoSpace) || res.Load == nil {
			t.Fatalf("Load(over the maximum) = %+v, %v; want the card's ErrNoSpace after the server signed", res, err)
		}
		signedNotApplied += wallettest.MaxBalance
		check("load in flight", 107_500-wallettest.MaxBalance, 1710, 790)
		// Make room, and ask again: the same signed load, no new posting.
		if _, err := b.unload(t, card, 790); err != nil {
			t.Fatal(err)
		}
		check("room made", 108_290-wallettest.MaxBalance, 1710, 0)
		again, err := b.load(t, card, 1)
		if err != nil || !again.OK() || !bytes.Equal(again.Load, res.Load) || again.Counter != 0 || again.After.Balance.Minor != wallettest.MaxBalance {
			t.Fatalf("Load(again) = %+v, %v; want the same signed load applied with no new approval", again, err)
		}
		signedNotApplied = 0
		check("load applied", 108_290-wallettest.MaxBalance, 1710, wallettest.MaxBalance)
	})
}

func mustParse(t testing.TB, b []byte) txn.Transaction {
	t.Helper()
	tx, err := txn.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestPurseRecovery: what a crash left half done — a load and an unload
// approved but not posted, a redemption recorded but not posted — is
// finished by Sweep, posted once, with the float invariant kept; and
// refused load receipts change nothing.
func TestPurseRecovery(t *testing.T) {
	for _, be := range mallStores {
		t.Run(be.Name, func(t *testing.T) { testPurseRecovery(t, newBank(t, be.Open(t))) })
	}
}

func testPurseRecovery(t *testing.T, b *bank) {
	ctx := context.Background()
	card := b.card
	ps := b.st.(store.Purses)
	holder, float := ledger.HolderAccount(card.CardNumber, "EUR"), ledger.FloatAccount("EUR")
	if res, err := b.load(t, card, 2000); err != nil || !res.OK() {
		t.Fatalf("Load(2000) = %+v, %v", res, err)
	}
	old := time.Now().Add(-time.Minute)
	// crashed records an operation as a crash would leave it: approved
	// (authorized) a minute ago, not posted.
	crashed := func(kind store.PurseOpKind, seq uint32, minor int64) (store.PurseOp, txn.Transaction) {
		t.Helper()
		item := purse.ItemUnload
		if kind == store.PurseLoad {
			item = purse.ItemLoad
		}
		tx := txn.Transaction{Merchant: purse.DefaultIssuer, Item: item, Amount: money.Amount{Minor: minor, Currency: "EUR"},
			Time: old.Truncate(time.Second).UTC(), Nonce: make([]byte, 16)}
		rand.Read(tx.ID[:])
		offer, err := tx.Encode()
		if err != nil {
			t.Fatal(err)
		}
		op := store.PurseOp{ID: purse.OpID(tx.ID), Kind: kind, Card: card.CardNumber, Seq: seq, Amount: tx.Amount, Offer: offer,
			Created: old, Expires: old.Add(time.Hour)}
		if err := ps.CreatePurseOp(ctx, op); err != nil {
			t.Fatal(err)
		}
		if op, err = ps.MovePurseOp(ctx, op.ID, store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{Counter: 1}, old); err != nil {
			t.Fatal(err)
		}
		return op, tx
	}
	load, _ := crashed(store.PurseLoad, 2, 300)
	unload, utx := crashed(store.PurseUnload, 0, 400)
	if err := card.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatal(err)
	}
	unloadReceipt, err := card.Client.Debit(ctx, &utx) // the card debited before the crash
	if err != nil {
		t.Fatal(err)
	}
	r := pay(t, card, "Corner Shop", 500)
	tx := mustParse(t, r.Transaction)
	if _, err := ps.CreateRedemption(ctx, store.Redemption{ID: purse.RedemptionID(tx.ID), Merchant: b.shop.ID, Card: card.CardNumber,
		Counter: r.Counter, CVM: uint8(r.CVM), Transaction: r.Transaction, Signature: r.Sig, Amount: tx.Amount, Created: old}); err != nil {
		t.Fatal(err)
	}
	// Presented meanwhile: already redeemed (pending), nothing posted.
	if code, _ := b.redeem(t, b.shop, redemption(card.CardNumber, r)); code != http.StatusConflict {
		t.Errorf("redeem(pending) = %d, want 409", code)
	}
	if f, h, s := b.balance(t, float), b.balance(t, holder), b.balance(t, b.shop.Account); f != 2000 || h != 8000 || s != 0 {
		t.Fatalf("before Sweep: float %d holder %d shop %d, want 2000, 8000, 0", f, h, s)
	}

	for i := range 2 { // a second Sweep finds nothing and posts nothing
		if err := b.purses.Sweep(ctx); err != nil {
			t.Fatalf("Sweep() #%d = %v", i+1, err)
		}
		// float: 2000 loaded + 300 load posted − 400 unloaded − 500 redeemed.
		if f, h, s := b.balance(t, float), b.balance(t, holder), b.balance(t, b.shop.Account); f != 1400 || h != 8000-300+400 || s != 500 {
			t.Errorf("after Sweep #%d: float %d holder %d shop %d, want 1400, 8100, 500", i+1, f, h, s)
		}
	}
	if op, err := ps.PurseOp(ctx, load.ID); err != nil || op.Status != store.PurseSigned || op.Load == nil {
		t.Errorf("load after Sweep = %+v, %v; want signed", op, err)
	}
	if op, err := ps.PurseOp(ctx, unload.ID); err != nil || op.Status != store.PurseDone || op.Transfer == 0 {
		t.Errorf("unload after Sweep = %+v, %v; want done", op, err)
	}
	if red, err := ps.Redemption(ctx, purse.RedemptionID(tx.ID)); err != nil || red.Status != store.RedemptionRedeemed {
		t.Errorf("redemption after Sweep = %+v, %v; want redeemed", red, err)
	}
	// purse 2000 − 400 − 500 = 1100; the signed load of 300 in flight.
	if st, _ := card.Client.Purse(ctx); st.Balance.Minor+300 != b.balance(t, float) {
		t.Errorf("float %d, want purse %d + 300 in flight", b.balance(t, float), st.Balance.Minor)
	}

	// The unload's debit signature is a purse receipt paying the issuer:
	// no merchant redeems it, even one that calls itself so.
	key := "key-" + rand.Text()
	sum := sha256.Sum256([]byte(key))
	impostor := store.Merchant{ID: "mer_" + rand.Text(), Name: purse.DefaultIssuer, KeyHash: sum[:], WebhookSecret: []byte("s"),
		Account: "acct_impostor_" + rand.Text(), Created: time.Now()}
	if err := b.ledger.CreateAccount(ctx, store.Account{ID: impostor.Account, Kind: store.KindMerchant, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if err := b.st.(store.Merchants).CreateMerchant(ctx, impostor); err != nil {
		t.Fatal(err)
	}
	b.keys[impostor.ID] = key
	if code, p := b.redeem(t, impostor, redemption(card.CardNumber, unloadReceipt)); code != 422 || p != "receipt-refused: The receipt pays another merchant." {
		t.Errorf("redeem(the unload's receipt, by a merchant named %q) = %d %q, want 422 receipt-refused", purse.DefaultIssuer, code, p)
	}
	if f := b.balance(t, float); f != 1400 {
		t.Errorf("float after the impostor = %d, want 1400", f)
	}

	// Refused receipts for the load in flight change nothing.
	sess := &auth.Session{Device: store.Device{ID: b.id.ID}}
	loadID, unloadID := mustParse(t, load.Offer).ID, mustParse(t, unload.Offer).ID
	for _, tt := range []struct {
		name string
		r    *protocol.LoadReceipt
		code protocol.Code
	}{
		{"bad signature", &protocol.LoadReceipt{ID: loadID[:], Counter: 99, Signature: bytes.Repeat([]byte{0x30}, 70)}, protocol.CodeSignatureInvalid},
		{"unknown load", &protocol.LoadReceipt{ID: make([]byte, 16), Counter: 99, Signature: bytes.Repeat([]byte{0x30}, 70)}, protocol.CodeTransactionUnknown},
		{"unload id", &protocol.LoadReceipt{ID: unloadID[:], Counter: 99, Signature: bytes.Repeat([]byte{0x30}, 70)}, protocol.CodeTransactionUnknown},
	} {
		res, err := b.purses.Receipt(ctx, sess, tt.r)
		if err != nil || res.Code != tt.code {
			t.Errorf("Receipt(%s) = %+v, %v; want %v", tt.name, res, err, tt.code)
		}
	}
	if op := mustOp(t, ps, load.ID); op.Status != store.PurseSigned {
		t.Errorf("load after refused receipts is %s, want signed", op.Status)
	}
	// The device's next load request gets the swept load and applies it.
	res, err := b.load(t, card, 1)
	if err != nil || !res.OK() || res.Loaded.Seq != 2 || res.Loaded.Amount.Minor != 300 || res.After.Balance.Minor != 1400 {
		t.Fatalf("Load(after Sweep) = %+v, %v; want the swept load of 300 applied, purse 1400", res, err)
	}
	if op := mustOp(t, ps, load.ID); op.Status != store.PurseApplied {
		t.Errorf("load after its receipt is %s, want applied", op.Status)
	}
	if f := b.balance(t, float); f != 1400 {
		t.Errorf("float = %d, want 1400 = the purse", f)
	}
}

func mustOp(t testing.TB, ps store.Purses, id string) store.PurseOp {
	t.Helper()
	op, err := ps.PurseOp(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return op
}
