package ivr_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/device/inline"
	"cardlink/internal/line"
	"cardlink/internal/link"
	"cardlink/internal/link/dtmf"
	"cardlink/internal/link/handover"
	"cardlink/internal/link/modem"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/ivr"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
)

// The modem both ends use: Bell 202 (1200 bit/s, half duplex, the device
// is arq's primary), with the switch's speed for its timers.
func answerModem(ctx context.Context, call *line.Call) (link.Link, error) {
	return ivr.AnswerModem(modem.Bell202, &modem.Options{Speed: *speedFlag})(ctx, call)
}

func dialModem(_ context.Context, call *line.Call) (link.Link, error) {
	return modem.Dial(call, modem.Bell202, &modem.Options{Speed: *speedFlag})
}

// inlineCall is a handset calling through an in-line device to the IVR:
// the device answers the handset on its own number, calls the IVR over
// the impaired line, and bridges the two.
type inlineCall struct {
	dev      *inline.Device
	sessions chan inline.Session
	handset  *line.Call
	done     chan error
}

func (b *bed) inlineCall(t *testing.T, ctx context.Context, devNumber, ivrNumber, from string) *inlineCall {
	t.Helper()
	return b.inlineCallWith(t, ctx, devNumber, ivrNumber, from, b.id, b.card)
}

func (b *bed) inlineCallWith(t *testing.T, ctx context.Context, devNumber, ivrNumber, from string, id device.Identity, card *wallettest.Env) *inlineCall {
	t.Helper()
	ic := &inlineCall{sessions: make(chan inline.Session, 4), done: make(chan error, 1)}
	var err error
	ic.dev, err = inline.New(inline.Config{Identity: id, Card: card.Client, Modem: dialModem,
		Auth: device.AuthOptions{PIN: wallettest.PIN}, Logger: b.log,
		OnSession: func(s inline.Session) { ic.sessions <- s }})
	if err != nil {
		t.Fatal(err)
	}
	l, err := line.Listen(ctx, b.addr, devNumber, &line.ListenOptions{Window: inline.Window})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *line.Call, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			ic.done <- err
			close(accepted)
			return
		}
		accepted <- c
	}()
	// The holder's handset: a clean local line to the device.
	ic.handset, err = line.Dial(ctx, b.addr, devNumber, &line.Options{From: from})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ic.handset.Hangup() })
	hs, ok := <-accepted
	if !ok {
		t.Fatal(<-ic.done)
	}
	phone, err := line.Dial(ctx, b.addr, ivrNumber, &line.Options{From: from, Forward: &b.impaired, Back: &b.impaired, Window: inline.Window})
	if err != nil {
		hs.Hangup()
		t.Fatal(err)
	}
	go func() { ic.done <- ic.dev.Run(ctx, hs, phone) }()
	t.Cleanup(func() {
		phone.Hangup()
		hs.Hangup()
		if err := <-ic.done; err != nil {
			t.Errorf("inline Run() = %v", err)
		}
	})
	return ic
}

// hear reads the handset until the call ends; once it has heard after
// samples it types keys (a DTMF signal).
func (ic *inlineCall) hear(t *testing.T, after int, keys []float64) []float64 {
	var heard []float64
	buf := make([]float64, 800)
	for {
		n, err := ic.handset.Read(buf)
		if len(heard) < after && len(heard)+n >= after && keys != nil {
			go ic.handset.Write(keys)
		}
		heard = append(heard, buf[:n]...)
		if err != nil {
			if !errors.Is(err, line.ErrHangup) {
				t.Errorf("handset: call ended with %v, want a hang-up", err)
			}
			return heard
		}
	}
}

// TestPayThroughInlineDevice is issue 7's "done when": a call through the
// line simulator at 20 dB SNR with band-limiting and clock drift; the IVR
// answers, the caller presses 1 and the purchase's reference on the
// handset (DTMF through the device and the line), the IVR triggers the
// in-line device, which takes the line and approves the purchase with the
// card over the Bell 202 modem into the real server (SQLite store,
// ledger); the IVR takes the line back and announces the approval.
func TestPayThroughInlineDevice(t *testing.T) {
	b := newBed(t)
	p := b.newPurchase(t, 1250)
	holder := ledger.HolderAccount(b.card.CardNumber, "EUR")
	before, merchantBefore := balance(t, b, holder), balance(t, b, b.merchant.Account)
	out := b.serveIVR(t, "100", 2, ivr.Config{Modem: answerModem})

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ic := b.inlineCall(t, ctx, "200", "100", "5551234")
	keys, err := dtmf.Generate("1"+p.Reference+"#", dtmf.Params{})
	if err != nil {
		t.Fatal(err)
	}
	// The holder presses the keys once the welcome prompt has begun
	// (half a second of line time in).
	heard := ic.hear(t, 4000, keys)

	o := waitOutcome(t, out)
	t.Logf("paid in a call of %v line time (switch at %v× real time), %v of it with the device; choices %q", o.LineTime, *speedFlag, o.Handover, o.Choices)
	if o.Result != "approved" || o.Code != int(protocol.CodeOK) || o.Status != store.PurchaseApproved || o.Purchase != p.ID || o.Amount.Minor != 1250 {
		t.Errorf("IVR outcome %+v; want approved, code 0, purchase %s of 1250", o, p.ID)
	}
	if o.Caller != "5551234" || !strings.Contains(strings.Join(o.Choices, ","), "ref "+p.Reference) {
		t.Errorf("IVR outcome caller %q choices %q", o.Caller, o.Choices)
	}
	select {
	case s := <-ic.sessions:
		if s.Err != nil || s.Code != 0 || s.Buy == nil || !s.Buy.OK() || s.ByHolder || s.Op != handover.OpPay {
			t.Errorf("device session %+v", s)
		}
	default:
		t.Error("the device ran no session")
	}
	if got, _ := b.ms.Purchase(ctx, "", p.ID); got.Status != store.PurchaseApproved {
		t.Errorf("purchase status %s, want approved", got.Status)
	}
	if d := before - balance(t, b, holder); d != 1250 {
		t.Errorf("holder paid %d, want 1250", d)
	}
	if d := balance(t, b, b.merchant.Account) - merchantBefore; d != 1250 {
		t.Errorf("merchant received %d, want 1250", d)
	}
	if logs := b.logText(); !strings.Contains(logs, "outcome=approved") || t.Failed() {
		t.Errorf("IVR log:\n%s", logs)
	}
	// The handset never hears the signalling nor the modem: the device
	// took the line.
	if k := dtmf.Decode(heard); strings.ContainsAny(k, "ABCD") {
		t.Errorf("the handset heard signalling %q", k)
	}
}

// TestPayInsufficientFunds: the holder's account cannot pay; the server
// declines over the modem, the device reports the code, the IVR says the
// payment was not approved, and no money moves.
func TestPayInsufficientFunds(t *testing.T) {
	b := newBed(t)
	p := b.newPurchase(t, 1_000_000)
	holder := ledger.HolderAccount(b.card.CardNumber, "EUR")
	before := balance(t, b, holder)
	out := b.serveIVR(t, "100", 1, ivr.Config{Modem: answerModem, Voice: ivr.Tones{}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ic := b.inlineCall(t, ctx, "200", "100", "77")
	keys, err := dtmf.Generate("1"+p.Reference+"#", dtmf.Params{})
	if err != nil {
		t.Fatal(err)
	}
	ic.hear(t, 4000, keys)
	o := waitOutcome(t, out)
	if o.Result != "not-approved" || o.Code != int(protocol.CodeInsufficientFunds) || o.Status != store.PurchaseDeclined {
		t.Errorf("IVR outcome %+v; want not-approved, code %d, status declined", o, protocol.CodeInsufficientFunds)
	}
	if d := before - balance(t, b, holder); d != 0 {
		t.Errorf("holder paid %d, want 0", d)
	}
}

// TestSignInByHolder: the holder presses the device's key while the IVR
// speaks; the device asks for the line (B request), authenticates the
// card over the modem, and the IVR announces the sign-in.
func TestSignInByHolder(t *testing.T) {
	b := newBed(t)
	out := b.serveIVR(t, "100", 1, ivr.Config{Modem: answerModem})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ic := b.inlineCall(t, ctx, "200", "100", "42")
	if err := ic.dev.Start(handover.OpSignIn, ""); err != nil {
		t.Fatal(err)
	}
	ic.hear(t, 0, nil)
	o := waitOutcome(t, out)
	t.Logf("signed in during a call of %v line time, %v of it with the device", o.LineTime, o.Handover)
	if o.Result != "signed-in" || o.Code != 0 || o.Op != handover.OpSignIn {
		t.Errorf("IVR outcome %+v, want signed-in", o)
	}
	select {
	case s := <-ic.sessions:
		if s.Err != nil || s.Auth == nil || !s.Auth.OK() || !s.ByHolder {
			t.Errorf("device session %+v", s)
		}
	default:
		t.Error("the device ran no session")
	}
}

// TestTwoHoldersAtOnce: two holders, each with a card and an in-line
// device, pay two purchases through the IVR at the same time; both are
// approved and each holder pays exactly their own.
func TestTwoHoldersAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("two modem sessions at once")
	}
	b := newBed(t)
	card2 := servertest.Sibling(t, b.card)
	servertest.PutCard(t, b.st, card2, time.Now())
	if _, err := b.svc.Deposit(context.Background(), card2.CardNumber, money.Amount{Minor: 5_000, Currency: "EUR"}, rand.Text()); err != nil {
		t.Fatal(err)
	}
	id2 := servertest.Device(t, b.st, "inline 2", b.id.ServerKeys, "", time.Now())
	out := b.serveIVR(t, "100", 2, ivr.Config{Modem: answerModem, Voice: ivr.Tones{}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	holders := []struct {
		card   *wallettest.Env
		id     device.Identity
		amount int64
	}{{b.card, b.id, 700}, {card2, id2, 1900}}
	before := make([]int64, len(holders))
	purchases := map[string]int64{}
	var wg sync.WaitGroup
	for i, h := range holders {
		before[i] = balance(t, b, ledger.HolderAccount(h.card.CardNumber, "EUR"))
		p := b.newPurchase(t, h.amount)
		purchases[p.ID] = h.amount
		ic := b.inlineCallWith(t, ctx, fmt.Sprint(200+i), "100", fmt.Sprint(5551000+i), h.id, h.card)
		keys, err := dtmf.Generate("1"+p.Reference+"#", dtmf.Params{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { ic.hear(t, 4000, keys) })
	}
	wg.Wait()
	for range holders {
		o := waitOutcome(t, out)
		if o.Result != "approved" || o.Amount.Minor != purchases[o.Purchase] {
			t.Errorf("outcome %+v, want approved with its own amount", o)
		}
	}
	for i, h := range holders {
		if d := before[i] - balance(t, b, ledger.HolderAccount(h.card.CardNumber, "EUR")); d != h.amount {
			t.Errorf("holder %d paid %d, want %d", i, d, h.amount)
		}
	}
}

func balance(t *testing.T, b *bed, account string) int64 {
	t.Helper()
	v, err := b.ledger.Balance(context.Background(), account)
	if errors.Is(err, store.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return v.Minor
}
