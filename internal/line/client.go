package line

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

// Errors a call ends with, or a dial fails with; errors.Is finds them.
var (
	ErrHangup       = errors.New("line: the other party hung up")
	ErrBusy         = errors.New("line: busy")
	ErrNoSuchNumber = errors.New("line: no such number")
	ErrNoAnswer     = errors.New("line: no answer")
	ErrShutdown     = errors.New("line: the switch shut down")
	ErrProtocol     = errors.New("line: the switch refused a message")
	ErrClosed       = errors.New("line: call hung up by this party")
	ErrLost         = errors.New("line: connection to the switch lost")
)

func causeErr(c Cause, text string) error {
	var err error
	switch c {
	case CauseHangup:
		err = ErrHangup
	case CauseBusy:
		err = ErrBusy
	case CauseNoSuchNumber:
		err = ErrNoSuchNumber
	case CauseNoAnswer:
		err = ErrNoAnswer
	case CauseShutdown:
		err = ErrShutdown
	default:
		err = ErrProtocol
	}
	if text != "" {
		return fmt.Errorf("%w: %s", err, text)
	}
	return err
}

// Options are a caller's wishes for a call; the zero Options takes the
// switch's defaults.
type Options struct {
	// From is the caller's number, shown to the callee; "" for none.
	From string
	// Forward and Back, if not nil, replace the switch's impairments of
	// the caller→callee and callee→caller directions. The wire carries
	// levels to 1/100 dB and ppm and burst timing to the millisecond.
	Forward, Back *impair.Config
	// Window is how many samples this party may write ahead of the
	// line's clock (at most 16000); zero takes the switch's default.
	Window int
	// Buffer is how many received samples the call keeps for Read
	// before it drops the oldest; zero means 80000 (10 s).
	Buffer int
}

func (o *Options) check() error {
	if o.From != "" {
		if err := checkNumber(o.From); err != nil {
			return fmt.Errorf("caller ID: %w", err)
		}
	}
	if o.Window < 0 || o.Window > maxWindow {
		return fmt.Errorf("window of %d samples: want 0 to %d", o.Window, maxWindow)
	}
	if o.Buffer < 0 {
		return fmt.Errorf("buffer of %d samples", o.Buffer)
	}
	for _, c := range []*impair.Config{o.Forward, o.Back} {
		if err := checkConfig(c); err != nil {
			return fmt.Errorf("impairments: %w", err)
		}
	}
	return nil
}

// NoiseForSNR is the noise level (for impair.Config.NoiseDBFS) that gives
// a signal sent at signalDBFS an in-band signal-to-noise ratio of snrDB
// at the receiver, after attenuationDB of loss.
func NoiseForSNR(snrDB, signalDBFS, attenuationDB float64) float64 {
	return min(signalDBFS-attenuationDB-snrDB, 0)
}

// conn is the party's end of a connection to the switch.
type conn struct {
	nc  net.Conn
	rd  *reader
	wmu sync.Mutex
	buf []byte
}

func dialSwitch(ctx context.Context, addr string) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the switch: %w", err)
	}
	return &conn{nc: nc, rd: &reader{r: nc}}, nil
}

func (c *conn) send(m *message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.buf = m.encode(c.buf[:0])
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(c.buf)
	return err
}

// readCtx reads one message, giving up when ctx ends.
func (c *conn) readCtx(ctx context.Context) (message, error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetReadDeadline(time.Now()) })
	m, err := c.rd.read()
	if !stop() {
		c.nc.SetReadDeadline(time.Time{})
		if err != nil {
			return m, ctx.Err()
		}
	}
	return m, err
}

// Call is one end of a connected call: it writes the samples this party
// sends and reads the ones the line delivers, on the line's clock. Read
// and Write may run in separate goroutines; Hangup and the accessors are
// safe at any time.
type Call struct {
	c        *conn
	id       uint64
	remote   string // the number dialled, or the caller's number
	window   int
	capacity int

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	rx      []int16       // received, not yet read
	rxPos   int64         // stream index of rx[0]
	dropped int64         // received samples dropped for want of a reader
	written int64
	txPos   int64 // samples of ours the line has taken
	rxEnd   int64 // samples the line has delivered
	line    int64 // the line's clock: samples taken from each party
	err     error // why the call ended; nil while up
	ended   chan struct{}
	endOnce sync.Once
	fin     chan struct{} // closed when the switch confirmed the end
	finOnce sync.Once
	up      chan struct{} // closed when connected
	upOnce  sync.Once
}

func newCall(c *conn, id uint64, remote string, capacity int) *Call {
	if capacity == 0 {
		capacity = 10 * audio.Rate
	}
	return &Call{c: c, id: id, remote: remote, capacity: capacity,
		changed: make(chan struct{}), ended: make(chan struct{}), fin: make(chan struct{}), up: make(chan struct{})}
}

// Dial calls number through the switch at addr and returns the call once
// answered. It fails with an error wrapping ErrNoSuchNumber, ErrBusy,
// ErrNoAnswer or ErrShutdown when the call does not connect, or with the
// network's error; when ctx ends first it hangs up and returns ctx's
// error. opts may be nil.
func Dial(ctx context.Context, addr, number string, opts *Options) (*Call, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := checkNumber(number); err != nil {
		return nil, err
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	c, err := dialSwitch(ctx, addr)
	if err != nil {
		return nil, err
	}
	err = c.send(&message{typ: msgDial, number: number, from: opts.From, window: uint32(opts.Window),
		fwd: opts.Forward, back: opts.Back})
	if err != nil {
		c.nc.Close()
		return nil, fmt.Errorf("dialling: %w", err)
	}
	var id uint64
	for {
		m, err := c.readCtx(ctx)
		if err != nil {
			if ctx.Err() != nil {
				c.send(&message{typ: msgHangup, callID: id})
			}
			c.nc.Close()
			return nil, fmt.Errorf("dialling %s: %w", number, err)
		}
		switch m.typ {
		case msgRinging:
			id = m.callID
			continue
		case msgEnd:
			c.nc.Close()
			return nil, fmt.Errorf("dialling %s: %w", number, causeErr(m.cause, m.text))
		case msgConnected:
			call := newCall(c, m.callID, number, opts.Buffer)
			call.window = int(m.window)
			call.setConnected()
			go call.readLoop()
			return call, nil
		default:
			c.nc.Close()
			return nil, fmt.Errorf("dialling %s: %w: unexpected message of type %#02x", number, ErrProtocol, m.typ)
		}
	}
}

// readLoop reads a dialled call's messages until it ends.
func (call *Call) readLoop() {
	defer call.finish()
	defer call.c.nc.Close()
	for {
		m, err := call.c.rd.read()
		if err != nil {
			call.end(fmt.Errorf("%w: %v", ErrLost, err))
			return
		}
		if !call.handle(m) {
			return
		}
	}
}

// handle takes a message for the call; false once the call has ended.
func (call *Call) handle(m message) bool {
	switch m.typ {
	case msgRxAudio:
		call.audio(m)
		return true
	case msgEnd:
		call.end(causeErr(m.cause, m.text))
	default:
		call.end(fmt.Errorf("%w: unexpected message of type %#02x", ErrProtocol, m.typ))
	}
	return false
}

func (call *Call) signal() {
	close(call.changed)
	call.changed = make(chan struct{})
}

func (call *Call) audio(m message) {
	call.mu.Lock()
	defer call.mu.Unlock()
	call.txPos = int64(m.txPos)
	call.rxEnd = int64(m.rxPos) + int64(len(m.samples))
	call.line = int64(m.linePos)
	end := call.rxPos + int64(len(call.rx))
	if gap := int64(m.rxPos) - end; gap > 0 {
		// The switch dropped frames we did not read in time: keep
		// the timeline with silence.
		gap = min(gap, int64(call.capacity))
		call.rx = append(call.rx, make([]int16, gap)...)
	}
	call.rx = append(call.rx, m.samples...)
	if over := len(call.rx) - call.capacity; over > 0 {
		call.rx = append(call.rx[:0:0], call.rx[over:]...)
		call.rxPos += int64(over)
		call.dropped += int64(over)
	}
	if call.rxPos+int64(len(call.rx)) != int64(m.rxPos)+int64(len(m.samples)) {
		call.rxPos = int64(m.rxPos) + int64(len(m.samples)) - int64(len(call.rx))
	}
	call.signal()
}

func (call *Call) setConnected() {
	call.upOnce.Do(func() { close(call.up) })
}

func (call *Call) finish() {
	call.finOnce.Do(func() { close(call.fin) })
}

func (call *Call) end(err error) {
	call.endOnce.Do(func() {
		call.mu.Lock()
		call.err = err
		close(call.ended)
		call.signal()
		call.mu.Unlock()
	})
}

// ID is the switch's number for the call.
func (call *Call) ID() uint64 { return call.id }

// Remote is the other party's number: the one dialled, or the caller's
// (empty when the caller gave none).
func (call *Call) Remote() string { return call.remote }

// Read reads received samples into p, waiting until some are there: the
// other party's audio as the line delivers it, or the line's noise when
// it sends nothing. A frame comes every 20 ms of line time. After the
// call ended it returns what is left, then 0 and the reason (ErrHangup,
// ErrClosed, ErrShutdown, ErrLost…).
func (call *Call) Read(p []float64) (int, error) {
	call.mu.Lock()
	defer call.mu.Unlock()
	for len(call.rx) == 0 {
		if call.err != nil {
			return 0, call.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		ch := call.changed
		call.mu.Unlock()
		<-ch
		call.mu.Lock()
	}
	n := min(len(p), len(call.rx))
	for i, v := range call.rx[:n] {
		p[i] = audio.FromInt16(v)
	}
	call.rx = call.rx[n:]
	call.rxPos += int64(n)
	return n, nil
}

// ReadPos is the stream index of the next sample Read returns: the number
// of samples the line has delivered before it, counted from the answer.
func (call *Call) ReadPos() int64 {
	call.mu.Lock()
	defer call.mu.Unlock()
	return call.rxPos
}

// Clock reports, as of the last frame the line delivered, how many
// samples it had delivered to this party (received, read or not) and the
// line's clock: how many samples it had taken from each party, silence
// included, since the answer. Their ratio is 1 + the drift of this
// direction.
func (call *Call) Clock() (received, line int64) {
	call.mu.Lock()
	defer call.mu.Unlock()
	return call.rxEnd, call.line
}

// Dropped is how many received samples were dropped because Read did not
// take them in time (the call keeps Options.Buffer of them).
func (call *Call) Dropped() int64 {
	call.mu.Lock()
	defer call.mu.Unlock()
	return call.dropped
}

// Write sends p (samples in [-1, 1], clipped) on the line. The line takes
// 160 samples every 20 ms of line time; Write blocks while this party is
// a window of samples ahead of it. A party that writes nothing sends
// silence. It returns how many samples went out and, if not all, why:
// the call ended (the reason, as for Read) or the connection failed.
func (call *Call) Write(p []float64) (int, error) {
	done := 0
	s := make([]int16, 0, min(len(p), maxFrame))
	for done < len(p) {
		call.mu.Lock()
		for call.err == nil && call.written-call.txPos >= int64(call.window) {
			ch := call.changed
			call.mu.Unlock()
			<-ch
			call.mu.Lock()
		}
		if call.err != nil {
			err := call.err
			call.mu.Unlock()
			return done, err
		}
		n := min(len(p)-done, maxFrame, int(int64(call.window)-(call.written-call.txPos)))
		call.written += int64(n)
		call.mu.Unlock()
		s = s[:0]
		for _, v := range p[done : done+n] {
			s = append(s, toPCM(v))
		}
		if err := call.c.send(&message{typ: msgAudio, samples: s}); err != nil {
			call.end(fmt.Errorf("%w: %v", ErrLost, err))
			return done, call.errNow()
		}
		done += n
	}
	return done, nil
}

func (call *Call) errNow() error {
	call.mu.Lock()
	defer call.mu.Unlock()
	return call.err
}

// Pending is how many written samples the line has not yet taken: the
// delay before the next sample written goes on the line.
func (call *Call) Pending() int {
	call.mu.Lock()
	defer call.mu.Unlock()
	return int(max(0, call.written-call.txPos))
}

// Drain waits until the line has taken every sample written (Pending is
// 0), so that a party can hang up without cutting its last words, or turn
// from sending to listening. It fails with the reason the call ended, or
// ctx's error.
func (call *Call) Drain(ctx context.Context) error {
	call.mu.Lock()
	defer call.mu.Unlock()
	for call.written > call.txPos {
		if call.err != nil {
			return call.err
		}
		ch := call.changed
		call.mu.Unlock()
		select {
		case <-ch:
			call.mu.Lock()
		case <-ctx.Done():
			call.mu.Lock()
			return ctx.Err()
		}
	}
	return nil
}

// Written is how many samples this party has written.
func (call *Call) Written() int64 {
	call.mu.Lock()
	defer call.mu.Unlock()
	return call.written
}

// Done is closed when the call has ended; Err then says why.
func (call *Call) Done() <-chan struct{} { return call.ended }

// Err is why the call ended, or nil while it is up.
func (call *Call) Err() error { return call.errNow() }

// Hangup ends the call. Samples written and not yet taken by the line are
// lost. It waits (at most 5 s) for the switch to confirm; calling it
// again, or after the call ended, does nothing.
func (call *Call) Hangup() error {
	call.mu.Lock()
	up := call.err == nil
	call.mu.Unlock()
	if !up {
		return nil
	}
	call.end(ErrClosed)
	err := call.c.send(&message{typ: msgHangup, callID: call.id})
	if err != nil {
		call.c.nc.Close()
		return fmt.Errorf("hanging up: %w", err)
	}
	// The switch confirms with END (and closes a caller's connection).
	select {
	case <-call.fin:
	case <-time.After(5 * time.Second):
		call.c.nc.Close()
	}
	return nil
}
