package device_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/hal"
	"cardlink/internal/hal/biometric"
	"cardlink/internal/hal/headless"
	"cardlink/internal/hal/power"
	"cardlink/internal/hal/printer"
	"cardlink/internal/link"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/reader"
	"cardlink/internal/server"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/purchase"
	"cardlink/internal/server/purse"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/transcripts")

func TestMain(m *testing.M) {
	auth.PINIterations = 1000 // records keep their count; only speed changes
	os.Exit(m.Run())
}

// testTimeout bounds each test's device run and each script step.
const testTimeout = 30 * time.Second

// rig is a real server (SQLite store, ledger, auth, purchase and purse
// services, the device listener) with a merchant, a funded holder, a
// registered device and a personalized card in a virtual reader, and the
// device's controller driven by a headless display and keypad.
type rig struct {
	t         *testing.T
	st        store.Store
	ms        store.Merchants
	ledger    *ledger.Ledger
	purchases *purchase.Service
	purses    *purse.Service
	addr      string
	card      *wallettest.Env
	merchant  store.Merchant
	drv       *headless.Driver
	power     *swapPower
	ctrl      *device.Controller
	paper     *paper
	sensor    *biometric.Sim
	runErr    chan error
	stop      context.CancelFunc
	once      sync.Once
	ran       error

	mu        sync.Mutex
	conn      net.Conn // the link the device dialled last
	linkDown  bool     // Dial fails
	drop      int      // 1: armed, 2: the device wrote since, 3: lose the next write (see dropConn)
	receipts  []device.PayReceipt
	purchased map[string]store.Purchase // by reference
}

// paper is what the receipt printer (package printer) printed: its
// ESC/POS stream.
type paper struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *paper) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

// text decodes the stream as the paper shows it: its text, its cuts and
// how many lines it shows, cuts left out.
func (p *paper) text(t *testing.T) (text string, cuts, lines int) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	d, err := printer.Decode(p.buf.Bytes())
	if err != nil {
		t.Fatalf("decoding what the printer printed: %v", err)
	}
	return d.Text(), d.Cuts, len(d.Lines) - d.Cuts
}

// swapPower is the real power manager (package power), replaced by a new
// one when a script's "battery N" event sets the battery's level.
type swapPower struct {
	mu   sync.Mutex
	m    *power.Manager
	used map[hal.Operation]int // units spent, by operation
}

func newManager(t testing.TB, level int) *power.Manager {
	t.Helper()
	m, err := power.New(power.Config{Battery: power.Store{MAh: 2500, Volts: 3, Level: level}, StandbyMW: -1})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (p *swapPower) get() *power.Manager {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m
}

func (p *swapPower) set(m *power.Manager) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m = m
}

func (p *swapPower) Status() hal.PowerStatus             { return p.get().Status() }
func (p *swapPower) Check(op hal.Operation, n int) error { return p.get().Check(op, n) }
func (p *swapPower) Use(op hal.Operation, n int) error {
	err := p.get().Use(op, n)
	if err == nil {
		p.mu.Lock()
		if p.used == nil {
			p.used = map[hal.Operation]int{}
		}
		p.used[op] += n
		p.mu.Unlock()
	}
	return err
}

var _ hal.Power = (*swapPower)(nil)

// rigOptions change the rig.
type rigOptions struct {
	// finger personalizes the card with a simulated finger's template
	// and gives the device a sensor with that finger on it.
	finger bool
	// cvms are the holder verifications the server accepts; 0 means its
	// default (any).
	cvms protocol.CVMSet
	// onlinePIN, when set, is the card's online PIN on the server.
	onlinePIN string
}

// newRig starts the server and sets up the device.
func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	ctx := context.Background()
	st := servertest.SQLite(t)
	r := &rig{t: t, st: st, ms: st.(store.Merchants), purchased: map[string]store.Purchase{}}
	if o.finger {
		f, err := biometric.NewFinger(7, biometric.DefaultNoise())
		if err != nil {
			t.Fatal(err)
		}
		r.sensor = biometric.NewSim(f, 1)
		r.card = wallettest.New(t, wallettest.Options{CardNumber: servertest.CardNumber(t), BioTemplate: r.sensor.Enrol()})
	} else {
		r.card = servertest.Card(t)
	}
	as, err := auth.New(auth.Config{Store: st, CA: r.card.CA, DefaultCVMs: o.cvms})
	if err != nil {
		t.Fatal(err)
	}
	r.ledger = ledger.New(st.(store.Ledger), ledger.Options{})
	r.purchases, err = purchase.New(purchase.Config{Store: st, Ledger: r.ledger, Auth: as,
		SignItem: func(it *txn.Item) ([]byte, error) {
			_, sig, err := txn.ParseSignedItem(r.card.SignItem(it))
			return sig, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.purses, err = purse.New(purse.Config{Store: st, Ledger: r.ledger, Auth: as, SignLoad: func(l *txn.Load) ([]byte, error) {
		_, sig, err := txn.ParseSignedLoad(r.card.SignLoad(l))
		return sig, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.merchant = servertest.Merchant(t, r.ledger, r.ms, store.Merchant{ID: "mer_" + rand.Text(), Name: "Corner Shop",
		KeyHash: []byte(rand.Text()), WebhookSecret: []byte("s"), Created: now})
	servertest.PutCard(t, st, r.card, now)
	if o.onlinePIN != "" {
		pin, err := auth.NewPIN(r.card.CardNumber, o.onlinePIN, 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SetPIN(ctx, pin); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.purchases.Deposit(ctx, r.card.CardNumber, money.Amount{Minor: 10_000, Currency: "EUR"}, rand.Text()); err != nil {
		t.Fatal(err)
	}
	pubs, err := server.EnsureKey(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	id := servertest.Device(t, st, "test", pubs, r.addr, now)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- server.New(server.Config{Auth: as, Store: st, Purchases: r.purchases, Purses: r.purses}).Serve(sctx, l)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
		r.ledger.Close()
	})

	r.drv = headless.New()
	r.power = &swapPower{m: newManager(t, 80)}
	r.paper = &paper{}
	r.ctrl = r.controller(id)
	r.hooks()
	return r
}

// controller makes the device's controller over the rig's parts.
func (r *rig) controller(id device.Identity) *device.Controller {
	c := &device.Controller{
		Display: r.drv, Keypad: r.drv, Reader: r.card.Reader, Power: r.power, Printer: printer.New(r.paper, printer.Options{Cut: true}),
		Dial: r.dial, Identity: id, Payee: r.merchant.Name,
		Receipts: func(ctx context.Context, rc device.PayReceipt) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.receipts = append(r.receipts, rc)
			return nil
		},
		Timeout: testTimeout, HolderTimeout: testTimeout, PowerPoll: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(r.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if r.sensor != nil {
		c.Sensor = r.sensor
	}
	return c
}

// dial connects to the server unless the script took the link down.
func (r *rig) dial(ctx context.Context) (link.Link, error) {
	r.mu.Lock()
	down := r.linkDown
	r.mu.Unlock()
	if down {
		return nil, errors.New("no carrier")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.conn = c
	r.mu.Unlock()
	return &dropConn{Conn: c, r: r}, nil
}

// dropConn is the device's connection, which the script's drop-answer
// event arms to lose the server's next answer: after the device's next
// write (the approval) it closes the connection instead of reading what
// the server sent back.
type dropConn struct {
	net.Conn
	r *rig
}

func (c *dropConn) Write(b []byte) (int, error) {
	c.r.mu.Lock()
	lose := c.r.drop == 3
	if lose {
		c.r.drop = 0
	}
	c.r.mu.Unlock()
	if lose {
		// The line fails as the device sends: the server gets nothing.
		c.Conn.Close()
		return 0, errors.New("line dropped")
	}
	n, err := c.Conn.Write(b)
	c.r.mu.Lock()
	if c.r.drop == 1 {
		c.r.drop = 2
	}
	c.r.mu.Unlock()
	return n, err
}

func (c *dropConn) Read(b []byte) (int, error) {
	// Checked when the read returns, not when it starts: the device reads
	// ahead while the holder reviews, so the read that gets the answer may
	// have begun before the approval went out.
	n, err := c.Conn.Read(b)
	c.r.mu.Lock()
	drop := c.r.drop == 2
	if drop {
		c.r.drop = 0
	}
	c.r.mu.Unlock()
	if drop {
		// The server has done its part: lose its answer.
		c.Conn.Close()
		return 0, errors.New("line dropped")
	}
	return n, err
}

// hooks registers the script events.
func (r *rig) hooks() {
	r.drv.Handle("remove-card", func(context.Context, []string) error { r.card.Reader.Remove(); return nil })
	r.drv.Handle("insert-card", func(context.Context, []string) error { r.card.Reader.Insert(); return nil })
	r.drv.Handle("cut-link", func(context.Context, []string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.conn == nil {
			return errors.New("no link to cut")
		}
		return r.conn.Close()
	})
	r.drv.Handle("drop-answer", func(context.Context, []string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.drop = 1
		return nil
	})
	// drop-approval: the device's next write (the approval, when armed
	// during the review) is lost with the line.
	r.drv.Handle("drop-approval", func(context.Context, []string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.drop = 3
		return nil
	})
	r.drv.Handle("link-down", func(context.Context, []string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.linkDown = true
		return nil
	})
	r.drv.Handle("link-up", func(context.Context, []string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.linkDown = false
		return nil
	})
	r.drv.Handle("battery", func(_ context.Context, args []string) error {
		if len(args) != 1 {
			return errors.New("battery LEVEL")
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		m, err := power.New(power.Config{Battery: power.Store{MAh: 2500, Volts: 3, Level: n}, StandbyMW: -1})
		if err != nil {
			return err
		}
		r.power.set(m)
		return nil
	})
	r.drv.Handle("finger", func(_ context.Context, args []string) error {
		if r.sensor == nil || len(args) != 1 {
			return errors.New("finger holder|impostor, with a sensor")
		}
		id := uint64(7) // the holder's, as newRig enrolled it
		if args[0] == "impostor" {
			id = 8
		}
		f, err := biometric.NewFinger(id, biometric.DefaultNoise())
		if err != nil {
			return err
		}
		r.sensor.Present(f)
		return nil
	})
	// purchase REF MINOR [ITEM]: a merchant's pending purchase with a
	// reference; push REF MINOR [ITEM]: one pushed to the card.
	r.drv.Handle("purchase", func(_ context.Context, args []string) error {
		if len(args) < 2 {
			return errors.New("purchase REF MINOR [ITEM]")
		}
		minor, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return err
		}
		item := ""
		if len(args) > 2 {
			item = r.item(strings.Join(args[2:], " "), minor)
		}
		r.newPurchase(args[0], minor, item, "")
		return nil
	})
	r.drv.Handle("push", func(_ context.Context, args []string) error {
		if len(args) < 2 {
			return errors.New("push REF MINOR [ITEM]")
		}
		minor, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return err
		}
		item := ""
		if len(args) > 2 {
			item = r.item(strings.Join(args[2:], " "), minor)
		}
		r.newPurchase(args[0], minor, item, r.card.CardNumber)
		return nil
	})
}

// item creates a voucher item named name.
func (r *rig) item(name string, minor int64) string {
	it := store.Item{ID: "itm_" + rand.Text(), Merchant: r.merchant.ID, Name: name, Price: minor, Currency: "EUR",
		Delivery: store.DeliverVoucher, Payload: []byte("VOUCHER " + strings.ToUpper(name) + " 7F3A-22Q9"), Created: time.Now()}
	if err := r.ms.CreateItem(context.Background(), it); err != nil {
		r.t.Fatal(err)
	}
	return it.ID
}

// newPurchase creates a pending purchase with reference ref.
func (r *rig) newPurchase(ref string, minor int64, item, card string) {
	now := time.Now()
	var id [16]byte
	rand.Read(id[:])
	p := store.Purchase{ID: "pur_" + hex.EncodeToString(id[:]), Merchant: r.merchant.ID, Item: item, Description: "Two coffees",
		Amount: minor, Currency: "EUR", Digest: id[:], Card: card, Reference: ref,
		Status: store.PurchasePending, Created: now, Expires: now.Add(10 * time.Minute)}
	got, _, err := r.ms.CreatePurchase(context.Background(), p)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.purchased[ref] = got
	r.mu.Unlock()
}

// status returns the purchase of ref as the server has it.
func (r *rig) status(ref string) store.Purchase {
	r.t.Helper()
	r.mu.Lock()
	p, ok := r.purchased[ref]
	r.mu.Unlock()
	if !ok {
		r.t.Fatalf("no purchase %s made", ref)
	}
	p, err := r.ms.Purchase(context.Background(), "", p.ID)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// start runs the controller until the test ends; Run's error is in runErr.
func (r *rig) start() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	r.stop = cancel
	r.runErr = make(chan error, 1)
	go func() { r.runErr <- r.ctrl.Run(ctx) }()
	r.t.Cleanup(func() { r.finish() })
}

// finish stops the controller and returns what Run returned (nil when
// stopped, ErrShutdown when it shut itself down); it may be called more
// than once.
func (r *rig) finish() error {
	r.once.Do(func() {
		r.stop()
		r.ran = <-r.runErr
	})
	return r.ran
}

// play parses and plays script name from testdata/scripts, failing the
// test on a step that fails; with -update it writes the transcript to
// testdata/transcripts, else it compares it with the one there.
func (r *rig) play(name string) {
	r.t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "scripts", name))
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := headless.Parse(name, src)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*testTimeout)
	defer cancel()
	if err := r.drv.Run(ctx, s, headless.Options{Timeout: testTimeout}); err != nil {
		r.t.Fatalf("%v\ntranscript:\n%s", err, r.drv.Transcript())
	}
	r.golden(name)
}

// screens keeps the screens of a transcript.
func screens(transcript string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(transcript, "\n") {
		if !strings.HasPrefix(line, "> ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

var percent = regexp.MustCompile(`\b[0-9]{1,3}%`)

// golden compares the screens shown with testdata/transcripts/NAME, or
// writes them there with -update together with the keys pressed and the
// events. The indicators are left out (their battery level follows the
// energy model and the timing of the script's events), and so are the
// card's number, new for each test, and the battery level on a screen.
func (r *rig) golden(name string) {
	r.t.Helper()
	var b strings.Builder
	for _, line := range strings.SplitAfter(r.drv.Transcript(), "\n") {
		if !strings.HasPrefix(line, "  [") {
			b.WriteString(line)
		}
	}
	got := strings.ReplaceAll(b.String(), "..."+r.card.CardNumber[len(r.card.CardNumber)-4:], "...NNNN")
	// The battery level on a screen depends on how much the device did
	// before the script's battery event: keep its width, not its digits.
	got = percent.ReplaceAllStringFunc(got, func(p string) string { return strings.Repeat("N", len(p)-1) + "%" })
	path := filepath.Join("testdata", "transcripts", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			r.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		r.t.Fatalf("%v (run the test with -update to write it)", err)
	}
	// Where a press or an event falls between two screens is a race
	// (presses queue; events run as the device works): compare the
	// screens alone.
	if screens(got) != screens(string(want)) {
		r.t.Errorf("transcript differs from %s (run with -update after checking it):\n%s", path, got)
	}
}

// client opens a new session with the card, for checks.
func (r *rig) client() *wallet.Client {
	r.t.Helper()
	conn, err := r.card.Reader.Connect(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	c, err := wallet.Select(context.Background(), conn)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *rig) balance(account string) int64 {
	r.t.Helper()
	return servertest.Balance(r.t, r.ledger, account)
}

func (r *rig) holder() string { return ledger.HolderAccount(r.card.CardNumber, "EUR") }

// counter reads the card's counter.
func (r *rig) counter() uint32 {
	r.t.Helper()
	n, err := r.client().Counter(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// TestFlows plays every service through the headless driver against the
// real server, then checks what the server and the card hold.
func TestFlows(t *testing.T) {
	r := newRig(t, rigOptions{})
	merchantBefore := r.balance(r.merchant.Account)
	r.start()
	r.play("flows.txt")

	if p := r.status("12345670"); p.Status != store.PurchaseApproved {
		t.Errorf("purchase by reference: status %s, want approved", p.Status)
	}
	if p := r.status("00000000"); p.Status != store.PurchaseApproved {
		t.Errorf("pushed purchase: status %s, want approved", p.Status)
	}
	if p := r.status("22222220"); p.Status != store.PurchaseDeclined {
		t.Errorf("purchase declined at the review: status %s, want declined", p.Status)
	}
	if p := r.status("23232320"); p.Status != store.PurchaseDeclined {
		t.Errorf("purchase cancelled at the PIN: status %s, want declined", p.Status)
	}
	if got, want := r.balance(r.merchant.Account)-merchantBefore, int64(750+300); got != want {
		t.Errorf("merchant was paid %d, want %d", got, want)
	}
	if got, want := r.balance(r.holder()), int64(10_000-750-300-2000+500); got != want {
		t.Errorf("holder account holds %d, want %d", got, want)
	}
	// The holder saw the purchase before the device asked for the PIN.
	tr := r.drv.Transcript()
	fetch := strings.Index(tr, "|Fetching purchase")
	review := strings.Index(tr[fetch:], "|OK yes   CANCEL no")
	pin := strings.Index(tr[fetch:], "|PIN:")
	if fetch < 0 || review < 0 || pin < 0 || pin < review {
		t.Errorf("after fetching the purchase, the review is at %d and the PIN at %d; want the review first", review, pin)
	}
	// The purchase declined at the review never asked for a PIN: the
	// second OK pressed with its reference did not approve it.
	if strings.Contains(tr, "|Pay 9.90 EUR        |\n|PIN:") {
		t.Error("the device asked for a PIN for the purchase declined at the review")
	}
	// The printer printed the two purchases and the offline payment.
	text, cuts, _ := r.paper.text(t)
	if cuts != 3 || !strings.Contains(text, "Corner Shop") || !strings.Contains(text, "7.50 EUR") || !strings.Contains(text, "Paid from the purse") {
		t.Errorf("printed %d receipts:\n%s\nwant 3: 7.50 EUR and 3.00 EUR at Corner Shop, 3.50 EUR from the purse", cuts, text)
	}
	// The offline receipt is redeemable, once.
	r.mu.Lock()
	receipts := r.receipts
	r.mu.Unlock()
	if len(receipts) != 1 {
		t.Fatalf("%d offline receipts, want 1", len(receipts))
	}
	rc := receipts[0]
	red, err := r.purses.Redeem(context.Background(), r.merchant.ID, purse.Receipt{Card: rc.CardNumber, Transaction: rc.DebitReceipt.Transaction,
		Counter: rc.Counter, CVM: rc.CVM, Signature: rc.Sig})
	if err != nil {
		t.Fatalf("redeeming the device's offline receipt: %v", err)
	}
	if red.Amount.Minor != 350 {
		t.Errorf("redeemed %+v, want 350", red)
	}
	// The new PIN works; the card holds the e-good.
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	r.card.Reader.Insert()
	c := r.client()
	if err := c.VerifyPIN(context.Background(), "2468"); err != nil {
		t.Errorf("VerifyPIN(new PIN) = %v", err)
	}
	items, err := c.Items(context.Background())
	if err != nil || len(items) != 1 {
		t.Errorf("Items() = %v, %v; want the concert ticket", items, err)
	}
	// The unload left 11.50 EUR in the purse.
	if p, err := c.Purse(context.Background()); err != nil || p.Balance.Minor != 1150 {
		t.Errorf("Purse() = %+v, %v; want 11.50 EUR after the unload", p, err)
	}
}

// TestCardPulled pulls the card out at the review and in the middle of
// the PIN of a purchase, and at the review of a purse load: each is
// declined at once, nothing is paid or signed; a load afterwards works.
func TestCardPulled(t *testing.T) {
	r := newRig(t, rigOptions{})
	before := r.counter()
	r.start()
	r.play("cardpulled.txt")
	for _, ref := range []string{"33333330", "44444440"} {
		if p := r.status(ref); p.Status != store.PurchaseDeclined {
			t.Errorf("purchase %s: status %s, want declined (the device told the server)", ref, p.Status)
		}
	}
	if got := r.balance(r.holder()); got != 10_000-500 {
		t.Errorf("holder account holds %d, want 9500 (only the last load)", got)
	}
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	// One signature (the load that went through) and its load receipt.
	if after := r.counter(); after != before+2 {
		t.Errorf("card counter %d → %d, want the load's two signatures only", before, after)
	}
	if p, err := r.client().Purse(context.Background()); err != nil || p.Balance.Minor != 500 || p.Seq != 1 {
		t.Errorf("Purse() = %+v, %v; want 5.00 EUR, load #1", p, err)
	}
}

// TestLinkDropped cuts the link mid-transaction: a signed approval is
// sent again over a new link (at once, or when the server is back), a
// purchase declined while the link was down is declined after
// reconnecting; each purchase is paid at most once.
func TestLinkDropped(t *testing.T) {
	r := newRig(t, rigOptions{})
	before := r.counter()
	merchantBefore := r.balance(r.merchant.Account)
	r.start()
	r.play("linkdrop.txt")
	want := map[string]store.PurchaseStatus{"55555550": store.PurchaseApproved, "66666660": store.PurchaseApproved, "77777770": store.PurchaseDeclined,
		"88888880": store.PurchaseApproved}
	for ref, st := range want {
		if p := r.status(ref); p.Status != st {
			t.Errorf("purchase %s: status %s, want %s", ref, p.Status, st)
		}
	}
	if got, want := r.balance(r.merchant.Account)-merchantBefore, int64(800+600+500); got != want {
		t.Errorf("merchant was paid %d, want %d (each purchase once)", got, want)
	}
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if after := r.counter(); after != before+3 {
		t.Errorf("card counter %d → %d, want three signatures", before, after)
	}
	// The e-good whose delivery was lost came with the second answer.
	if items, err := r.client().Items(context.Background()); err != nil || len(items) != 1 || items[0].Title != "Cinema voucher" {
		t.Errorf("Items() = %+v, %v; want the cinema voucher", items, err)
	}
}

// TestLowPower runs the device on a low battery (refused, with the
// reason on the screen) and then a critical one (clean shutdown, the
// open purchase declined).
func TestLowPower(t *testing.T) {
	r := newRig(t, rigOptions{})
	before := r.counter()
	r.start()
	r.play("lowpower.txt")
	if err := <-r.runErr; !errors.Is(err, device.ErrShutdown) || !errors.Is(err, hal.ErrLowPower) {
		t.Errorf("Run() = %v, want ErrShutdown", err)
	}
	r.runErr <- nil // for finish
	if p := r.status("88888880"); p.Status != store.PurchaseDeclined {
		t.Errorf("purchase open at shutdown: status %s, want declined", p.Status)
	}
	if st := r.ctrl.State(); st != device.StateOff {
		t.Errorf("State() after shutdown = %v, want off", st)
	}
	if after := r.counter(); after != before {
		t.Errorf("card counter %d → %d, want no signature", before, after)
	}
}

// TestFinger verifies the holder with a simulated fingerprint sensor
// (package biometric) and match-on-card, for a sign-in and a purchase,
// and refuses another finger.
func TestFinger(t *testing.T) {
	r := newRig(t, rigOptions{finger: true})
	r.start()
	r.play("finger.txt")
	if p := r.status("12121210"); p.Status != store.PurchaseApproved {
		t.Errorf("purchase: status %s, want approved", p.Status)
	}
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	log, err := r.client().Log(context.Background())
	if err != nil || len(log) == 0 || log[0].CVM != txn.CVMBiometric {
		t.Errorf("card log = %+v, %v; want the purchase signed after a biometric match", log, err)
	}
}

// TestUnusableCard inserts a blank card: the device refuses it and
// waits for it to go, without dialling the server.
func TestUnusableCard(t *testing.T) {
	card := wallettest.New(t, wallettest.Options{Blank: true})
	id := servertest.Device(t, servertest.SQLite(t), "test", [][]byte{make([]byte, 32)}, "", time.Now())
	drv := headless.New()
	drv.Handle("remove-card", func(context.Context, []string) error { card.Reader.Remove(); return nil })
	dials := 0
	c := &device.Controller{Display: drv, Keypad: drv, Reader: card.Reader, Identity: id, PowerPoll: 20 * time.Millisecond,
		Dial: func(context.Context) (link.Link, error) { dials++; return nil, errors.New("no server") }}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	src, err := os.ReadFile(filepath.Join("testdata", "scripts", "unusable.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := headless.Parse("unusable.txt", src)
	if err != nil {
		t.Fatal(err)
	}
	err = drv.Run(ctx, s, headless.Options{Timeout: testTimeout})
	cancel()
	if rerr := <-done; rerr != nil {
		t.Errorf("Run() = %v, want nil when ctx ends", rerr)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, drv.Transcript())
	}
	if dials != 0 {
		t.Errorf("Dial called %d times, want 0", dials)
	}
}

// TestControllerNeeds: Run refuses a controller without its parts.
func TestControllerNeeds(t *testing.T) {
	drv := headless.New()
	card := wallettest.New(t, wallettest.Options{})
	dial := func(context.Context) (link.Link, error) { return nil, errors.New("no server") }
	tests := []struct {
		name string
		c    *device.Controller
	}{
		{"no display", &device.Controller{Keypad: drv, Reader: card.Reader, Dial: dial}},
		{"no dial", &device.Controller{Display: drv, Keypad: drv, Reader: card.Reader}},
		{"no identity", &device.Controller{Display: drv, Keypad: drv, Reader: card.Reader, Dial: dial}},
	}
	for _, tt := range tests {
		if err := tt.c.Run(context.Background()); err == nil {
			t.Errorf("%s: Run() = nil, want an error", tt.name)
		}
	}
}

// TestBuyCardGoneWhileSigning takes the card out after the holder's PIN
// was taken and before the card signs: the card operation fails, and
// Buy declines the purchase on the open channel with the reason.
func TestBuyCardGoneWhileSigning(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.newPurchase("31313130", 700, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l, err := r.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	opts := device.BuyOptions{Reference: "31313130",
		Verify: func(context.Context, txn.Transaction, protocol.CVMSet) (device.AuthOptions, error) {
			r.card.Reader.Remove()
			return device.AuthOptions{PIN: wallettest.PIN}, nil
		}}
	res, err := device.Buy(ctx, l, r.ctrl.Identity, r.card.Client, opts)
	if !errors.Is(err, reader.ErrCardRemoved) || res.Code != protocol.CodeHolderDeclined || res.Approval != nil {
		t.Fatalf("Buy() = %+v, %v; want ErrCardRemoved, declined, no approval", res, err)
	}
	if p := r.status("31313130"); p.Status != store.PurchaseDeclined {
		t.Errorf("purchase: status %s, want declined", p.Status)
	}
}

// TestOnlinePIN runs a purchase where the server accepts only an online
// PIN: the PIN typed on the keypad goes to the server in a PIN block; a
// wrong one is refused by the server with the tries left and the
// purchase stays open for the right one.
func TestOnlinePIN(t *testing.T) {
	r := newRig(t, rigOptions{cvms: protocol.CVMs(txn.CVMOnlinePIN), onlinePIN: "8642"})
	r.start()
	r.play("onlinepin.txt")
	if p := r.status("45454540"); p.Status != store.PurchaseApproved {
		t.Errorf("purchase: status %s, want approved", p.Status)
	}
	if p := r.status("46464640"); p.Status != store.PurchaseDeclined {
		t.Errorf("purchase interrupted after an online PIN: status %s, want declined", p.Status)
	}
	// The right PIN reset the tries; the interrupted one cost none.
	if pin, err := r.st.PIN(context.Background(), r.card.CardNumber); err != nil || pin.Tries != 3 {
		t.Errorf("online PIN = %+v, %v; want 3 tries left", pin, err)
	}
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	log, err := r.client().Log(context.Background())
	if err != nil || len(log) < 2 || log[0].CVM != txn.CVMOnlinePIN {
		t.Errorf("card log = %+v, %v; want the purchase signed with an online PIN, twice", log, err)
	}
}

// TestEnergyOfAPurchase measures what one purchase by reference costs the
// battery in the power manager's energy model, over the network and over
// the modem, side by side: the units the controller spent by operation
// and the energy the manager took. It checks that the controller meters
// the card, the link and the printer at all; the figures go to the log
// (docs/device.md).
func TestEnergyOfAPurchase(t *testing.T) {
	spent := map[hal.Operation]int64{}
	for _, op := range []hal.Operation{hal.OpNetwork, hal.OpModem} {
		r := newRig(t, rigOptions{})
		r.ctrl.LinkOp = op
		before, _ := r.power.get().Levels()
		r.start()
		r.play("buy.txt")
		if err := r.finish(); err != nil {
			t.Fatal(err)
		}
		after, _ := r.power.get().Levels()
		r.power.mu.Lock()
		used := maps.Clone(r.power.used)
		r.power.mu.Unlock()
		spent[op] = before - after
		t.Logf("purchase over %v: %d µJ (%.4f%% of a 2500 mAh 3 V battery); units: %v", op, before-after,
			100*float64(before-after)/(2500*3*3.6e6), used)
		if used[hal.OpCardWrite] == 0 || used[hal.OpCardRead] == 0 || used[op] == 0 || used[hal.OpPrinter] == 0 {
			t.Errorf("units spent over %v = %v; want card reads and writes, link bytes and printed lines", op, used)
		}
		if _, _, printed := r.paper.text(t); used[hal.OpPrinter] != printed {
			t.Errorf("spent %d printer lines over %v; the paper shows %d", used[hal.OpPrinter], op, printed)
		}
	}
	if spent[hal.OpModem] <= spent[hal.OpNetwork] {
		t.Errorf("a purchase over the modem took %d µJ, over the network %d µJ; want the modem to cost more", spent[hal.OpModem], spent[hal.OpNetwork])
	}
}

// TestReceiptEnergy buys on a battery with energy for 20 printed lines
// and on one with energy for 10.5: the first receipt is printed and
// spends one printer unit for each line on the paper (blank, wrapped and
// feed lines included, hal.Printer.Lines); the second, longer than 10.5
// lines, is refused before a line is printed, and the purchase stands.
func TestReceiptEnergy(t *testing.T) {
	// Being awake costs nothing here, so that what the purchase spends
	// before its receipt (APDUs and link bytes, about 0.1 J or a quarter
	// of a line) does not depend on how long the test takes, and the
	// transaction checked at the start leaves the receipt out, so that
	// the purchase may start on a battery too small for it.
	model := power.DefaultModel()
	model.Costs[hal.OpDisplay] = power.Cost{}
	model.Transaction = slices.DeleteFunc(model.Transaction, func(p power.Part) bool {
		return p.Op == hal.OpPrinter || p.Op == hal.OpDisplay
	})
	line := float64(model.Costs[hal.OpPrinter].Energy) // µJ
	battery := func(lines float64) *power.Manager {
		// lines' worth above the Critical reserve, at 99 % (the
		// transcript has two digits for the level).
		mwh := lines * line / ((99 - power.DefaultCriticalPercent) / 100.0) / 3.6e6
		m, err := power.New(power.Config{Battery: power.Store{MWh: mwh, Level: 99}, StandbyMW: -1, Model: model})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	r := newRig(t, rigOptions{})
	r.power.set(battery(20))
	r.start()
	r.play("buy.txt")
	if p := r.status("56565650"); p.Status != store.PurchaseApproved {
		t.Fatalf("purchase: status %s, want approved", p.Status)
	}
	text, cuts, printed := r.paper.text(t)
	r.power.mu.Lock()
	spent := r.power.used[hal.OpPrinter]
	r.power.mu.Unlock()
	if cuts != 1 || spent != printed {
		t.Errorf("on energy for 20 lines: printed %d lines, %d cuts, spent %d lines:\n%s\nwant one receipt, a unit a line", printed, cuts, spent, text)
	}
	// The receipt must not fit 10.5 lines, or the refusal below proves
	// nothing.
	if printed <= 11 {
		t.Fatalf("the receipt has %d lines; the test needs more than 11", printed)
	}

	r = newRig(t, rigOptions{})
	r.power.set(battery(10.5))
	r.start()
	r.play("buy.txt")
	if p := r.status("56565650"); p.Status != store.PurchaseApproved {
		t.Errorf("purchase without its receipt: status %s, want approved", p.Status)
	}
	text, cuts, _ = r.paper.text(t)
	r.power.mu.Lock()
	spent = r.power.used[hal.OpPrinter]
	r.power.mu.Unlock()
	if text != "" || cuts != 0 || spent != 0 {
		t.Errorf("on energy for 10.5 lines: printed %q (%d cuts), spent %d lines; want nothing", text, cuts, spent)
	}
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// TestRestartSettles shuts the device down with a signed approval not
// yet delivered: the approval survives in the device's memory, and the
// device started again delivers it; paid once.
func TestRestartSettles(t *testing.T) {
	r := newRig(t, rigOptions{})
	mem, err := device.CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := mem.SetIdentity(r.ctrl.Identity); err != nil {
		t.Fatal(err)
	}
	r.ctrl.Memory, r.ctrl.Identity = mem, device.Identity{}
	before := r.counter()
	r.start()
	r.play("restart1.txt")
	if err := r.finish(); !errors.Is(err, device.ErrShutdown) {
		t.Fatalf("Run() = %v, want ErrShutdown", err)
	}
	if p := r.status("67676760"); p.Status != store.PurchasePending {
		t.Fatalf("purchase after the shutdown: status %s, want pending", p.Status)
	}

	// Power back, link back: a new controller (nothing in RAM) on the
	// same memory.
	r.power.set(newManager(t, 80))
	r.mu.Lock()
	r.linkDown = false
	r.mu.Unlock()
	c := r.controller(device.Identity{})
	c.Memory = mem
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	r.play("restart2.txt")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("second Run() = %v, want nil", err)
	}
	if p := r.status("67676760"); p.Status != store.PurchaseApproved {
		t.Errorf("purchase: status %s, want approved", p.Status)
	}
	if after := r.counter(); after != before+1 {
		t.Errorf("card counter %d → %d, want one signature", before, after)
	}
}

// TestPushedAnswerLost pays a purchase pushed to the card whose answer
// (with an e-good) is lost: the device asks again, the server answers
// with the result of the card's last paid purchase, and the device takes
// it for the one it settles: the good is stored, nothing is signed or
// paid twice. Then the card is pulled out after the approval of another
// push whose answer is lost: the device settles it when the card is back.
func TestPushedAnswerLost(t *testing.T) {
	r := newRig(t, rigOptions{})
	before := r.counter()
	merchantBefore := r.balance(r.merchant.Account)
	r.start()
	r.play("pushlost.txt")
	for _, ref := range []string{"13131310", "14141410"} {
		if p := r.status(ref); p.Status != store.PurchaseApproved {
			t.Errorf("pushed purchase %s: status %s, want approved", ref, p.Status)
		}
	}
	if got, want := r.balance(r.merchant.Account)-merchantBefore, int64(450+250); got != want {
		t.Errorf("merchant was paid %d, want %d (each purchase once)", got, want)
	}
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if after := r.counter(); after != before+2 {
		t.Errorf("card counter %d → %d, want two signatures", before, after)
	}
	items, err := r.client().Items(context.Background())
	if err != nil || len(items) != 2 {
		t.Fatalf("Items() = %+v, %v; want the two vouchers whose answers were lost", items, err)
	}
}

// runController runs c until script name has played, then switches it
// off (Run must return nil).
func (r *rig) runController(c *device.Controller, name string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	r.play(name)
	cancel()
	if err := <-done; err != nil {
		r.t.Errorf("Run() = %v, want nil", err)
	}
}

// TestRestartLosesRAM switches the device off and on: what the
// controller held in RAM (an approval not delivered, when it has no
// Memory) is gone, while the settings in its NVM (Memory) stay.
func TestRestartLosesRAM(t *testing.T) {
	r := newRig(t, rigOptions{})
	id := r.ctrl.Identity
	r.ctrl.Payee = ""
	r.start()
	r.play("ram1.txt")
	if err := r.finish(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	mark := len(r.drv.Transcript())
	// On again, a new controller: RAM starts empty.
	c := r.controller(id)
	c.Payee = ""
	if st := c.State(); st != device.StateOff {
		t.Errorf("State() of a controller switched on = %v, want off", st)
	}
	r.runController(c, "ram2.txt")
	if tr := r.drv.Transcript()[mark:]; strings.Contains(tr, "Earlier purchase") || strings.Contains(tr, "5 Pay") {
		t.Errorf("after the restart the device settled the purchase held in RAM, or offered Pay without a payee:\n%s", tr)
	}
	if p := r.status("71717170"); p.Status != store.PurchasePending {
		t.Errorf("purchase whose approval was in RAM: status %s, want pending (the server expires it)", p.Status)
	}

	// NVM: the settings stored before the device is switched on.
	mem, err := device.CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := mem.SetIdentity(id); err != nil {
		t.Fatal(err)
	}
	if err := mem.SetSettings(device.Settings{Payee: "Night Kiosk"}); err != nil {
		t.Fatal(err)
	}
	c = r.controller(device.Identity{})
	c.Memory, c.Payee = mem, ""
	r.runController(c, "nvm.txt")
}

// TestUnloadInterrupted loses the approval of an unload with the line:
// the purse is debited and the account not credited (the device keeps no
// unload to resend), and the device says so rather than an error code.
func TestUnloadInterrupted(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.start()
	r.play("unloadlost.txt")
	if err := r.finish(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if p, err := r.client().Purse(context.Background()); err != nil || p.Balance.Minor != 600 {
		t.Errorf("Purse() = %+v, %v; want 6.00 EUR (debited by the unload)", p, err)
	}
	if got := r.balance(r.holder()); got != 10_000-1000 {
		t.Errorf("holder account holds %d, want 9000 (the unload was not credited)", got)
	}
}
