package ivr_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/audio/impair"
	"cardlink/internal/device"
	"cardlink/internal/line"
	"cardlink/internal/line/linetest"
	"cardlink/internal/money"
	"cardlink/internal/server"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ivr"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// testTimeout bounds every test's calls in real time.
const testTimeout = 3 * time.Minute

// speed is the switch's line time per real time in these tests
// (-ivr.speed; 1 for real time).
var speedFlag = flag.Float64("ivr.speed", 4, "the switch's speed in the end-to-end tests")

// logFlag prints the log of every test (-ivr.log), not only of failed ones.
var logFlag = flag.Bool("ivr.log", false, "print the server's, IVR's and device's log of every test")

// bed is a real device server (SQLite store, ledger, purchase service), a
// merchant, a funded card the server knows, a registered device, and a
// telephone switch at 20 dB SNR with band-limiting and clock drift.
type bed struct {
	st       store.Store
	ms       store.Merchants
	ledger   *ledger.Ledger
	svc      *purchase.Service
	srv      *server.Server
	id       device.Identity
	card     *wallettest.Env
	merchant store.Merchant
	addr     string // the switch
	impaired impair.Config

	logMu sync.Mutex
	logs  strings.Builder
	log   *slog.Logger
}

func newBed(t *testing.T) *bed {
	t.Helper()
	b := &bed{st: servertest.SQLite(t)}
	b.ms = b.st.(store.Merchants)
	b.card = servertest.Card(t)
	as, err := auth.New(auth.Config{Store: b.st, CA: b.card.CA})
	if err != nil {
		t.Fatal(err)
	}
	b.ledger = ledger.New(b.st.(store.Ledger), ledger.Options{})
	t.Cleanup(func() { b.ledger.Close() })
	b.svc, err = purchase.New(purchase.Config{Store: b.st, Ledger: b.ledger, Auth: as,
		SignItem: func(it *txn.Item) ([]byte, error) {
			_, sig, err := txn.ParseSignedItem(b.card.SignItem(it))
			return sig, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b.merchant = servertest.Merchant(t, b.ledger, b.ms, store.Merchant{ID: "mer_" + rand.Text(), Name: "Corner Shop",
		KeyHash: []byte(rand.Text()), WebhookSecret: []byte("s"), Created: now})
	servertest.PutCard(t, b.st, b.card, now)
	if _, err := b.svc.Deposit(context.Background(), b.card.CardNumber, money.Amount{Minor: 10_000, Currency: "EUR"}, rand.Text()); err != nil {
		t.Fatal(err)
	}
	pubs, err := server.EnsureKey(context.Background(), b.st)
	if err != nil {
		t.Fatal(err)
	}
	b.id = servertest.Device(t, b.st, "inline", pubs, "", now)
	b.log = slog.New(slog.NewTextHandler(lockedWriter{b}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() || *logFlag {
			t.Logf("log:\n%s", b.logText())
		}
	})
	b.srv = server.New(server.Config{Auth: as, Store: b.st, Purchases: b.svc, Logger: b.log})

	b.impaired = impair.Config{BandLimit: true, DriftPPM: 80, NoiseDBFS: line.NoiseForSNR(20, -10, 0)}
	_, b.addr = linetest.Start(t, line.Config{Line: b.impaired, Speed: *speedFlag})
	return b
}

type lockedWriter struct{ b *bed }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.b.logMu.Lock()
	defer w.b.logMu.Unlock()
	return w.b.logs.Write(p)
}

func (b *bed) logText() string {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	return b.logs.String()
}

// newPurchase creates a pending purchase request of minor cents.
func (b *bed) newPurchase(t *testing.T, minor int64) store.Purchase {
	t.Helper()
	now := time.Now()
	var id [16]byte
	rand.Read(id[:])
	var n uint32
	for _, c := range id[:4] {
		n = n<<8 | uint32(c)
	}
	p := store.Purchase{ID: "pur_" + hex.EncodeToString(id[:]), Merchant: b.merchant.ID, Description: "Two coffees",
		Amount: minor, Currency: "EUR", Digest: id[:], Reference: fmt.Sprintf("%08d", n%100_000_000),
		Status: store.PurchasePending, Created: now, Expires: now.Add(10 * time.Minute)}
	got, _, err := b.ms.CreatePurchase(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// serveIVR answers calls to number with cfg (Devices, Purchases and
// Logger filled in when empty) until the test ends, and returns the
// outcomes as they come.
func (b *bed) serveIVR(t *testing.T, number string, lines int, cfg ivr.Config) <-chan ivr.Outcome {
	t.Helper()
	if cfg.Devices == nil {
		cfg.Devices = b.srv
	}
	if cfg.Purchases == nil {
		cfg.Purchases = b.ms
	}
	if cfg.Logger == nil {
		cfg.Logger = b.log
	}
	s, err := ivr.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l, err := line.Listen(ctx, b.addr, number, &line.ListenOptions{Lines: lines, Window: ivr.Window})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan ivr.Outcome, 16)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l, func(o ivr.Outcome) { out <- o }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v after cancel", err)
		}
		l.Close()
	})
	return out
}

func waitOutcome(t *testing.T, out <-chan ivr.Outcome) ivr.Outcome {
	t.Helper()
	select {
	case o := <-out:
		return o
	case <-time.After(testTimeout):
		t.Fatal("no call outcome in time")
		return ivr.Outcome{}
	}
}
