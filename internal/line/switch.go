package line

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"cardlink/internal/audio/impair"
)

// Config is a switch's configuration. The zero Config is a clean line in
// real time.
type Config struct {
	// Line is the default impairment of both directions of every call;
	// a caller may ask for others when dialling. Each direction gets its
	// own noise: a zero Seed is replaced by one made from the call ID.
	Line impair.Config
	// Speed is how much faster than real time the line runs: 4 makes a
	// 10 s call take 2.5 s. Zero means 1.
	Speed float64
	// Window is how many samples a party may write ahead of the line's
	// clock when it does not ask for a window itself; zero means 2000
	// (250 ms).
	Window int
	// RingTimeout is the line time a call may ring unanswered; zero
	// means 30 s.
	RingTimeout time.Duration
	// RecordDir, if set, receives two WAV files per call: what the
	// caller heard (call-ID-caller.wav) and what the callee heard
	// (call-ID-callee.wav).
	RecordDir string
	// MaxConns bounds the parties connected at once; zero means 4096.
	MaxConns int
	// Log gets a line per call and per refused party; nil discards.
	Log *slog.Logger
}

// Validate reports whether c is usable.
func (c *Config) Validate() error {
	if err := checkConfig(&c.Line); err != nil {
		return fmt.Errorf("line impairments: %w", err)
	}
	switch {
	case c.Speed < 0 || c.Speed > 1000 || math.IsNaN(c.Speed):
		return fmt.Errorf("speed %v: want more than 0 and at most 1000", c.Speed)
	case c.Window < 0 || c.Window > maxWindow:
		return fmt.Errorf("window %d samples: want 1 to %d", c.Window, maxWindow)
	case c.RingTimeout < 0:
		return fmt.Errorf("ring timeout %v is negative", c.RingTimeout)
	case c.MaxConns < 0:
		return fmt.Errorf("max conns %d is negative", c.MaxConns)
	}
	return nil
}

// Switch connects parties: answering parties register numbers, callers
// dial them, and the switch carries the audio of each call in both
// directions on the line's clock, impaired as the call's configuration
// says. Build one with NewSwitch and run it with Serve.
type Switch struct {
	cfg   Config
	log   *slog.Logger
	speed float64

	mu      sync.Mutex
	parties map[*party]struct{}
	lines   map[string][]*party // registered parties by number
	calls   map[*call]struct{}
	nextID  uint64
	closing bool

	wg     sync.WaitGroup
	served atomic.Int64 // calls connected so far
	stalls atomic.Int64 // frames that waited for a party's queue
}

// NewSwitch returns a switch with the configuration cfg (validated).
func NewSwitch(cfg Config) (*Switch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Speed == 0 {
		cfg.Speed = 1
	}
	if cfg.Window == 0 {
		cfg.Window = 2000
	}
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 30 * time.Second
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 4096
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Switch{
		cfg: cfg, log: log, speed: cfg.Speed,
		parties: map[*party]struct{}{},
		lines:   map[string][]*party{},
		calls:   map[*call]struct{}{},
	}, nil
}

// Stats counts what a switch has done.
type Stats struct {
	Parties   int   // connected now
	Calls     int   // ringing or connected now
	Connected int64 // calls answered since the start
	Stalls    int64 // frames that had to wait for a party to take its audio
}

// Stats reports the switch's counters; it is safe for concurrent use.
func (s *Switch) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Parties: len(s.parties), Calls: len(s.calls), Connected: s.served.Load(), Stalls: s.stalls.Load()}
}

// Serve accepts parties on ln until ctx ends, then ends every call (the
// parties get CauseShutdown), closes ln and every connection, and returns
// once all its goroutines have stopped. It returns nil after ctx ended,
// or the listener's error. Serve may be called once.
func (s *Switch) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("accepting parties: %w", aerr)
			}
			break
		}
		s.mu.Lock()
		full := len(s.parties) >= s.cfg.MaxConns
		s.mu.Unlock()
		if full {
			s.log.Warn("refusing party: too many connections", "remote", conn.RemoteAddr())
			conn.Close()
			continue
		}
		p := s.newParty(conn)
		s.wg.Add(2)
		go p.writeLoop()
		go s.handle(p)
	}
	ln.Close()
	s.shutdown()
	s.wg.Wait()
	return err
}

func (s *Switch) shutdown() {
	s.mu.Lock()
	s.closing = true
	calls := make([]*call, 0, len(s.calls))
	for c := range s.calls {
		calls = append(calls, c)
	}
	parties := make([]*party, 0, len(s.parties))
	for p := range s.parties {
		parties = append(parties, p)
	}
	s.mu.Unlock()
	for _, c := range calls {
		c.end(CauseShutdown, CauseShutdown, "") // sends nothing while closing
	}
	for _, p := range parties {
		p.hangup(CauseShutdown, "the switch is stopping")
	}
}

// party is one connection: a registered line or a caller.
type party struct {
	sw     *Switch
	conn   net.Conn
	out    chan []byte   // encoded messages for writeLoop; nil ends them
	wrote  chan struct{} // closed when writeLoop has returned
	gone   chan struct{} // closed when the connection is
	goneMu sync.Once

	number string // registered number, "" for a caller
	window int

	mu       sync.Mutex
	call     *call   // the call it is in, nil when idle
	live     bool    // its stream reached the call's audio (callee: after ANSWER)
	tx       []int16 // written, not yet taken by the line
	taken    int64   // samples it wrote that the line took in this call
	clock    int64   // samples the line took from it in this call, silence included
	received int64   // samples the line delivered to it in this call
}

func (s *Switch) newParty(conn net.Conn) *party {
	p := &party{sw: s, conn: conn, out: make(chan []byte, 64), wrote: make(chan struct{}), gone: make(chan struct{})}
	s.mu.Lock()
	s.parties[p] = struct{}{}
	s.mu.Unlock()
	return p
}

// writeLoop writes p's queued messages until a nil message or the
// connection's end. After a nil message it closes the connection's
// sending half, so that the party reads everything up to the END before
// the connection goes, and gives the party 5 s to close its end.
func (p *party) writeLoop() {
	defer p.sw.wg.Done()
	defer close(p.wrote)
	var bufs net.Buffers
	for {
		var b []byte
		select {
		case b = <-p.out:
		case <-p.gone:
			return
		}
		// Write what is queued behind it in the same system call: a
		// call catching up after the host was busy sends frames in
		// bursts.
		last := b == nil
		bufs = append(bufs[:0], b)
	more:
		for !last && len(bufs) < 16 {
			select {
			case b = <-p.out:
				if b == nil {
					last = true
					break more
				}
				bufs = append(bufs, b)
			default:
				break more
			}
		}
		if len(bufs[0]) > 0 {
			p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			w := bufs // WriteTo consumes its receiver: keep bufs' array for the next round
			if _, err := w.WriteTo(p.conn); err != nil {
				p.close()
				return
			}
		}
		if last {
			if tc, ok := p.conn.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			return
		}
	}
}

func (p *party) close() {
	p.goneMu.Do(func() {
		close(p.gone)
		p.conn.Close()
	})
}

// send queues a signalling message; if the party does not take it within
// 5 s, the party is dropped.
func (p *party) send(m *message) {
	select {
	case p.out <- m.encode(nil):
	case <-p.gone:
	case <-time.After(5 * time.Second):
		p.close()
	}
}

// sendAudio queues an audio frame. If the party's queue is full (it
// does not read, or the host is too busy to write), the call's clock
// waits for it rather than lose audio; a party that takes nothing for
// 10 s is dropped.
func (p *party) sendAudio(b []byte, done <-chan struct{}) {
	select {
	case p.out <- b:
		return
	default:
	}
	p.sw.stalls.Add(1)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case p.out <- b:
	case <-p.gone:
	case <-done:
	case <-t.C:
		p.sw.log.Warn("dropping a party that reads nothing", "remote", p.conn.RemoteAddr())
		p.close()
	}
}

// hangup sends END with cause and closes the connection after it.
func (p *party) hangup(cause Cause, text string) {
	p.send(&message{typ: msgEnd, cause: cause, text: text})
	select {
	case p.out <- nil:
	case <-p.gone:
	case <-time.After(5 * time.Second):
		p.close()
	}
}

// handle reads p's messages until its connection ends, then removes it.
func (s *Switch) handle(p *party) {
	defer s.wg.Done()
	defer s.remove(p)
	rd := &reader{r: p.conn}
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	first, err := rd.read()
	if err != nil {
		s.refuse(p, err)
		return
	}
	p.conn.SetReadDeadline(time.Time{})
	switch first.typ {
	case msgRegister:
		if !s.register(p, first) {
			return
		}
	case msgDial:
		if !s.dial(p, first) {
			return
		}
	default:
		s.refuse(p, fmt.Errorf("first message of type %#02x: want REGISTER or DIAL", first.typ))
		return
	}
	for {
		m, err := rd.read()
		if err != nil {
			if errors.Is(err, ErrMessage) {
				s.refuse(p, err)
			}
			return
		}
		if err := s.onMessage(p, m); err != nil {
			s.refuse(p, err)
			return
		}
	}
}

// refuse ends p's call and drops p for breaking the protocol.
func (s *Switch) refuse(p *party, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	s.log.Warn("dropping party", "remote", p.conn.RemoteAddr(), "err", err)
	p.mu.Lock()
	c := p.call
	p.mu.Unlock()
	if c != nil {
		c.endBy(p, CauseProtocol, CauseHangup, "")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		p.close()
		return
	}
	p.hangup(CauseProtocol, err.Error())
}

// remove forgets p once its connection has ended, hanging up its call.
func (s *Switch) remove(p *party) {
	p.mu.Lock()
	c := p.call
	p.mu.Unlock()
	if c != nil {
		c.endBy(p, CauseHangup, CauseHangup, "")
	}
	s.mu.Lock()
	delete(s.parties, p)
	if p.number != "" {
		ls := s.lines[p.number]
		for i, q := range ls {
			if q == p {
				ls = append(ls[:i], ls[i+1:]...)
				break
			}
		}
		if len(ls) == 0 {
			delete(s.lines, p.number)
		} else {
			s.lines[p.number] = ls
		}
	}
	s.mu.Unlock()
	// The writer may still be flushing a last END: let it finish, then
	// read what the party still sends until it closes (or 5 s pass), so
	// that closing does not reset the connection under the END.
	select {
	case p.out <- nil:
	case <-p.gone:
	case <-time.After(5 * time.Second):
	}
	select {
	case <-p.wrote:
		p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, io.LimitReader(p.conn, 1<<20))
	case <-time.After(5 * time.Second):
	}
	p.close()
}

func (s *Switch) window(asked uint32) int {
	if asked == 0 {
		return s.cfg.Window
	}
	return int(asked)
}

func (s *Switch) register(p *party, m message) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		p.hangup(CauseShutdown, "the switch is stopping")
		return false
	}
	p.number = m.number
	p.window = s.window(m.window)
	s.lines[m.number] = append(s.lines[m.number], p)
	s.mu.Unlock()
	s.log.Info("registered", "number", m.number, "remote", p.conn.RemoteAddr())
	p.send(&message{typ: msgRegistered})
	return true
}

// dial places a call from p as m asks; false if it never rang.
func (s *Switch) dial(p *party, m message) bool {
	p.window = s.window(m.window)
	fwd, back := s.cfg.Line, s.cfg.Line
	if m.fwd != nil {
		fwd = *m.fwd
	}
	if m.back != nil {
		back = *m.back
	}
	for _, cfg := range []impair.Config{fwd, back} {
		if _, err := impair.New(cfg); err != nil {
			s.refuse(p, fmt.Errorf("impairments: %w", err))
			return false
		}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		p.hangup(CauseShutdown, "the switch is stopping")
		return false
	}
	lines, ok := s.lines[m.number]
	if !ok {
		s.mu.Unlock()
		s.log.Info("no such number", "number", m.number)
		p.hangup(CauseNoSuchNumber, "")
		return false
	}
	var callee *party
	for _, q := range lines {
		q.mu.Lock()
		idle := q.call == nil
		q.mu.Unlock()
		if idle {
			callee = q
			break
		}
	}
	if callee == nil {
		s.mu.Unlock()
		s.log.Info("busy", "number", m.number)
		p.hangup(CauseBusy, "")
		return false
	}
	s.nextID++
	id := s.nextID
	if fwd.Seed == 0 {
		fwd.Seed = 2*id - 1
	}
	if back.Seed == 0 {
		back.Seed = 2 * id
	}
	fl, _ := impair.New(fwd) // valid: checked above
	bl, _ := impair.New(back)
	c := &call{
		sw: s, id: id, number: m.number, from: m.from,
		caller: p, callee: callee,
		lines:    [2]*impair.Line{fl, bl},
		answered: make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, q := range []*party{p, callee} {
		q.mu.Lock()
		q.call, q.live, q.tx, q.taken, q.clock, q.received = c, q == p, nil, 0, 0, 0
		q.mu.Unlock()
	}
	s.calls[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.log.Info("ringing", "call", id, "number", m.number, "from", m.from)
	callee.send(&message{typ: msgRing, callID: id, number: m.from})
	p.send(&message{typ: msgRinging, callID: id})
	go c.run()
	return true
}

// onMessage handles a message after the first. Audio, ANSWER and HANGUP
// for a call that has just ended are ignored: they crossed its END.
func (s *Switch) onMessage(p *party, m message) error {
	p.mu.Lock()
	c := p.call
	switch m.typ {
	case msgAudio:
		if c == nil || !p.live {
			p.mu.Unlock()
			return nil
		}
		select {
		case <-c.answered:
		default:
			p.mu.Unlock()
			return errors.New("audio before the call was answered")
		}
		if len(p.tx)+len(m.samples) > p.window {
			p.mu.Unlock()
			return fmt.Errorf("%d samples ahead of the line's clock (window %d)", len(p.tx)+len(m.samples), p.window)
		}
		p.tx = append(p.tx, m.samples...)
		p.mu.Unlock()
	case msgAnswer:
		if p.number == "" {
			p.mu.Unlock()
			return errors.New("ANSWER from a caller")
		}
		mine := c != nil && c.id == m.callID
		if mine {
			p.live = true
		}
		p.mu.Unlock()
		if mine {
			c.answer()
		}
	case msgHangup:
		p.mu.Unlock()
		// A caller has one call; a registered line names the call, so
		// that a HANGUP crossing an END does not end the next call.
		if c != nil && (p == c.caller || c.id == m.callID) {
			select {
			case <-c.answered:
				c.endBy(p, CauseHangup, CauseHangup, "")
			default:
				if p == c.callee {
					c.endBy(p, CauseHangup, CauseBusy, "") // declined
				} else {
					c.endBy(p, CauseHangup, CauseHangup, "")
				}
			}
		}
	default:
		p.mu.Unlock()
		return fmt.Errorf("unexpected message of type %#02x", m.typ)
	}
	return nil
}

// call is one call between a caller and a registered party.
type call struct {
	sw             *Switch
	id             uint64
	number, from   string
	caller, callee *party
	lines          [2]*impair.Line // caller→callee, callee→caller

	answerOnce sync.Once
	answered   chan struct{}
	endOnce    sync.Once
	done       chan struct{}
}

func (c *call) answer() {
	c.answerOnce.Do(func() { close(c.answered) })
}

// endBy ends the call because of party p: p gets mine, the other party
// theirs.
func (c *call) endBy(p *party, mine, theirs Cause, text string) {
	if p == c.caller {
		c.end(mine, theirs, text)
	} else {
		c.end(theirs, mine, text)
	}
}

// end ends the call once: the caller gets END with callerCause and its
// connection closes; the callee gets END with calleeCause and goes back
// to idle.
func (c *call) end(callerCause, calleeCause Cause, text string) {
	c.endOnce.Do(func() {
		close(c.done)
		s := c.sw
		// The parties go idle in the same critical section that drops
		// the call (s.mu, then each q.mu, as dialling takes them): a
		// dial that no longer sees the call must find its callee idle,
		// not busy.
		s.mu.Lock()
		delete(s.calls, c)
		closing := s.closing
		for _, q := range []*party{c.caller, c.callee} {
			q.mu.Lock()
			if q.call == c {
				q.call, q.live, q.tx = nil, false, nil
			}
			q.mu.Unlock()
		}
		s.mu.Unlock()
		s.log.Info("call ended", "call", c.id, "caller", callerCause, "callee", calleeCause)
		if closing {
			return // shutdown hangs up every party
		}
		c.callee.send(&message{typ: msgEnd, cause: calleeCause, text: text})
		c.caller.hangup(callerCause, text)
	})
}

// run rings the callee, then carries the call's audio until it ends.
func (c *call) run() {
	s := c.sw
	defer s.wg.Done()
	ring := time.NewTimer(s.lineToReal(s.cfg.RingTimeout))
	select {
	case <-c.answered:
		ring.Stop()
	case <-ring.C:
		c.end(CauseNoAnswer, CauseNoAnswer, "")
		return
	case <-c.done:
		ring.Stop()
		return
	}
	s.served.Add(1)
	s.log.Info("connected", "call", c.id)
	for _, q := range []*party{c.caller, c.callee} {
		q.send(&message{typ: msgConnected, callID: c.id, window: uint32(q.window), frame: frameLen})
	}
	var rec [2]*wavWriter // what the callee and the caller heard
	if dir := s.cfg.RecordDir; dir != "" {
		for i, who := range []string{"callee", "caller"} {
			w, err := createWAV(filepath.Join(dir, fmt.Sprintf("call-%06d-%s.wav", c.id, who)))
			if err != nil {
				s.log.Warn("not recording", "call", c.id, "err", err)
				continue
			}
			rec[i] = w
			defer func() {
				if err := w.Close(); err != nil {
					s.log.Warn("recording", "call", c.id, "err", err)
				}
			}()
		}
	}
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	in := make([]float64, frameLen)
	for n := int64(1); ; n++ {
		if d := time.Until(start.Add(s.lineToReal(time.Duration(n) * tickLine))); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		} else {
			select {
			case <-c.done:
				return
			default:
			}
		}
		// Take a frame from each sender first, so that the positions
		// sent with the audio are the line's after this tick.
		var outs [2][]float64
		for i, src := range []*party{c.caller, c.callee} {
			src.take(c, in)
			outs[i] = c.lines[i].Process(in)
		}
		for i, dst := range []*party{c.callee, c.caller} {
			dst.deliver(c, outs[i])
			if rec[i] != nil {
				rec[i].write(outs[i])
			}
		}
	}
}

// lineToReal converts line time to real time at the switch's speed.
func (s *Switch) lineToReal(d time.Duration) time.Duration {
	return time.Duration(float64(d) / s.speed)
}

// take fills in with the next frame p transmits in call c: its written
// samples, then silence.
func (p *party) take(c *call, in []float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	if p.call == c {
		n = min(len(in), len(p.tx))
		for i, v := range p.tx[:n] {
			in[i] = fromPCM(v)
		}
		p.tx = p.tx[n:]
		if len(p.tx) == 0 {
			p.tx = p.tx[:0:0] // let the backing array go
		}
		p.taken += int64(n)
		p.clock += int64(len(in))
	}
	clear(in[n:])
}

// deliver sends p the samples the line delivers to it in call c, split
// into frames of at most maxFrame.
func (p *party) deliver(c *call, s []float64) {
	p.mu.Lock()
	if p.call != c {
		p.mu.Unlock()
		return
	}
	m := message{typ: msgRxAudio, rxPos: uint64(p.received), linePos: uint64(p.clock), txPos: uint64(p.taken)}
	p.received += int64(len(s))
	p.mu.Unlock()
	for len(s) > 0 || m.samples == nil {
		n := min(len(s), maxFrame)
		m.samples = make([]int16, n)
		for i, v := range s[:n] {
			m.samples[i] = toPCM(v)
		}
		p.sendAudio(m.encode(make([]byte, 0, headerLen+24+2*n)), c.done)
		m.rxPos += uint64(n)
		s = s[n:]
	}
}
