package line

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

// startSwitch serves a switch on a free loopback port until the test
// ends, and checks then that Serve returned.
func startSwitch(t *testing.T, cfg Config) (*Switch, string) {
	t.Helper()
	if cfg.Speed == 0 {
		cfg.Speed = 8
	}
	sw, err := NewSwitch(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return 20 s after its context ended")
		}
	})
	return sw, ln.Addr().String()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect places a call from a new caller to a new listener on number.
func connect(t *testing.T, ctx context.Context, addr, number string, opts *Options) (caller, callee *Call) {
	t.Helper()
	lo := &ListenOptions{}
	if opts != nil {
		lo.Window = opts.Window // the callee gets the same window
	}
	l, err := Listen(ctx, addr, number, lo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	type res struct {
		c   *Call
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept(ctx)
		ch <- res{c, err}
	}()
	caller, err = Dial(ctx, addr, number, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caller.Hangup() })
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return caller, r.c
}

// readN reads n samples from c, failing the test if the call ends first.
func readN(t *testing.T, c *Call, n int) []float64 {
	t.Helper()
	out := make([]float64, n)
	for got := 0; got < n; {
		k, err := c.Read(out[got:])
		if err != nil {
			t.Fatalf("Read after %d of %d samples: %v", got, n, err)
		}
		got += k
	}
	return out
}

func tone(hz, dbfs float64, n int) []float64 {
	a := math.Sqrt(2 * impair.Power(dbfs))
	s := make([]float64, n)
	for i := range s {
		s[i] = a * math.Sin(2*math.Pi*hz*float64(i)/audio.Rate)
	}
	return s
}

// medianPower is the median power of s's 20 ms blocks: the level of a
// steady tone even if a writer delayed by the machine's load left a gap
// in it.
func medianPower(s []float64) float64 {
	var p []float64
	for i := 0; i+frameLen <= len(s); i += frameLen {
		p = append(p, meanSquare(s[i:i+frameLen]))
	}
	slices.Sort(p)
	return p[len(p)/2]
}

func meanSquare(s []float64) float64 {
	var sum float64
	for _, x := range s {
		sum += x * x
	}
	return sum / float64(len(s))
}

// writeAsync writes s on c in a goroutine; the returned channel gives
// Write's error.
func writeAsync(c *Call, s []float64) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Write(s)
		ch <- err
	}()
	return ch
}

func TestSetupAndTeardown(t *testing.T) {
	sw, addr := startSwitch(t, Config{})
	ctx := testCtx(t)
	l, err := Listen(ctx, addr, "5551234", &ListenOptions{Lines: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *Call, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	caller, err := Dial(ctx, addr, "5551234", &Options{From: "42"})
	if err != nil {
		t.Fatal(err)
	}
	callee := <-accepted
	if callee == nil {
		t.FailNow()
	}
	if caller.ID() != callee.ID() || caller.ID() == 0 {
		t.Errorf("call IDs %d and %d, want the same, not 0", caller.ID(), callee.ID())
	}
	if caller.Remote() != "5551234" || callee.Remote() != "42" {
		t.Errorf("Remote() = %q and %q, want 5551234 and 42", caller.Remote(), callee.Remote())
	}
	// A silent line still delivers frames to both.
	readN(t, caller, 800)
	readN(t, callee, 800)
	if st := sw.Stats(); st.Calls != 1 || st.Connected != 1 {
		t.Errorf("Stats() = %+v during the call, want 1 call, 1 connected", st)
	}
	if err := caller.Hangup(); err != nil {
		t.Fatal(err)
	}
	if _, err := caller.Read(make([]float64, 1<<20)); err != nil && !errors.Is(err, ErrClosed) {
		t.Errorf("caller Read after Hangup: %v, want ErrClosed", err)
	}
	for {
		_, err := callee.Read(make([]float64, 1000))
		if err != nil {
			if !errors.Is(err, ErrHangup) {
				t.Errorf("callee Read after the caller hung up: %v, want ErrHangup", err)
			}
			break
		}
	}
	if _, err := callee.Write(make([]float64, 10)); !errors.Is(err, ErrHangup) {
		t.Errorf("callee Write after the caller hung up: %v, want ErrHangup", err)
	}
	// The line is free again: a second call to it connects.
	go func() {
		c, err := l.Accept(ctx)
		if err == nil {
			c.Hangup()
		}
		accepted <- c
	}()
	again, err := Dial(ctx, addr, "5551234", nil)
	if err != nil {
		t.Fatalf("second call: %v", err)
	}
	<-accepted
	if _, err := readUntilEnd(again); !errors.Is(err, ErrHangup) {
		t.Errorf("caller after the callee hung up: %v, want ErrHangup", err)
	}
}

// readSignal skips the silence before a party starts sending (this line
// has no noise) and returns n samples from the first that is not 0.
func readSignal(t *testing.T, c *Call, n int) []float64 {
	t.Helper()
	buf := make([]float64, 1024)
	for {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("waiting for signal: %v", err)
		}
		for i, v := range buf[:k] {
			if v != 0 {
				out := append([]float64(nil), buf[i:k]...)
				if len(out) >= n {
					return out[:n]
				}
				return append(out, readN(t, c, n-len(out))...)
			}
		}
	}
}

// readUntilEnd reads c until the call ends and returns how many samples
// it read and why it ended.
func readUntilEnd(c *Call) (int, error) {
	buf := make([]float64, 4096)
	total := 0
	for {
		n, err := c.Read(buf)
		total += n
		if err != nil {
			return total, err
		}
	}
}

func TestSignalling(t *testing.T) {
	sw, addr := startSwitch(t, Config{RingTimeout: 2 * time.Second, Speed: 20})
	ctx := testCtx(t)
	if _, err := Dial(ctx, addr, "999", nil); !errors.Is(err, ErrNoSuchNumber) {
		t.Errorf("dialling an unregistered number: %v, want ErrNoSuchNumber", err)
	}
	// Nobody accepts: the ring times out after 2 s of line time.
	l, err := Listen(ctx, addr, "100", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Dial(ctx, addr, "100", nil); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("dialling a number nobody answers: %v, want ErrNoAnswer", err)
	}
	// One line in a call: the next caller gets busy.
	go func() {
		if c, err := l.Accept(ctx); err == nil {
			<-c.Done()
		}
	}()
	first, err := Dial(ctx, addr, "100", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(ctx, addr, "100", nil); !errors.Is(err, ErrBusy) {
		t.Errorf("dialling a number in a call: %v, want ErrBusy", err)
	}
	first.Hangup()
	// A dial whose context ends while ringing hangs up.
	l2, err := Listen(ctx, addr, "200", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := Dial(short, addr, "200", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial with an expiring context: %v, want DeadlineExceeded", err)
	}
	waitFor(t, "every call to end", func() bool { return sw.Stats().Calls == 0 })
	// Bad numbers and options never reach the switch.
	if _, err := Dial(ctx, addr, "12a", nil); err == nil {
		t.Error("dialling 12a succeeded")
	}
	if _, err := Dial(ctx, addr, "1", &Options{Forward: &impair.Config{AttenuationDB: -1}}); err == nil {
		t.Error("dialling with negative attenuation succeeded")
	}
}

// TestDecline has a raw party decline a ring: the caller hears busy.
func TestDecline(t *testing.T) {
	_, addr := startSwitch(t, Config{})
	ctx := testCtx(t)
	c := rawRegister(t, ctx, addr, "300")
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, addr, "300", nil)
		errc <- err
	}()
	m := rawRead(t, c)
	if m.typ != msgRing {
		t.Fatalf("got message %#x, want RING", m.typ)
	}
	if err := c.send(&message{typ: msgHangup, callID: m.callID}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrBusy) {
		t.Errorf("dialling a party that declines: %v, want ErrBusy", err)
	}
	if m := rawRead(t, c); m.typ != msgEnd || m.cause != CauseHangup {
		t.Errorf("decliner got %#x cause %v, want END hangup", m.typ, m.cause)
	}
}

func rawRegister(t *testing.T, ctx context.Context, addr, number string) *conn {
	t.Helper()
	c, err := dialSwitch(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.nc.Close() })
	if err := c.send(&message{typ: msgRegister, number: number}); err != nil {
		t.Fatal(err)
	}
	if m := rawRead(t, c); m.typ != msgRegistered {
		t.Fatalf("got message %#x, want REGISTERED", m.typ)
	}
	return c
}

func rawRead(t *testing.T, c *conn) message {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := c.rd.read()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestProtocolErrors sends the switch what breaks the protocol: it
// answers END with CauseProtocol and drops the party.
func TestProtocolErrors(t *testing.T) {
	_, addr := startSwitch(t, Config{})
	ctx := testCtx(t)
	for _, tt := range []struct {
		name string
		raw  []byte
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"audio first", (&message{typ: msgAudio, samples: []int16{1}}).encode(nil)},
		{"answer first", (&message{typ: msgAnswer}).encode(nil)},
		{"bad version", []byte{msgRegister, 6, 0, 9, 1, '1', 0, 0, 0, 0}},
		{"letters", []byte{msgRegister, 6, 0, 1, 1, 'a', 0, 0, 0, 0}},
		{"oversized", []byte{msgAudio, 0xff, 0xff}},
		{"endless bursts", (&message{typ: msgDial, number: "1", fwd: &impair.Config{
			BurstEvery: time.Second, BurstLength: 2 * time.Second, BurstDBFS: -10}}).encode(nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialSwitch(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.nc.Close()
			if _, err := c.nc.Write(tt.raw); err != nil {
				t.Fatal(err)
			}
			if m := rawRead(t, c); m.typ != msgEnd || m.cause != CauseProtocol || m.text == "" {
				t.Errorf("got %#x %v %q, want END protocol error with a reason", m.typ, m.cause, m.text)
			}
			if _, err := c.rd.read(); err == nil {
				t.Error("connection still open after END")
			}
		})
	}
}

// TestWindow checks that the switch refuses a party writing further
// ahead of the line's clock than its window, and that Write paces a
// well-behaved party instead.
func TestWindow(t *testing.T) {
	_, addr := startSwitch(t, Config{Window: 800})
	ctx := testCtx(t)
	l, err := Listen(ctx, addr, "400", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *Call, 1)
	go func() {
		c, _ := l.Accept(ctx)
		accepted <- c
	}()
	c, err := dialSwitch(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()
	c.send(&message{typ: msgDial, number: "400"})
	for m := rawRead(t, c); m.typ != msgConnected; m = rawRead(t, c) {
	}
	callee := <-accepted
	for range 3 {
		c.send(&message{typ: msgAudio, samples: make([]int16, 1000)})
	}
	for {
		m := rawRead(t, c)
		if m.typ == msgEnd {
			if m.cause != CauseProtocol {
				t.Errorf("END cause %v, want protocol error", m.cause)
			}
			break
		}
	}
	if _, err := readUntilEnd(callee); !errors.Is(err, ErrHangup) {
		t.Errorf("callee of a refused party: %v, want ErrHangup", err)
	}

	// Through the client, a large write is paced: never more than the
	// window ahead of the line.
	caller, callee := connect(t, ctx, addr, "401", nil)
	errc := writeAsync(caller, tone(1000, -10, 8000))
	maxPending := 0
	for got := 0; got < 8000; {
		n, err := callee.Read(make([]float64, 160))
		if err != nil {
			t.Fatal(err)
		}
		got += n
		maxPending = max(maxPending, caller.Pending())
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if maxPending > 800 {
		t.Errorf("caller was %d samples ahead of the line, window 800", maxPending)
	}
}

// TestImpairments sends tones both ways through a call with different
// impairments per direction and measures what arrives.
func TestImpairments(t *testing.T) {
	_, addr := startSwitch(t, Config{Speed: 16})
	ctx := testCtx(t)
	const n = 2 * audio.Rate
	for _, tt := range []struct {
		name   string
		cfg    impair.Config
		hz     float64 // 0: send nothing
		wantDB float64 // in-band power received, dBFS
		tol    float64
	}{
		{"attenuation", impair.Config{AttenuationDB: 9}, 1000, -19, 0.1},
		{"band limit passes 1 kHz", impair.Config{BandLimit: true}, 1000, -10, 0.3},
		{"band limit stops 100 Hz", impair.Config{BandLimit: true}, 100, -50, 10},
		{"noise at 20 dB SNR", impair.Config{BandLimit: true, NoiseDBFS: NoiseForSNR(20, -10, 6), AttenuationDB: 6}, 0, -36, 0.5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			back := impair.Config{AttenuationDB: 3}
			caller, callee := connect(t, ctx, addr, "500", &Options{Forward: &tt.cfg, Back: &back, Window: n})
			var errc <-chan error
			if tt.hz > 0 {
				errc = writeAsync(caller, tone(tt.hz, -10, n))
			}
			errb := writeAsync(callee, tone(1000, -10, n))
			var got []float64
			if tt.hz == 0 {
				got = readN(t, callee, n)
			} else {
				got = readSignal(t, callee, n)
			}
			gotBack := readSignal(t, caller, n)
			mid := got[n/4 : 3*n/4] // away from the filters' transients
			var db float64
			if tt.hz == 0 {
				db = impair.DBFS(impair.BandPower(mid))
			} else {
				db = impair.DBFS(medianPower(mid))
			}
			if math.Abs(db-tt.wantDB) > tt.tol {
				t.Errorf("received %.2f dBFS, want %.2f ± %.2f", db, tt.wantDB, tt.tol)
			}
			if db := impair.DBFS(medianPower(gotBack[n/4 : 3*n/4])); math.Abs(db+13) > 0.1 {
				t.Errorf("back direction: received %.2f dBFS, want -13 (3 dB attenuation)", db)
			}
			if errc != nil {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if err := <-errb; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDrift(t *testing.T) {
	_, addr := startSwitch(t, Config{Speed: 16})
	ctx := testCtx(t)
	for i, ppm := range []float64{2000, -3000} {
		fwd := impair.Config{DriftPPM: ppm}
		caller, callee := connect(t, ctx, addr, fmt.Sprint(600+i), &Options{Forward: &fwd})
		readN(t, callee, 3*audio.Rate)
		readN(t, caller, 3*audio.Rate)
		rx, tx := callee.Clock()
		want := float64(tx) * (1 + ppm*1e-6)
		if math.Abs(float64(rx)-want) > 3 {
			t.Errorf("%v ppm: callee received %d samples while the line took %d from it, want %.1f", ppm, rx, tx, want)
		}
		// The back direction has no drift.
		if rx, tx := caller.Clock(); rx != tx {
			t.Errorf("%v ppm forward: caller received %d samples for %d, want the same", ppm, rx, tx)
		}
		caller.Hangup()
	}
}

func TestBursts(t *testing.T) {
	_, addr := startSwitch(t, Config{Speed: 16, Line: impair.Config{
		BurstEvery: 500 * time.Millisecond, BurstLength: 100 * time.Millisecond, BurstDBFS: -20, NoiseDBFS: -60,
	}})
	ctx := testCtx(t)
	caller, _ := connect(t, ctx, addr, "700", nil)
	got := readN(t, caller, 2*audio.Rate+80)
	// Bursts at 0.5, 1.0 and 1.5 s, 100 ms each: 15 blocks of 20 ms.
	loud := 0
	for i := 0; i+160 <= len(got); i += 160 {
		if impair.DBFS(meanSquare(got[i:i+160])) > -30 {
			loud++
		}
	}
	if loud < 14 || loud > 17 {
		t.Errorf("%d loud 20 ms blocks in 2 s, want 15 (3 bursts of 100 ms)", loud)
	}
}

// TestManyCalls carries 16 calls at once on a clean line, each caller and
// callee sending its own pseudo-random samples, and checks that every
// party receives exactly what its peer sent. It runs in real time: 16
// calls faster than that, under the race detector, may be more than a
// shared 2-core machine can do.
func TestManyCalls(t *testing.T) {
	_, addr := startSwitch(t, Config{Speed: 1})
	ctx := testCtx(t)
	const calls, n = 16, 6000
	// Windows big enough for the whole pattern: this test is about
	// carrying calls apart, not about writers keeping up on a busy
	// machine (an underrun would put silence in the pattern).
	l, err := Listen(ctx, addr, "800", &ListenOptions{Lines: calls, Window: n})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pattern := func(seed uint64) []float64 {
		s := make([]float64, n)
		x := seed*2654435761 + 1
		for i := range s {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			s[i] = audio.FromInt16(int16(x>>48) | 1) // never 0
		}
		return s
	}
	// The parties start when the machine's load lets them, and a writer
	// it delays underruns the line, which then sends silence: what
	// arrives is the pattern, exactly and in order, with runs of zeros
	// (which the pattern never has) before and maybe between its parts.
	check := func(who string, c *Call, want []float64) {
		var signal []float64
		buf := make([]float64, 1024)
		for len(signal) < n {
			k, err := c.Read(buf)
			if err != nil {
				t.Errorf("%s: %v after %d samples of signal", who, err, len(signal))
				return
			}
			for _, v := range buf[:k] {
				if v != 0 {
					signal = append(signal, v)
				}
			}
		}
		for i := range n {
			if signal[i] != want[i] {
				t.Errorf("%s: sample %d = %v, want %v", who, i, signal[i], want[i])
				return
			}
		}
	}
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := l.Accept(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			// The caller hangs up once both have heard each
			// other; the END comes after every frame before it.
			errc := writeAsync(c, pattern(c.ID()+1000))
			check("callee of call "+c.Remote(), c, pattern(c.ID()))
			if err := <-errc; err != nil {
				t.Error(err)
			}
			if err := c.Drain(ctx); err != nil && !errors.Is(err, ErrHangup) {
				t.Error(err)
			}
			readUntilEnd(c)
		}()
		go func() {
			defer wg.Done()
			c, err := Dial(ctx, addr, "800", &Options{From: fmt.Sprint(i), Window: n})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Hangup()
			errc := writeAsync(c, pattern(c.ID()))
			check("caller", c, pattern(c.ID()+1000))
			if err := <-errc; err != nil {
				t.Error(err)
			}
			if err := c.Drain(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestVanish has each party of a call vanish (its connection closed
// without HANGUP): the other hears a hangup.
func TestVanish(t *testing.T) {
	_, addr := startSwitch(t, Config{})
	ctx := testCtx(t)
	caller, callee := connect(t, ctx, addr, "900", nil)
	caller.c.nc.Close()
	if _, err := readUntilEnd(callee); !errors.Is(err, ErrHangup) {
		t.Errorf("callee when the caller vanished: %v, want ErrHangup", err)
	}
	l, err := Listen(ctx, addr, "901", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if _, err := l.Accept(ctx); err == nil {
			l.Close()
		}
	}()
	caller, err = Dial(ctx, addr, "901", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readUntilEnd(caller); !errors.Is(err, ErrHangup) {
		t.Errorf("caller when the callee vanished: %v, want ErrHangup", err)
	}
}

// TestShutdown stops a switch with calls up: every party hears it, Serve
// returns and no goroutine is left behind.
func TestShutdown(t *testing.T) {
	before := goroutines()
	sw, err := NewSwitch(Config{Speed: 4})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sw.Serve(sctx, ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := Listen(ctx, addr, "1000", &ListenOptions{Lines: 3})
	if err != nil {
		t.Fatal(err)
	}
	var calls []*Call
	for range 2 {
		go func() {
			if c, err := l.Accept(ctx); err == nil {
				readUntilEnd(c)
			}
		}()
		c, err := Dial(ctx, addr, "1000", nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
		readN(t, c, 160)
	}
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	for _, c := range calls {
		if _, err := readUntilEnd(c); !errors.Is(err, ErrShutdown) {
			t.Errorf("caller when the switch stopped: %v, want ErrShutdown", err)
		}
	}
	if _, err := l.Accept(ctx); !errors.Is(err, ErrLost) {
		t.Errorf("Accept after the switch stopped: %v, want ErrLost", err)
	}
	l.Close()
	if after := stableGoroutines(before); after > before {
		t.Errorf("%d goroutines after the switch stopped, %d before", after, before)
	}
}

// stableGoroutines waits (at most 10 s) for the number of goroutines to
// fall to want, and returns it.
func stableGoroutines(want int) int {
	n := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n = goroutines()
		if n <= want {
			return n
		}
	}
	return n
}

func TestRecord(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSwitch(t, Config{RecordDir: dir, Speed: 16, Line: impair.Config{AttenuationDB: 6}})
	ctx := testCtx(t)
	caller, callee := connect(t, ctx, addr, "1100", nil)
	errc := writeAsync(caller, tone(1000, -10, audio.Rate))
	readN(t, callee, 2*audio.Rate)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	caller.Hangup()
	readUntilEnd(callee)
	for _, who := range []string{"callee", "caller"} {
		var s []float64
		// The switch closes the file just after the call ends.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			f, err := os.Open(filepath.Join(dir, "call-000001-"+who+".wav"))
			if err != nil {
				continue
			}
			s, _, err = audio.ReadWAV(f)
			f.Close()
			if err == nil && len(s) >= 2*audio.Rate {
				break
			}
		}
		if len(s) < 2*audio.Rate {
			t.Fatalf("%s recording: %d samples, want at least %d", who, len(s), 2*audio.Rate)
		}
		peak := math.Inf(-1)
		for i := 0; i+800 <= len(s); i += 800 {
			peak = max(peak, impair.DBFS(meanSquare(s[i:i+800])))
		}
		want := map[string]float64{"callee": -16, "caller": math.Inf(-1)}[who]
		if math.Abs(peak-want) > 0.2 && !(math.IsInf(want, -1) && peak < -90) {
			t.Errorf("%s recording: loudest 100 ms at %.2f dBFS, want %v", who, peak, want)
		}
	}
}

// TestStaleRing: a caller gives up while the line rings and nobody
// accepts; the next caller's ring is the one Accept answers.
func TestStaleRing(t *testing.T) {
	sw, addr := startSwitch(t, Config{})
	ctx := testCtx(t)
	l, err := Listen(ctx, addr, "1200", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		short, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := Dial(short, addr, "1200", nil)
			errc <- err
		}()
		waitFor(t, "the ring", func() bool { return sw.Stats().Calls == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("dial %d: %v, want Canceled", i, err)
		}
		waitFor(t, "the end of the ring", func() bool { return sw.Stats().Calls == 0 })
	}
	accepted := make(chan *Call, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	caller, err := Dial(ctx, addr, "1200", &Options{From: "5"})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Hangup()
	callee := <-accepted
	if callee == nil || callee.ID() != caller.ID() || callee.Remote() != "5" {
		t.Fatalf("accepted %+v, want call %d from 5", callee, caller.ID())
	}
}

// waitFor polls cond for at most 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 20 s", what)
		}
	}
}

// TestGarbage feeds a live switch random bytes, alone and after a valid
// first message, on many connections: each is refused or carried on,
// and the switch still connects a call afterwards.
func TestGarbage(t *testing.T) {
	sw, addr := startSwitch(t, Config{})
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(7, 7))
	prefixes := [][]byte{
		nil,
		(&message{typ: msgRegister, number: "77"}).encode(nil),
		(&message{typ: msgDial, number: "77"}).encode(nil),
		{msgAudio, 4, 0},
	}
	var wg sync.WaitGroup
	for i := range 100 {
		junk := make([]byte, rng.IntN(64))
		for j := range junk {
			junk[j] = byte(rng.UintN(256))
		}
		data := append(append([]byte(nil), prefixes[i%len(prefixes)]...), junk...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialSwitch(ctx, addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.nc.Close()
			c.nc.Write(data)
			// Whatever the switch answers, the party then leaves.
			c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			for {
				if _, err := c.rd.read(); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "the garbage parties to go", func() bool { st := sw.Stats(); return st.Parties == 0 && st.Calls == 0 })
	caller, callee := connect(t, ctx, addr, "78", nil)
	readN(t, caller, 160)
	readN(t, callee, 160)
}
