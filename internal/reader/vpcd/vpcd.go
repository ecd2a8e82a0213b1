// Package vpcd serves a virtual card to pcscd through vsmartcard's vpcd
// driver (Debian package vsmartcard-vpcd), so that every PC/SC application
// on the machine — OpenSC, yubico-piv-tool, piv-go, cardlink's own pcsc
// driver — sees the card in the reader "Virtual PCD 00 00".
//
// pcscd's vpcd driver listens on TCP (127.0.0.1:35963 by default, set in
// /etc/reader.conf.d/vpcd as CHANNELID 0x8C7B) and the card connects to it.
// Every message either way is a frame: a 2-byte big-endian length, then that
// many bytes. From vpcd, a 1-byte frame is a control (0 power off, 1 power
// on, 2 reset, 4 get ATR); only "get ATR" is answered, with the ATR as a
// frame. Any longer frame is a command APDU, answered with the response APDU.
// (vsmartcard virtualsmartcard/src/vpcd/vpcd.c, as of vsmartcard 0.8.)
// vpcd sends "get ATR" every time pcscd polls for the card, so an idle card
// answers a few of them each second.
//
// It imports card and the standard library; it must not import the reader
// drivers (it is the card's side of the wire, not the host's).
package vpcd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"cardlink/internal/card"
)

// DefaultAddr is where pcscd's vpcd driver listens in the Debian package's
// configuration (/etc/reader.conf.d/vpcd, CHANNELID 0x8C7B = 35963).
const DefaultAddr = "127.0.0.1:35963"

// MaxFrame is the longest payload a frame carries: its length is 16 bits.
const MaxFrame = 0xFFFF

// Controls vpcd sends as 1-byte frames (vsmartcard vpcd.h, VPCD_CTRL_*).
const (
	ctrlOff   = 0
	ctrlOn    = 1
	ctrlReset = 2
	ctrlATR   = 4
)

// event is a power event vpcd asked the card for.
type event int

// Power events, in the order of their control codes.
const (
	evPowerOff event = iota
	evPowerOn
	evReset
)

func (e event) String() string {
	switch e {
	case evPowerOff:
		return "power off"
	case evPowerOn:
		return "power on"
	case evReset:
		return "reset"
	}
	return fmt.Sprintf("vpcd.event(%d)", int(e))
}

// readFrame reads one frame from r into buf (grown as needed) and returns
// its payload, which aliases buf. A stream that ends cleanly between frames
// gives io.EOF; one that ends inside a frame gives io.ErrUnexpectedEOF.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// appendFrame appends the frame carrying p to b. It fails when p is longer
// than MaxFrame.
func appendFrame(b, p []byte) ([]byte, error) {
	if len(p) > MaxFrame {
		return b, fmt.Errorf("vpcd: frame of %d bytes, the most is %d", len(p), MaxFrame)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...), nil
}

// Serve answers vpcd on conn with card c until conn fails, vpcd sends
// something that is not a frame of the protocol, or ctx ends. It closes
// conn when ctx ends and powers c off when it returns (the card leaves the
// reader). It returns nil when ctx ended, an error wrapping io.EOF when vpcd
// closed the connection, and other errors for I/O and protocol failures or
// a card that failed to power up (its NVM could not be read).
//
// Serve takes over c's power for its duration: nothing else should power
// c on or off meanwhile. Commands reach c one at a time.
func Serve(ctx context.Context, conn net.Conn, c *card.Card) error {
	return serve(ctx, conn, c, nil)
}

// serve is Serve, calling onEvent (when not nil) after each power event.
func serve(ctx context.Context, conn net.Conn, c *card.Card, onEvent func(event, error)) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer c.PowerOff()
	var in, out []byte
	for {
		quickAck(conn)
		p, err := readFrame(conn, in)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("vpcd: reading frame: %w", err)
		}
		in = p[:0]
		out, err = answer(c, p, out[:0], onEvent)
		if err != nil {
			return err
		}
		if len(out) == 0 {
			continue
		}
		if _, err := conn.Write(out); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("vpcd: writing frame: %w", err)
		}
	}
}

// answer handles one payload from vpcd and appends the frame to send back
// (if any) to out.
func answer(c *card.Card, p, out []byte, onEvent func(event, error)) ([]byte, error) {
	notify := func(e event, err error) {
		if onEvent != nil {
			onEvent(e, err)
		}
	}
	switch {
	case len(p) == 0:
		return out, errors.New("vpcd: empty frame")
	case len(p) == 1:
		switch p[0] {
		case ctrlOff:
			c.PowerOff()
			notify(evPowerOff, nil)
			return out, nil
		case ctrlOn:
			_, err := c.PowerOn()
			notify(evPowerOn, err)
			if err != nil {
				return out, fmt.Errorf("vpcd: powering card on: %w", err)
			}
			return out, nil
		case ctrlReset:
			// vpcd resets whatever state pcscd thinks the card is in; a
			// card without power is powered up, as a reader's reset would.
			_, err := c.Reset()
			if errors.Is(err, card.ErrNotPowered) {
				_, err = c.PowerOn()
			}
			notify(evReset, err)
			if err != nil {
				return out, fmt.Errorf("vpcd: resetting card: %w", err)
			}
			return out, nil
		case ctrlATR:
			return appendFrame(out, c.ATR())
		}
		return out, fmt.Errorf("vpcd: unknown control %#02x", p[0])
	}
	resp, err := c.Transmit(p)
	if err != nil {
		// The card has no power (pcscd skipped POWER ON, or the NVM
		// failed): no response exists. Dropping the connection is what a
		// reader sees when a card stops answering; vpcd reports the card
		// removed and pcscd powers it up again once it is back.
		return out, fmt.Errorf("vpcd: card did not answer: %w", err)
	}
	return appendFrame(out, resp)
}

// Client keeps a card attached to pcscd's vpcd driver: it dials vpcd, serves
// the card, and dials again with backoff when the connection drops (pcscd
// restarted or was not running yet). The card is powered off on every
// disconnect, so its RAM is cleared as if it left the reader.
type Client struct {
	addr string
	card *card.Card
	log  *slog.Logger

	// Backoff between dial attempts: from minBackoff, doubling, up to
	// maxBackoff, with ±20% jitter. Tests shorten them.
	minBackoff, maxBackoff time.Duration
	dial                   func(ctx context.Context, addr string) (net.Conn, error)
}

// stableSession is how long a connection to vpcd must last for the next
// reconnection to start from the shortest backoff.
const stableSession = time.Second

// NewClient returns a client that attaches c to the vpcd listening at addr
// ("host:port"; "" means DefaultAddr), logging connections and power events
// to log (nil discards them).
func NewClient(addr string, c *card.Card, log *slog.Logger) *Client {
	if addr == "" {
		addr = DefaultAddr
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var d net.Dialer
	return &Client{
		addr:       addr,
		card:       c,
		log:        log,
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 5 * time.Second,
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
	}
}

// Run serves the card until ctx ends, then returns nil. It fails at once
// only when the address is malformed; every other failure is logged and
// followed by a new dial after a backoff.
func (cl *Client) Run(ctx context.Context) error {
	if _, _, err := net.SplitHostPort(cl.addr); err != nil {
		return fmt.Errorf("vpcd: address %q: %w", cl.addr, err)
	}
	backoff := cl.minBackoff
	waiting := false // logged "waiting" for the current outage
	for {
		conn, err := cl.dial(ctx, cl.addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !waiting {
				cl.log.Info("waiting for vpcd", "addr", cl.addr, "err", err)
				waiting = true
			} else {
				cl.log.Debug("dialing vpcd", "addr", cl.addr, "err", err, "retry", backoff)
			}
			if !sleep(ctx, jitter(backoff)) {
				return nil
			}
			backoff = min(2*backoff, cl.maxBackoff)
			continue
		}
		waiting = false
		cl.log.Info("card attached to vpcd", "addr", cl.addr)
		start := time.Now()
		err = serve(ctx, conn, cl.card, cl.logEvent)
		conn.Close()
		if ctx.Err() != nil {
			cl.log.Info("card detached from vpcd", "addr", cl.addr, "reason", "stopping")
			return nil
		}
		cl.log.Info("card detached from vpcd", "addr", cl.addr, "err", err)
		// A session that lasted starts the backoff afresh; one that failed
		// at once (a card whose NVM cannot be read, say) backs off further
		// rather than reconnecting ten times a second.
		if time.Since(start) >= stableSession {
			backoff = cl.minBackoff
		}
		if !sleep(ctx, jitter(backoff)) {
			return nil
		}
		backoff = min(2*backoff, cl.maxBackoff)
	}
}

func (cl *Client) logEvent(e event, err error) {
	if err != nil {
		cl.log.Error("card power event failed", "event", e.String(), "err", err)
		return
	}
	cl.log.Info("card power event", "event", e.String())
}

// sleep waits for d or until ctx ends; it reports whether ctx is still on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter spreads d by ±20% so that restarted clients do not dial in step.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	span := int64(d) * 2 / 5
	return d - time.Duration(span/2) + time.Duration(rand.Int64N(span+1))
}
