package linktest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"cardlink/internal/link"
)

func TestPipeCounts(t *testing.T) {
	a, b := Pipe(Config{BitsPerSecond: 1200})
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if n, err := b.Read(buf); n != 3 || err != nil || string(buf) != "hel" {
		t.Errorf("Read() = %d, %v (%q), want 3, nil (\"hel\")", n, err, buf[:n])
	}
	if got := a.Sent(); got != 5 {
		t.Errorf("a.Sent() = %d, want 5", got)
	}
	if got := b.Sent(); got != 2 {
		t.Errorf("b.Sent() = %d, want 2", got)
	}
	if got := b.Received(); got != 3 {
		t.Errorf("b.Received() = %d, want 3", got)
	}
	if got := a.Received(); got != 0 {
		t.Errorf("a.Received() = %d, want 0", got)
	}
	if got, want := a.Airtime(), 5*10*time.Second/1200; got != want {
		t.Errorf("a.Airtime() = %v, want %v", got, want)
	}
}

func TestAirtime(t *testing.T) {
	tests := []struct {
		cfg  Config
		n    int64
		want time.Duration
	}{
		{Config{}, 1000, 0},
		{Config{BitsPerSecond: 1200}, 120, time.Second},
		{Config{BitsPerSecond: 1200, BitsPerByte: 8}, 150, time.Second},
		{Config{BitsPerSecond: 300}, 600, 20 * time.Second},
		{Config{BitsPerSecond: 1200}, 0, 0},
	}
	for _, tc := range tests {
		if got := tc.cfg.Airtime(tc.n); got != tc.want {
			t.Errorf("%+v.Airtime(%d) = %v, want %v", tc.cfg, tc.n, got, tc.want)
		}
	}
}

func TestClose(t *testing.T) {
	a, b := Pipe(Config{})
	a.Write([]byte("bye"))
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "bye" {
		t.Errorf("ReadAll(peer of closed end) = %q, %v, want \"bye\", nil", got, err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Read() on closed end = %v, want io.ErrClosedPipe", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Write() on closed end = %v, want io.ErrClosedPipe", err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Write() to closed end = %v, want io.ErrClosedPipe", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	a, _ := Pipe(Config{})
	errc := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		errc <- err
	}()
	a.Close()
	if err := <-errc; !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("blocked Read() after Close = %v, want io.ErrClosedPipe", err)
	}
}

func TestCutAfter(t *testing.T) {
	tests := []struct {
		name   string
		cut    int64
		writes []string
		want   string // what the other end reads before io.EOF
		wantN  []int
		errAt  int // index of the write that fails with ErrCut; -1 for none
	}{
		{"mid write", 4, []string{"abc", "defg"}, "abcd", []int{3, 1}, 1},
		{"at boundary", 3, []string{"abc", "d"}, "abc", []int{3, 0}, 1},
		{"now", 0, []string{"abc"}, "", []int{0}, 0},
		{"beyond", 100, []string{"abc"}, "abc", []int{3}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := Pipe(Config{})
			a.CutAfter(tc.cut)
			for i, w := range tc.writes {
				n, err := a.Write([]byte(w))
				wantErr := i >= tc.errAt && tc.errAt >= 0
				if n != tc.wantN[i] || (err != nil) != wantErr || (wantErr && !errors.Is(err, ErrCut)) {
					t.Errorf("Write(%q) = %d, %v, want %d, cut %v", w, n, err, tc.wantN[i], wantErr)
				}
			}
			if tc.errAt < 0 {
				a.Close()
			}
			got, err := io.ReadAll(b)
			if string(got) != tc.want || err != nil {
				t.Errorf("ReadAll() = %q, %v, want %q, nil", got, err, tc.want)
			}
			if tc.errAt >= 0 {
				if _, err := b.Write([]byte("x")); !errors.Is(err, ErrCut) {
					t.Errorf("peer Write() after cut = %v, want ErrCut", err)
				}
				if _, err := a.Read(make([]byte, 1)); err != io.EOF {
					t.Errorf("Read() after cut = %v, want io.EOF", err)
				}
			}
		})
	}
}

func TestStall(t *testing.T) {
	a, b := Pipe(Config{})
	a.Stall()
	a.Write([]byte("held"))
	b.SetReadDeadline(time.Now().Add(time.Millisecond))
	if n, err := b.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read() during stall = %d, %v, want it to block until the deadline", n, err)
	}
	b.SetReadDeadline(time.Time{})
	a.Resume()
	buf := make([]byte, 10)
	if n, err := b.Read(buf); string(buf[:n]) != "held" || err != nil {
		t.Errorf("Read() after Resume = %q, %v, want \"held\", nil", buf[:n], err)
	}
}

func TestStallThenCut(t *testing.T) {
	a, b := Pipe(Config{})
	a.Stall()
	a.Write([]byte("x"))
	a.CutAfter(0)
	got, err := io.ReadAll(b)
	if string(got) != "x" || err != nil {
		t.Errorf("ReadAll() after stall and cut = %q, %v, want \"x\", nil", got, err)
	}
}

func TestDeadline(t *testing.T) {
	a, b := Pipe(Config{})
	a.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read() past deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	a.SetDeadline(time.Time{})
	b.Write([]byte("ok"))
	if n, err := a.Read(make([]byte, 2)); n != 2 || err != nil {
		t.Errorf("Read() after clearing deadline = %d, %v, want 2, nil", n, err)
	}
	a.SetWriteDeadline(time.Unix(1, 0))
	if _, err := a.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Write() past deadline = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestDeadlineUnblocksRead(t *testing.T) {
	a, _ := Pipe(Config{})
	errc := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		errc <- err
	}()
	a.SetReadDeadline(time.Unix(1, 0))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("blocked Read() after deadline = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestLargeTransfer(t *testing.T) {
	a, b := Pipe(Config{})
	want := bytes.Repeat([]byte("0123456789"), 10000)
	go func() {
		for i := 0; i < len(want); i += 777 {
			a.Write(want[i:min(i+777, len(want))])
		}
		a.Close()
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadAll() = %d bytes, %v, want %d bytes", len(got), err, len(want))
	}
	if a.Sent() != int64(len(want)) || b.Received() != int64(len(want)) {
		t.Errorf("Sent() = %d, Received() = %d, want %d", a.Sent(), b.Received(), len(want))
	}
}

func TestRealtime(t *testing.T) {
	// Only that it works; its timing is not asserted.
	a, b := Pipe(Config{BitsPerSecond: 1_000_000, Realtime: true})
	a.Write([]byte("abc"))
	if n, err := b.Read(make([]byte, 3)); n != 3 || err != nil {
		t.Errorf("Read() = %d, %v, want 3, nil", n, err)
	}
}

func TestConformance(t *testing.T) {
	t.Run("Pipe", func(t *testing.T) {
		Run(t, func(t *testing.T) (link.Link, link.Link) { return Pipe(Config{}) })
	})
	t.Run("Pipe 1200 bit/s", func(t *testing.T) {
		Run(t, func(t *testing.T) (link.Link, link.Link) { return Pipe(Config{BitsPerSecond: 1200}) })
	})
	t.Run("net.Pipe", func(t *testing.T) {
		Run(t, func(t *testing.T) (link.Link, link.Link) { return net.Pipe() })
	})
	t.Run("TCP loopback", func(t *testing.T) {
		Run(t, tcpPair)
	})
}

func tcpPair(t *testing.T) (link.Link, link.Link) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer l.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return a, r.c
}
