package modem_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/audio/impair"
	"cardlink/internal/device"
	"cardlink/internal/line"
	"cardlink/internal/line/linetest"
	"cardlink/internal/link/arq"
	"cardlink/internal/link/modem"
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

func TestMain(m *testing.M) {
	auth.PINIterations = 1000 // records keep their count; only speed changes
	os.Exit(m.Run())
}

// e2eTimeout bounds one transaction over the telephone line, in real
// time: a purchase at 300 bit/s is about a minute of line time.
const e2eTimeout = 3 * time.Minute

// shop is a real server (auth and purchase services over a SQLite store
// and a ledger) answering calls on number through a telephone switch, with
// a registered device and a funded card the server knows.
type shop struct {
	st       store.Store
	ms       store.Merchants
	ledger   *ledger.Ledger
	purchase *purchase.Service
	srv      *server.Server
	addr     string // the switch
	sw       *line.Switch
	speed    float64
	id       device.Identity
	card     *wallettest.Env
	merchant store.Merchant
}

const number = "5550100"

func newShop(t *testing.T, cfg line.Config) *shop {
	t.Helper()
	ctx := context.Background()
	st := servertest.SQLite(t)
	s := &shop{st: st, ms: st.(store.Merchants), card: servertest.Card(t), speed: cfg.Speed}
	as, err := auth.New(auth.Config{Store: st, CA: s.card.CA})
	if err != nil {
		t.Fatal(err)
	}
	s.ledger = ledger.New(st.(store.Ledger), ledger.Options{})
	t.Cleanup(func() { s.ledger.Close() })
	s.purchase, err = purchase.New(purchase.Config{Store: st, Ledger: s.ledger, Auth: as,
		SignItem: func(it *txn.Item) ([]byte, error) {
			_, sig, err := txn.ParseSignedItem(s.card.SignItem(it))
			return sig, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.merchant = servertest.Merchant(t, s.ledger, s.ms, store.Merchant{ID: "mer_" + rand.Text(), Name: "Corner Shop",
		KeyHash: []byte(rand.Text()), WebhookSecret: []byte("s"), Created: now})
	servertest.PutCard(t, st, s.card, now)
	if _, err := s.purchase.Deposit(ctx, s.card.CardNumber, money.Amount{Minor: 10_000, Currency: "EUR"}, rand.Text()); err != nil {
		t.Fatal(err)
	}
	pubs, err := server.EnsureKey(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	s.sw, s.addr = linetest.Start(t, cfg)
	s.id = servertest.Device(t, st, "phone", pubs, "tel:"+number, now)
	s.srv = server.New(server.Config{Auth: as, Store: st, Purchases: s.purchase})
	return s
}

// newPurchase creates a pending purchase of minor cents and returns its
// reference.
func (s *shop) newPurchase(t *testing.T, minor int64) store.Purchase {
	t.Helper()
	now := time.Now()
	var id [16]byte
	rand.Read(id[:])
	var n uint32
	for _, b := range id[:4] {
		n = n<<8 | uint32(b)
	}
	p := store.Purchase{ID: "pur_" + hex.EncodeToString(id[:]), Merchant: s.merchant.ID, Description: "Two coffees",
		Amount: minor, Currency: "EUR", Digest: id[:], Reference: fmt.Sprintf("%08d", n%100_000_000),
		Status: store.PurchasePending, Created: now, Expires: now.Add(30 * time.Minute)}
	got, _, err := s.ms.CreatePurchase(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// session is one call: the server answers with the modem and serves the
// device session over it (ServeLink); the device dials, runs f over its
// modem link and hangs up. It returns f's error, the line time the call
// took (from the switch's clock, as the caller saw it) and both links'
// statistics.
type session struct {
	lineTime, done time.Duration // when f returned, when the call was over

	device, server     arq.Stats
	devModem, srvModem modem.Stats
}

func (s *shop) call(t *testing.T, mode modem.Mode, dial *line.Options, f func(ctx context.Context, l *modem.Link) error) (session, error) {
	t.Helper()
	return s.callWith(t, mode, dial, nil, f)
}

// callWith is call with the device's side of the call passed through
// wrap, if not nil.
func (s *shop) callWith(t *testing.T, mode modem.Mode, dial *line.Options, wrap func(*line.Call) modem.Audio, f func(ctx context.Context, l *modem.Link) error) (session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	ln, err := line.Listen(context.Background(), s.addr, number, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts := &modem.Options{Speed: s.speed}
	var sess session
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			served <- err
			return
		}
		defer c.Hangup()
		l, err := modem.Answer(c, mode, opts)
		if err != nil {
			served <- err
			return
		}
		s.srv.ServeLink(ctx, l, "tel:"+c.Remote())
		sess.server, sess.srvModem = l.Stats(), l.ModemStats()
		served <- nil
	}()
	c, err := line.Dial(ctx, s.addr, number, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Hangup()
	var a modem.Audio = c
	if wrap != nil {
		a = wrap(c)
	}
	l, err := modem.Dial(a, mode, opts)
	if err != nil {
		t.Fatal(err)
	}
	ferr := f(ctx, l)
	_, clock := c.Clock()
	sess.lineTime = time.Duration(clock) * time.Second / 8000
	l.Close()
	sess.device, sess.devModem = l.Stats(), l.ModemStats()
	if err := <-served; err != nil {
		t.Errorf("answering: %v", err)
	}
	_, clock = c.Clock()
	sess.done = time.Duration(clock) * time.Second / 8000
	return sess, ferr
}

// e2eSpeed is the switch's speed in the end-to-end tests.
func e2eSpeed() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("MODEM_SPEED"), 64); err == nil && v > 0 {
		return v
	}
	return 6
}

// TestAuthenticateAndBuy places calls through the line simulator at
// 20 dB SNR with the band limit and ±100 ppm of clock drift (the two
// directions drift opposite ways), and completes an authentication and a
// purchase with a real server over the modem and the link layer, in every
// mode.
func TestAuthenticateAndBuy(t *testing.T) {
	fwd, back := snr(20, 100), snr(20, -100)
	for _, mode := range []modem.Mode{modem.Bell202, modem.V23, modem.Bell103, modem.V21} {
		t.Run(mode.String(), func(t *testing.T) {
			if testing.Short() && mode != modem.Bell202 {
				t.Skip("short: Bell 202 only")
			}
			s := newShop(t, line.Config{Line: impair.Config{BandLimit: true}, Speed: e2eSpeed()})
			dial := &line.Options{From: "42", Forward: &fwd, Back: &back}
			var res device.Result
			sess, err := s.call(t, mode, dial, func(ctx context.Context, l *modem.Link) error {
				var err error
				res, err = device.Authenticate(ctx, l, s.id, s.card.Client, device.AuthOptions{PIN: wallettest.PIN})
				return err
			})
			if err != nil || !res.OK() {
				t.Fatalf("Authenticate() over the modem = %+v, %v; want success (device %+v, server %+v)", res, err, sess.device, sess.server)
			}
			if res.CardNumber != s.card.CardNumber {
				t.Errorf("Authenticate().CardNumber = %s, want %s", res.CardNumber, s.card.CardNumber)
			}
			t.Logf("authentication: %v of line time, device %+v, server %+v", sess.lineTime, sess.device, sess.server)

			p := s.newPurchase(t, 250)
			var bres device.BuyResult
			sess, err = s.call(t, mode, dial, func(ctx context.Context, l *modem.Link) error {
				var err error
				bres, err = device.Buy(ctx, l, s.id, s.card.Client, device.BuyOptions{
					AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
				return err
			})
			if err != nil || !bres.OK() {
				t.Fatalf("Buy() over the modem = %+v, %v; want success (device %+v, server %+v)", bres, err, sess.device, sess.server)
			}
			if bres.Code != protocol.CodeOK || bres.CVM != txn.CVMOfflinePIN {
				t.Errorf("Buy() = code %v cvm %v, want OK, offline PIN", bres.Code, bres.CVM)
			}
			got, err := s.ms.Purchase(context.Background(), "", p.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != store.PurchaseApproved {
				t.Errorf("purchase status after Buy = %v, want approved", got.Status)
			}
			if b := servertest.Balance(t, s.ledger, ledger.HolderAccount(s.card.CardNumber, "EUR")); b != 10_000-250 {
				t.Errorf("holder balance = %d, want %d", b, 10_000-250)
			}
			t.Logf("purchase: %v of line time, device %+v, server %+v", sess.lineTime, sess.device, sess.server)
		})
	}
}
