// Package virtual is the reader driver for the in-process card: a Reader
// that holds a *card.Card and passes APDUs to it directly. Insert and Remove
// simulate putting the card in and taking it out.
//
// It imports reader and card; it opens no files and does no I/O.
// Wiring a "virtual:" URI to a card with its applets is left to the caller
// (see reader.Register).
package virtual

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cardlink/internal/card"
	"cardlink/internal/reader"
)

// ErrClosed is returned by a Conn used after Close.
var ErrClosed = errors.New("virtual: connection closed")

// Reader is a card slot holding an in-process card. It is safe for
// concurrent use.
type Reader struct {
	card *card.Card
	name string

	mu      sync.Mutex
	present bool
	powered bool          // the card has power from this reader
	conns   int           // open Conns of the current session
	session uint64        // grows on every Insert, Remove and power loss
	changed chan struct{} // closed and replaced when presence changes
}

var (
	_ reader.Reader  = (*Reader)(nil)
	_ reader.Watcher = (*Reader)(nil)
	_ reader.Conn    = (*Conn)(nil)
)

// New returns a reader named name holding c, with the card inserted and
// unpowered. The reader takes over c's power: callers should not power c
// on or off themselves while the reader is in use.
func New(c *card.Card, name string) *Reader {
	return &Reader{card: c, name: name, present: true, changed: make(chan struct{})}
}

// Name returns the name given to New.
func (r *Reader) Name() string { return r.name }

// Connect powers the card if no Conn holds it powered and opens a session.
// Several Conns may share the card (as in PC/SC shared mode); the card is
// powered off when the last one is closed. It fails with reader.ErrNoCard
// when the card is removed, or with the card's error if its NVM cannot be
// recovered.
func (r *Reader) Connect(ctx context.Context) (reader.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.present {
		return nil, reader.ErrNoCard
	}
	if !r.powered {
		if _, err := r.card.PowerOn(); err != nil {
			return nil, fmt.Errorf("virtual: powering card: %w", err)
		}
		r.powered = true
		r.conns = 0
	}
	r.conns++
	return &Conn{r: r, session: r.session, atr: r.card.ATR()}, nil
}

// Present reports whether the card is inserted.
func (r *Reader) Present(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.present, nil
}

// Wait blocks until presence differs from present, or ctx ends.
func (r *Reader) Wait(ctx context.Context, present bool) error {
	for {
		r.mu.Lock()
		now, changed := r.present, r.changed
		r.mu.Unlock()
		if now != present {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Insert puts the card in the slot; it does nothing if the card is there.
func (r *Reader) Insert() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.present {
		return
	}
	r.present = true
	r.newSession()
	r.notify()
}

// Remove takes the card out: it loses power, and every open Conn fails with
// reader.ErrCardRemoved. It does nothing if the slot is empty.
func (r *Reader) Remove() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.present {
		return
	}
	r.present = false
	r.card.PowerOff()
	r.newSession()
	r.notify()
}

// newSession ends the current session: its Conns are dead. r.mu is held.
func (r *Reader) newSession() {
	r.session++
	r.powered = false
	r.conns = 0
}

// notify wakes up Wait. r.mu is held.
func (r *Reader) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Conn is a session with the card in a Reader. It is not safe for
// concurrent use (the Reader and the card are).
type Conn struct {
	r       *Reader
	session uint64
	atr     []byte
	closed  bool
}

// ATR returns the card's answer to reset.
func (c *Conn) ATR() []byte { return c.atr }

// Transmit passes apdu to the card. It fails with ErrClosed after Close,
// with ctx's error when ctx has ended, and with an error wrapping
// reader.ErrCardRemoved when the card was removed or lost power (the cause,
// such as nvm.ErrPowerLost, is wrapped too).
func (c *Conn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	var resp []byte
	err := c.do(ctx, func() (err error) {
		resp, err = c.r.card.Transmit(apdu)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Reset warm-resets the card, with the errors of Transmit.
func (c *Conn) Reset(ctx context.Context) error {
	return c.do(ctx, func() error {
		atr, err := c.r.card.Reset()
		if err == nil {
			c.atr = atr
		}
		return err
	})
}

// do runs fn against the card if c's session is still on, holding the
// reader's lock so that no Remove or Insert comes in between. A card error
// (always about power) ends the session and comes back wrapping
// reader.ErrCardRemoved.
func (c *Conn) do(ctx context.Context, fn func() error) error {
	if c.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if c.session != c.r.session {
		return reader.ErrCardRemoved
	}
	if err := fn(); err != nil {
		c.r.newSession()
		return fmt.Errorf("%w: %w", reader.ErrCardRemoved, err)
	}
	return nil
}

// Close ends the session; the card is powered off when no other Conn holds
// it. Closing twice does nothing.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if c.session != c.r.session {
		return nil
	}
	c.r.conns--
	if c.r.conns == 0 {
		c.r.card.PowerOff()
		c.r.powered = false
	}
	return nil
}
