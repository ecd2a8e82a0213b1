// Package arq turns a lossy byte stream — a modem on a noisy telephone
// line, later an infra-red or radio link — into a link.Link: an ordered,
// reliable byte stream. The stream beneath may corrupt, drop and insert
// bytes, and may end at any time; it need not keep any boundary.
//
// # Frames
//
// Every frame is delimited by flags and byte-stuffed as in HDLC (RFC 1662
// §4: 0x7E opens and closes a frame, 0x7D escapes a 0x7E or 0x7D inside it
// as that byte XOR 0x20), so that the receiver resynchronises on the next
// flag after any damage. Frames sent back to back share one flag. Inside:
//
//	 byte 0            byte 1            2 … n+1      n+2 … n+5
//	+--+--+-+-+-------+-------+-------+-------------+-------------+
//	|kind |O|0|  seq  |  ack  |   0   |   payload   | CRC-32C (BE)|
//	+--+--+-+-+-------+-------+-------+-------------+-------------+
//	 7  6  5 4 3     0 7     4 3     0
//
// kind: 0 acknowledgement, 1 data (1 to MaxPayload bytes of the stream),
// 2 fin (the stream ends, no payload), 3 refused. O ("over") passes the
// turn in half-duplex mode. seq numbers data and fin frames modulo 16; ack
// (on every frame) is the next sequence number the sender expects,
// acknowledging all before it. An acknowledgement frame has no seq or
// payload: its byte-0 low nibble and byte-1 low nibble carry a selective
// acknowledgement bitmap (bit i of sack = byte1&0x0f<<4 | byte0&0x0f: frame
// ack+1+i is held out of order). The CRC-32C (Castagnoli) covers header
// and payload. Overhead: 8 bytes per frame (7 when sharing a flag), plus
// stuffing (2 of 256 byte values are escaped: under 1% on encrypted data);
// an acknowledgement is 8 bytes.
//
// CRC-32C rather than a 16-bit CRC: the Noise channel above treats any
// corruption that gets through as an attack and ends the session, noise
// between frames arrives as random candidates, and demodulator slips
// change a frame's length; 2^-32 against 2^-16 undetected is worth two
// bytes a frame (3% at the default 64-byte payload). Castagnoli's
// polynomial detects more multi-bit errors at these lengths than IEEE's
// (Koopman, 2002).
//
// # Reliability
//
// Selective repeat with a window of at most 8 frames: the receiver keeps
// frames that arrive after a gap and reports them in an acknowledgement's
// bitmap; the sender resends only what is missing. Because the stream
// beneath never reorders bytes, a frame still unacknowledged when a frame
// sent after it has been acknowledged is lost, and is resent at once. A
// sender that would otherwise leave the line idle resends its oldest
// unacknowledged frame once a round trip has passed (the lost last frame
// of a message is the common case, and the idle line costs nothing). The
// retransmission timer (RFC 6298: SRTT, RTTVAR, RTO = SRTT + 4·RTTVAR,
// Karn's rule, doubling on expiry up to Config.MaxRTO) covers the rest,
// resending every unacknowledged frame. The timer's floor follows from the
// line's bit rate: the time two frames and an acknowledgement take. New
// frames carry fewer bytes as the measured loss grows (the size that moves
// the most data, down to 16 bytes): long frames on a clean line, short
// ones on a noisy line.
//
// # Half duplex
//
// With Config.HalfDuplex only the side holding the turn transmits: a burst
// of frames (resent ones, new ones, always at least an acknowledgement)
// whose last frame carries O, which hands the turn over. The Primary side
// starts with the turn and is the only one that takes it back unasked:
// when no frame with O arrives within its timeout (adaptive as above,
// measured from handing over to getting the turn back, with a floor of two
// acknowledgements' airtime; stretched while bytes are still arriving),
// it sends again, which also recovers a lost O either way. The secondary
// never transmits unasked, so the two never both wait nor both talk for
// long. An idle primary keeps handing the turn over, more and more
// slowly (up to once a second on a 1200 bit/s line), so the secondary can
// speak. When the turn comes back, every frame the peer has
// not acknowledged was lost and is resent. Both sides talk at once only
// when the primary's timer runs out while the secondary still answers (a
// late answer to a poll); it costs a turn timeout.
//
// # Closing and failing
//
// Close sends a fin after all written data and waits for its
// acknowledgement (the peer then has everything it needs from us), then
// for the peer's fin, to acknowledge it, for at most two retransmission
// timeouts (the peer's application usually closes as soon as it reads the
// end; unacknowledged, the peer would resend its fin; in half duplex the
// acknowledgement waits for the turn); a side
// that received the peer's fin first sends its own and waits only until
// that is acknowledged, the line goes down, or the line has been quiet for
// the peer's longest timeout (answering a resent fin meanwhile). A peer
// that answers nothing for Config.GiveUp while something awaits its
// acknowledgement (in half duplex: at all) ends the link with
// ErrPeerGone; a stream beneath that fails or ends ends it with
// ErrLineDown. Read returns io.EOF after the peer's data once its fin
// arrived. An idle full-duplex link sends nothing: use read deadlines to
// notice a silent peer.
//
// It imports link and the standard library, and knows nothing of modems.
package arq

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"cardlink/internal/link"
)

// Errors that callers branch on with errors.Is.
var (
	// ErrPeerGone: the peer answered nothing for Config.GiveUp.
	ErrPeerGone = errors.New("arq: peer not answering")
	// ErrLineDown: the stream beneath failed or ended before the peer
	// closed; it wraps that stream's error.
	ErrLineDown = errors.New("arq: line down")
	// ErrClosed is returned by Read and Write after Close.
	ErrClosed = errors.New("arq: link closed")
	// ErrConfig is a Config that Validate refuses.
	ErrConfig = errors.New("arq: invalid config")
)

// Config shapes a link. The zero Config is a full-duplex link on a line
// of unknown speed with the defaults below.
type Config struct {
	// BitRate is the line's speed in bit/s, for timeouts: the floor of the
	// retransmission timer is the time a largest frame and an
	// acknowledgement take. 0 means a fast line (floor 50 ms).
	BitRate int
	// BitsPerByte is how many bits a byte takes on the line; 0 means 10
	// (asynchronous serial: start, 8 data, stop).
	BitsPerByte int
	// Window is how many frames may await acknowledgement, 1 to MaxWindow;
	// 0 means MaxWindow.
	Window int
	// MaxPayload is the most stream bytes in one frame, 1 to
	// MaxPayloadLimit; 0 means 64 (at 1200 bit/s such a frame takes
	// 0.6 s). Frames shrink from it, down to 16 bytes, as the line loses
	// more of them (see payloadSize).
	MaxPayload int
	// HalfDuplex makes the two sides take turns (see the package
	// documentation). Both sides must agree.
	HalfDuplex bool
	// Primary is, in half duplex, the side that starts with the turn and
	// takes it back on timeout; exactly one side must set it.
	Primary bool
	// Turnaround is how long the line needs to change direction (a
	// half-duplex modem raising its carrier); it is added to timeouts.
	Turnaround time.Duration
	// MinRTO and MaxRTO bound the retransmission timeout (in half duplex,
	// the turn's timeout); 0 derives them from BitRate: MinRTO is the
	// airtime of two largest frames and an acknowledgement (half duplex:
	// of two acknowledgements), plus twice Turnaround, plus 50 ms; MaxRTO
	// is 4 times MinRTO, at least 2 s.
	MinRTO, MaxRTO time.Duration
	// GiveUp is how long the peer may answer nothing before the link ends
	// with ErrPeerGone; 0 means 3 times MaxRTO, at least 30 s.
	GiveUp time.Duration
}

// Validate reports a Config out of range, wrapping ErrConfig.
func (c Config) Validate() error {
	switch {
	case c.BitRate < 0:
		return fmt.Errorf("%w: negative bit rate %d", ErrConfig, c.BitRate)
	case c.BitsPerByte < 0:
		return fmt.Errorf("%w: negative bits per byte %d", ErrConfig, c.BitsPerByte)
	case c.Window < 0 || c.Window > MaxWindow:
		return fmt.Errorf("%w: window %d, want 1 to %d", ErrConfig, c.Window, MaxWindow)
	case c.MaxPayload < 0 || c.MaxPayload > MaxPayloadLimit:
		return fmt.Errorf("%w: max payload %d, want 1 to %d", ErrConfig, c.MaxPayload, MaxPayloadLimit)
	case c.Turnaround < 0 || c.MinRTO < 0 || c.MaxRTO < 0 || c.GiveUp < 0:
		return fmt.Errorf("%w: negative duration", ErrConfig)
	case c.MinRTO > 0 && c.MaxRTO > 0 && c.MaxRTO < c.MinRTO:
		return fmt.Errorf("%w: MaxRTO %v below MinRTO %v", ErrConfig, c.MaxRTO, c.MinRTO)
	}
	return nil
}

// slack is what the timers allow for processing and scheduling.
const slack = 50 * time.Millisecond

// withDefaults returns c with every zero field filled in.
func (c Config) withDefaults() Config {
	if c.BitsPerByte == 0 {
		c.BitsPerByte = 10
	}
	if c.Window == 0 {
		c.Window = MaxWindow
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MinRTO == 0 {
		if c.HalfDuplex {
			// The turn's timer: the peer's answer begins within an
			// acknowledgement's time, and bytes still arriving stretch it.
			c.MinRTO = c.airtime(2*ackFrameLen) + 2*c.Turnaround + slack
		} else {
			c.MinRTO = 2*c.airtime(c.maxFrame()) + c.airtime(ackFrameLen) + 2*c.Turnaround + slack
		}
	}
	if c.MaxRTO == 0 {
		c.MaxRTO = max(4*c.MinRTO, 2*time.Second)
	}
	c.MaxRTO = max(c.MaxRTO, c.MinRTO)
	if c.GiveUp == 0 {
		c.GiveUp = max(3*c.MaxRTO, 30*time.Second)
	}
	return c
}

// DefaultMaxPayload is Config.MaxPayload's default.
const DefaultMaxPayload = 64

// AckFrameLen is the length of an acknowledgement on the line, with both
// flags: what a link below arq plans its timers with.
const AckFrameLen = ackFrameLen

// ackFrameLen is an acknowledgement on the line, with both flags.
const ackFrameLen = 1 + headerLen + crcLen + 1

// FrameLen is the length on the line of a frame carrying payload bytes,
// with both flags, before stuffing.
func FrameLen(payload int) int { return 1 + headerLen + payload + crcLen + 1 }

// maxFrame is the longest frame on the line before stuffing.
func (c Config) maxFrame() int { return FrameLen(c.MaxPayload) }

// airtime is how long n bytes take on the line.
func (c Config) airtime(n int) time.Duration {
	if c.BitRate <= 0 || n <= 0 {
		return 0
	}
	bpb := c.BitsPerByte
	if bpb == 0 {
		bpb = 10
	}
	return time.Duration(int64(n) * int64(bpb) * int64(time.Second) / int64(c.BitRate))
}

// Stats counts what a link has done.
type Stats struct {
	FramesSent    int64         // frames written, resent ones included
	Resent        int64         // frames written again
	AcksSent      int64         // acknowledgement frames written
	BytesSent     int64         // bytes written to the line
	FramesRcvd    int64         // valid frames received
	BadFrames     int64         // candidates refused: CRC, format, garbage
	Timeouts      int64         // retransmission timer expiries (full duplex)
	TurnTimeouts  int64         // turns taken back on timeout (half duplex)
	SRTT          time.Duration // smoothed round-trip time (0 before a sample)
	RTO           time.Duration // current retransmission timeout
	PayloadSent   int64         // stream bytes acknowledged by the peer
	PayloadRcvd   int64         // stream bytes delivered in order
	TurnsReceived int64         // times the turn came to this side (half duplex)
	Probes        int64         // frames resent early on an idle line (full duplex)
	Payload       int           // stream bytes the next new frame may carry (adapts to loss)
}

// sendLimit is how many written bytes wait at most for framing; Write
// blocks beyond it.
const sendLimit = 4096

// rcvLimit is how many delivered bytes wait at most for Read; beyond it
// new data frames are dropped (and resent by the peer later).
const rcvLimit = 16384

// outFrame is a frame sent and not yet acknowledged.
type outFrame struct {
	seq     uint64
	payload []byte
	fin     bool
	firstTx uint64 // order of the first transmission (1-based)
	lastTx  uint64 // order of the latest transmission
	sentAt  time.Time
	tx      int  // transmissions so far
	sacked  bool // the peer holds it out of order
	lost    bool // to be resent
}

// Conn is one end of a reliable link over a lossy stream. Read and Write
// may be called from two goroutines at once; Close and the deadline
// setters from any goroutine.
type Conn struct {
	rw   io.ReadWriteCloser
	cfg  Config
	done chan struct{} // closed when both goroutines have ended
	kick chan struct{} // wakes the sender goroutine

	closeOnce sync.Once // closes rw

	mu    sync.Mutex
	rcond *sync.Cond // Read waits on it
	wcond *sync.Cond // Write and Close wait on it

	// User side.
	rbuf       []byte
	sbuf       []byte
	rdeadline  time.Time
	wdeadline  time.Time
	rtimer     *time.Timer
	wtimer     *time.Timer
	closing    bool  // Close was called
	finished   bool  // Close's work is done (or abandoned)
	stopped    bool  // the engine has stopped
	err        error // why the engine stopped, if it failed
	lingerFrom time.Time

	// Sender.
	nextSeq   uint64
	base      uint64
	out       []*outFrame
	finQueued bool
	finSent   bool
	finAcked  bool
	finWait   time.Time // with finAcked: until when Close waits for the peer's fin
	txOrder   uint64
	hiAcked   uint64 // highest firstTx among acknowledged frames
	outSince  time.Time
	srtt      time.Duration
	rttvar    time.Duration
	rto       time.Duration
	rtoAt     time.Time

	// Receiver.
	rcvNext    uint64
	ooo        map[uint64]*frame
	finRcvd    bool
	ackDue     bool
	lastHeard  time.Time
	lastByteAt time.Time
	lastDataAt time.Time // when the last data or fin frame arrived
	dec        decoder

	// Half duplex.
	turn       bool
	passAt     time.Time // when the turn was handed over (zero while holding it or writing)
	lastOverTx uint64
	reclaimed  bool          // the turn was taken back since it was handed over (Karn)
	idleDelay  time.Duration // -1: not idle yet
	idleUntil  time.Time

	// Frame loss estimate (EWMA over copies sent) and the mean line
	// length of the frames it was measured on.
	loss, lossLen float64

	stats Stats
}

var _ link.Link = (*Conn)(nil)

// New starts a link over rw, which it owns from then on (Close closes
// it; closing rw must unblock a Read on it). Both ends must run New with
// compatible Configs (same HalfDuplex, one Primary). It starts
// goroutines (one reads the line, one writes it), which end when the link
// does: after Close, or once it failed.
func New(rw io.ReadWriteCloser, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	now := time.Now()
	c := &Conn{
		rw:        rw,
		cfg:       cfg,
		done:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
		ooo:       make(map[uint64]*frame),
		rto:       cfg.MinRTO * 2,
		lastHeard: now,
		turn:      cfg.HalfDuplex && cfg.Primary,
		lossLen:   priorLen,
		idleDelay: -1,
		loss:      lossPrior,
	}
	c.rto = min(c.rto, cfg.MaxRTO)
	c.rcond = sync.NewCond(&c.mu)
	c.wcond = sync.NewCond(&c.mu)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.receive() }()
	go func() { defer wg.Done(); c.send() }()
	go func() { wg.Wait(); close(c.done) }()
	return c, nil
}

// Read reads the peer's stream. It returns io.EOF after the peer closed
// and everything before was read; ErrClosed after Close; ErrPeerGone or
// ErrLineDown once the link failed (after what already arrived); and an
// error wrapping os.ErrDeadlineExceeded past the read deadline (the link
// stays usable).
func (c *Conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closing:
			return 0, ErrClosed
		case len(c.rbuf) > 0:
			if len(b) == 0 {
				return 0, nil
			}
			n := copy(b, c.rbuf)
			c.rbuf = c.rbuf[n:]
			if len(c.rbuf) == 0 {
				c.rbuf = nil
			}
			c.poke()
			return n, nil
		case c.finRcvd:
			return 0, io.EOF
		case c.err != nil:
			return 0, c.err
		case !c.rdeadline.IsZero() && !time.Now().Before(c.rdeadline):
			return 0, fmt.Errorf("reading: %w", os.ErrDeadlineExceeded)
		case len(b) == 0:
			return 0, nil
		}
		c.rcond.Wait()
	}
}

// Write queues b for the peer, blocking while more than a few kilobytes
// await framing; it returns once all of b is queued, not when the peer has
// it. It returns ErrClosed after Close, ErrPeerGone or ErrLineDown once
// the link failed, and an error wrapping os.ErrDeadlineExceeded past the
// write deadline, with the count of bytes queued before.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for len(b) > 0 {
		switch {
		case c.closing:
			return n, ErrClosed
		case c.err != nil:
			return n, c.err
		case c.stopped:
			return n, ErrClosed
		case !c.wdeadline.IsZero() && !time.Now().Before(c.wdeadline):
			return n, fmt.Errorf("writing: %w", os.ErrDeadlineExceeded)
		}
		if room := sendLimit - len(c.sbuf); room > 0 {
			k := min(room, len(b))
			c.sbuf = append(c.sbuf, b[:k]...)
			b = b[k:]
			n += k
			c.poke()
			continue
		}
		c.wcond.Wait()
	}
	return n, nil
}

// Close ends the link: Read and Write fail with ErrClosed from now on,
// written data is delivered, the peer reads io.EOF after it, and rw is
// closed. It blocks until the peer acknowledged the end and, for at most
// two retransmission timeouts more, until the peer's own end came (and
// then until its acknowledgement is sent, which in half duplex waits for
// the turn); or, if the peer closed first, until the line has been quiet
// a while; at most about Config.GiveUp plus two retransmission
// timeouts. It returns ErrPeerGone or ErrLineDown (wrapped) when the end
// could not be delivered, nil otherwise. Close is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.finQueued = true
		c.lingerFrom = time.Now()
		c.rcond.Broadcast()
		c.wcond.Broadcast()
		c.poke()
	}
	for !c.finished && !c.stopped {
		c.wcond.Wait()
	}
	c.mu.Unlock()
	c.shutdown(nil)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finAcked || c.finRcvd {
		return nil
	}
	return c.err
}

// SetDeadline sets the read and write deadlines, as net.Conn does.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

// SetReadDeadline makes a blocked or later Read fail with an error
// wrapping os.ErrDeadlineExceeded once t has passed; the zero time clears
// it. The link itself is not affected.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdeadline = t
	c.rtimer = c.resetTimer(c.rtimer, t, c.rcond)
	return nil
}

// SetWriteDeadline makes a blocked or later Write fail with an error
// wrapping os.ErrDeadlineExceeded once t has passed; the zero time clears
// it. Bytes already queued are still sent.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdeadline = t
	c.wtimer = c.resetTimer(c.wtimer, t, c.wcond)
	return nil
}

func (c *Conn) resetTimer(old *time.Timer, t time.Time, cond *sync.Cond) *time.Timer {
	if old != nil {
		old.Stop()
	}
	cond.Broadcast()
	if t.IsZero() {
		return nil
	}
	return time.AfterFunc(time.Until(t), func() {
		c.mu.Lock()
		cond.Broadcast()
		c.mu.Unlock()
	})
}

// Stats reports what the link has done so far.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.SRTT, s.RTO = c.srtt, c.rto
	s.Payload = c.payloadSize()
	return s
}

// poke wakes the sender goroutine. c.mu may be held.
func (c *Conn) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// shutdown stops the engine with err (nil: a normal end) and closes rw.
// c.mu must not be held.
func (c *Conn) shutdown(err error) {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		if err != nil && c.err == nil {
			c.err = err
		}
		c.rcond.Broadcast()
		c.wcond.Broadcast()
		c.poke()
	}
	c.mu.Unlock()
	c.closeOnce.Do(func() { c.rw.Close() })
}

// receive is the goroutine that reads the line and feeds the decoder.
func (c *Conn) receive() {
	buf := make([]byte, 512)
	for {
		n, err := c.rw.Read(buf)
		if n > 0 {
			now := time.Now()
			c.mu.Lock()
			c.lastByteAt = now
			bad := c.dec.badCount
			c.dec.feed(buf[:n], func(f frame) { c.handle(&f, now) })
			c.stats.BadFrames += int64(c.dec.badCount - bad)
			c.mu.Unlock()
			c.poke()
		}
		if err != nil {
			c.mu.Lock()
			stopped, finRcvd := c.stopped, c.finRcvd
			c.mu.Unlock()
			if stopped {
				return
			}
			if err == io.EOF && finRcvd {
				err = io.ErrUnexpectedEOF // the peer said goodbye; writes can no longer reach it
			}
			c.shutdown(fmt.Errorf("%w: reading: %w", ErrLineDown, err))
			return
		}
	}
}

// handle processes one valid frame. c.mu is held.
func (c *Conn) handle(f *frame, now time.Time) {
	c.stats.FramesRcvd++
	c.lastHeard = now
	c.handleAck(f, now)
	if f.kind != kindAck {
		c.lastDataAt = now
		c.handleData(f)
	}
	if c.cfg.HalfDuplex && f.over {
		if !c.turn {
			c.stats.TurnsReceived++
			if !c.reclaimed && !c.passAt.IsZero() {
				c.sample(now.Sub(c.passAt))
			}
			// The peer heard our whole burst: what it did not
			// acknowledge was lost.
			for _, o := range c.out {
				if !o.sacked && o.lastTx <= c.lastOverTx {
					c.markLost(o)
				}
			}
		}
		c.turn = true
		c.passAt = time.Time{}
	}
}

// handleAck processes the acknowledgement every frame carries.
func (c *Conn) handleAck(f *frame, now time.Time) {
	ack := c.base + uint64((f.ack-uint8(c.base))&nibble)
	if ack > c.nextSeq {
		return // acknowledges what was never sent: damage the CRC missed
	}
	// The round trip is measured on the newest frame this acknowledgement
	// is the first to cover, if it was sent once (Karn): the one whose
	// arrival most likely prompted it.
	var newest *outFrame
	for c.base < ack {
		o := c.out[0]
		if !o.sacked {
			newest = o
			c.noteOutcome(false, o)
		}
		c.hiAcked = max(c.hiAcked, o.firstTx)
		if o.fin {
			c.finAcked = true
			c.finWait = now.Add(c.peerFinWait())
			c.wcond.Broadcast()
		} else {
			c.stats.PayloadSent += int64(len(o.payload))
		}
		c.out[0] = nil
		c.out = c.out[1:]
		c.base++
		c.outSince = now
		c.rtoAt = time.Time{}
		if len(c.out) > 0 && !c.cfg.HalfDuplex {
			c.rtoAt = now.Add(c.rto)
		}
	}
	if f.kind == kindAck && f.sack != 0 {
		for i := range 8 {
			s := ack + 1 + uint64(i)
			if f.sack&(1<<i) != 0 && s < c.nextSeq {
				o := c.out[s-c.base]
				if !o.sacked {
					newest = o
					c.noteOutcome(false, o)
				}
				o.sacked = true
				c.hiAcked = max(c.hiAcked, o.firstTx)
			}
		}
	}
	if newest != nil && newest.tx == 1 && !newest.sentAt.IsZero() && !c.cfg.HalfDuplex {
		c.sample(now.Sub(newest.sentAt))
	}
	// The stream beneath keeps order: a frame last sent before one the
	// peer has acknowledged, and not acknowledged itself, was lost.
	for _, o := range c.out {
		if !o.sacked && o.lastTx < c.hiAcked {
			c.markLost(o)
		}
	}
	c.wcond.Broadcast()
}

// handleData processes a data or fin frame.
func (c *Conn) handleData(f *frame) {
	c.ackDue = true
	d := (f.seq - uint8(c.rcvNext)) & nibble
	if d >= MaxWindow {
		return // behind: a duplicate, acknowledged again
	}
	seq := c.rcvNext + uint64(d)
	if c.finRcvd {
		return
	}
	if seq != c.rcvNext {
		if _, ok := c.ooo[seq]; !ok {
			g := *f
			g.payload = append([]byte(nil), f.payload...)
			c.ooo[seq] = &g
		}
		return
	}
	if len(c.rbuf) >= rcvLimit {
		return // the reader is behind: the peer will send it again
	}
	c.deliver(f)
	for !c.finRcvd {
		g, ok := c.ooo[c.rcvNext]
		if !ok {
			break
		}
		delete(c.ooo, c.rcvNext)
		c.deliver(g)
	}
}

func (c *Conn) deliver(f *frame) {
	c.rcvNext++
	if f.kind == kindFin {
		c.finRcvd = true
		clear(c.ooo)
	} else {
		c.rbuf = append(c.rbuf, f.payload...)
		c.stats.PayloadRcvd += int64(len(f.payload))
	}
	c.rcond.Broadcast()
	c.wcond.Broadcast() // Close may be waiting for the peer's fin
}

// markLost marks o for resending, counting the loss once per copy.
func (c *Conn) markLost(o *outFrame) {
	if !o.lost {
		o.lost = true
		c.noteOutcome(true, o)
	}
}

// noteOutcome feeds the fate of one copy of o (lost, or the one that got
// through) to the estimate of the line's frame loss.
func (c *Conn) noteOutcome(lost bool, o *outFrame) {
	const gain = 1.0 / 16
	x := 0.0
	if lost {
		x = 1
	}
	c.loss += gain * (x - c.loss)
	c.lossLen += gain * (float64(len(o.payload)+headerLen+crcLen+2) - c.lossLen)
}

// payloadSize is how many stream bytes a new frame carries: the size that
// moves the most data through the loss measured so far. With byte error
// rate q, a frame of L payload bytes gets through with probability
// (1-q)^(L+8) and carries L/(L+8) of its airtime; the product is largest
// where L(L+8) = 8/q (to first order in q). Between minPayload and
// Config.MaxPayload.
func (c *Conn) payloadSize() int {
	if c.loss < 1e-3 {
		return c.cfg.MaxPayload
	}
	q := 1 - math.Pow(1-c.loss, 1/c.lossLen)
	l := int(-4 + math.Sqrt(16+8/q))
	return max(min(l, c.cfg.MaxPayload), min(minPayload, c.cfg.MaxPayload))
}

// lossPrior is the frame loss assumed before any frame was sent: a link
// starts with frames of about 40 bytes (at the default MaxPayload) and
// grows them as they get through. A frame cannot be split once sent, so a
// link that started with long frames on a very bad line would be stuck
// resending them.
const lossPrior = 0.25

// priorLen is the frame length on the line lossPrior is taken to have been
// measured on: a frame of 64 payload bytes.
const priorLen = 72

// minPayload is the least payloadSize picks (Config.MaxPayload permitting):
// below it the frame is mostly overhead whatever the line.
const minPayload = 16

// sample feeds one round-trip measurement to the estimator (RFC 6298 §2).
func (c *Conn) sample(r time.Duration) {
	r = max(r, 0) // the airtime estimate of a buffering stream may overshoot
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
	c.rto = min(max(c.srtt+max(slack, 4*c.rttvar), c.cfg.MinRTO), c.cfg.MaxRTO)
}

// backoff doubles the retransmission timeout (RFC 6298 §5.5).
func (c *Conn) backoff() {
	c.rto = min(2*c.rto, c.cfg.MaxRTO)
}

// send is the goroutine that decides what goes on the line and writes it.
func (c *Conn) send() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	hot := false // the line carried our last frame's closing flag just now
	for {
		now := time.Now()
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			return
		}
		var (
			buf  []byte
			sent []*outFrame
			wake time.Time
			err  error
		)
		if c.cfg.HalfDuplex {
			buf, sent, wake, err = c.planHalf(now)
		} else {
			buf, sent, wake, err = c.planFull(now, hot)
		}
		c.mu.Unlock()
		if err != nil {
			c.shutdown(err)
			continue
		}
		if len(buf) > 0 {
			start := time.Now()
			_, werr := c.rw.Write(buf)
			// A stream that buffers returns before the bytes are on the
			// line; they have left no earlier than their airtime.
			now = time.Now()
			if left := start.Add(c.cfg.airtime(len(buf))); left.After(now) {
				now = left
			}
			c.mu.Lock()
			c.stats.BytesSent += int64(len(buf))
			for _, o := range sent {
				o.sentAt = now
			}
			if c.cfg.HalfDuplex && !c.turn {
				c.passAt = now
				c.reclaimed = false
			}
			if len(c.out) > 0 && c.rtoAt.IsZero() {
				c.rtoAt = now.Add(c.rto)
			}
			stopped := c.stopped
			c.mu.Unlock()
			if werr != nil && !stopped {
				c.shutdown(fmt.Errorf("%w: writing: %w", ErrLineDown, werr))
			}
			hot = true
			continue
		}
		hot = false
		d := time.Hour
		if !wake.IsZero() {
			d = max(wake.Sub(now), 0)
		}
		timer.Reset(d)
		select {
		case <-c.kick:
		case <-timer.C:
		}
	}
}

// checkEnd gives up on a silent peer, and finishes Close's work when its
// condition holds. c.mu is held. It returns when to look again.
func (c *Conn) checkEnd(now time.Time) (time.Time, error) {
	var wake time.Time
	// Give up on a silent peer while waiting for it.
	waiting := len(c.out) > 0 || c.cfg.HalfDuplex || (c.closing && !c.finAcked)
	if waiting && !c.finished {
		since := c.lastHeard
		if c.outSince.After(since) && !c.cfg.HalfDuplex {
			since = c.outSince
		}
		at := since.Add(c.cfg.GiveUp)
		if !now.Before(at) {
			return time.Time{}, fmt.Errorf("%w: nothing heard for %v", ErrPeerGone, now.Sub(c.lastHeard).Round(time.Millisecond))
		}
		wake = at
	}
	if c.closing && !c.finished {
		done := false
		switch {
		case c.finAcked && c.finRcvd:
			// The peer has our fin, and we have its: send the
			// acknowledgement of its fin if it is still due (the fin
			// often comes in the burst that acknowledged ours), or the
			// peer resends its fin until the line has been quiet its
			// longest timeout.
			done = !c.ackDue
		case c.finAcked:
			// The peer has our fin and needs nothing more from us, but
			// its application, reading the end, usually closes at once:
			// wait a little for that fin, so as to acknowledge it (as
			// TCP's TIME-WAIT), rather than leave the peer resending it
			// on a line that stays up (a call that goes on in voice).
			if !now.Before(c.finWait) {
				done = true
			} else {
				wake = earliest(wake, c.finWait)
			}
		case c.finRcvd && c.finSent:
			// The peer is done and reads no more: our fin need not be
			// acknowledged, but the peer may lack our acknowledgement of
			// its fin.
			// Linger while the peer may still resend its fin.
			quiet := c.lingerFrom
			if c.lastDataAt.After(quiet) {
				quiet = c.lastDataAt
			}
			quiet = quiet.Add(c.linger())
			if !now.Before(quiet) {
				done = true
			} else {
				wake = earliest(wake, quiet)
			}
		}
		if done {
			c.finished = true
			c.wcond.Broadcast()
		}
	}
	return wake, nil
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

// nextFrame returns the next data or fin frame to send, resent ones
// first, and marks it transmitted; nil when there is none. c.mu is held.
func (c *Conn) nextFrame() *outFrame {
	for _, o := range c.out {
		if o.lost {
			o.lost = false
			c.stats.Resent++
			return c.transmit(o)
		}
	}
	if len(c.out) >= c.cfg.Window || c.finSent {
		return nil
	}
	var o *outFrame
	switch {
	case len(c.sbuf) > 0:
		n := min(len(c.sbuf), c.payloadSize())
		o = &outFrame{seq: c.nextSeq, payload: append([]byte(nil), c.sbuf[:n]...)}
		c.sbuf = c.sbuf[n:]
		if len(c.sbuf) == 0 {
			c.sbuf = nil
		}
		c.wcond.Broadcast()
	case c.finQueued:
		o = &outFrame{seq: c.nextSeq, fin: true}
		c.finSent = true
	default:
		return nil
	}
	if len(c.out) == 0 {
		c.outSince = time.Now()
	}
	c.nextSeq++
	c.out = append(c.out, o)
	return c.transmit(o)
}

func (c *Conn) transmit(o *outFrame) *outFrame {
	c.txOrder++
	if o.tx == 0 {
		o.firstTx = c.txOrder
	}
	o.lastTx = c.txOrder
	o.tx++
	c.stats.FramesSent++
	return o
}

// wireFrame is o as a frame carrying the current acknowledgement.
func (c *Conn) wireFrame(o *outFrame) frame {
	f := frame{kind: kindData, seq: uint8(o.seq) & nibble, ack: uint8(c.rcvNext) & nibble, payload: o.payload}
	if o.fin {
		f.kind = kindFin
	}
	return f
}

// ackFrame is an acknowledgement of what has arrived.
func (c *Conn) ackFrame() frame {
	f := frame{kind: kindAck, ack: uint8(c.rcvNext) & nibble}
	for i := range 8 {
		if _, ok := c.ooo[c.rcvNext+1+uint64(i)]; ok {
			f.sack |= 1 << i
		}
	}
	c.stats.AcksSent++
	c.stats.FramesSent++
	return f
}

// planFull picks the next frame to write in full duplex: one frame per
// write, so acknowledgements never wait long behind data. c.mu is held.
func (c *Conn) planFull(now time.Time, hot bool) ([]byte, []*outFrame, time.Time, error) {
	wake, err := c.checkEnd(now)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	if c.finished {
		return nil, nil, time.Time{}, nil
	}
	if c.ackDue && len(c.ooo) > 0 {
		// Data frames carry only the cumulative acknowledgement: say
		// what is held out of order first, or the peer resends it.
		c.ackDue = false
		f := c.ackFrame()
		return appendFrame(nil, &f, !hot), nil, time.Time{}, nil
	}
	if !c.rtoAt.IsZero() && !now.Before(c.rtoAt) {
		c.stats.Timeouts++
		c.backoff()
		for _, o := range c.out {
			if !o.sacked {
				c.markLost(o)
			}
		}
		c.rtoAt = time.Time{}
	}
	if o := c.nextFrame(); o != nil {
		f := c.wireFrame(o)
		c.ackDue = false
		return appendFrame(nil, &f, !hot), []*outFrame{o}, time.Time{}, nil
	}
	if c.ackDue {
		c.ackDue = false
		f := c.ackFrame()
		return appendFrame(nil, &f, !hot), nil, time.Time{}, nil
	}
	if !c.rtoAt.IsZero() {
		wake = earliest(wake, c.rtoAt)
	}
	// The line would idle: resend the oldest frame still unaccounted for
	// once a round trip has passed without its acknowledgement, rather
	// than wait for the full timeout. It costs no time that new data
	// could use, and a lost last frame of a message is the common loss.
	for _, o := range c.out {
		if o.sacked || o.sentAt.IsZero() {
			continue
		}
		at := o.sentAt.Add(c.probeDelay())
		if now.Before(at) {
			wake = earliest(wake, at)
			break
		}
		c.stats.Resent++
		c.stats.Probes++
		f := c.wireFrame(c.transmit(o))
		c.ackDue = false
		return appendFrame(nil, &f, !hot), []*outFrame{o}, time.Time{}, nil
	}
	return nil, nil, wake, nil
}

// probeDelay is how long an idle full-duplex sender waits for an
// acknowledgement before resending: a round trip and its usual spread, at
// least an acknowledgement's airtime and the slack; MinRTO before the
// first measurement. It does not back off: on a line of its own a sender
// loses nothing by trying again, while a backed-off timer would leave
// only a handful of tries before GiveUp, too few on a line that loses a
// third of its frames.
func (c *Conn) probeDelay() time.Duration {
	if c.srtt == 0 {
		return c.cfg.MinRTO
	}
	return c.srtt + max(2*c.rttvar, c.cfg.airtime(ackFrameLen)+slack)
}

// planHalf builds the next burst when this side holds the turn, or takes
// the turn back (primary) when the peer has been silent too long. c.mu is
// held.
func (c *Conn) planHalf(now time.Time) ([]byte, []*outFrame, time.Time, error) {
	wake, err := c.checkEnd(now)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	if !c.turn {
		if !c.cfg.Primary || c.passAt.IsZero() {
			return nil, nil, wake, nil
		}
		at := c.reclaimAt()
		if now.Before(at) {
			return nil, nil, earliest(wake, at), nil
		}
		// Take the turn back: poll rather than resend blindly, the
		// answer tells what is missing.
		c.stats.TurnTimeouts++
		c.backoff()
		c.turn = true
		c.reclaimed = true
		c.passAt = time.Time{}
		f := c.ackFrame()
		f.over = true
		c.turn = false
		c.lastOverTx = c.txOrder
		return appendFrame(nil, &f, true), nil, time.Time{}, nil
	}
	var sent []*outFrame
	for len(sent) < c.cfg.Window {
		o := c.nextFrame()
		if o == nil {
			break
		}
		sent = append(sent, o)
	}
	if len(sent) == 0 {
		if c.ackDue {
			c.idleDelay = -1
		} else if c.cfg.Primary {
			// Idle: hand the turn over more and more slowly.
			if c.idleUntil.IsZero() {
				// The first idle round goes at once (the peer's
				// application may just be writing its answer), then
				// the rounds slow down, doubling.
				switch {
				case c.idleDelay < 0:
					c.idleDelay = 0
				case c.idleDelay == 0:
					c.idleDelay = max(c.cfg.airtime(ackFrameLen), 20*time.Millisecond)
				default:
					c.idleDelay = min(2*c.idleDelay, c.maxIdle())
				}
				c.idleUntil = now.Add(c.idleDelay)
			}
			if now.Before(c.idleUntil) {
				return nil, nil, earliest(wake, c.idleUntil), nil
			}
		}
		f := c.ackFrame()
		f.over = true
		c.ackDue = false
		c.turn = false
		c.idleUntil = time.Time{}
		c.lastOverTx = c.txOrder
		return appendFrame(nil, &f, true), nil, time.Time{}, nil
	}
	c.idleDelay = -1
	c.idleUntil = time.Time{}
	var buf []byte
	sack := len(c.ooo) > 0 // data frames cannot say what is held out of order
	for i, o := range sent {
		f := c.wireFrame(o)
		f.over = i == len(sent)-1 && !sack // the last frame hands the turn over
		buf = appendFrame(buf, &f, i == 0)
	}
	if sack {
		f := c.ackFrame()
		f.over = true
		buf = appendFrame(buf, &f, false)
	}
	c.ackDue = false
	c.turn = false
	c.lastOverTx = c.txOrder
	return buf, sent, time.Time{}, nil
}

// reclaimAt is when the primary takes the turn back: its timeout after
// handing the turn over, stretched while the peer's bytes keep arriving
// (a long burst), but never beyond what the longest burst could take.
func (c *Conn) reclaimAt() time.Time {
	at := c.passAt.Add(c.rto)
	if c.lastByteAt.After(c.passAt) {
		gap := c.cfg.airtime(8) + c.cfg.Turnaround + slack
		limit := at.Add(c.cfg.airtime(c.cfg.Window*c.cfg.maxFrame()*2) + c.cfg.Turnaround)
		stretched := c.lastByteAt.Add(gap)
		if stretched.After(limit) {
			stretched = limit
		}
		if stretched.After(at) {
			at = stretched
		}
	}
	return at
}

// linger is how long a closing side that received the peer's fin keeps
// answering after the last data or fin frame arrived: long enough for the
// peer to resend its fin once more at its longest timeout.
func (c *Conn) linger() time.Duration {
	d := c.cfg.MaxRTO + c.rto
	if c.cfg.HalfDuplex {
		d += 2 * c.maxIdle()
	}
	return d
}

// peerFinWait is how long a Close whose fin was acknowledged waits for
// the peer's fin: two retransmission timeouts as they stand when the fin
// is acknowledged (a round trip and the peer's application with room to
// spare; in half duplex, the turn going over and back). The deadline is
// fixed then: a later backoff does not move it.
func (c *Conn) peerFinWait() time.Duration { return 2 * c.rto }

// maxIdle is the slowest an idle primary hands the turn over: the longest
// the secondary waits to speak, against the share of an idle line spent
// polling (an acknowledgement each way per round: about 12% at 1200
// bit/s, 20% at 300).
func (c *Conn) maxIdle() time.Duration {
	return max(time.Second, 8*c.cfg.airtime(ackFrameLen)) + 2*c.cfg.Turnaround
}
