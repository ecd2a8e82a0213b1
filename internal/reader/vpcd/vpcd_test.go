package vpcd

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
)

var testAID = []byte{0xA0, 0x00, 0x00, 0x05, 0x27, 0x7E, 0x58}

// Instructions of testApplet.
const (
	insEcho   = 0x01 // reply with the command data
	insLong   = 0x02 // reply with P1P2 bytes 00 01 02 ...
	insSetRAM = 0x03 // keep the data in RAM
	insGetRAM = 0x04 // reply with what insSetRAM kept
)

// testApplet echoes, sends long replies and keeps data in RAM.
type testApplet struct{}

func (testApplet) AID() []byte { return testAID }

func (testApplet) Select(ctx *card.Context) ([]byte, iso7816.SW) {
	return nil, iso7816.SWOK
}

func (testApplet) Process(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	switch cmd.INS {
	case insEcho:
		return cmd.Data, iso7816.SWOK
	case insLong:
		b := make([]byte, int(cmd.P1)<<8|int(cmd.P2))
		for i := range b {
			b[i] = byte(i)
		}
		return b, iso7816.SWOK
	case insSetRAM:
		ctx.RAM.Set("v", bytes.Clone(cmd.Data))
		return nil, iso7816.SWOK
	case insGetRAM:
		return ctx.RAM.Get("v"), iso7816.SWOK
	}
	return nil, iso7816.SWINSNotSupported
}

func newCard(t testing.TB) *card.Card {
	t.Helper()
	const capacity = 4096
	med := nvm.NewMemMedium(nvm.MediumSize(capacity))
	if err := nvm.Format(med, capacity); err != nil {
		t.Fatalf("nvm.Format() = %v", err)
	}
	mem, err := nvm.Open(med)
	if err != nil {
		t.Fatalf("nvm.Open() = %v", err)
	}
	c, err := card.New(card.Config{NVM: mem, Applets: []card.Applet{testApplet{}}})
	if err != nil {
		t.Fatalf("card.New() = %v", err)
	}
	return c
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func frame(p []byte) []byte {
	b, err := appendFrame(nil, p)
	if err != nil {
		panic(err)
	}
	return b
}

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string // payloads in order
		wantErr error    // after the payloads
	}{
		{name: "empty stream", in: "", wantErr: io.EOF},
		{name: "control", in: "0001 04", want: []string{"04"}, wantErr: io.EOF},
		{name: "apdu", in: "0005 00A4040000", want: []string{"00A4040000"}, wantErr: io.EOF},
		{name: "two frames", in: "0001 01 0002 9000", want: []string{"01", "9000"}, wantErr: io.EOF},
		{name: "zero length", in: "0000", want: []string{""}, wantErr: io.EOF},
		{name: "half a header", in: "00", wantErr: io.ErrUnexpectedEOF},
		{name: "short payload", in: "0004 0102", wantErr: io.ErrUnexpectedEOF},
		{name: "header only", in: "0001", wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(mustHex(tt.in))
			var buf []byte
			for i, want := range tt.want {
				got, err := readFrame(r, buf)
				if err != nil || !bytes.Equal(got, mustHex(want)) {
					t.Fatalf("readFrame() #%d = %X, %v, want %s, nil", i, got, err, want)
				}
				buf = got[:0]
			}
			if got, err := readFrame(r, buf); !errors.Is(err, tt.wantErr) {
				t.Errorf("readFrame() at the end = %X, %v, want %v", got, err, tt.wantErr)
			}
		})
	}
}

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		wantHdr string
		wantErr bool
	}{
		{name: "empty", n: 0, wantHdr: "0000"},
		{name: "control", n: 1, wantHdr: "0001"},
		{name: "short apdu", n: 261, wantHdr: "0105"},
		{name: "largest", n: MaxFrame, wantHdr: "FFFF"},
		{name: "too long", n: MaxFrame + 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := bytes.Repeat([]byte{0xA5}, tt.n)
			got, err := appendFrame([]byte{0xEE}, p)
			if tt.wantErr {
				if err == nil {
					t.Errorf("appendFrame(%d bytes) = nil error, want error", tt.n)
				}
				return
			}
			want := append(append([]byte{0xEE}, mustHex(tt.wantHdr)...), p...)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("appendFrame(%d bytes) = % X..., %v, want % X...", tt.n, got[:min(len(got), 4)], err, want[:min(len(want), 4)])
			}
		})
	}
}

// vpcdSide is the test's end of a connection: it plays pcscd's vpcd.
type vpcdSide struct {
	t    *testing.T
	conn net.Conn
}

func (v *vpcdSide) send(p []byte) {
	v.t.Helper()
	if _, err := v.conn.Write(frame(p)); err != nil {
		v.t.Fatalf("writing frame %X: %v", p, err)
	}
}

func (v *vpcdSide) recv() []byte {
	v.t.Helper()
	p, err := readFrame(v.conn, nil)
	if err != nil {
		v.t.Fatalf("reading frame: %v", err)
	}
	return p
}

// control sends a control byte; ask sends p and returns the answer.
func (v *vpcdSide) control(b byte) { v.t.Helper(); v.send([]byte{b}) }

func (v *vpcdSide) ask(p []byte) []byte { v.t.Helper(); v.send(p); return v.recv() }

// serveResult is what Serve returned, delivered once.
type serveResult chan error

// startServe runs Serve over a pipe and returns the vpcd side and Serve's
// result; the pipe is closed and Serve awaited at the end of the test.
func startServe(t *testing.T, ctx context.Context, c *card.Card, onEvent func(event, error)) (*vpcdSide, serveResult) {
	t.Helper()
	a, b := net.Pipe()
	done := make(serveResult, 1)
	go func() { done <- serve(ctx, b, c, onEvent) }()
	t.Cleanup(func() {
		a.Close()
		<-done
	})
	return &vpcdSide{t: t, conn: a}, done
}

func selectAPDU(aid []byte) []byte {
	return append(append([]byte{0x00, 0xA4, 0x04, 0x00, byte(len(aid))}, aid...), 0x00)
}

func TestServeControls(t *testing.T) {
	c := newCard(t)
	atr := c.ATR()
	var mu sync.Mutex
	var events []event
	v, _ := startServe(t, t.Context(), c, func(e event, err error) {
		if err != nil {
			t.Errorf("power event %v failed: %v", e, err)
		}
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	})
	setRAM := []byte{0x80, insSetRAM, 0, 0, 2, 0xCA, 0xFE}
	getRAM := []byte{0x80, insGetRAM, 0, 0, 0}

	steps := []struct {
		name    string
		control int    // -1: send apdu instead
		apdu    string // hex
		want    string // hex answer; "" = no answer expected
	}{
		{name: "ATR while unpowered", control: ctrlATR, want: hex.EncodeToString(atr)},
		{name: "power on", control: ctrlOn},
		{name: "ATR", control: ctrlATR, want: hex.EncodeToString(atr)},
		{name: "select", control: -1, apdu: hex.EncodeToString(selectAPDU(testAID)), want: "9000"},
		{name: "set RAM", control: -1, apdu: hex.EncodeToString(setRAM), want: "9000"},
		{name: "RAM kept", control: -1, apdu: hex.EncodeToString(getRAM), want: "CAFE9000"},
		{name: "reset", control: ctrlReset},
		{name: "nothing selected after reset", control: -1, apdu: hex.EncodeToString(getRAM), want: "6D00"},
		{name: "select again", control: -1, apdu: hex.EncodeToString(selectAPDU(testAID)), want: "9000"},
		{name: "RAM cleared by reset", control: -1, apdu: hex.EncodeToString(getRAM), want: "9000"},
		{name: "set RAM again", control: -1, apdu: hex.EncodeToString(setRAM), want: "9000"},
		{name: "power off", control: ctrlOff},
		{name: "power on again", control: ctrlOn},
		{name: "select after power cycle", control: -1, apdu: hex.EncodeToString(selectAPDU(testAID)), want: "9000"},
		{name: "RAM cleared by power off", control: -1, apdu: hex.EncodeToString(getRAM), want: "9000"},
		{name: "unknown AID", control: -1, apdu: "00A4040005F011223344 00", want: "6A82"},
		{name: "malformed APDU gets a status word", control: -1, apdu: "00A404", want: "6700"},
	}
	for _, s := range steps {
		if s.control >= 0 {
			v.control(byte(s.control))
			if s.want == "" {
				continue
			}
			if got := v.recv(); !bytes.Equal(got, mustHex(s.want)) {
				t.Errorf("%s: control %d answered %X, want %s", s.name, s.control, got, s.want)
			}
			continue
		}
		if got := v.ask(mustHex(s.apdu)); !bytes.Equal(got, mustHex(s.want)) {
			t.Errorf("%s: APDU %s answered %X, want %s", s.name, s.apdu, got, s.want)
		}
	}
	// The ATR exchange orders this after every event above.
	v.ask([]byte{ctrlATR})
	mu.Lock()
	defer mu.Unlock()
	want := []event{evPowerOn, evReset, evPowerOff, evPowerOn}
	if !slicesEqual(events, want) {
		t.Errorf("power events = %v, want %v", events, want)
	}
}

func slicesEqual(a, b []event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestServeBigAPDU(t *testing.T) {
	c := newCard(t)
	v, _ := startServe(t, t.Context(), c, nil)
	v.control(ctrlOn)
	if got := v.ask(selectAPDU(testAID)); !bytes.Equal(got, mustHex("9000")) {
		t.Fatalf("SELECT answered %X, want 9000", got)
	}
	tests := []struct {
		name string
		n    int
	}{
		{name: "short", n: 255},
		{name: "extended", n: 4000},
		{name: "extended large", n: 60000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, tt.n)
			for i := range data {
				data[i] = byte(i * 31)
			}
			cmd := iso7816.Command{CLA: 0x80, INS: insEcho, Data: data, Ne: 65536, Extended: tt.n > 255}
			if !cmd.Extended {
				cmd.Ne = 256
			}
			apdu, err := cmd.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			got := v.ask(apdu)
			want := append(bytes.Clone(data), 0x90, 0x00)
			if !bytes.Equal(got, want) {
				t.Errorf("echo of %d bytes answered %d bytes ending % X, want %d bytes ending 90 00", tt.n, len(got), got[max(0, len(got)-2):], len(want))
			}
		})
	}
}

func TestServeEnds(t *testing.T) {
	tests := []struct {
		name    string
		script  func(v *vpcdSide)
		wantErr error // nil: Serve returns nil; errAny: any error
	}{
		{
			name:    "vpcd closes",
			script:  func(v *vpcdSide) { v.conn.Close() },
			wantErr: io.EOF,
		},
		{
			name: "vpcd closes inside a frame",
			script: func(v *vpcdSide) {
				v.conn.Write([]byte{0x00, 0x05, 0x00})
				v.conn.Close()
			},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "unknown control",
			script:  func(v *vpcdSide) { v.control(0x03) },
			wantErr: errAny,
		},
		{
			name:    "empty frame",
			script:  func(v *vpcdSide) { v.send(nil) },
			wantErr: errAny,
		},
		{
			name:    "APDU without power",
			script:  func(v *vpcdSide) { v.send(selectAPDU(testAID)) },
			wantErr: card.ErrNotPowered,
		},
		{
			name: "response too long for a frame",
			script: func(v *vpcdSide) {
				v.control(ctrlOn)
				v.ask(selectAPDU(testAID))
				cmd := iso7816.Command{CLA: 0x80, INS: insLong, P1: 0xFF, P2: 0xFF, Ne: 65536, Extended: true}
				apdu, _ := cmd.Bytes()
				v.send(apdu)
			},
			wantErr: errAny,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCard(t)
			v, done := startServe(t, t.Context(), c, nil)
			tt.script(v)
			err := <-done
			done <- err // for the cleanup
			switch {
			case tt.wantErr == errAny && err == nil:
				t.Errorf("Serve() = nil, want an error")
			case tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("Serve() = %v, want %v", err, tt.wantErr)
			}
			if _, err := c.Transmit(selectAPDU(testAID)); !errors.Is(err, card.ErrNotPowered) {
				t.Errorf("card.Transmit() after Serve returned = %v, want ErrNotPowered (card powered off)", err)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestServeCanceled(t *testing.T) {
	c := newCard(t)
	ctx, cancel := context.WithCancel(t.Context())
	v, done := startServe(t, ctx, c, nil)
	v.control(ctrlOn)
	v.ask([]byte{ctrlATR})
	cancel()
	err := <-done
	done <- err
	if err != nil {
		t.Errorf("Serve() after cancel = %v, want nil", err)
	}
	if _, err := c.Transmit(selectAPDU(testAID)); !errors.Is(err, card.ErrNotPowered) {
		t.Errorf("card.Transmit() after cancel = %v, want ErrNotPowered", err)
	}
}

// pipeDialer fails the first fails dials, then hands out pipe ends whose
// other side goes to conns.
type pipeDialer struct {
	mu    sync.Mutex
	fails int
	dials int
	conns chan net.Conn
}

func (d *pipeDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	if d.dials <= d.fails {
		return nil, errors.New("connection refused")
	}
	a, b := net.Pipe()
	select {
	case d.conns <- a:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b, nil
}

func TestClientReconnects(t *testing.T) {
	c := newCard(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cl := NewClient("127.0.0.1:1", c, log)
	d := &pipeDialer{fails: 3, conns: make(chan net.Conn)}
	cl.dial = d.dial
	cl.minBackoff, cl.maxBackoff = time.Millisecond, 4*time.Millisecond

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()

	// First connection: vpcd powers the card, which keeps data in RAM.
	v := &vpcdSide{t: t, conn: <-d.conns}
	v.control(ctrlOn)
	v.ask(selectAPDU(testAID))
	if got := v.ask([]byte{0x80, insSetRAM, 0, 0, 1, 0x42}); !bytes.Equal(got, mustHex("9000")) {
		t.Fatalf("SET RAM answered %X, want 9000", got)
	}
	// pcscd restarts: the connection drops and the client dials again.
	v.conn.Close()
	v = &vpcdSide{t: t, conn: <-d.conns}
	if got := v.ask([]byte{ctrlATR}); !bytes.Equal(got, c.ATR()) {
		t.Errorf("ATR after reconnecting = %X, want %X", got, c.ATR())
	}
	v.control(ctrlOn)
	v.ask(selectAPDU(testAID))
	if got := v.ask([]byte{0x80, insGetRAM, 0, 0, 0}); !bytes.Equal(got, mustHex("9000")) {
		t.Errorf("GET RAM after reconnecting = %X, want 9000 (RAM cleared)", got)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() after cancel = %v, want nil", err)
	}
	v.conn.Close()
	d.mu.Lock()
	if d.dials < 5 {
		t.Errorf("dials = %d, want at least 5 (3 failures, 2 connections)", d.dials)
	}
	d.mu.Unlock()
	out := logs.String()
	for _, want := range []string{"waiting for vpcd", "card attached", "card detached", "power on"} {
		if !strings.Contains(out, want) {
			t.Errorf("log does not mention %q:\n%s", want, out)
		}
	}
}

func TestClientBadAddress(t *testing.T) {
	cl := NewClient("no-port", newCard(t), nil)
	if err := cl.Run(t.Context()); err == nil {
		t.Errorf("Run() with address %q = nil, want error", "no-port")
	}
}

func TestClientCanceledWhileWaiting(t *testing.T) {
	cl := NewClient("127.0.0.1:1", newCard(t), nil)
	d := &pipeDialer{fails: 1 << 30, conns: make(chan net.Conn)}
	cl.dial = d.dial
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := cl.Run(ctx); err != nil {
		t.Errorf("Run() with canceled context = %v, want nil", err)
	}
}

// TestClientLoopback runs the client against a real TCP listener, as
// pcscd's vpcd would be.
func TestClientLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer ln.Close()
	c := newCard(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewClient(ln.Addr().String(), c, nil).Run(ctx) }()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	defer conn.Close()
	v := &vpcdSide{t: t, conn: conn}
	v.control(ctrlOn)
	if got := v.ask(selectAPDU(testAID)); !bytes.Equal(got, mustHex("9000")) {
		t.Errorf("SELECT over TCP answered %X, want 9000", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

func TestEventString(t *testing.T) {
	tests := []struct {
		e    event
		want string
	}{
		{evPowerOff, "power off"},
		{evPowerOn, "power on"},
		{evReset, "reset"},
		{event(9), "vpcd.event(9)"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("event(%d).String() = %q, want %q", int(tt.e), got, tt.want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func BenchmarkServeRoundTrip(b *testing.B) {
	c := newCard(b)
	a, p := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, p, c) }()
	defer func() { cancel(); a.Close(); <-done }()
	ask := func(q []byte) []byte {
		if _, err := a.Write(frame(q)); err != nil {
			b.Fatal(err)
		}
		r, err := readFrame(a, nil)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	a.Write(frame([]byte{ctrlOn}))
	ask(selectAPDU(testAID))
	apdu := frame([]byte{0x80, insEcho, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0})
	buf := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Write(apdu); err != nil {
			b.Fatal(err)
		}
		if _, err := readFrame(a, buf); err != nil {
			b.Fatal(err)
		}
	}
}
