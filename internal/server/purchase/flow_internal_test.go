package purchase

import (
	"context"
	"sync"
	"testing"

	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
)

// TestSettleRace settles N authorized purchases of one card at once, with
// funds for only K of them: exactly K are approved, the others declined
// for funds, and the holder's account ends at exactly 0.
//
// Why settle and not Approve: a holder account belongs to one card, and
// one card's signatures carry a counter that must grow at the server; N
// approvals of one card arriving at once would reach the counter check
// out of order and flag the card as cloned, which is the right answer for
// them. So the card's approvals are authorized one after another (here
// through the store, as Approve does after the signature checks), and the
// race for the funds — the ledger postings and the completions — runs
// concurrently, which is where it is decided.
func TestSettleRace(t *testing.T) {
	const (
		n      = 12
		k      = 5
		amount = 300
	)
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.deposit(t, testCard, k*amount)
		ps := make([]store.Purchase, n)
		for i := range ps {
			ps[i] = e.authorized(t, testCard, amount)
		}
		got := make([]store.Purchase, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range ps {
			wg.Go(func() { got[i], errs[i] = e.svc.settle(ctx, ps[i]) })
		}
		wg.Wait()
		approved := 0
		for i, p := range got {
			if errs[i] != nil {
				t.Fatalf("settle(%s) = %v", ps[i].ID, errs[i])
			}
			switch {
			case p.Status == store.PurchaseApproved && p.Transfer != 0:
				approved++
			case p.Status == store.PurchaseDeclined && p.Reason == ReasonFunds && p.Transfer == 0:
			default:
				t.Errorf("settle(%s) = %s %q transfer %d, want approved with a transfer or declined for funds", p.ID, p.Status, p.Reason, p.Transfer)
			}
			if stored := e.purchase(t, p.ID); stored.Status != p.Status {
				t.Errorf("purchase %s stored as %s, settle returned %s", p.ID, stored.Status, p.Status)
			}
		}
		if approved != k {
			t.Errorf("%d of %d purchases approved, want exactly %d", approved, n, k)
		}
		if b := e.balance(t, ledger.HolderAccount(testCard, eur)); b != 0 {
			t.Errorf("holder balance = %d, want 0", b)
		}
		if b := e.balance(t, e.merchant.Account); b != k*amount {
			t.Errorf("merchant balance = %d, want %d", b, k*amount)
		}
		if got := len(e.takeNotified()); got != n {
			t.Errorf("%d notifications, want %d (one per purchase)", got, n)
		}
		// Settling again (a Sweep after a crash) changes nothing.
		for _, p := range ps[:2] {
			again, err := e.svc.settle(ctx, p)
			if err != nil || again.Status == store.PurchaseAuthorized {
				t.Errorf("settle(%s) again = %s, %v; want it as completed", p.ID, again.Status, err)
			}
		}
		if b := e.balance(t, ledger.HolderAccount(testCard, eur)); b != 0 {
			t.Errorf("holder balance after settling again = %d, want 0", b)
		}
	})
}

func TestText(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		fallback string
		want     string
	}{
		{"fits", "Corner Shop", 40, "x", "Corner Shop"},
		{"cut on a rune", "ab€", 4, "x", "ab"},
		{"cut after a rune", "ab€c", 5, "x", "ab€"},
		{"control characters", "a\tb\nc", 10, "x", "a b c"},
		{"invalid UTF-8", "a\xffb", 10, "x", "a b"},
		{"trimmed before cutting", "   abc", 3, "x", "abc"},
		{"trailing space after the cut", "ab cd", 3, "x", "ab"},
		{"empty", "", 10, "fallback", "fallback"},
		{"only spaces", " \t ", 10, "fallback", "fallback"},
		{"nothing at all", "", 10, "", "-"},
	}
	for _, tt := range tests {
		if got := text(tt.in, tt.max, tt.fallback); got != tt.want {
			t.Errorf("%s: text(%q, %d, %q) = %q, want %q", tt.name, tt.in, tt.max, tt.fallback, got, tt.want)
		}
	}
}
