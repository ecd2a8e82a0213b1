// Package ivr is the server's telephone face (issue 7, item 5): it answers
// calls on the line switch, speaks prompts (Voice), reads the caller's
// DTMF keys with barge-in, and — when the caller pays or signs in — hands
// the line to the holder's in-line card device with the signalling of
// package handover, serves the device's session over the modem link it
// makes on the call (Server.ServeLink), takes the line back and announces
// the outcome: for a payment, the purchase's status read from the store.
// Every call is logged with its caller, menu choices, outcome and line
// time.
//
// Timeouts are counted in samples read from the call, i.e. in line time,
// so that a switch run faster than real time (line.Config.Speed) or a
// loaded host changes nothing but the wall clock.
//
// It imports line, dtmf, handover, link, money, protocol and store; the
// modem and the device server come in through Config, so that it names
// no concrete transport.
package ivr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/line"
	"cardlink/internal/link"
	"cardlink/internal/link/dtmf"
	"cardlink/internal/link/handover"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/store"
)

// Window is the line window (line.ListenOptions.Window, in samples) the
// IVR's lines should have: 500 ms. Prompts and signalling are written that
// far ahead of the line, so that a host busy for a moment does not cut a
// DTMF tone in two (a gap in what a party writes is silence on the line);
// a key still stops a prompt within that time.
const Window = 4000

// Modem turns a call into a link: the answering end of the modem (the
// device originates). It returns once the link is up or failed; the
// link's Close ends the modem's use of the call (its goroutines stop
// reading and writing it before Close returns).
type Modem func(ctx context.Context, call *line.Call) (link.Link, error)

// LinkServer serves a device session over a link until it ends, and
// closes the link (*server.Server).
type LinkServer interface {
	ServeLink(ctx context.Context, l link.Link, remote string)
}

// Purchases finds purchase requests (store.Merchants does).
type Purchases interface {
	PendingPurchase(ctx context.Context, reference string, now time.Time) (store.Purchase, error)
	Purchase(ctx context.Context, merchant, id string) (store.Purchase, error)
}

// Config configures a Server.
type Config struct {
	Modem     Modem      // required: the answering modem
	Devices   LinkServer // required: serves the device's session
	Purchases Purchases  // required: purchase lookups
	Voice     Voice      // nil: DefaultVoice()
	Logger    *slog.Logger
	// Now is the clock for purchase lookups; nil is time.Now.
	Now func() time.Time

	// KeyTimeout is the line time allowed for each key the caller types
	// after a prompt; 0 means 8 s.
	KeyTimeout time.Duration
	// ReportTimeout is the line time the device has, after the modem
	// link closed, to report its outcome; 0 means 10 s.
	ReportTimeout time.Duration
	// CarrierTimeout is the line time the device has to raise its
	// carrier after the handover, when the Modem's link can tell
	// (a Carrier() bool method, as AnswerModem's has); 0 means 5 s.
	CarrierTimeout time.Duration
	// SessionTimeout bounds the modem session in real time; 0 means
	// 5 minutes.
	SessionTimeout time.Duration
	// Tries is how many times the menu is offered before hanging up; 0
	// means 3.
	Tries int
}

// Prompts the IVR speaks. Amounts and names are appended where the
// text ends with a colon.
const (
	PromptWelcome     = "Welcome to card link."
	PromptMenu        = "Press 1 to pay, 2 to sign in."
	PromptReference   = "Enter the purchase reference, then press hash."
	PromptUnknown     = "That reference is not a pending purchase."
	PromptAmount      = "You are paying:"
	PromptHandover    = "Your card device takes the line now."
	PromptNoDevice    = "Your card device did not answer."
	PromptApproved    = "Payment approved:"
	PromptNotApproved = "The payment was not approved."
	PromptSignedIn    = "You are signed in."
	PromptSignInFail  = "Sign in failed."
	PromptGoodbye     = "Thank you. Goodbye."
	PromptNoInput     = "Sorry, I did not get that."
)

// Outcome is what became of one call; Serve logs it.
type Outcome struct {
	CallID   uint64
	Caller   string
	Choices  []string // menu keys and what they chose, in order ("1 pay", "ref 12345678", "device pay")
	Op       handover.Op
	Result   string // "approved", "not-approved", "signed-in", "sign-in-failed", "no-device", "no-input", "hung-up", "unknown-reference"
	Code     int    // the device's report, -1 without one
	Purchase string // the purchase's ID, for a payment
	Status   store.PurchaseStatus
	Amount   money.Amount
	LineTime time.Duration // the call's length in line time (from the answer)
	// Handover is the line time from the trigger (or request) to the
	// device's report: the device's session on the modem.
	Handover time.Duration
	Err      error // why the call ended abnormally, if it did
}

// Server answers calls. Its methods are safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger
}

// ErrConfig is returned by New for a Config lacking a required field.
var ErrConfig = errors.New("ivr: incomplete config")

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Modem == nil || cfg.Devices == nil || cfg.Purchases == nil {
		return nil, fmt.Errorf("%w: Modem, Devices and Purchases are required", ErrConfig)
	}
	if cfg.Voice == nil {
		cfg.Voice = DefaultVoice()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeyTimeout <= 0 {
		cfg.KeyTimeout = 8 * time.Second
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = 10 * time.Second
	}
	if cfg.CarrierTimeout <= 0 {
		cfg.CarrierTimeout = 5 * time.Second
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 5 * time.Minute
	}
	if cfg.Tries <= 0 {
		cfg.Tries = 3
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}, nil
}

// Serve answers the calls to l, each in its own goroutine (as many at once
// as l has lines), until ctx ends or l fails; it then hangs up the calls
// in progress, waits for their goroutines and returns nil when ctx ended,
// else Accept's error. onCall, if not nil, gets each call's Outcome (from
// the call's goroutine). Serve does not close l.
func (s *Server) Serve(ctx context.Context, l *line.Listener, onCall func(Outcome)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		call, err := l.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting call: %w", err)
		}
		wg.Go(func() {
			o := s.Handle(ctx, call)
			if onCall != nil {
				onCall(o)
			}
		})
	}
}

// Handle runs one call to its end, hangs it up and logs its outcome.
// It returns when the call is over or ctx ended.
func (s *Server) Handle(ctx context.Context, call *line.Call) Outcome {
	start := time.Now()
	c := &callState{s: s, call: call, o: Outcome{CallID: call.ID(), Caller: call.Remote(), Code: -1}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { call.Hangup() })
	defer stop()
	c.listen(ctx)
	err := c.run(ctx)
	c.stopListening()
	call.Hangup()
	if err != nil {
		if c.o.Result == "" {
			c.o.Result = "hung-up"
		}
		if !errors.Is(err, line.ErrHangup) {
			c.o.Err = err
		}
	}
	_, clock := call.Clock()
	c.o.LineTime = time.Duration(clock) * time.Second / audio.Rate
	attrs := []any{"call", c.o.CallID, "caller", c.o.Caller, "choices", strings.Join(c.o.Choices, ", "),
		"outcome", c.o.Result, "line_time", c.o.LineTime.Round(10 * time.Millisecond), "real_time", time.Since(start).Round(time.Millisecond)}
	if c.o.Op != 0 {
		attrs = append(attrs, "op", c.o.Op.String(), "code", c.o.Code, "handover_time", c.o.Handover.Round(10*time.Millisecond))
	}
	if c.o.Purchase != "" {
		attrs = append(attrs, "purchase", c.o.Purchase, "status", string(c.o.Status), "amount", c.o.Amount.String())
	}
	if c.o.Err != nil {
		attrs = append(attrs, "err", c.o.Err)
	}
	s.log.Info("ivr call", attrs...)
	return c.o
}

// event is what the listening goroutine heard in one Read.
type event struct {
	n   int               // samples read
	key byte              // a plain key, or 0
	msg *handover.Message // a signalling sequence, or nil
}

type callState struct {
	s    *Server
	call *line.Call
	o    Outcome

	events chan event
	halt   chan struct{} // closed to stop the listener
	done   chan struct{} // closed when the listener returned
	ended  error         // why the listener stopped (the call's end), once done is closed
	heard  int64         // samples read, all listeners
	typed  []byte        // keys heard and not yet consumed (barge-in, typing ahead)
}

// listen starts the goroutine that reads the call, detects keys and
// signalling and sends them as events.
func (c *callState) listen(ctx context.Context) {
	c.events = make(chan event, 64)
	c.halt = make(chan struct{})
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		det := dtmf.NewDetector(dtmf.Config{})
		var sc handover.Scanner
		buf := make([]float64, 800)
		for {
			n, err := c.call.Read(buf)
			if err != nil {
				c.ended = err
				return
			}
			ev := []event{{n: n}}
			for _, d := range det.Process(buf[:n]) {
				c.s.log.Debug("ivr: key", "call", c.call.ID(), "key", string(d.Key))
				m, ok, plain, err := sc.Key(d.Key)
				switch {
				case plain:
					ev = append(ev, event{key: d.Key})
				case ok:
					ev = append(ev, event{msg: &m})
				case err != nil:
					c.s.log.Debug("ivr: bad signalling", "call", c.call.ID(), "err", err)
				}
			}
			sc.Elapse(time.Duration(n) * time.Second / audio.Rate)
			for _, e := range ev {
				select {
				case c.events <- e:
				case <-c.halt:
					return
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-c.halt:
				return
			default:
			}
		}
	}()
}

// stopListening stops the listener and waits for it; events it sent and
// nobody took are dropped.
func (c *callState) stopListening() {
	select {
	case <-c.halt:
	default:
		close(c.halt)
	}
	<-c.done
	for {
		select {
		case e := <-c.events:
			c.heard += int64(e.n)
		default:
			return
		}
	}
}

// errRequest is returned by the waits when the device asked for the line.
type errRequest struct{ m handover.Message }

func (e *errRequest) Error() string { return "device requests " + e.m.Op.String() }

// take handles one event: counts samples, queues keys; a device request
// or report is returned.
func (c *callState) take(e event) *handover.Message {
	c.heard += int64(e.n)
	if e.key != 0 {
		c.typed = append(c.typed, e.key)
	}
	return e.msg
}

// next waits for one event; it fails when the call ended or ctx did.
func (c *callState) next(ctx context.Context) (event, error) {
	select {
	case e := <-c.events:
		return e, nil
	case <-c.done:
		// Take what it sent before it stopped.
		select {
		case e := <-c.events:
			return e, nil
		default:
		}
		if c.ended != nil {
			return event{}, c.ended
		}
		return event{}, errors.New("ivr: listener stopped")
	case <-ctx.Done():
		return event{}, ctx.Err()
	}
}

// say plays text; a key pressed meanwhile stops it (barge-in: the key is
// kept for the next read). A device request stops it too and is
// returned as *errRequest.
func (c *callState) say(ctx context.Context, texts ...string) error {
	for _, text := range texts {
		a, err := c.s.cfg.Voice.Say(ctx, text)
		if err != nil {
			return fmt.Errorf("rendering prompt: %w", err)
		}
		const chunk = 160
		for i := 0; i < len(a); i += chunk {
			if len(c.typed) > 0 {
				return nil
			}
			if _, err := c.call.Write(a[i:min(i+chunk, len(a))]); err != nil {
				return err
			}
			for drained := false; !drained; {
				select {
				case e := <-c.events:
					if m := c.take(e); m != nil && m.Kind == handover.Request {
						return &errRequest{*m}
					}
				default:
					drained = true
				}
			}
		}
	}
	return nil
}

// key waits for the caller's next key, for at most KeyTimeout of line
// time; 0 means none came.
func (c *callState) key(ctx context.Context) (byte, error) {
	limit := c.heard + int64(c.s.cfg.KeyTimeout.Seconds()*audio.Rate)
	for {
		if len(c.typed) > 0 {
			k := c.typed[0]
			c.typed = c.typed[1:]
			return k, nil
		}
		if c.heard >= limit {
			return 0, nil
		}
		e, err := c.next(ctx)
		if err != nil {
			return 0, err
		}
		if m := c.take(e); m != nil && m.Kind == handover.Request {
			return 0, &errRequest{*m}
		}
	}
}

func (c *callState) choose(s string) { c.o.Choices = append(c.o.Choices, s) }

// run is the call's dialogue. It returns nil when it hung up by itself.
func (c *callState) run(ctx context.Context) error {
	err := c.say(ctx, PromptWelcome)
	for try := 0; err == nil && try < c.s.cfg.Tries; try++ {
		if err = c.say(ctx, PromptMenu); err != nil {
			break
		}
		var k byte
		if k, err = c.key(ctx); err != nil {
			break
		}
		switch k {
		case '1':
			c.choose("1 pay")
			return c.pay(ctx)
		case '2':
			c.choose("2 sign-in")
			return c.handover(ctx, handover.Message{Kind: handover.Trigger, Op: handover.OpSignIn}, store.Purchase{})
		case 0:
			c.choose("none")
		default:
			c.choose(string(k) + " ?")
		}
		err = c.say(ctx, PromptNoInput)
	}
	if r, ok := err.(*errRequest); ok {
		return c.requested(ctx, r.m)
	}
	if err != nil {
		return err
	}
	c.o.Result = "no-input"
	return c.bye(ctx)
}

// requested serves a handover the device asked for.
func (c *callState) requested(ctx context.Context, m handover.Message) error {
	c.choose("device " + m.Op.String())
	var p store.Purchase
	if m.Op == handover.OpPay {
		var err error
		if p, err = c.s.cfg.Purchases.PendingPurchase(ctx, m.Reference, c.s.cfg.Now()); err != nil {
			// The device runs the session anyway; the server tells it.
			c.s.log.Debug("ivr: device asked to pay an unknown reference", "call", c.o.CallID, "err", err)
		}
	}
	return c.handover(ctx, m, p)
}

// pay reads the purchase reference, announces the amount and hands over.
func (c *callState) pay(ctx context.Context) error {
	for try := 0; try < c.s.cfg.Tries; try++ {
		if err := c.say(ctx, PromptReference); err != nil {
			return c.orRequest(ctx, err)
		}
		ref, err := c.digits(ctx)
		if err != nil {
			return c.orRequest(ctx, err)
		}
		c.choose("ref " + ref)
		if ref == "" {
			if c.o.Result == "" {
				c.o.Result = "no-input"
			}
			continue
		}
		p, err := c.s.cfg.Purchases.PendingPurchase(ctx, ref, c.s.cfg.Now())
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExpired) {
			c.o.Result = "unknown-reference"
			if err := c.say(ctx, PromptUnknown); err != nil {
				return c.orRequest(ctx, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("looking up purchase: %w", err)
		}
		amount := money.Amount{Minor: p.Amount, Currency: money.Currency(p.Currency)}
		if err := c.say(ctx, PromptAmount, spoken(amount)); err != nil {
			return c.orRequest(ctx, err)
		}
		return c.handover(ctx, handover.Message{Kind: handover.Trigger, Op: handover.OpPay, Reference: ref}, p)
	}
	return c.bye(ctx)
}

func (c *callState) orRequest(ctx context.Context, err error) error {
	if r, ok := err.(*errRequest); ok {
		return c.requested(ctx, r.m)
	}
	return err
}

// digits reads keys up to '#' or a pause of KeyTimeout ('*' starts
// again); "" when the caller typed nothing in time.
func (c *callState) digits(ctx context.Context) (string, error) {
	var b []byte
	for len(b) <= handover.MaxReference {
		k, err := c.key(ctx)
		if err != nil {
			return "", err
		}
		switch k {
		case 0: // a pause: what was typed is the answer
			return string(b), nil
		case '#':
			return string(b), nil
		case '*':
			b = b[:0]
		default:
			b = append(b, k)
		}
	}
	return string(b), nil
}

// handover gives the line to the device for m's operation: it sends the
// trigger (unless the device asked), answers the modem, serves the
// session, takes the line back, waits for the device's report and
// announces the outcome. p is the purchase being paid, if known.
func (c *callState) handover(ctx context.Context, m handover.Message, p store.Purchase) error {
	c.o.Op = m.Op
	c.o.Purchase = p.ID
	if p.ID != "" {
		c.o.Amount = money.Amount{Minor: p.Amount, Currency: money.Currency(p.Currency)}
	}
	if m.Kind == handover.Trigger {
		if err := c.say(ctx, PromptHandover); err != nil {
			if r, ok := err.(*errRequest); ok {
				m = r.m
			} else {
				return err
			}
		}
	}
	if m.Kind == handover.Trigger {
		tones, err := dtmf.Generate(m.String(), dtmf.Params{})
		if err != nil {
			return fmt.Errorf("making trigger: %w", err)
		}
		if _, err := c.call.Write(tones); err != nil {
			return err
		}
		if err := c.call.Drain(ctx); err != nil {
			return err
		}
	}
	c.choose("handover " + m.Op.String())
	_, from := c.call.Clock()
	c.stopListening()
	mctx, cancel := context.WithTimeoutCause(ctx, c.s.cfg.SessionTimeout, errors.New("session timeout"))
	l, err := c.s.cfg.Modem(mctx, c.call)
	if err == nil {
		stop := c.watchCarrier(mctx, l, cancel)
		c.s.cfg.Devices.ServeLink(mctx, l, "call "+fmt.Sprint(c.o.CallID)+" from "+c.o.Caller)
		if stop() {
			err = errNoCarrier
		}
	}
	cancel()
	if c.call.Err() != nil {
		return c.call.Err()
	}
	c.listen(ctx)
	if err != nil {
		c.s.log.Info("ivr: no modem", "call", c.o.CallID, "err", err)
		c.o.Result = "no-device"
		return c.finish(ctx, PromptNoDevice)
	}
	// Tell the device the line is voice again (D); it reports then.
	resume, err := dtmf.Generate(handover.Message{Kind: handover.Resume}.String(), dtmf.Params{})
	if err != nil {
		return fmt.Errorf("making resume tone: %w", err)
	}
	if _, err := c.call.Write(resume); err != nil {
		return err
	}
	limit := c.heard + int64(c.s.cfg.ReportTimeout.Seconds()*audio.Rate)
	for c.o.Code < 0 && c.heard < limit {
		e, err := c.next(ctx)
		if err != nil {
			return err
		}
		if r := c.take(e); r != nil && r.Kind == handover.Report {
			c.o.Code = r.Code
		}
	}
	_, to := c.call.Clock()
	c.o.Handover = time.Duration(to-from) * time.Second / audio.Rate
	c.typed = c.typed[:0]
	switch m.Op {
	case handover.OpPay:
		return c.announcePayment(ctx)
	default:
		if c.o.Code == int(protocol.CodeOK) {
			c.o.Result = "signed-in"
			return c.finish(ctx, PromptSignedIn)
		}
		c.o.Result = "sign-in-failed"
		return c.finish(ctx, PromptSignInFail)
	}
}

// errNoCarrier: the device did not raise its carrier in time.
var errNoCarrier = errors.New("no carrier from the device")

// watchCarrier ends the session (cancel) when l can tell its far carrier
// and none came within CarrierTimeout of line time. The returned stop
// ends the watch and reports whether it ended the session.
func (c *callState) watchCarrier(ctx context.Context, l link.Link, cancel context.CancelFunc) (stop func() bool) {
	cl, ok := l.(interface{ Carrier() bool })
	if !ok {
		return func() bool { return false }
	}
	_, start := c.call.Clock()
	limit := int64(c.s.cfg.CarrierTimeout.Seconds() * audio.Rate)
	done := make(chan struct{})
	fired := make(chan bool, 1)
	go func() {
		// The decision is in line time; the polling in real time.
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fired <- false
				return
			case <-ctx.Done():
				fired <- false
				return
			case <-t.C:
			}
			if cl.Carrier() {
				fired <- false
				return
			}
			if _, now := c.call.Clock(); now-start >= limit {
				cancel()
				fired <- true
				return
			}
		}
	}()
	return func() bool {
		close(done)
		return <-fired
	}
}

// announcePayment reads the purchase's status from the store (the
// device's report is not trusted for money) and says it.
func (c *callState) announcePayment(ctx context.Context) error {
	if c.o.Purchase == "" {
		c.o.Result = "unknown-reference"
		return c.finish(ctx, PromptNotApproved)
	}
	p, err := c.s.cfg.Purchases.Purchase(ctx, "", c.o.Purchase)
	if err != nil {
		return fmt.Errorf("reading purchase: %w", err)
	}
	c.o.Status = p.Status
	if p.Status == store.PurchaseApproved {
		c.o.Result = "approved"
		return c.finish(ctx, PromptApproved, spoken(c.o.Amount))
	}
	c.o.Result = "not-approved"
	return c.finish(ctx, PromptNotApproved)
}

// finish says texts and goodbye, and lets them reach the line.
func (c *callState) finish(ctx context.Context, texts ...string) error {
	if err := c.say(ctx, texts...); err != nil {
		if _, ok := err.(*errRequest); !ok {
			return err
		}
	}
	return c.bye(ctx)
}

func (c *callState) bye(ctx context.Context) error {
	c.typed = c.typed[:0]
	if err := c.say(ctx, PromptGoodbye); err != nil {
		if _, ok := err.(*errRequest); !ok {
			return err
		}
	}
	return c.call.Drain(ctx)
}

// spoken writes an amount as a speech synthesiser reads it well:
// "12 euro 50".
func spoken(a money.Amount) string {
	s := a.String() // "12.50 EUR"
	num, cur, _ := strings.Cut(s, " ")
	whole, frac, _ := strings.Cut(num, ".")
	name := map[money.Currency]string{"EUR": "euro", "USD": "dollars", "GBP": "pounds", "CHF": "francs"}[a.Currency]
	if name == "" {
		name = cur
	}
	if frac == "" || strings.Trim(frac, "0") == "" {
		return whole + " " + name + "."
	}
	return whole + " " + name + " " + strings.TrimLeft(frac, "0") + "."
}
