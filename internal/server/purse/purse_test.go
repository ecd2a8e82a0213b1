package purse_test

import (
	"context"
	"path/filepath"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purse"
	"cardlink/internal/store"
	"cardlink/internal/store/sqlite"
	"cardlink/internal/txn"
)

func TestKeys(t *testing.T) {
	id := [16]byte{0xab, 1}
	tests := []struct{ name, got, want string }{
		{"OpID", purse.OpID(id), "po_ab010000000000000000000000000000"},
		{"RedemptionID", purse.RedemptionID(id), "rd_ab010000000000000000000000000000"},
		{"LoadKey", purse.LoadKey("4000001234567899", 7), "load:4000001234567899:7"},
		{"RedeemKey", purse.RedeemKey("4000001234567899", 42), "redeem:4000001234567899:42"},
		{"UnloadKey", purse.UnloadKey("po_x"), "unload:po_x"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lg := ledger.New(st, ledger.Options{})
	defer lg.Close()
	as, err := auth.New(auth.Config{Store: st, CA: wallettest.New(t, wallettest.Options{}).CA})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(*txn.Load) ([]byte, error) { return nil, nil }
	tests := []struct {
		name string
		cfg  purse.Config
		ok   bool
	}{
		{"complete", purse.Config{Store: st, Ledger: lg, Auth: as, SignLoad: sign}, true},
		{"no store", purse.Config{Ledger: lg, Auth: as, SignLoad: sign}, false},
		{"no ledger", purse.Config{Store: st, Auth: as, SignLoad: sign}, false},
		{"no auth", purse.Config{Store: st, Ledger: lg, SignLoad: sign}, false},
		{"no signer", purse.Config{Store: st, Ledger: lg, Auth: as}, false},
		{"store without purses", purse.Config{Store: struct{ store.Store }{st}, Ledger: lg, Auth: as, SignLoad: sign}, false},
		{"issuer name too long", purse.Config{Store: st, Ledger: lg, Auth: as, SignLoad: sign, Issuer: "an issuer whose name is far too long to show"}, false},
	}
	for _, tt := range tests {
		if _, err := purse.New(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("New(%s) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}
