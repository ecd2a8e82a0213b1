// Package readertest is the conformance suite every reader driver must
// pass: run it from the driver's tests with a reader holding a card.
//
// It imports reader, iso7816 and testing; no driver.
package readertest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
)

// unknownAID is an AID no card should hold ("F0" proprietary RID, then
// "cardlink?" in ASCII).
var unknownAID = []byte{0xF0, 'c', 'a', 'r', 'd', 'l', 'i', 'n', 'k', '?'}

// Options describes what the card in the reader can do beyond what every
// card does. The zero value runs only the card-agnostic checks.
type Options struct {
	// AID selects an applet that answers Long with a reply of LongLen
	// bytes, to test GET RESPONSE through Exchange. An empty AID skips that
	// check.
	AID     []byte
	Long    iso7816.Command
	LongLen int
}

// Run runs the card-agnostic checks on the readers open returns: each
// subtest calls open once and expects a reader holding a card that is not
// connected yet. open should register any cleanup with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) reader.Reader) {
	RunOptions(t, open, Options{})
}

// RunOptions is Run with the checks that opts enables.
func RunOptions(t *testing.T, open func(t *testing.T) reader.Reader, opts Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, r reader.Reader, opts Options)
	}{
		{"ATR", testATR},
		{"SelectUnknown", testSelectUnknown},
		{"GetResponseNothingPending", testGetResponseNothingPending},
		{"TransmitAfterClose", testTransmitAfterClose},
		{"CanceledContext", testCanceledContext},
		{"Reset", testReset},
		{"Reconnect", testReconnect},
		{"Watcher", testWatcher},
		{"LongReply", testLongReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t), opts)
		})
	}
}

// connect connects to r and closes the Conn at the end of the test.
func connect(t *testing.T, r reader.Reader) reader.Conn {
	t.Helper()
	c, err := r.Connect(t.Context())
	if err != nil {
		t.Fatalf("%s: Connect() = %v", r.Name(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// transmit sends apdu and returns the response, failing t on a transport
// error or a response without a status word.
func transmit(t *testing.T, c reader.Conn, apdu []byte) iso7816.Response {
	t.Helper()
	b, err := c.Transmit(t.Context(), apdu)
	if err != nil {
		t.Fatalf("Transmit(%X) = %v", apdu, err)
	}
	resp, err := iso7816.ParseResponse(b)
	if err != nil {
		t.Fatalf("Transmit(%X) = %X: %v", apdu, b, err)
	}
	return resp
}

func selectAPDU(aid []byte) []byte {
	apdu := []byte{0x00, 0xA4, 0x04, 0x00, byte(len(aid))}
	apdu = append(apdu, aid...)
	return append(apdu, 0x00)
}

func testATR(t *testing.T, r reader.Reader, _ Options) {
	c := connect(t, r)
	atr := c.ATR()
	a, err := iso7816.ParseATR(atr)
	if err != nil {
		t.Fatalf("ParseATR(%X) = %v", atr, err)
	}
	for _, p := range a.Protocols {
		if p == 1 {
			return
		}
	}
	t.Errorf("ParseATR(%X).Protocols = %v, want T=1 offered", atr, a.Protocols)
}

func testSelectUnknown(t *testing.T, r reader.Reader, _ Options) {
	c := connect(t, r)
	apdu := selectAPDU(unknownAID)
	if resp := transmit(t, c, apdu); resp.SW != iso7816.SWNotFound {
		t.Errorf("Transmit(%X) SW = %04X, want 6A82", apdu, uint16(resp.SW))
	}
	cmd := iso7816.Command{INS: 0xA4, P1: 0x04, Data: unknownAID, Ne: 256}
	if _, err := reader.Exchange(t.Context(), c, cmd); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("Exchange(SELECT %X) error = %v, want ErrNotFound", unknownAID, err)
	}
}

func testGetResponseNothingPending(t *testing.T, r reader.Reader, _ Options) {
	c := connect(t, r)
	apdu := []byte{0x00, 0xC0, 0x00, 0x00, 0x00}
	resp := transmit(t, c, apdu)
	if resp.SW.OK() || resp.SW.SW1() == 0x61 {
		t.Errorf("Transmit(%X) on a fresh connection SW = %04X, want an error status", apdu, uint16(resp.SW))
	}
}

func testTransmitAfterClose(t *testing.T, r reader.Reader, _ Options) {
	c, err := r.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	apdu := selectAPDU(unknownAID)
	if b, err := c.Transmit(t.Context(), apdu); err == nil {
		t.Errorf("Transmit(%X) after Close = %X, nil, want error", apdu, b)
	}
}

func testCanceledContext(t *testing.T, r reader.Reader, _ Options) {
	c := connect(t, r)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	apdu := selectAPDU(unknownAID)
	if b, err := c.Transmit(ctx, apdu); !errors.Is(err, context.Canceled) {
		t.Errorf("Transmit(%X) with canceled context = %X, %v, want context.Canceled", apdu, b, err)
	}
	// The connection is still usable.
	if resp := transmit(t, c, apdu); resp.SW != iso7816.SWNotFound {
		t.Errorf("Transmit(%X) SW = %04X, want 6A82", apdu, uint16(resp.SW))
	}
}

func testReset(t *testing.T, r reader.Reader, _ Options) {
	c := connect(t, r)
	if err := c.Reset(t.Context()); err != nil {
		t.Fatalf("Reset() = %v", err)
	}
	if _, err := iso7816.ParseATR(c.ATR()); err != nil {
		t.Errorf("ParseATR(%X) after Reset = %v", c.ATR(), err)
	}
	apdu := selectAPDU(unknownAID)
	if resp := transmit(t, c, apdu); resp.SW != iso7816.SWNotFound {
		t.Errorf("Transmit(%X) after Reset SW = %04X, want 6A82", apdu, uint16(resp.SW))
	}
}

func testReconnect(t *testing.T, r reader.Reader, _ Options) {
	first, err := r.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	atr := first.ATR()
	if err := first.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	c := connect(t, r)
	if !bytes.Equal(c.ATR(), atr) {
		t.Errorf("ATR() after reconnecting = %X, want %X", c.ATR(), atr)
	}
	apdu := selectAPDU(unknownAID)
	if resp := transmit(t, c, apdu); resp.SW != iso7816.SWNotFound {
		t.Errorf("Transmit(%X) after reconnecting SW = %04X, want 6A82", apdu, uint16(resp.SW))
	}
}

func testWatcher(t *testing.T, r reader.Reader, _ Options) {
	w, ok := r.(reader.Watcher)
	if !ok {
		t.Skipf("%T does not implement reader.Watcher", r)
	}
	present, err := w.Present(t.Context())
	if err != nil || !present {
		t.Fatalf("Present() = %v, %v, want true, nil", present, err)
	}
	// Presence already differs from false: Wait returns at once.
	if err := w.Wait(t.Context(), false); err != nil {
		t.Errorf("Wait(false) with a card present = %v, want nil", err)
	}
	// Nothing changes: Wait ends with the context.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Wait(ctx, true); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(true) with canceled context = %v, want context.Canceled", err)
	}
}

func testLongReply(t *testing.T, r reader.Reader, opts Options) {
	if len(opts.AID) == 0 {
		t.Skip("no applet with long replies (Options.AID empty)")
	}
	c := connect(t, r)
	sel := iso7816.Command{INS: 0xA4, P1: 0x04, Data: opts.AID, Ne: 256}
	if _, err := reader.Exchange(t.Context(), c, sel); err != nil {
		t.Fatalf("Exchange(SELECT %X) = %v", opts.AID, err)
	}
	got, err := reader.Exchange(t.Context(), c, opts.Long)
	if err != nil {
		t.Fatalf("Exchange(%02X %02X) = %v", opts.Long.CLA, opts.Long.INS, err)
	}
	if len(got) != opts.LongLen {
		t.Errorf("Exchange(%02X %02X) = %d bytes, want %d", opts.Long.CLA, opts.Long.INS, len(got), opts.LongLen)
	}
}
