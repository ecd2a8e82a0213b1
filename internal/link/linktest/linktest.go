// Package linktest is an in-memory link for tests: a pipe whose two ends
// are link.Links, with byte counting in each direction, the airtime those
// bytes take at a chosen line speed, stalls, and a line that is cut in the
// middle of a stream.
//
// Airtime is accounted, not waited for: tests read Airtime instead of a
// clock, so nothing they assert depends on wall-clock timing. Config.Realtime
// makes writes sleep for their airtime, for demonstrations only.
//
// Run is the conformance suite every link.Link implementation passes.
//
// It imports link and the standard library.
package linktest

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"cardlink/internal/link"
)

// ErrCut is returned by Write on a line that was cut (End.CutAfter).
var ErrCut = errors.New("line cut")

// Config shapes a pipe. The zero Config is an unlimited, instant pipe.
type Config struct {
	// BitsPerSecond is the line speed used to account airtime; 0 means
	// infinitely fast (Airtime is then always 0).
	BitsPerSecond int
	// BitsPerByte is how many bits one byte takes on the line; 0 means 10
	// (asynchronous serial: start bit, 8 data bits, stop bit).
	BitsPerByte int
	// Realtime makes Write sleep for the airtime of what it writes. Tests
	// that assert anything must not rely on it.
	Realtime bool
}

// Airtime is how long n bytes take on a line configured by c.
func (c Config) Airtime(n int64) time.Duration {
	if c.BitsPerSecond <= 0 || n <= 0 {
		return 0
	}
	bpb := c.BitsPerByte
	if bpb <= 0 {
		bpb = 10
	}
	return time.Duration(n * int64(bpb) * int64(time.Second) / int64(c.BitsPerSecond))
}

// pipe is the state both ends share, guarded by mu.
type pipe struct {
	cfg  Config
	mu   sync.Mutex
	cond *sync.Cond
	cut  bool
	ab   *half
	ba   *half
}

// cutLine marks the line cut: both directions end after what was already
// written, and stalls no longer hold bytes back. p.mu must be held.
func (p *pipe) cutLine() {
	p.cut = true
	for _, h := range []*half{p.ab, p.ba} {
		h.eof = true
		h.stalled = false
	}
	p.cond.Broadcast()
}

// half is one direction of the pipe: bytes written by one end, waiting to
// be read by the other.
type half struct {
	buf      []byte
	eof      bool  // the writer closed
	stalled  bool  // nothing is delivered while set
	cutAfter int64 // the line is cut once written reaches it; -1 when unset
	written  int64
	read     int64
}

// End is one end of a pipe. It is safe for one reader and one writer at
// once, plus any number of goroutines calling the other methods.
type End struct {
	p         *pipe
	in, out   *half
	closed    bool
	rdeadline time.Time
	wdeadline time.Time
	rtimer    *time.Timer
}

var _ link.Link = (*End)(nil)

// Pipe returns the two connected ends of a new in-memory link.
func Pipe(cfg Config) (a, b *End) {
	p := &pipe{cfg: cfg}
	p.cond = sync.NewCond(&p.mu)
	p.ab = &half{cutAfter: -1}
	p.ba = &half{cutAfter: -1}
	return &End{p: p, in: p.ba, out: p.ab}, &End{p: p, in: p.ab, out: p.ba}
}

// Read reads what the other end wrote. It blocks until bytes are
// delivered, and returns io.EOF once the other end closed or the line was
// cut (after the bytes written before), io.ErrClosedPipe after Close on this end, and an
// error satisfying errors.Is(err, os.ErrDeadlineExceeded) past the read
// deadline.
func (e *End) Read(b []byte) (int, error) {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case e.closed:
			return 0, io.ErrClosedPipe
		case !e.rdeadline.IsZero() && !time.Now().Before(e.rdeadline):
			return 0, os.ErrDeadlineExceeded
		case len(e.in.buf) > 0 && !e.in.stalled:
			n := copy(b, e.in.buf)
			e.in.buf = e.in.buf[n:]
			e.in.read += int64(n)
			return n, nil
		case e.in.eof && !e.in.stalled:
			return 0, io.EOF
		case len(b) == 0:
			return 0, nil
		}
		p.cond.Wait()
	}
}

// Write sends b to the other end. It never blocks on the reader (the pipe
// buffers without limit); with Config.Realtime it sleeps for b's airtime
// first. It returns io.ErrClosedPipe when either end is closed, ErrCut
// when the line is or gets cut (after writing the bytes that fit before
// the cut), and os.ErrDeadlineExceeded past the write deadline.
func (e *End) Write(b []byte) (int, error) {
	p := e.p
	if p.cfg.Realtime {
		time.Sleep(p.cfg.Airtime(int64(len(b))))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.cut:
		return 0, ErrCut
	case e.closed || e.out.eof:
		return 0, io.ErrClosedPipe
	case !e.wdeadline.IsZero() && !time.Now().Before(e.wdeadline):
		return 0, os.ErrDeadlineExceeded
	}
	h := e.out
	n := len(b)
	if h.cutAfter >= 0 && h.written+int64(n) > h.cutAfter {
		n = int(h.cutAfter - h.written)
	}
	h.buf = append(h.buf, b[:n]...)
	h.written += int64(n)
	p.cond.Broadcast()
	if h.cutAfter >= 0 && h.written == h.cutAfter {
		p.cutLine()
		if n < len(b) {
			return n, ErrCut
		}
	}
	return n, nil
}

// Close closes this end: its reads fail, the other end reads what was
// already written and then io.EOF, and writes to this end fail. Close is
// idempotent.
func (e *End) Close() error {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	e.closed = true
	e.out.eof = true
	e.in.eof = true
	e.in.buf = nil
	p.cond.Broadcast()
	return nil
}

// SetDeadline sets the read and write deadlines, as net.Conn does.
func (e *End) SetDeadline(t time.Time) error {
	e.SetWriteDeadline(t)
	return e.SetReadDeadline(t)
}

// SetReadDeadline makes a blocked or later Read fail with
// os.ErrDeadlineExceeded once t has passed; the zero time clears it.
func (e *End) SetReadDeadline(t time.Time) error {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	e.rdeadline = t
	if e.rtimer != nil {
		e.rtimer.Stop()
		e.rtimer = nil
	}
	if !t.IsZero() {
		e.rtimer = time.AfterFunc(time.Until(t), func() {
			p.mu.Lock()
			p.cond.Broadcast()
			p.mu.Unlock()
		})
	}
	p.cond.Broadcast()
	return nil
}

// SetWriteDeadline makes a later Write fail with os.ErrDeadlineExceeded once
// t has passed (writes never block, so none is interrupted); the zero time
// clears it.
func (e *End) SetWriteDeadline(t time.Time) error {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	e.wdeadline = t
	return nil
}

// Stall holds back everything this end writes, from now until Resume: the
// other end's reads block as on a line that went quiet.
func (e *End) Stall() { e.setStalled(true) }

// Resume delivers what Stall held back, and what follows.
func (e *End) Resume() { e.setStalled(false) }

func (e *End) setStalled(v bool) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	e.out.stalled = v
	e.p.cond.Broadcast()
}

// CutAfter cuts the line once this end has written n more bytes: those n
// bytes are delivered, the write that crosses the mark writes only up to
// it and fails with ErrCut, and from then on both ends read what was
// already written and then io.EOF, and writes fail with ErrCut. Stalls end
// with the cut. n = 0 cuts the line now.
func (e *End) CutAfter(n int64) {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	e.out.cutAfter = e.out.written + max(n, 0)
	if n <= 0 {
		p.cutLine()
	}
}

// Sent is how many bytes this end has written.
func (e *End) Sent() int64 {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	return e.out.written
}

// Received is how many bytes this end has read.
func (e *End) Received() int64 {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	return e.in.read
}

// Airtime is how long the bytes this end has written take on the line at
// the configured speed.
func (e *End) Airtime() time.Duration {
	return e.p.cfg.Airtime(e.Sent())
}
