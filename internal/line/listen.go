package line

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ListenOptions configure a Listener; the zero value is one line with
// the switch's window.
type ListenOptions struct {
	// Lines is how many calls the number can take at once (a hunt group
	// of so many connections); zero means 1. A caller finding them all
	// in calls gets ErrBusy.
	Lines int
	// Window and Buffer are as in Options, for every call answered.
	Window, Buffer int
}

// Listener is a registered number: it answers the calls made to it.
type Listener struct {
	number string
	opts   ListenOptions
	wake   chan struct{} // a line rang
	lines  []*listenLine

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dead   chan struct{} // closed when every line is gone
}

type ring struct {
	line *listenLine
	id   uint64
	from string
}

// listenLine is one connection of a Listener.
type listenLine struct {
	l *Listener
	c *conn

	mu      sync.Mutex
	ringing uint64 // the call ringing, 0 for none
	from    string // its caller
	claimed bool   // an Accept is answering it
	call    *Call  // the call answered (CONNECTED or awaited)
}

// Listen registers number at the switch at addr with opts.Lines
// connections and returns once the switch has confirmed them all. The
// Listener lives until Close or until ctx ends. opts may be nil.
func Listen(ctx context.Context, addr, number string, opts *ListenOptions) (*Listener, error) {
	if opts == nil {
		opts = &ListenOptions{}
	}
	o := *opts
	if o.Lines == 0 {
		o.Lines = 1
	}
	if err := checkNumber(number); err != nil {
		return nil, err
	}
	if o.Lines < 0 || o.Lines > 1024 {
		return nil, fmt.Errorf("%d lines: want 1 to 1024", o.Lines)
	}
	if err := (&Options{Window: o.Window, Buffer: o.Buffer}).check(); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	l := &Listener{number: number, opts: o, wake: make(chan struct{}, 1),
		ctx: lctx, cancel: cancel, dead: make(chan struct{})}
	for range o.Lines {
		c, err := dialSwitch(ctx, addr)
		if err == nil {
			err = c.send(&message{typ: msgRegister, number: number, window: uint32(o.Window)})
			if err == nil {
				var m message
				m, err = c.readCtx(ctx)
				switch {
				case err != nil:
				case m.typ == msgEnd:
					err = causeErr(m.cause, m.text)
				case m.typ != msgRegistered:
					err = fmt.Errorf("%w: unexpected message of type %#02x", ErrProtocol, m.typ)
				}
			}
			if err != nil {
				c.nc.Close()
			}
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("registering %s: %w", number, err)
		}
		l.lines = append(l.lines, &listenLine{l: l, c: c})
	}
	var running sync.WaitGroup
	for _, ln := range l.lines {
		l.wg.Add(1)
		running.Add(1)
		go func() {
			defer l.wg.Done()
			defer running.Done()
			ln.loop()
		}()
	}
	go func() {
		running.Wait()
		close(l.dead)
	}()
	context.AfterFunc(lctx, func() {
		for _, ln := range l.lines {
			ln.c.nc.Close()
		}
	})
	return l, nil
}

// Number is the registered number.
func (l *Listener) Number() string { return l.number }

// Accept waits for a call to ring, answers it and returns it once
// connected. It fails with ctx's error, with ErrClosed after Close, or
// with ErrLost once the switch dropped every line.
func (l *Listener) Accept(ctx context.Context) (*Call, error) {
	for {
		for _, ln := range l.lines {
			r := ln.claim()
			if r == nil {
				continue
			}
			l.notify() // another Accept may take another line
			call, err := ln.answer(ctx, r)
			if err == nil {
				return call, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// The caller gave up first; look again.
		}
		select {
		case <-l.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.ctx.Done():
			return nil, ErrClosed
		case <-l.dead:
			return nil, ErrLost
		}
	}
}

func (l *Listener) notify() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// claim returns the line's ring for one Accept to answer, or nil.
func (ln *listenLine) claim() *ring {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.ringing == 0 || ln.claimed || ln.call != nil {
		return nil
	}
	ln.claimed = true
	return &ring{line: ln, id: ln.ringing, from: ln.from}
}

// Close unregisters the number: it closes every line, ending their calls
// with ErrLost, and waits for its goroutines.
func (l *Listener) Close() error {
	l.cancel()
	for _, ln := range l.lines {
		ln.c.nc.Close()
	}
	l.wg.Wait()
	return nil
}

// answer answers r if it is still ringing and waits for CONNECTED.
func (ln *listenLine) answer(ctx context.Context, r *ring) (*Call, error) {
	ln.mu.Lock()
	if ln.ringing != r.id || ln.call != nil {
		ln.mu.Unlock()
		return nil, errors.New("no longer ringing")
	}
	call := newCall(ln.c, r.id, r.from, ln.l.opts.Buffer)
	ln.call = call
	ln.mu.Unlock()
	if err := ln.c.send(&message{typ: msgAnswer, callID: r.id}); err != nil {
		call.end(fmt.Errorf("%w: %v", ErrLost, err))
		call.finish()
		return nil, err
	}
	select {
	case <-call.up:
		return call, nil
	case <-call.ended:
		return nil, call.errNow()
	case <-ctx.Done():
		call.Hangup()
		return nil, ctx.Err()
	}
}

// loop reads the line's messages until the connection ends.
func (ln *listenLine) loop() {
	defer func() {
		ln.mu.Lock()
		call := ln.call
		ln.call, ln.ringing = nil, 0
		ln.mu.Unlock()
		if call != nil {
			call.end(ErrLost)
			call.finish()
		}
		ln.c.nc.Close()
	}()
	for {
		m, err := ln.c.rd.read()
		if err != nil {
			return
		}
		ln.mu.Lock()
		call := ln.call
		switch m.typ {
		case msgRing:
			if ln.ringing != 0 || call != nil {
				ln.mu.Unlock()
				return // the switch broke the protocol
			}
			ln.ringing, ln.from, ln.claimed = m.callID, m.number, false
			ln.mu.Unlock()
			ln.l.notify()
			continue
		case msgConnected:
			ln.mu.Unlock()
			if call == nil || call.id != m.callID {
				return
			}
			call.mu.Lock()
			call.window = int(m.window)
			call.mu.Unlock()
			call.setConnected()
			continue
		case msgRxAudio:
			ln.mu.Unlock()
			if call != nil {
				call.audio(m)
			}
			continue
		case msgEnd:
			ln.ringing, ln.call, ln.claimed = 0, nil, false
			ln.mu.Unlock()
			if call != nil {
				call.end(causeErr(m.cause, m.text))
				call.finish()
			}
			if m.cause == CauseShutdown || m.cause == CauseProtocol {
				return
			}
			continue
		default:
			ln.mu.Unlock()
			return
		}
	}
}
