package purchase

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

const (
	testCard  = "4111111111111111"
	otherCard = "5555555555554444"
	eur       = money.Currency("EUR")
)

// env is a Service over a real store and a real ledger.
type env struct {
	st       store.Store
	ms       store.Merchants
	ledger   *ledger.Ledger
	svc      *Service
	clock    *servertest.Clock
	merchant store.Merchant

	mu       sync.Mutex
	notified []store.Purchase
	refs     atomic.Int64
}

// eachBackend runs f on every backend: SQLite always, PostgreSQL when
// $CARDLINK_TEST_POSTGRES names a server.
func eachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	for _, b := range servertest.Backends("purchase_") {
		t.Run(b.Name, func(t *testing.T) {
			f(t, newEnv(t, b.Open(t)))
		})
	}
}

func newEnv(t *testing.T, st store.Store) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{st: st, clock: servertest.NewClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))}
	var ok bool
	if e.ms, ok = st.(store.Merchants); !ok {
		t.Fatalf("store %T keeps no merchants", st)
	}
	sl, ok := st.(store.Ledger)
	if !ok {
		t.Fatalf("store %T keeps no ledger", st)
	}
	e.ledger = ledger.New(sl, ledger.Options{Now: e.clock.Now})
	t.Cleanup(func() { e.ledger.Close() })
	as, err := auth.New(auth.Config{Store: st, CA: servertest.CA(t), Now: e.clock.Now})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	e.svc, err = New(Config{Store: st, Ledger: e.ledger, Auth: as, Now: e.clock.Now, Notify: e.notify})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	now := e.clock.Now()
	for _, n := range []string{testCard, otherCard} {
		if err := st.PutCard(ctx, store.Card{Number: n, Cert: []byte("cert " + n), IssuerKeyID: []byte{1}}, now); err != nil {
			t.Fatalf("PutCard(%s): %v", n, err)
		}
	}
	e.merchant = e.newMerchant(t, "mer_shop")
	return e
}

func (e *env) notify(_ context.Context, p store.Purchase) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.notified = append(e.notified, p)
}

// takeNotified returns and forgets the purchases notified so far.
func (e *env) takeNotified() []store.Purchase {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.notified
	e.notified = nil
	return n
}

// newMerchant creates a merchant with a ledger account in EUR.
func (e *env) newMerchant(t *testing.T, id string) store.Merchant {
	t.Helper()
	sum := sha256.Sum256([]byte("key of " + id))
	return servertest.Merchant(t, e.ledger, e.ms, store.Merchant{ID: id, Name: "Shop " + id, KeyHash: sum[:], WebhookSecret: []byte("secret"),
		Account: "acct_" + id, Created: e.clock.Now()})
}

// balance returns an account's balance in minor units.
func (e *env) balance(t *testing.T, account string) int64 {
	t.Helper()
	b, err := e.ledger.Balance(context.Background(), account)
	if err != nil {
		t.Fatalf("Balance(%s): %v", account, err)
	}
	return b.Minor
}

// deposit funds card's holder account.
func (e *env) deposit(t *testing.T, card string, minor int64) {
	t.Helper()
	key := fmt.Sprintf("test-%d", e.refs.Add(1))
	if _, err := e.svc.Deposit(context.Background(), card, money.Amount{Minor: minor, Currency: eur}, key); err != nil {
		t.Fatalf("Deposit(%s, %d): %v", card, minor, err)
	}
}

// pending creates a pending purchase of amount for the merchant, bound
// to nobody, expiring after ttl.
func (e *env) pending(t *testing.T, m store.Merchant, amount int64, ttl time.Duration) store.Purchase {
	t.Helper()
	n := e.refs.Add(1)
	now := e.clock.Now()
	p := store.Purchase{ID: fmt.Sprintf("pur_%032x", n), Merchant: m.ID, Description: "test purchase", Amount: amount,
		Currency: eur, Digest: []byte{byte(n)}, Reference: fmt.Sprintf("%08d", n), Status: store.PurchasePending,
		Created: now, Expires: now.Add(ttl)}
	got, _, err := e.ms.CreatePurchase(context.Background(), p)
	if err != nil {
		t.Fatalf("CreatePurchase: %v", err)
	}
	return got
}

// authorized creates a purchase of amount by card and drives it to
// authorized through the store, as Offer and Approve do.
func (e *env) authorized(t *testing.T, card string, amount int64) store.Purchase {
	t.Helper()
	ctx := context.Background()
	p := e.pending(t, e.merchant, amount, 15*time.Minute)
	now := e.clock.Now()
	if _, err := e.ms.BindPurchase(ctx, p.ID, card, []byte("offer of "+p.ID), now); err != nil {
		t.Fatalf("BindPurchase: %v", err)
	}
	p, err := e.ms.AuthorizePurchase(ctx, p.ID, card, store.PurchaseApproval{Counter: 1, CVM: 1, Signature: []byte("sig"), Device: "dev_1"}, now)
	if err != nil {
		t.Fatalf("AuthorizePurchase: %v", err)
	}
	return p
}

// payment is the ledger transfer that pays p.
func (e *env) payment(p store.Purchase) ledger.Transfer {
	return ledger.Transfer{Key: TransferKey(p.ID), Currency: p.Currency, Memo: "purchase " + p.ID + " " + p.Reference,
		Legs: []ledger.Leg{{Account: ledger.HolderAccount(p.Card, p.Currency), Amount: -p.Amount}, {Account: e.merchant.Account, Amount: p.Amount}}}
}

// paid creates a purchase of amount that card paid: approved, its
// payment posted. The holder's account is funded with amount first.
func (e *env) paid(t *testing.T, card string, amount int64) store.Purchase {
	t.Helper()
	ctx := context.Background()
	e.deposit(t, card, amount)
	p := e.authorized(t, card, amount)
	posted, err := e.ledger.Transfer(ctx, e.payment(p))
	if err != nil {
		t.Fatalf("posting payment: %v", err)
	}
	p, err = e.ms.CompletePurchase(ctx, p.ID, posted.ID, "", e.clock.Now())
	if err != nil {
		t.Fatalf("CompletePurchase: %v", err)
	}
	if p.Status != store.PurchaseApproved {
		t.Fatalf("CompletePurchase: status %s, want approved", p.Status)
	}
	e.takeNotified()
	return p
}

// purchase reads p as stored.
func (e *env) purchase(t *testing.T, id string) store.Purchase {
	t.Helper()
	p, err := e.ms.Purchase(context.Background(), "", id)
	if err != nil {
		t.Fatalf("Purchase(%s): %v", id, err)
	}
	return p
}

func TestRefund(t *testing.T) {
	type step struct {
		amount  int64
		key     string
		wantErr error // nil: done
		want    int64 // the refund's amount when done
	}
	tests := []struct {
		name         string
		steps        []step
		wantStatus   store.PurchaseStatus
		wantRefunded int64
	}{
		{"full by default", []step{{0, "", nil, 1000}}, store.PurchaseRefunded, 1000},
		{"full explicit", []step{{1000, "", nil, 1000}}, store.PurchaseRefunded, 1000},
		{"partial", []step{{300, "", nil, 300}}, store.PurchaseRefundedPartially, 300},
		{"partial then rest", []step{{300, "a", nil, 300}, {0, "b", nil, 700}}, store.PurchaseRefunded, 1000},
		{"partial twice", []step{{300, "", nil, 300}, {200, "", nil, 200}}, store.PurchaseRefundedPartially, 500},
		{"above the amount", []step{{1001, "", store.ErrRefundTooLarge, 0}}, store.PurchaseApproved, 0},
		{"above the rest", []step{{600, "", nil, 600}, {401, "", store.ErrRefundTooLarge, 0}}, store.PurchaseRefundedPartially, 600},
		{"after full refund", []step{{0, "", nil, 1000}, {1, "", ErrNotPaid, 0}}, store.PurchaseRefunded, 1000},
		{"after full refund, rest", []step{{0, "", nil, 1000}, {0, "", ErrNotPaid, 0}}, store.PurchaseRefunded, 1000},
		{"negative", []step{{-1, "", ErrInvalid, 0}}, store.PurchaseApproved, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, e *env) {
				ctx := context.Background()
				p := e.paid(t, testCard, 1000)
				holder := ledger.HolderAccount(testCard, eur)
				var done int64
				for i, s := range tt.steps {
					r, replayed, err := e.svc.Refund(ctx, e.merchant, p.ID, s.amount, s.key)
					if s.wantErr != nil {
						if !errors.Is(err, s.wantErr) {
							t.Fatalf("step %d: Refund(%d) = %+v, %v; want %v", i, s.amount, r, err, s.wantErr)
						}
						continue
					}
					if err != nil || replayed {
						t.Fatalf("step %d: Refund(%d) = replayed %v, %v; want a new refund", i, s.amount, replayed, err)
					}
					if r.Status != store.RefundDone || r.Amount != s.want || r.Transfer == 0 || r.Purchase != p.ID {
						t.Errorf("step %d: Refund(%d) = %+v, want done, amount %d, a transfer", i, s.amount, r, s.want)
					}
					done += r.Amount
					n := e.takeNotified()
					if len(n) != 1 || n[0].ID != p.ID || n[0].Refunded != done {
						t.Errorf("step %d: notified %+v, want purchase %s once with refunded %d", i, n, p.ID, done)
					}
				}
				got := e.purchase(t, p.ID)
				if got.Status != tt.wantStatus || got.Refunded != tt.wantRefunded {
					t.Errorf("purchase = %s refunded %d, want %s refunded %d", got.Status, got.Refunded, tt.wantStatus, tt.wantRefunded)
				}
				if b := e.balance(t, holder); b != tt.wantRefunded {
					t.Errorf("holder balance = %d, want %d", b, tt.wantRefunded)
				}
				if b := e.balance(t, e.merchant.Account); b != 1000-tt.wantRefunded {
					t.Errorf("merchant balance = %d, want %d", b, 1000-tt.wantRefunded)
				}
			})
		})
	}
}

func TestRefundUnknown(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		p := e.paid(t, testCard, 1000)
		other := e.newMerchant(t, "mer_other")
		pend := e.pending(t, e.merchant, 500, time.Minute)
		tests := []struct {
			name     string
			merchant store.Merchant
			id       string
			want     error
		}{
			{"no such purchase", e.merchant, "pur_00000000000000000000000000000000", store.ErrNotFound},
			{"another merchant's", other, p.ID, store.ErrNotFound},
			{"pending", e.merchant, pend.ID, ErrNotPaid},
		}
		for _, tt := range tests {
			r, _, err := e.svc.Refund(ctx, tt.merchant, tt.id, 0, "")
			if !errors.Is(err, tt.want) {
				t.Errorf("%s: Refund = %+v, %v; want %v", tt.name, r, err, tt.want)
			}
		}
		if b := e.balance(t, e.merchant.Account); b != 1000 {
			t.Errorf("merchant balance = %d, want 1000", b)
		}
	})
}

func TestRefundIdempotent(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		p := e.paid(t, testCard, 1000)
		first, replayed, err := e.svc.Refund(ctx, e.merchant, p.ID, 400, "k1")
		if err != nil || replayed {
			t.Fatalf("Refund(400, k1) = replayed %v, %v; want a new refund", replayed, err)
		}
		again, replayed, err := e.svc.Refund(ctx, e.merchant, p.ID, 400, "k1")
		if err != nil || !replayed || again.ID != first.ID || again.Status != store.RefundDone {
			t.Errorf("Refund(400, k1) again = %+v, replayed %v, %v; want refund %s replayed", again, replayed, err, first.ID)
		}
		_, _, err = e.svc.Refund(ctx, e.merchant, p.ID, 500, "k1")
		if !errors.Is(err, store.ErrConflict) || errors.Is(err, ErrNotPaid) {
			t.Errorf("Refund(500, k1) = %v, want store.ErrConflict (key reused), not ErrNotPaid", err)
		}
		// The rest, keyed: a replay after the purchase is fully refunded
		// still answers the refund it made.
		rest, _, err := e.svc.Refund(ctx, e.merchant, p.ID, 0, "k2")
		if err != nil || rest.Amount != 600 {
			t.Fatalf("Refund(0, k2) = %+v, %v; want 600 refunded", rest, err)
		}
		again, replayed, err = e.svc.Refund(ctx, e.merchant, p.ID, 0, "k2")
		if err != nil || !replayed || again.ID != rest.ID {
			t.Errorf("Refund(0, k2) again = %+v, replayed %v, %v; want refund %s replayed", again, replayed, err, rest.ID)
		}
		if b := e.balance(t, e.merchant.Account); b != 0 {
			t.Errorf("merchant balance = %d, want 0 (each refund posted once)", b)
		}
		rs, err := e.ms.Refunds(ctx, p.ID)
		if err != nil || len(rs) != 2 {
			t.Errorf("Refunds = %d refunds, %v; want 2", len(rs), err)
		}
		if n := e.takeNotified(); len(n) != 2 {
			t.Errorf("notified %d times, want 2 (replays notify nothing)", len(n))
		}
	})
}

func TestRefundConcurrent(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		p := e.paid(t, testCard, 1000)
		const n = 8
		var wg sync.WaitGroup
		var done, tooLarge atomic.Int64
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				key := ""
				if i%2 == 0 {
					key = fmt.Sprintf("c%d", i)
				}
				r, _, err := e.svc.Refund(ctx, e.merchant, p.ID, 300, key)
				switch {
				case err == nil && r.Status == store.RefundDone:
					done.Add(r.Amount)
				case errors.Is(err, store.ErrRefundTooLarge):
					tooLarge.Add(1)
				default:
					errs <- fmt.Errorf("Refund(300) = %+v, %v; want done or ErrRefundTooLarge", r, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if done.Load() != 900 || tooLarge.Load() != n-3 {
			t.Errorf("refunded %d with %d refused, want 900 with %d refused", done.Load(), tooLarge.Load(), n-3)
		}
		got := e.purchase(t, p.ID)
		if got.Refunded != done.Load() {
			t.Errorf("purchase refunded = %d, want %d", got.Refunded, done.Load())
		}
		if b := e.balance(t, e.merchant.Account); b != 1000-done.Load() {
			t.Errorf("merchant balance = %d, want %d", b, 1000-done.Load())
		}
	})
}

func TestRefundMerchantShort(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		p := e.paid(t, testCard, 1000)
		// The merchant pays out 800 elsewhere: 200 left.
		out := store.Account{ID: "acct_payout", Kind: store.KindFunding, Currency: eur}
		if err := e.ledger.CreateAccount(ctx, out); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ledger.Transfer(ctx, ledger.Transfer{Key: "payout", Currency: eur,
			Legs: []ledger.Leg{{Account: e.merchant.Account, Amount: -800}, {Account: out.ID, Amount: 800}}}); err != nil {
			t.Fatal(err)
		}
		r, replayed, err := e.svc.Refund(ctx, e.merchant, p.ID, 500, "short")
		if !errors.Is(err, ErrRefundFailed) || replayed {
			t.Fatalf("Refund(500) = %+v, replayed %v, %v; want ErrRefundFailed", r, replayed, err)
		}
		if r.ID == "" || r.Status != store.RefundFailed || r.Reason != "merchant balance too low" || r.Transfer != 0 {
			t.Errorf("Refund(500) = %+v, want failed with reason %q", r, "merchant balance too low")
		}
		if b := e.balance(t, e.merchant.Account); b != 200 {
			t.Errorf("merchant balance = %d, want 200 (nothing posted)", b)
		}
		if b := e.balance(t, ledger.HolderAccount(testCard, eur)); b != 0 {
			t.Errorf("holder balance = %d, want 0 (nothing posted)", b)
		}
		if got := e.purchase(t, p.ID); got.Refunded != 0 || got.Status != store.PurchaseApproved {
			t.Errorf("purchase = %s refunded %d, want approved refunded 0", got.Status, got.Refunded)
		}
		if n := e.takeNotified(); len(n) != 0 {
			t.Errorf("notified %d times for a failed refund, want 0", len(n))
		}
		again, replayed, err := e.svc.Refund(ctx, e.merchant, p.ID, 500, "short")
		if !errors.Is(err, ErrRefundFailed) || !replayed || again.ID != r.ID {
			t.Errorf("Refund(500, short) again = %+v, replayed %v, %v; want refund %s failed, replayed", again, replayed, err, r.ID)
		}
		// The failed amount is free again: the whole 1000 can still be
		// refunded, 200 of it now.
		if r, _, err := e.svc.Refund(ctx, e.merchant, p.ID, 200, ""); err != nil || r.Status != store.RefundDone {
			t.Errorf("Refund(200) = %+v, %v; want done", r, err)
		}
	})
}

// TestSweepFinishesPendingRefund: a refund a crash left pending, before
// or after its posting, is finished by Sweep once.
func TestSweepFinishesPendingRefund(t *testing.T) {
	for _, posted := range []bool{false, true} {
		t.Run(fmt.Sprintf("posted=%v", posted), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, e *env) {
				ctx := context.Background()
				p := e.paid(t, testCard, 1000)
				now := e.clock.Now()
				r, _, err := e.ms.CreateRefund(ctx, store.Refund{ID: "ref_crashed", Purchase: p.ID, Merchant: p.Merchant,
					Amount: 250, Digest: refundDigest(250), Status: store.RefundPending, Created: now, Updated: now})
				if err != nil {
					t.Fatalf("CreateRefund: %v", err)
				}
				if posted {
					if _, err := e.ledger.Transfer(ctx, ledger.Transfer{Key: RefundKey(r.ID), Currency: eur,
						Memo: "refund " + r.ID + " of purchase " + p.ID,
						Legs: []ledger.Leg{{Account: e.merchant.Account, Amount: -250}, {Account: ledger.HolderAccount(testCard, eur), Amount: 250}}}); err != nil {
						t.Fatalf("posting refund: %v", err)
					}
				}
				// Within the grace period it is left alone: the call
				// that made it may still be running.
				if err := e.svc.Sweep(ctx); err != nil {
					t.Fatalf("Sweep: %v", err)
				}
				if rs, _ := e.ms.Refunds(ctx, p.ID); len(rs) != 1 || rs[0].Status != store.RefundPending {
					t.Fatalf("refunds after an early Sweep = %+v, want one pending", rs)
				}
				e.clock.Add(sweepGrace + time.Second)
				for i := range 2 {
					if err := e.svc.Sweep(ctx); err != nil {
						t.Fatalf("Sweep %d: %v", i, err)
					}
				}
				rs, err := e.ms.Refunds(ctx, p.ID)
				if err != nil || len(rs) != 1 || rs[0].Status != store.RefundDone || rs[0].Transfer == 0 {
					t.Fatalf("refunds after Sweep = %+v, %v; want one done", rs, err)
				}
				if b := e.balance(t, e.merchant.Account); b != 750 {
					t.Errorf("merchant balance = %d, want 750 (refund posted once)", b)
				}
				if b := e.balance(t, ledger.HolderAccount(testCard, eur)); b != 250 {
					t.Errorf("holder balance = %d, want 250", b)
				}
				if got := e.purchase(t, p.ID); got.Refunded != 250 || got.Status != store.PurchaseRefundedPartially {
					t.Errorf("purchase = %s refunded %d, want refunded-partially 250", got.Status, got.Refunded)
				}
				if n := e.takeNotified(); len(n) != 1 || n[0].Refunded != 250 {
					t.Errorf("notified %+v, want the purchase once, refunded 250", n)
				}
			})
		})
	}
}

// TestSweepSettlesAuthorized: a purchase a crash left authorized, before
// or after its payment was posted, is settled by Sweep once.
func TestSweepSettlesAuthorized(t *testing.T) {
	for _, posted := range []bool{false, true} {
		t.Run(fmt.Sprintf("posted=%v", posted), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, e *env) {
				ctx := context.Background()
				e.deposit(t, testCard, 1000)
				p := e.authorized(t, testCard, 600)
				if posted {
					if _, err := e.ledger.Transfer(ctx, e.payment(p)); err != nil {
						t.Fatalf("posting payment: %v", err)
					}
				}
				e.clock.Add(sweepGrace + time.Second)
				for i := range 2 {
					if err := e.svc.Sweep(ctx); err != nil {
						t.Fatalf("Sweep %d: %v", i, err)
					}
				}
				got := e.purchase(t, p.ID)
				if got.Status != store.PurchaseApproved || got.Transfer == 0 {
					t.Errorf("purchase after Sweep = %s transfer %d, want approved with a transfer", got.Status, got.Transfer)
				}
				if b := e.balance(t, e.merchant.Account); b != 600 {
					t.Errorf("merchant balance = %d, want 600 (paid once)", b)
				}
				if b := e.balance(t, ledger.HolderAccount(testCard, eur)); b != 400 {
					t.Errorf("holder balance = %d, want 400", b)
				}
				if n := e.takeNotified(); len(n) != 1 || n[0].Status != store.PurchaseApproved {
					t.Errorf("notified %+v, want the purchase once, approved", n)
				}
			})
		})
	}
}

// TestSweepSettlesManyAuthorized: one Sweep settles more purchases left
// authorized than it reads in a batch.
func TestSweepSettlesManyAuthorized(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		n := sweepBatch + 3
		e.deposit(t, testCard, int64(n))
		for range n {
			e.authorized(t, testCard, 1)
		}
		e.clock.Add(sweepGrace + time.Second)
		if err := e.svc.Sweep(ctx); err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		if b := e.balance(t, e.merchant.Account); b != int64(n) {
			t.Errorf("merchant balance after one Sweep = %d, want %d (every purchase settled)", b, n)
		}
		if left, err := e.ms.AuthorizedPurchases(ctx, e.clock.Now(), 2*n); err != nil || len(left) != 0 {
			t.Errorf("AuthorizedPurchases after one Sweep = %d left, %v; want none", len(left), err)
		}
	})
}

func TestSweepExpires(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		old := e.pending(t, e.merchant, 100, time.Minute)
		fresh := e.pending(t, e.merchant, 100, time.Hour)
		e.clock.Add(2 * time.Minute)
		for i := range 2 {
			if err := e.svc.Sweep(ctx); err != nil {
				t.Fatalf("Sweep %d: %v", i, err)
			}
		}
		if got := e.purchase(t, old.ID); got.Status != store.PurchaseExpired {
			t.Errorf("expired request: status %s, want expired", got.Status)
		}
		if got := e.purchase(t, fresh.ID); got.Status != store.PurchasePending {
			t.Errorf("fresh request: status %s, want pending", got.Status)
		}
		n := e.takeNotified()
		if len(n) != 1 || n[0].ID != old.ID || n[0].Status != store.PurchaseExpired {
			t.Errorf("notified %+v, want %s once, expired", n, old.ID)
		}
	})
}

func TestRun(t *testing.T) {
	e := newEnv(t, servertest.SQLite(t))
	p := e.pending(t, e.merchant, 100, time.Minute)
	e.clock.Add(2 * time.Minute)
	got := make(chan store.Purchase, 10)
	e.svc.notify = func(_ context.Context, p store.Purchase) { got <- p }
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.svc.Run(ctx, time.Hour)
	}()
	select {
	case n := <-got:
		if n.ID != p.ID || n.Status != store.PurchaseExpired {
			t.Errorf("Run notified %s %s, want %s expired", n.ID, n.Status, p.ID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run swept nothing within 20 s")
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20 s of its context ending")
	}
}

func TestDeposit(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		holder := ledger.HolderAccount(otherCard, eur)
		first, err := e.svc.Deposit(ctx, otherCard, money.Amount{Minor: 5000, Currency: eur}, "d1")
		if err != nil || first.Replayed || first.Key != "deposit:d1" {
			t.Fatalf("Deposit(d1) = %+v, %v; want posted under deposit:d1", first, err)
		}
		again, err := e.svc.Deposit(ctx, otherCard, money.Amount{Minor: 5000, Currency: eur}, "d1")
		if err != nil || !again.Replayed || again.ID != first.ID {
			t.Errorf("Deposit(d1) again = %+v, %v; want transfer %d replayed", again, err, first.ID)
		}
		if _, err := e.svc.Deposit(ctx, otherCard, money.Amount{Minor: 5000, Currency: eur}, "d2"); err != nil {
			t.Fatalf("Deposit(d2): %v", err)
		}
		if b := e.balance(t, holder); b != 10000 {
			t.Errorf("holder balance = %d, want 10000", b)
		}
		if b := e.balance(t, ledger.FundingAccount(eur)); b != -10000 {
			t.Errorf("funding balance = %d, want -10000", b)
		}
		sl := e.st.(store.Ledger)
		for id, want := range map[string]store.AccountKind{holder: store.KindHolder, ledger.FundingAccount(eur): store.KindFunding} {
			a, err := sl.Account(ctx, id)
			if err != nil || a.Kind != want || a.Currency != eur {
				t.Errorf("Account(%s) = %+v, %v; want kind %s in EUR", id, a, err, want)
			}
		}
		tests := []struct {
			name   string
			card   string
			amount money.Amount
			key    string
			want   error
		}{
			{"key reused, other amount", otherCard, money.Amount{Minor: 1, Currency: eur}, "d1", store.ErrConflict},
			{"key reused, other card", testCard, money.Amount{Minor: 5000, Currency: eur}, "d1", store.ErrConflict},
			{"unknown card", "4000000000000002", money.Amount{Minor: 1, Currency: eur}, "x1", store.ErrNotFound},
			{"bad card number", "4111111111111112", money.Amount{Minor: 1, Currency: eur}, "x2", ErrInvalid},
			{"zero", otherCard, money.Amount{Minor: 0, Currency: eur}, "x3", ErrInvalid},
			{"negative", otherCard, money.Amount{Minor: -5, Currency: eur}, "x4", ErrInvalid},
			{"unknown currency", otherCard, money.Amount{Minor: 1, Currency: "XYZ"}, "x5", ErrInvalid},
			{"no key", otherCard, money.Amount{Minor: 1, Currency: eur}, "", ErrInvalid},
		}
		for _, tt := range tests {
			if got, err := e.svc.Deposit(ctx, tt.card, tt.amount, tt.key); !errors.Is(err, tt.want) {
				t.Errorf("%s: Deposit(%s, %v, %q) = %+v, %v; want %v", tt.name, tt.card, tt.amount, tt.key, got, err, tt.want)
			}
		}
		if b := e.balance(t, holder); b != 10000 {
			t.Errorf("holder balance after refused deposits = %d, want 10000", b)
		}
	})
}

// TestRefundLedgerDown: a refund whose posting cannot be made (the
// ledger stopped, as when the server shuts down) is left pending and
// returned with the error; a server started again finishes it with Sweep.
func TestRefundLedgerDown(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		p := e.paid(t, testCard, 1000)
		e.ledger.Close()
		r, _, err := e.svc.Refund(ctx, e.merchant, p.ID, 400, "down")
		if err == nil || errors.Is(err, ErrRefundFailed) || r.ID == "" || r.Status != store.RefundPending {
			t.Fatalf("Refund with the ledger closed = %+v, %v; want the refund pending and an error", r, err)
		}
		// Restart: a new ledger and service on the same store.
		e.ledger = ledger.New(e.st.(store.Ledger), ledger.Options{Now: e.clock.Now})
		t.Cleanup(func() { e.ledger.Close() })
		svc, err := New(Config{Store: e.st, Ledger: e.ledger, Auth: e.svc.cfg.Auth, Now: e.clock.Now, Notify: e.notify})
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Add(sweepGrace + time.Second)
		if err := svc.Sweep(ctx); err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		again, replayed, err := svc.Refund(ctx, e.merchant, p.ID, 400, "down")
		if err != nil || !replayed || again.ID != r.ID || again.Status != store.RefundDone {
			t.Errorf("Refund replayed after Sweep = %+v, replayed %v, %v; want %s done", again, replayed, err, r.ID)
		}
		if b := e.balance(t, e.merchant.Account); b != 600 {
			t.Errorf("merchant balance = %d, want 600", b)
		}
	})
}
