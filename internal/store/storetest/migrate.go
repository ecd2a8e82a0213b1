package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"cardlink/internal/store"
)

// Migrator reaches into a backend's migrations for RunMigrations. The
// backend's test exports these from its internals.
type Migrator struct {
	// Migrate applies the migrations in fsys (migrations/NNNN_name.sql),
	// as Open does with the embedded ones.
	Migrate func(fsys fstest.MapFS) error
	// HasTable reports whether the store's schema has the table.
	HasTable func(name string) (bool, error)
	// Version returns the schema version.
	Version func() (int, error)
}

// RunMigrations checks, on a store its backend just opened (at the schema
// version of its own migrations, n), that a failing migration leaves
// nothing of the whole run behind, that a good one is applied once and
// recorded, and that misnumbered files are refused.
func RunMigrations(t *testing.T, m Migrator) {
	file := func(sql string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(sql)} }
	n, err := m.Version()
	if err != nil || n < 1 {
		t.Fatalf("Version = %d, %v; want at least 1", n, err)
	}
	// have returns the files of the n applied migrations, never run again,
	// plus extra.
	have := func(extra map[string]string) fstest.MapFS {
		fsys := fstest.MapFS{}
		for i := 1; i <= n; i++ {
			fsys[fmt.Sprintf("migrations/%04d_old.sql", i)] = file("this is never run again")
		}
		for name, sql := range extra {
			fsys["migrations/"+name] = file(sql)
		}
		return fsys
	}
	num := func(i int, name string) string { return fmt.Sprintf("%04d_%s.sql", i, name) }
	good := "CREATE TABLE mig_good (x integer);"
	bad := "CREATE TABLE mig_bad (x integer); SELECT * FROM mig_no_such_table;"

	state := func(what string, version int, tables map[string]bool) {
		t.Helper()
		v, err := m.Version()
		if err != nil || v != version {
			t.Fatalf("%s: Version = %d, %v; want %d", what, v, err, version)
		}
		for name, want := range tables {
			if got, err := m.HasTable(name); err != nil || got != want {
				t.Fatalf("%s: HasTable(%s) = %v, %v; want %v", what, name, got, err, want)
			}
		}
	}
	state("before", n, map[string]bool{"challenges": true, "mig_good": false})

	tests := []struct {
		name    string
		fsys    fstest.MapFS
		wantErr string // substring; empty for success
		version int
		tables  map[string]bool
	}{
		{"failing later migration", have(map[string]string{num(n+1, "good"): good, num(n+2, "bad"): bad}),
			num(n+2, "bad"), n, map[string]bool{"mig_good": false, "mig_bad": false}},
		{"gap in numbers", have(map[string]string{num(n+2, "good"): good}),
			fmt.Sprintf("want number %04d", n+1), n, map[string]bool{"mig_good": false}},
		{"not numbered", have(map[string]string{"good.sql": good}),
			"want number", n, map[string]bool{"mig_good": false}},
		{"good next migration", have(map[string]string{num(n+1, "good"): good}),
			"", n + 1, map[string]bool{"mig_good": true}},
		{"again: nothing to do", have(map[string]string{num(n+1, "good"): good}),
			"", n + 1, map[string]bool{"mig_good": true}},
		{"older program", have(nil),
			"newer than this program", n + 1, map[string]bool{"mig_good": true}},
	}
	for _, tt := range tests {
		err := m.Migrate(tt.fsys)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Fatalf("%s: Migrate = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Fatalf("%s: Migrate = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
		state(tt.name, tt.version, tt.tables)
	}
}

// Upgrader reaches into a backend for RunUpgrade.
type Upgrader struct {
	// Open opens a Store on the test's database (storetest.OpenFunc).
	Open OpenFunc
	// Exec runs one SQL statement on s.
	Exec func(s store.Store, query string) error
	// Version returns the schema version of s.
	Version func(s store.Store) (int, error)
}

// RunUpgrade checks that a database made by the first release (schema
// version 1, before the biometrics table) is brought up to date when a
// Store opens it, keeping its data: it opens a database, takes it back to
// version 1 by hand, and opens it again. A subtest does the same from
// version 4 with a purchase request in the database.
func RunUpgrade(t *testing.T, u Upgrader) {
	ctx := context.Background()
	s1 := u.Open(t)
	addCard(t, s1, cardA)
	must(t, "SetPIN", s1.SetPIN(ctx, store.PIN{Card: cardA, Hash: []byte("h"), Salt: []byte("s"), Params: "p", MaxTries: 3}))
	for _, q := range []string{`DROP TABLE refunds`, `DROP TABLE purchases`, `DROP TABLE merchant_items`, `DROP TABLE merchants`, `DROP TABLE ledger_entries`, `DROP TABLE ledger_transfers`, `DROP TABLE ledger_accounts`,
		`DROP TABLE biometrics`, `DELETE FROM schema_version WHERE version >= 2`} {
		must(t, "Exec("+q+")", u.Exec(s1, q))
	}
	if v, err := u.Version(s1); err != nil || v != 1 {
		t.Fatalf("Version after going back = %d, %v; want 1", v, err)
	}
	s2 := u.Open(t)
	if v, err := u.Version(s2); err != nil || v < 2 {
		t.Fatalf("Version after reopening = %d, %v; want at least 2", v, err)
	}
	if p, err := s2.PIN(ctx, cardA); err != nil || p.Tries != 3 {
		t.Fatalf("PIN after the upgrade = %+v, %v; want the version 1 record", p, err)
	}
	must(t, "SetBiometric after the upgrade", s2.SetBiometric(ctx, store.Biometric{Card: cardA, Template: []byte{1}, MaxTries: 1}))
	t.Run("from version 4", func(t *testing.T) { upgradeFrom4(t, u) })
	t.Run("from version 7", func(t *testing.T) { upgradeFrom7(t, u) })
}

// upgradeFrom4 checks that a purchase request made at schema version 4
// (before the purchase lifecycle's columns) reads after the upgrade with
// Updated = Created and no card, and can be bound.
func upgradeFrom4(t *testing.T, u Upgrader) {
	ctx := context.Background()
	s1 := u.Open(t)
	ms, ok := s1.(store.Merchants)
	if !ok {
		t.Skip("backend has no store.Merchants")
	}
	must(t, "CreateMerchant", ms.CreateMerchant(ctx, store.Merchant{ID: "m", Name: "M", KeyHash: []byte{1},
		WebhookSecret: []byte{2}, Created: t0}))
	p := store.Purchase{ID: "pu_old", Merchant: "m", Description: "old", Amount: 5, Currency: "EUR", Digest: []byte("d"),
		Reference: "12345678", Status: store.PurchasePending, Created: t0, Expires: t0.Add(time.Hour)}
	_, _, err := ms.CreatePurchase(ctx, p)
	must(t, "CreatePurchase", err)
	qs := []string{`DROP TABLE refunds`, `DROP INDEX purchases_pending_card`, `DROP INDEX purchases_pending_expires`,
		`DROP INDEX purchases_authorized_updated`, `DROP INDEX purchases_paid_card_reference`}
	for _, c := range []string{"card", "offer", "approval_counter", "approval_cvm", "approval_signature", "approval_device",
		"approval_matched_by", "transfer", "refunded", "reason", "updated"} {
		qs = append(qs, `ALTER TABLE purchases DROP COLUMN `+c)
	}
	for _, q := range append(qs, `DELETE FROM schema_version WHERE version >= 5`) {
		must(t, "Exec("+q+")", u.Exec(s1, q))
	}
	s2 := u.Open(t).(store.Merchants)
	got, err := s2.Purchase(ctx, "", "pu_old")
	if err != nil || got.Card != "" || got.Offer != nil || got.Approval != nil || !got.Updated.Equal(t0) || got.Reason != "" {
		t.Fatalf("Purchase(pu_old) after the upgrade = %+v, %v; want it unbound with Updated = Created", got, err)
	}
	if _, err := s2.BindPurchase(ctx, "pu_old", cardA, []byte("offer"), t0); err != nil {
		t.Fatalf("BindPurchase(pu_old) after the upgrade = %v, want nil", err)
	}
}

// upgradeFrom7 checks that purchases in every status, made at schema
// version 7 (the indexes by status and last change and by card and
// reference held every purchase), are found by every query after the
// upgrade to the partial indexes of version 8, and that the lifecycle
// goes on: the authorized one is approved, the pending ones expire.
func upgradeFrom7(t *testing.T, u Upgrader) {
	ctx := context.Background()
	s1 := u.Open(t)
	if _, ok := s1.(store.Merchants); !ok {
		t.Skip("backend has no store.Merchants")
	}
	for _, q := range []string{`DROP INDEX purchases_authorized_updated`, `DROP INDEX purchases_paid_card_reference`,
		`CREATE INDEX purchases_status_updated ON purchases (status, updated, id)`,
		`CREATE INDEX purchases_card_reference ON purchases (card, reference, created, id)`,
		`DELETE FROM schema_version WHERE version >= 8`} {
		must(t, "Exec("+q+")", u.Exec(s1, q))
	}
	if v, err := u.Version(s1); err != nil || v != 7 {
		t.Fatalf("Version after going back = %d, %v; want 7", v, err)
	}

	// Purchases in every status, made on the version 7 indexes.
	s := newShop(t, func(testing.TB) store.Store { return s1 })
	s.create("pu_pending", "", "11111111", "", 0)
	s.create("pu_pushed", "", "22222222", cardA, 1)
	s.create("pu_bound", "", "33333333", "", 2)
	_, err := s.ms.BindPurchase(ctx, "pu_bound", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_bound)", err)
	s.create("pu_auth", "", "44444444", "", 3)
	_, err = s.ms.BindPurchase(ctx, "pu_auth", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_auth)", err)
	_, err = s.ms.AuthorizePurchase(ctx, "pu_auth", cardA, approval("pu_auth"), t0)
	must(t, "AuthorizePurchase(pu_auth)", err)
	s.create("pu_paid", "", "55555555", "", 4)
	s.pay("pu_paid")
	for _, r := range []struct {
		id, ref, refund string
		amount          int64
	}{{"pu_part", "66666666", "rf_part", 400}, {"pu_full", "77777777", "rf_full", 1000}} {
		s.create(r.id, "", r.ref, "", 5)
		s.pay(r.id)
		_, _, err := s.ms.CreateRefund(ctx, store.Refund{ID: r.refund, Purchase: r.id, Merchant: "m_shop",
			Amount: r.amount, Digest: []byte(r.refund), Created: t0})
		must(t, "CreateRefund("+r.refund+")", err)
		_, err = s.ms.FinishRefund(ctx, r.refund, 98, "", t0)
		must(t, "FinishRefund("+r.refund+")", err)
	}
	s.create("pu_declined", "", "88888888", "", 6)
	_, err = s.ms.BindPurchase(ctx, "pu_declined", cardA, []byte("offer"), t0)
	must(t, "BindPurchase(pu_declined)", err)
	_, err = s.ms.DeclinePurchase(ctx, "pu_declined", cardA, "no", t0)
	must(t, "DeclinePurchase(pu_declined)", err)
	_, _, err = s.ms.CreatePurchase(ctx, store.Purchase{ID: "pu_expired", Merchant: "m_shop", Description: "soon",
		Amount: 5, Currency: "EUR", Digest: []byte("d"), Reference: "99999999", Status: store.PurchasePending,
		Created: t0, Expires: t0.Add(time.Minute)})
	must(t, "CreatePurchase(pu_expired)", err)
	ps, err := s.ms.ExpirePurchases(ctx, t0.Add(2*time.Minute), 10)
	wantIDs(t, "ExpirePurchases before the upgrade", ps, err, "pu_expired")

	s2 := u.Open(t)
	if v, err := u.Version(s2); err != nil || v < 8 {
		t.Fatalf("Version after reopening = %d, %v; want at least 8", v, err)
	}
	ms := s2.(store.Merchants)
	for id, want := range map[string]store.PurchaseStatus{"pu_pending": store.PurchasePending,
		"pu_pushed": store.PurchasePending, "pu_bound": store.PurchasePending, "pu_auth": store.PurchaseAuthorized,
		"pu_paid": store.PurchaseApproved, "pu_part": store.PurchaseRefundedPartially, "pu_full": store.PurchaseRefunded,
		"pu_declined": store.PurchaseDeclined, "pu_expired": store.PurchaseExpired} {
		if p, err := ms.Purchase(ctx, "m_shop", id); err != nil || p.Status != want {
			t.Errorf("Purchase(%s) after the upgrade = %s, %v; want %s", id, p.Status, err, want)
		}
	}
	for ref, want := range map[string]string{"11111111": "pu_pending", "33333333": "pu_bound", "44444444": "",
		"99999999": ""} {
		p, err := ms.PendingPurchase(ctx, ref, t0)
		if want == "" {
			wantErr(t, "PendingPurchase("+ref+") after the upgrade", err, store.ErrNotFound)
		} else if err != nil || p.ID != want {
			t.Errorf("PendingPurchase(%s) after the upgrade = %s, %v; want %s", ref, p.ID, err, want)
		}
	}
	ps, err = ms.PendingPurchasesForCard(ctx, cardA, t0, 10)
	wantIDs(t, "PendingPurchasesForCard after the upgrade", ps, err, "pu_pushed", "pu_bound")
	ps, err = ms.AuthorizedPurchases(ctx, t0.Add(time.Hour), 10)
	wantIDs(t, "AuthorizedPurchases after the upgrade", ps, err, "pu_auth")
	paid := func(when string, want map[string]string) {
		t.Helper()
		for ref, id := range want {
			p, err := ms.PaidPurchase(ctx, ref, cardA)
			if id == "" {
				wantErr(t, "PaidPurchase("+ref+") "+when, err, store.ErrNotFound)
			} else if err != nil || p.ID != id {
				t.Errorf("PaidPurchase(%s) %s = %s, %v; want %s", ref, when, p.ID, err, id)
			}
		}
	}
	paid("after the upgrade", map[string]string{"55555555": "pu_paid", "66666666": "pu_part", "77777777": "",
		"44444444": "", "88888888": "", "33333333": ""})

	// The lifecycle goes on over the new indexes.
	_, err = ms.CompletePurchase(ctx, "pu_auth", 99, "", t0)
	must(t, "CompletePurchase(pu_auth) after the upgrade", err)
	ps, err = ms.AuthorizedPurchases(ctx, t0.Add(time.Hour), 10)
	wantIDs(t, "AuthorizedPurchases after approving", ps, err)
	paid("after approving", map[string]string{"44444444": "pu_auth"})
	ps, err = ms.ExpirePurchases(ctx, t0.Add(11*time.Minute), 10)
	slices.SortFunc(ps, func(a, b store.Purchase) int { return strings.Compare(a.ID, b.ID) })
	wantIDs(t, "ExpirePurchases after the upgrade", ps, err, "pu_bound", "pu_pending", "pu_pushed")
}
