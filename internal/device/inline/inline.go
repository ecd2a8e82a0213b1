// Package inline is the in-line card device of issue 7 (item 5): a box on
// the telephone wire between the holder's handset and the line. It passes
// voice both ways untouched; when the IVR triggers it, or the holder asks
// it to (a key on the device), it takes the line — the handset hears
// nothing and is not heard — signals with package handover, makes a modem
// link on the call (it originates; the IVR answers), runs the device flow
// (device.Buy or device.Authenticate with the card) over it, and hands the
// line back, reporting the outcome to the IVR in DTMF.
//
// It sees the two calls as *line.Call: in the simulator the handset is a
// party that called the device, and the device called the IVR. The modem
// comes in through Config, so that the package names no concrete modem.
// It imports device, handover, dtmf, line, link, protocol and wallet.
package inline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/device"
	"cardlink/internal/line"
	"cardlink/internal/link"
	"cardlink/internal/link/dtmf"
	"cardlink/internal/link/handover"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// Modem turns a call into a link: the originating end of the modem. It
// returns once the link is up or failed; the link's Close ends the
// modem's use of the call before it returns.
type Modem func(ctx context.Context, call *line.Call) (link.Link, error)

// Config configures a Device.
type Config struct {
	Identity device.Identity // required: the device's identity and pinned keys
	Card     *wallet.Client  // required: the holder's card
	Modem    Modem           // required
	// Auth is how the holder is verified (e.g. the PIN typed on the
	// device) for both operations.
	Auth device.AuthOptions
	// Confirm shows a purchase to the holder before the card signs; nil
	// approves.
	Confirm func(ctx context.Context, t txn.Transaction) (bool, error)
	Logger  *slog.Logger
	// SessionTimeout bounds one modem session in real time; 0 means 5
	// minutes.
	SessionTimeout time.Duration
	// ResumeTimeout is the line time the device waits, after its
	// modem link closed, for the IVR's D before it reports all the same;
	// 0 means 60 s (the IVR's end of the modem link may linger some
	// seconds of real time after the device's closed, which at a fast
	// switch speed is many seconds of line time).
	ResumeTimeout time.Duration
	// OnSession, if set, gets every session's outcome (from Run's
	// goroutine).
	OnSession func(Session)
}

// Session is the outcome of one handover.
type Session struct {
	Op        handover.Op
	Reference string
	ByHolder  bool // the holder asked (a B request), not the IVR
	Code      int  // what was reported to the IVR: a protocol.Code, or handover.CodeUnfinished
	Buy       *device.BuyResult
	Auth      *device.Result
	Err       error // why the session did not reach the server's verdict
}

// Device is one in-line device. Start may be called from any goroutine.
type Device struct {
	cfg   Config
	log   *slog.Logger
	start chan handover.Message
}

// ErrConfig is returned by New for a Config lacking a required field.
var ErrConfig = errors.New("inline: incomplete config")

// ErrBusy is returned by Start while a request waits to be served.
var ErrBusy = errors.New("inline: a session is already asked for")

// New returns a device for cfg.
func New(cfg Config) (*Device, error) {
	if cfg.Card == nil || cfg.Modem == nil {
		return nil, fmt.Errorf("%w: Card and Modem are required", ErrConfig)
	}
	if err := cfg.Identity.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 5 * time.Minute
	}
	if cfg.ResumeTimeout <= 0 {
		cfg.ResumeTimeout = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Device{cfg: cfg, log: log, start: make(chan handover.Message, 1)}, nil
}

// Start is the holder's key on the device: at the next chance Run takes
// the line, asks the IVR for op (B request) and runs it. reference is the
// purchase's code for OpPay. It fails with ErrBusy when a request is
// already waiting, or with an error wrapping handover.ErrSequence when
// op and reference do not make a request.
func (d *Device) Start(op handover.Op, reference string) error {
	m := handover.Message{Kind: handover.Request, Op: op, Reference: reference}
	if err := m.Validate(); err != nil {
		return err
	}
	select {
	case d.start <- m:
		return nil
	default:
		return ErrBusy
	}
}

// Run sits between handset and phone (the call to the IVR) until either
// call ends or ctx does; then it hangs up both. It returns nil when a
// party hung up or ctx ended, else the error that ended the call (the
// switch stopped, the connection was lost).
func (d *Device) Run(parent context.Context, handset, phone *line.Call) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { handset.Hangup(); phone.Hangup() })
	defer stop()

	b := &bridge{d: d, handset: handset, phone: phone}
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		upErr = b.up()
		cancel()
	})
	err := b.down(ctx)
	cancel()
	wg.Wait()
	handset.Hangup()
	phone.Hangup()
	for _, e := range []error{err, upErr} {
		// context.Canceled: this side stopped because the other ended.
		if e != nil && !errors.Is(e, line.ErrHangup) && !errors.Is(e, line.ErrClosed) && !errors.Is(e, context.Canceled) && parent.Err() == nil {
			return e
		}
	}
	return nil
}

// bridge is one call through the device.
type bridge struct {
	d              *Device
	handset, phone *line.Call

	mu    sync.Mutex // serializes writes to phone; guards muted
	muted bool       // the device has the line: the handset is not heard
}

// up carries the handset's voice to the phone, unless muted.
func (b *bridge) up() error {
	buf := make([]float64, 800)
	for {
		n, err := b.handset.Read(buf)
		if err != nil {
			return err
		}
		b.mu.Lock()
		if !b.muted {
			err = b.write(b.phone, buf[:n])
		}
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// Window is the line window (line.Options.Window and
// line.ListenOptions.Window, in samples) the device's two calls should
// have: 500 ms, room for the jitter margin and a chunk of audio.
const Window = 4000

// jitter is how far ahead of the line the bridge keeps each call's
// writing: 200 ms. The two calls run on their own clocks and the device's
// goroutines are scheduled late now and then; a call that runs dry fills
// the gap with silence, which cuts a DTMF tone in two.
const jitter = audio.Rate / 5

// write writes p to call, first topping up what the call has queued with
// silence when it fell under half the jitter margin (at the start, and
// after a hiccup), so that the line does not run dry in the middle of p.
func (b *bridge) write(call *line.Call, p []float64) error {
	if q := call.Pending(); q < jitter/2 {
		if _, err := call.Write(make([]float64, jitter-q)); err != nil {
			return err
		}
	}
	_, err := call.Write(p)
	return err
}

func (b *bridge) mute(on bool) {
	b.mu.Lock()
	b.muted = on
	b.mu.Unlock()
}

// down carries the phone's audio to the handset and watches it for the
// IVR's trigger; it also serves the holder's requests. Sessions run here,
// so that only this goroutine ever reads the phone.
func (b *bridge) down(ctx context.Context) error {
	det := dtmf.NewDetector(dtmf.Config{})
	var sc handover.Scanner
	buf := make([]float64, 800)
	var held []float64
	quiet := 0 // samples of the phone the handset does not hear
	for {
		select {
		case m := <-b.d.start:
			held = held[:0]
			b.mute(true)
			if err := b.send(ctx, m.String()); err != nil {
				return err
			}
			if err := b.session(ctx, m); err != nil {
				return err
			}
			det.Reset()
			sc.Reset()
			continue
		default:
		}
		n, err := b.phone.Read(buf)
		if err != nil {
			return err
		}
		var trigger *handover.Message
		for _, k := range det.Process(buf[:n]) {
			if k.Key >= 'A' && k.Key <= 'D' {
				// Signalling: drop what is held (its start) and the
				// rest of its tone.
				held, quiet = held[:0], holdBack
			}
			m, ok, _, err := sc.Key(k.Key)
			if err != nil {
				b.d.log.Debug("inline: bad signalling", "err", err)
			}
			if ok && m.Kind == handover.Trigger {
				trigger = &m
			}
		}
		sc.Elapse(time.Duration(n) * time.Second / audio.Rate)
		if trigger != nil {
			held = held[:0]
			if err := b.session(ctx, *trigger); err != nil {
				return err
			}
			det.Reset()
			sc.Reset()
			continue
		}
		// The handset hears the phone delayed by holdBack samples, so
		// that the start of a signalling key, which the detector confirms
		// only 40 ms in, is dropped with the rest while a sequence is
		// open: the signalling is for the device.
		if sc.Open() {
			held = held[:0]
			continue
		}
		chunk := buf[:n]
		if quiet > 0 {
			q := min(quiet, len(chunk))
			quiet -= q
			chunk = chunk[q:]
		}
		held = append(held, chunk...)
		if len(held) > holdBack {
			out := len(held) - holdBack
			if err := b.write(b.handset, held[:out]); err != nil {
				return err
			}
			held = append(held[:0], held[out:]...)
		}
	}
}

// holdBack is the handset's delay behind the phone: 100 ms, over twice
// the time the detector takes to confirm a key.
const holdBack = audio.Rate / 10

// send writes keys on the phone as DTMF and waits until they are out.
// The caller has muted the handset.
func (b *bridge) send(ctx context.Context, keys string) error {
	tones, err := dtmf.Generate(keys, dtmf.Params{})
	if err != nil {
		return fmt.Errorf("making signalling tones: %w", err)
	}
	b.mu.Lock()
	err = b.write(b.phone, tones)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.phone.Drain(ctx)
}

// session takes the line for m, runs the operation over the modem and
// hands the line back with a report. It returns an error only when the
// call ended.
func (b *bridge) session(ctx context.Context, m handover.Message) error {
	b.mute(true)
	defer b.mute(false)
	s := Session{Op: m.Op, Reference: m.Reference, ByHolder: m.Kind == handover.Request, Code: handover.CodeUnfinished}
	sctx, cancel := context.WithTimeout(ctx, b.d.cfg.SessionTimeout)
	l, err := b.d.cfg.Modem(sctx, b.phone)
	if err != nil {
		s.Err = fmt.Errorf("making the modem link: %w", err)
	} else {
		s.Code, s.Err = b.run(sctx, l, &s)
		if cerr := l.Close(); cerr != nil && s.Err == nil {
			b.d.log.Debug("inline: closing modem link", "err", cerr)
		}
	}
	cancel()
	if err := b.phone.Err(); err != nil {
		b.report(s)
		return err
	}
	// Report once the IVR has the line back to voice (its D), or after
	// ResumeTimeout of line time if the D was lost.
	if err := b.waitResume(ctx); err != nil {
		b.report(s)
		return err
	}
	err = b.send(ctx, handover.Message{Kind: handover.Report, Code: s.Code}.String())
	b.report(s)
	return err
}

// waitResume reads the phone until the IVR's D, for at most
// ResumeTimeout of line time.
func (b *bridge) waitResume(ctx context.Context) error {
	det := dtmf.NewDetector(dtmf.Config{})
	limit := int64(b.d.cfg.ResumeTimeout.Seconds() * audio.Rate)
	buf := make([]float64, 800)
	for read := int64(0); read < limit; {
		n, err := b.phone.Read(buf)
		if err != nil {
			return err
		}
		read += int64(n)
		for _, k := range det.Process(buf[:n]) {
			if k.Key == byte(handover.Resume) {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	b.d.log.Debug("inline: no resume from the IVR; reporting anyway")
	return nil
}

func (b *bridge) report(s Session) {
	b.d.log.Info("inline session", "op", s.Op.String(), "reference", s.Reference, "by_holder", s.ByHolder, "code", s.Code, "err", s.Err)
	if b.d.cfg.OnSession != nil {
		b.d.cfg.OnSession(s)
	}
}

// run is the device flow over the link; it returns the code to report.
func (b *bridge) run(ctx context.Context, l link.Link, s *Session) (int, error) {
	cfg := &b.d.cfg
	var code protocol.Code
	var err error
	switch s.Op {
	case handover.OpPay:
		var res device.BuyResult
		res, err = device.Buy(ctx, l, cfg.Identity, cfg.Card, device.BuyOptions{AuthOptions: cfg.Auth, Reference: s.Reference, Confirm: cfg.Confirm})
		s.Buy = &res
		code = res.Code
	case handover.OpSignIn:
		var res device.Result
		res, err = device.Authenticate(ctx, l, cfg.Identity, cfg.Card, cfg.Auth)
		s.Auth = &res
		code = res.Code
	default:
		return handover.CodeUnfinished, fmt.Errorf("inline: unknown operation %v", s.Op)
	}
	if err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) && int(pe.Code) <= handover.MaxCode {
			return int(pe.Code), err
		}
		return handover.CodeUnfinished, err
	}
	if int(code) > handover.MaxCode {
		return handover.CodeUnfinished, nil
	}
	return int(code), nil
}
