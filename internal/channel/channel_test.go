package channel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/flynn/noise"

	"cardlink/internal/link/linktest"
)

var errNotRegistered = errors.New("device not registered")

func mustKey(t testing.TB) noise.DHKey {
	t.Helper()
	k, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// registry authorizes the listed device keys.
func registry(keys ...noise.DHKey) func([]byte) error {
	return func(pub []byte) error {
		for _, k := range keys {
			if bytes.Equal(k.Public, pub) {
				return nil
			}
		}
		return errNotRegistered
	}
}

type result struct {
	conn *Conn
	err  error
}

// handshake runs Dial on devRW and Accept on srvRW at once. Each side closes
// its link when its handshake fails, as real callers do.
func handshake(t testing.TB, devRW, srvRW io.ReadWriter, cfg Config, scfg ServerConfig) (dev, srv result) {
	t.Helper()
	ctx := context.Background()
	ch := make(chan result, 1)
	go func() {
		c, err := Accept(ctx, srvRW, scfg)
		if err != nil {
			closeRW(srvRW)
		}
		ch <- result{c, err}
	}()
	c, err := Dial(ctx, devRW, cfg)
	if err != nil {
		closeRW(devRW)
	}
	dev = result{c, err}
	srv = <-ch
	return dev, srv
}

func closeRW(rw io.ReadWriter) {
	if c, ok := rw.(io.Closer); ok {
		c.Close()
	}
}

// links are the byte streams the handshake is tested over.
var links = []struct {
	name string
	new  func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser)
}{
	{"linktest", func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) { return linktest.Pipe(linktest.Config{}) }},
	{"linktest 1200 bit/s", func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
		return linktest.Pipe(linktest.Config{BitsPerSecond: 1200})
	}},
	{"net.Pipe", func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) { return net.Pipe() }},
	{"TCP loopback", tcpPair},
}

func tcpPair(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accepting loopback connection failed")
	}
	return a, b
}

func TestHandshakeAndMessages(t *testing.T) {
	devKey, srvKey := mustKey(t), mustKey(t)
	for _, l := range links {
		t.Run(l.name, func(t *testing.T) {
			a, b := l.new(t)
			defer a.Close()
			defer b.Close()
			dev, srv := handshake(t, a, b,
				Config{Static: devKey, ServerPub: srvKey.Public},
				ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
			if dev.err != nil || srv.err != nil {
				t.Fatalf("handshake: Dial() = %v, Accept() = %v, want nil, nil", dev.err, srv.err)
			}
			if h := dev.conn.HandshakeHash(); len(h) != 32 || !bytes.Equal(h, srv.conn.HandshakeHash()) {
				t.Errorf("HandshakeHash() = %x (device), %x (server), want equal 32 bytes", h, srv.conn.HandshakeHash())
			}
			if got := srv.conn.PeerStatic(); !bytes.Equal(got, devKey.Public) {
				t.Errorf("server PeerStatic() = %x, want %x", got, devKey.Public)
			}
			if got := dev.conn.PeerStatic(); !bytes.Equal(got, srvKey.Public) {
				t.Errorf("device PeerStatic() = %x, want %x", got, srvKey.Public)
			}
			if got := srv.conn.LocalStatic(); !bytes.Equal(got, srvKey.Public) {
				t.Errorf("server LocalStatic() = %x, want %x", got, srvKey.Public)
			}
			for _, size := range []int{0, 1, 100, MaxMessage} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				roundTrip(t, dev.conn, srv.conn, msg)
				roundTrip(t, srv.conn, dev.conn, msg)
			}
		})
	}
}

// roundTrip sends msg from one Conn and checks the other receives it.
func roundTrip(t *testing.T, from, to *Conn, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- from.WriteMessage(msg) }() // net.Pipe is synchronous
	got, err := to.ReadMessage()
	if werr := <-errc; werr != nil {
		t.Fatalf("WriteMessage(%d bytes) = %v", len(msg), werr)
	}
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("ReadMessage() = %d bytes, %v, want %d bytes sent", len(got), err, len(msg))
	}
}

// TestHandshakeBytes measures the handshake on the wire: the budget
// for a whole authentication is 600 bytes.
func TestHandshakeBytes(t *testing.T) {
	devKey, srvKey := mustKey(t), mustKey(t)
	cfg := linktest.Config{BitsPerSecond: 1200}
	a, b := linktest.Pipe(cfg)
	dev, srv := handshake(t, a, b,
		Config{Static: devKey, ServerPub: srvKey.Public},
		ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
	if dev.err != nil || srv.err != nil {
		t.Fatalf("handshake: Dial() = %v, Accept() = %v, want nil, nil", dev.err, srv.err)
	}
	if got, want := a.Sent(), int64(2+96); got != want {
		t.Errorf("message 1 = %d bytes on the wire, want %d", got, want)
	}
	if got, want := b.Sent(), int64(2+48); got != want {
		t.Errorf("message 2 = %d bytes on the wire, want %d", got, want)
	}
	t.Logf("handshake: device→server %d bytes, server→device %d bytes, airtime at 1200 bit/s (10 bits/byte) %v + %v",
		a.Sent(), b.Sent(), a.Airtime(), b.Airtime())

	before := a.Sent()
	errc := make(chan error, 1)
	go func() { errc <- dev.conn.WriteMessage(make([]byte, 10)) }()
	if _, err := srv.conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got, want := a.Sent()-before, int64(10+18); got != want {
		t.Errorf("10-byte message = %d bytes on the wire, want %d", got, want)
	}
}

func TestWrongServerKey(t *testing.T) {
	devKey, srvKey, otherKey := mustKey(t), mustKey(t), mustKey(t)
	a, b := linktest.Pipe(linktest.Config{})
	dev, srv := handshake(t, a, b,
		Config{Static: devKey, ServerPub: otherKey.Public}, // pinned to a key the server lacks
		ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
	if !errors.Is(dev.err, ErrHandshake) {
		t.Errorf("Dial(wrong pinned key) = %v, want ErrHandshake", dev.err)
	}
	if !errors.Is(srv.err, ErrHandshake) {
		t.Errorf("Accept(device pinned to another key) = %v, want ErrHandshake", srv.err)
	}
	if b.Sent() != 0 {
		t.Errorf("server sent %d bytes, want 0", b.Sent())
	}
}

// TestImpostorServer: a server without the pinned key answers anyway; the
// device must refuse to talk to it.
func TestImpostorServer(t *testing.T) {
	devKey, srvKey := mustKey(t), mustKey(t)

	// A genuine message 2 from another session.
	a0, b0 := linktest.Pipe(linktest.Config{})
	var tap bytes.Buffer
	dev0, srv0 := handshake(t, a0, teeWriter{b0, &tap}, Config{Static: devKey, ServerPub: srvKey.Public},
		ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
	if dev0.err != nil || srv0.err != nil {
		t.Fatalf("handshake: Dial() = %v, Accept() = %v", dev0.err, srv0.err)
	}
	replayed := tap.Bytes()

	tests := []struct {
		name string
		msg2 []byte
	}{
		{"zeros", append([]byte{0, 48}, make([]byte, 48)...)},
		{"random", append([]byte{0, 48}, bytes.Repeat([]byte{0x5A, 0xA5, 0x3C}, 16)...)},
		{"replayed from another session", replayed},
		{"short", []byte{0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"empty frame", []byte{0, 0}},
		{"with payload", append([]byte{0, 60}, make([]byte, 60)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := linktest.Pipe(linktest.Config{})
			go func() {
				readFrame(b, nil) // message 1, which the impostor cannot open
				b.Write(tc.msg2)
			}()
			c, err := Dial(context.Background(), a, Config{Static: devKey, ServerPub: srvKey.Public})
			if !errors.Is(err, ErrHandshake) {
				t.Errorf("Dial(impostor sending % x…) = %v, %v, want ErrHandshake", tc.msg2[:2], c, err)
			}
		})
	}
}

type teeWriter struct {
	io.ReadWriter
	w io.Writer
}

func (t teeWriter) Write(b []byte) (int, error) {
	t.w.Write(b)
	return t.ReadWriter.Write(b)
}

func TestUnauthorizedDevice(t *testing.T) {
	devKey, strangerKey, srvKey := mustKey(t), mustKey(t), mustKey(t)
	a, b := linktest.Pipe(linktest.Config{})
	var asked []byte
	auth := func(pub []byte) error {
		asked = pub
		return registry(devKey)(pub)
	}
	dev, srv := handshake(t, a, b,
		Config{Static: strangerKey, ServerPub: srvKey.Public},
		ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: auth})
	if !errors.Is(srv.err, ErrUnauthorized) || !errors.Is(srv.err, errNotRegistered) {
		t.Errorf("Accept(unregistered device) = %v, want ErrUnauthorized wrapping errNotRegistered", srv.err)
	}
	if !bytes.Equal(asked, strangerKey.Public) {
		t.Errorf("Authorize called with %x, want %x", asked, strangerKey.Public)
	}
	if !errors.Is(dev.err, ErrHandshake) || !errors.Is(dev.err, io.EOF) {
		t.Errorf("Dial(unregistered device) = %v, want ErrHandshake wrapping io.EOF", dev.err)
	}
	if b.Sent() != 0 {
		t.Errorf("server sent %d bytes to an unregistered device, want 0", b.Sent())
	}
}

func TestKeyRotation(t *testing.T) {
	devOld, devNew, oldKey, newKey := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	auth := registry(devOld, devNew)
	tests := []struct {
		name    string
		dev     noise.DHKey
		pinned  noise.DHKey
		keys    []noise.DHKey
		wantErr bool
	}{
		{"old device, both keys", devOld, oldKey, []noise.DHKey{newKey, oldKey}, false},
		{"new device, both keys", devNew, newKey, []noise.DHKey{newKey, oldKey}, false},
		{"new device, new key only", devNew, newKey, []noise.DHKey{newKey}, false},
		{"old device, old key retired", devOld, oldKey, []noise.DHKey{newKey}, true},
		{"old device, before rotation", devOld, oldKey, []noise.DHKey{oldKey}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := linktest.Pipe(linktest.Config{})
			dev, srv := handshake(t, a, b,
				Config{Static: tc.dev, ServerPub: tc.pinned.Public},
				ServerConfig{Keys: tc.keys, Authorize: auth})
			if tc.wantErr {
				if !errors.Is(dev.err, ErrHandshake) || !errors.Is(srv.err, ErrHandshake) {
					t.Errorf("handshake: Dial() = %v, Accept() = %v, want ErrHandshake twice", dev.err, srv.err)
				}
				return
			}
			if dev.err != nil || srv.err != nil {
				t.Fatalf("handshake: Dial() = %v, Accept() = %v, want nil, nil", dev.err, srv.err)
			}
			if got := srv.conn.LocalStatic(); !bytes.Equal(got, tc.pinned.Public) {
				t.Errorf("server LocalStatic() = %x, want the pinned key %x", got, tc.pinned.Public)
			}
			roundTrip(t, dev.conn, srv.conn, []byte("hello"))
		})
	}
}

// TestBadHandshakeMessages feeds Accept broken first messages.
func TestBadHandshakeMessages(t *testing.T) {
	devKey, srvKey := mustKey(t), mustKey(t)
	scfg := ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)}
	msg1 := validMessage1(t, devKey, srvKey)
	garbled := bytes.Clone(msg1)
	garbled[50] ^= 1
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty link", nil, io.EOF},
		{"half a header", []byte{0}, io.ErrUnexpectedEOF},
		{"truncated", msg1[:60], io.ErrUnexpectedEOF},
		{"oversized", []byte{0x10, 0x01}, ErrFrameTooLarge},
		{"max length", []byte{0xFF, 0xFF}, ErrFrameTooLarge},
		{"garbled", garbled, ErrHandshake},
		{"empty frame", []byte{0, 0}, ErrHandshake},
		{"short frame", append([]byte{0, 40}, msg1[2:42]...), ErrHandshake},
		{"with payload", append(append([]byte{0, 97}, msg1[2:]...), 0), ErrHandshake},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			c, err := Accept(context.Background(), rw{bytes.NewReader(tc.in), &out}, scfg)
			if !errors.Is(err, ErrHandshake) || !errors.Is(err, tc.want) {
				t.Errorf("Accept(% x…) = %v, %v, want ErrHandshake wrapping %v", head(tc.in), c, err, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("Accept(% x…) sent %d bytes, want 0", head(tc.in), out.Len())
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		var out bytes.Buffer
		if _, err := Accept(context.Background(), rw{bytes.NewReader(msg1), &out}, scfg); err != nil {
			t.Errorf("Accept(valid message 1) = %v, want nil", err)
		}
	})
}

func head(b []byte) []byte { return b[:min(len(b), 4)] }

// rw joins a reader and a writer into an io.ReadWriter without Close or
// deadlines.
type rw struct {
	io.Reader
	io.Writer
}

// validMessage1 is a framed message 1 from devKey to srvKey.
func validMessage1(t testing.TB, devKey, srvKey noise.DHKey) []byte {
	t.Helper()
	var out bytes.Buffer
	Dial(context.Background(), rw{bytes.NewReader(nil), &out}, Config{Static: devKey, ServerPub: srvKey.Public})
	if out.Len() != 98 {
		t.Fatalf("message 1 = %d bytes, want 98", out.Len())
	}
	return out.Bytes()
}

// pair is an established channel whose links tests can swap: what the
// device writes goes to devOut; the server reads from srvIn.
func pair(t testing.TB) (dev, srv *Conn) {
	t.Helper()
	devKey, srvKey := mustKey(t), mustKey(t)
	a, b := linktest.Pipe(linktest.Config{})
	d, s := handshake(t, a, b,
		Config{Static: devKey, ServerPub: srvKey.Public},
		ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
	if d.err != nil || s.err != nil {
		t.Fatalf("handshake: Dial() = %v, Accept() = %v", d.err, s.err)
	}
	return d.conn, s.conn
}

// frames returns what dev.WriteMessage puts on the wire for each message.
func frames(t testing.TB, dev *Conn, msgs ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range msgs {
		var buf bytes.Buffer
		dev.rw = rw{nil, &buf}
		if err := dev.WriteMessage([]byte(m)); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// closer records Close on a reader.
type closer struct {
	io.Reader
	io.Writer
	closed bool
}

func (c *closer) Close() error { c.closed = true; return nil }

func TestBadTransportFrames(t *testing.T) {
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x80
		return b
	}
	tests := []struct {
		name      string
		in        func(f [][]byte) []byte // f: frames of "one", "two"
		want      error
		wantClose bool
	}{
		{"clean end", func(f [][]byte) []byte { return nil }, io.EOF, false},
		{"truncated header", func(f [][]byte) []byte { return f[0][:1] }, io.ErrUnexpectedEOF, false},
		{"truncated body", func(f [][]byte) []byte { return f[0][:len(f[0])-1] }, io.ErrUnexpectedEOF, false},
		{"oversized", func(f [][]byte) []byte { return []byte{0x10, 0x01, 0} }, ErrFrameTooLarge, true},
		{"garbled tag", func(f [][]byte) []byte { return flip(f[0], len(f[0])-1) }, ErrDecrypt, true},
		{"garbled body", func(f [][]byte) []byte { return flip(f[0], 2) }, ErrDecrypt, true},
		{"garbled length", func(f [][]byte) []byte { return cat([]byte{0, 5}, f[0][2:]) }, ErrDecrypt, true},
		{"empty frame", func(f [][]byte) []byte { return []byte{0, 0} }, ErrDecrypt, true},
		{"reordered", func(f [][]byte) []byte { return cat(f[1], f[0]) }, ErrDecrypt, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev, srv := pair(t)
			f := frames(t, dev, "one", "two")
			link := &closer{Reader: bytes.NewReader(tc.in(f))}
			srv.rw = link
			msg, err := srv.ReadMessage()
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReadMessage() = %q, %v, want %v", msg, err, tc.want)
			}
			if link.closed != tc.wantClose {
				t.Errorf("link closed = %v, want %v", link.closed, tc.wantClose)
			}
			if _, again := srv.ReadMessage(); !errors.Is(again, tc.want) && !errors.Is(again, ErrClosed) {
				t.Errorf("second ReadMessage() = %v, want the same error or ErrClosed", again)
			}
		})
	}
	t.Run("replayed", func(t *testing.T) {
		dev, srv := pair(t)
		f := frames(t, dev, "one")
		srv.rw = rw{bytes.NewReader(cat(f[0], f[0])), nil}
		if msg, err := srv.ReadMessage(); err != nil || string(msg) != "one" {
			t.Fatalf("ReadMessage() = %q, %v, want \"one\"", msg, err)
		}
		if msg, err := srv.ReadMessage(); !errors.Is(err, ErrDecrypt) {
			t.Errorf("ReadMessage(replayed) = %q, %v, want ErrDecrypt", msg, err)
		}
	})
}

func TestWriteTooLarge(t *testing.T) {
	dev, srv := pair(t)
	if err := dev.WriteMessage(make([]byte, MaxMessage+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("WriteMessage(MaxMessage+1 bytes) = %v, want ErrFrameTooLarge", err)
	}
	roundTrip(t, dev, srv, []byte("still usable"))
}

// TestCutMidHandshake cuts the line at every byte of message 1 and 2.
func TestCutMidHandshake(t *testing.T) {
	devKey, srvKey := mustKey(t), mustKey(t)
	cfg := Config{Static: devKey, ServerPub: srvKey.Public}
	scfg := ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)}
	for n := int64(0); n < 98; n++ {
		a, b := linktest.Pipe(linktest.Config{})
		a.CutAfter(n)
		dev, srv := handshake(t, a, b, cfg, scfg)
		if !errors.Is(dev.err, ErrHandshake) || !errors.Is(srv.err, ErrHandshake) {
			t.Errorf("cut after %d bytes of message 1: Dial() = %v, Accept() = %v, want ErrHandshake twice", n, dev.err, srv.err)
		}
	}
	for n := int64(0); n < 50; n++ {
		a, b := linktest.Pipe(linktest.Config{})
		b.CutAfter(n)
		dev, _ := handshake(t, a, b, cfg, scfg)
		if !errors.Is(dev.err, ErrHandshake) {
			t.Errorf("cut after %d bytes of message 2: Dial() = %v, want ErrHandshake", n, dev.err)
		}
	}
}

// noDeadline hides SetDeadline so that Dial falls back to Close.
type noDeadline struct{ *linktest.End }

func (n noDeadline) SetDeadline() {} // shadows End.SetDeadline with another signature

func TestContextCancel(t *testing.T) {
	devKey, srvKey := mustKey(t), mustKey(t)
	for _, tc := range []struct {
		name string
		wrap func(*linktest.End) io.ReadWriter
	}{
		{"deadline", func(e *linktest.End) io.ReadWriter { return e }},
		{"close", func(e *linktest.End) io.ReadWriter { return noDeadline{e} }},
	} {
		t.Run("Dial "+tc.name, func(t *testing.T) {
			a, b := linktest.Pipe(linktest.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				readFrame(b, nil) // the server got message 1 and never answers
				cancel()
			}()
			_, err := Dial(ctx, tc.wrap(a), Config{Static: devKey, ServerPub: srvKey.Public})
			if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.Canceled) {
				t.Errorf("Dial(canceled while waiting) = %v, want ErrHandshake and context.Canceled", err)
			}
		})
		t.Run("Accept "+tc.name, func(t *testing.T) {
			a, b := linktest.Pipe(linktest.Config{})
			a.Stall()
			go a.Write([]byte{0, 96}) // the device stalls; wait until Accept reads
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := Accept(ctx, tc.wrap(b), ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
			if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.Canceled) {
				t.Errorf("Accept(canceled) = %v, want ErrHandshake and context.Canceled", err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		wrap func(*linktest.End) io.ReadWriter
	}{
		{"deadline", func(e *linktest.End) io.ReadWriter { return e }},
		{"close", func(e *linktest.End) io.ReadWriter { return noDeadline{e} }},
	} {
		t.Run("canceled after handshake "+tc.name, func(t *testing.T) {
			a, b := linktest.Pipe(linktest.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			var srv *Conn
			go func() {
				var err error
				srv, err = Accept(ctx, tc.wrap(b), ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: registry(devKey)})
				errc <- err
			}()
			dev, err := Dial(ctx, tc.wrap(a), Config{Static: devKey, ServerPub: srvKey.Public})
			if serr := <-errc; err != nil || serr != nil {
				t.Fatalf("handshake: Dial() = %v, Accept() = %v", err, serr)
			}
			cancel() // the handshake's context ends; the channel lives on
			roundTrip(t, dev, srv, []byte("after cancel"))
			roundTrip(t, srv, dev, []byte("after cancel"))
		})
	}
	t.Run("deadline exceeded", func(t *testing.T) {
		a, _ := linktest.Pipe(linktest.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 1) // already past when Dial reads
		defer cancel()
		_, err := Dial(ctx, a, Config{Static: devKey, ServerPub: srvKey.Public})
		if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Dial(deadline passed) = %v, want ErrHandshake and context.DeadlineExceeded", err)
		}
	})
}

func TestClose(t *testing.T) {
	dev, srv := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := srv.ReadMessage()
		errc <- err
	}()
	srv.Close() // unblocks the read: the link is closed
	if err := <-errc; err == nil {
		t.Errorf("ReadMessage() during Close = nil, want an error")
	}
	if _, err := srv.ReadMessage(); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadMessage() after Close = %v, want ErrClosed", err)
	}
	if err := srv.WriteMessage(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteMessage() after Close = %v, want ErrClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if _, err := dev.ReadMessage(); !errors.Is(err, io.EOF) {
		t.Errorf("peer ReadMessage() after Close = %v, want io.EOF", err)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	dev, srv := pair(t)
	const n = 200
	var wg sync.WaitGroup
	for _, c := range []*Conn{dev, srv} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := c.WriteMessage([]byte{byte(i)}); err != nil {
					t.Errorf("WriteMessage(%d) = %v", i, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range n {
				m, err := c.ReadMessage()
				if err != nil || len(m) != 1 || m[0] != byte(i) {
					t.Errorf("ReadMessage() = %x, %v, want %02x", m, err, byte(i))
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestKeys(t *testing.T) {
	k := mustKey(t)
	got, err := KeyFromPrivate(k.Private)
	if err != nil || !bytes.Equal(got.Public, k.Public) || !bytes.Equal(got.Private, k.Private) {
		t.Errorf("KeyFromPrivate(GenerateKey().Private) = %x, %v, want public %x", got.Public, err, k.Public)
	}
	if _, err := KeyFromPrivate(make([]byte, 31)); err == nil {
		t.Errorf("KeyFromPrivate(31 bytes) = nil error, want an error")
	}
}

func TestConfigValidation(t *testing.T) {
	k := mustKey(t)
	dials := []struct {
		name string
		cfg  Config
	}{
		{"no device key", Config{ServerPub: k.Public}},
		{"short server key", Config{Static: k, ServerPub: k.Public[:31]}},
	}
	for _, tc := range dials {
		if _, err := Dial(context.Background(), rw{}, tc.cfg); err == nil || errors.Is(err, ErrHandshake) {
			t.Errorf("Dial(%s) = %v, want a configuration error", tc.name, err)
		}
	}
	accepts := []struct {
		name string
		cfg  ServerConfig
	}{
		{"no keys", ServerConfig{Authorize: registry()}},
		{"bad key", ServerConfig{Keys: []noise.DHKey{{Public: k.Public}}, Authorize: registry()}},
		{"no Authorize", ServerConfig{Keys: []noise.DHKey{k}}},
	}
	for _, tc := range accepts {
		if _, err := Accept(context.Background(), rw{}, tc.cfg); err == nil || errors.Is(err, ErrHandshake) {
			t.Errorf("Accept(%s) = %v, want a configuration error", tc.name, err)
		}
	}
}
