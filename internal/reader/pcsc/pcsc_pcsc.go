//go:build pcsc && cgo

package pcsc

// The PC/SC calls, through libpcsclite (pcsc-lite 1.9 and later; the
// functions are those of the PC/SC Workgroup specification, part 5).

/*
#cgo pkg-config: libpcsclite
#include <stdlib.h>
#include <winscard.h>

static LONG cl_transmit(SCARDHANDLE h, DWORD proto, const BYTE *send, DWORD sendLen, BYTE *recv, DWORD *recvLen) {
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
	return SCardTransmit(h, pci, send, sendLen, NULL, recv, recvLen);
}

static LONG cl_atr(SCARDHANDLE h, BYTE *atr, DWORD *atrLen) {
	DWORD state, proto, nameLen = 0;
	return SCardStatus(h, NULL, &nameLen, &state, &proto, atr, atrLen);
}
*/
import "C"

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"cardlink/internal/reader"
)

// waitSlice bounds one SCardGetStatusChange in Wait, in milliseconds: a
// cancellation that comes just before the call starts is seen this late.
const waitSlice = 1000

func check(op string, rc C.LONG) error {
	if rc == C.SCARD_S_SUCCESS {
		return nil
	}
	return &Error{Op: op, Code: uint32(rc)}
}

// scContext is a PC/SC context (a connection to pcscd).
type scContext struct {
	h C.SCARDCONTEXT

	mu       sync.Mutex // guards released against a late Cancel
	released bool
}

func establish() (*scContext, error) {
	var h C.SCARDCONTEXT
	if err := check("SCardEstablishContext", C.SCardEstablishContext(C.SCARD_SCOPE_SYSTEM, nil, nil, &h)); err != nil {
		return nil, err
	}
	return &scContext{h: h}, nil
}

func (c *scContext) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.released {
		C.SCardReleaseContext(c.h)
		c.released = true
	}
}

// cancel ends a blocking SCardGetStatusChange on c; it is safe to call from
// another goroutine and after release.
func (c *scContext) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.released {
		C.SCardCancel(c.h)
	}
}

// List returns the names of the readers pcscd knows, in its order (none is
// an empty list, not an error).
func List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sc, err := establish()
	if err != nil {
		return nil, err
	}
	defer sc.release()
	return sc.list()
}

func (c *scContext) list() ([]string, error) {
	var n C.DWORD
	rc := C.SCardListReaders(c.h, nil, nil, &n)
	if uint32(rc) == rcNoReadersAvailable {
		return nil, nil
	}
	if err := check("SCardListReaders", rc); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	rc = C.SCardListReaders(c.h, nil, (*C.char)(unsafe.Pointer(&buf[0])), &n)
	if uint32(rc) == rcNoReadersAvailable {
		return nil, nil
	}
	if err := check("SCardListReaders", rc); err != nil {
		return nil, err
	}
	var names []string
	for _, b := range bytes.Split(buf[:n], []byte{0}) {
		if len(b) > 0 {
			names = append(names, string(b))
		}
	}
	return names, nil
}

// states asks pcscd for the current state of the named readers (without
// waiting): the SCARD_STATE_* bits of each, in order.
func (c *scContext) states(names []string, current []C.DWORD, timeout C.DWORD) ([]C.DWORD, error) {
	rs := make([]C.SCARD_READERSTATE, len(names))
	for i, n := range names {
		rs[i].szReader = C.CString(n)
		defer C.free(unsafe.Pointer(rs[i].szReader))
		if current != nil {
			rs[i].dwCurrentState = current[i]
		}
	}
	err := check("SCardGetStatusChange", C.SCardGetStatusChange(c.h, timeout, &rs[0], C.DWORD(len(rs))))
	if err != nil {
		return nil, err
	}
	out := make([]C.DWORD, len(rs))
	for i := range rs {
		out[i] = rs[i].dwEventState
	}
	return out, nil
}

// cardsPresent reports which of the named readers hold a card.
func cardsPresent(ctx context.Context, names []string) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sc, err := establish()
	if err != nil {
		return nil, err
	}
	defer sc.release()
	st, err := sc.states(names, nil, 0)
	if err != nil {
		return nil, err
	}
	present := make(map[string]bool, len(names))
	for i, n := range names {
		present[n] = st[i]&C.SCARD_STATE_PRESENT != 0
	}
	return present, nil
}

// Present reports whether a card is in the reader. It fails when pcscd no
// longer knows the reader.
func (r *Reader) Present(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	sc, err := establish()
	if err != nil {
		return false, err
	}
	defer sc.release()
	st, err := sc.states([]string{r.name}, nil, 0)
	if err != nil {
		return false, err
	}
	if st[0]&C.SCARD_STATE_UNKNOWN != 0 {
		return false, fmt.Errorf("%w: %q is gone", ErrNoReader, r.name)
	}
	return st[0]&C.SCARD_STATE_PRESENT != 0, nil
}

// Wait blocks until the reader's card presence differs from present, or
// ctx ends (reported within about a second). It fails when pcscd no longer
// knows the reader or stops.
func (r *Reader) Wait(ctx context.Context, present bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sc, err := establish()
	if err != nil {
		return err
	}
	defer sc.release()
	stop := context.AfterFunc(ctx, sc.cancel)
	defer stop()
	current := []C.DWORD{C.SCARD_STATE_UNAWARE}
	timeout := C.DWORD(0)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := sc.states([]string{r.name}, current, timeout)
		timeout = waitSlice
		var e *Error
		if errors.As(err, &e) && (e.Code == rcTimeout || e.Code == rcCancelled) {
			continue
		}
		if err != nil {
			return err
		}
		if st[0]&C.SCARD_STATE_UNKNOWN != 0 {
			return fmt.Errorf("%w: %q is gone", ErrNoReader, r.name)
		}
		if (st[0]&C.SCARD_STATE_PRESENT != 0) != present {
			return nil
		}
		current[0] = st[0] &^ C.SCARD_STATE_CHANGED
	}
}

// Connect connects to the card in shared mode, with T=0 or T=1 as the card
// offers. It fails with an error wrapping reader.ErrNoCard when the reader
// is empty.
func (r *Reader) Connect(ctx context.Context) (reader.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sc, err := establish()
	if err != nil {
		return nil, err
	}
	name := C.CString(r.name)
	defer C.free(unsafe.Pointer(name))
	c := &Conn{sc: sc}
	rc := C.SCardConnect(sc.h, name, C.SCARD_SHARE_SHARED, C.SCARD_PROTOCOL_T0|C.SCARD_PROTOCOL_T1, &c.h, &c.proto)
	if err := check("SCardConnect", rc); err != nil {
		sc.release()
		if uint32(rc) == rcRemovedCard {
			return nil, fmt.Errorf("%w: %w", reader.ErrNoCard, err)
		}
		return nil, err
	}
	if err := c.readATR(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Conn is a PC/SC connection to a card. It is not safe for concurrent use.
// A PC/SC call cannot be interrupted: ctx is checked before each call.
type Conn struct {
	sc     *scContext
	h      C.SCARDHANDLE
	proto  C.DWORD
	atr    []byte
	buf    []byte
	closed bool
}

func (c *Conn) readATR() error {
	var atr [C.MAX_ATR_SIZE]byte
	n := C.DWORD(len(atr))
	if err := check("SCardStatus", C.cl_atr(c.h, (*C.BYTE)(unsafe.Pointer(&atr[0])), &n)); err != nil {
		return err
	}
	c.atr = bytes.Clone(atr[:n])
	return nil
}

// ATR returns the card's answer to reset.
func (c *Conn) ATR() []byte { return c.atr }

// Transmit sends apdu and returns the response. It fails with ErrClosed
// after Close, with ctx's error when ctx has ended, and with an *Error
// (wrapping reader.ErrCardRemoved when the card went away) when PC/SC does.
func (c *Conn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	if c.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(apdu) == 0 {
		return nil, fmt.Errorf("pcsc: transmitting: empty APDU")
	}
	if c.buf == nil {
		c.buf = make([]byte, C.MAX_BUFFER_SIZE_EXTENDED)
	}
	n := C.DWORD(len(c.buf))
	rc := C.cl_transmit(c.h, c.proto, (*C.BYTE)(unsafe.Pointer(&apdu[0])), C.DWORD(len(apdu)), (*C.BYTE)(unsafe.Pointer(&c.buf[0])), &n)
	if err := check("SCardTransmit", rc); err != nil {
		return nil, err
	}
	return bytes.Clone(c.buf[:n]), nil
}

// Reset warm-resets the card (SCardReconnect with SCARD_RESET_CARD) and
// reads the ATR again.
func (c *Conn) Reset(ctx context.Context) error {
	if c.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rc := C.SCardReconnect(c.h, C.SCARD_SHARE_SHARED, C.SCARD_PROTOCOL_T0|C.SCARD_PROTOCOL_T1, C.SCARD_RESET_CARD, &c.proto)
	if err := check("SCardReconnect", rc); err != nil {
		return err
	}
	return c.readATR()
}

// Close disconnects, asking pcscd to power the card down (it does so once
// no other application holds the card), and releases the PC/SC context.
// Closing twice does nothing.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	defer c.sc.release()
	err := check("SCardDisconnect", C.SCardDisconnect(c.h, C.SCARD_UNPOWER_CARD))
	var e *Error
	if errors.As(err, &e) && e.Unwrap() != nil {
		return nil // the card is gone already: nothing left to end
	}
	return err
}
