package arq

import (
	"bytes"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"cardlink/internal/link"
	"cardlink/internal/link/linktest"
)

// newPair returns two links over a new lossy pipe; a is the primary in
// half duplex. They are closed when the test ends.
func newPair(t testing.TB, lc linktest.LossyConfig, cfg Config) (a, b *Conn, la, lb *linktest.LossyEnd) {
	t.Helper()
	la, lb = linktest.LossyPipe(lc)
	ca := cfg
	ca.Primary = true
	cb := cfg
	cb.Primary = false
	a, err := New(la, ca)
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(lb, cb)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, b, la, lb
}

// lines are the impairments the conformance suite runs under.
var lines = []struct {
	name string
	lc   linktest.LossyConfig
}{
	{"clean", linktest.LossyConfig{}},
	{"BER 1e-4", linktest.LossyConfig{Seed: 1, BER: 1e-4}},
	{"BER 1e-3", linktest.LossyConfig{Seed: 2, BER: 1e-3}},
	{"drops and garbage", linktest.LossyConfig{Seed: 3, Drop: 5e-4, Insert: 5e-4}},
	{"bursts", linktest.LossyConfig{Seed: 4, Burst: 2e-4, BurstLen: 40}},
	{"everything", linktest.LossyConfig{Seed: 5, BER: 3e-4, Drop: 2e-4, Insert: 2e-4, Burst: 1e-4}},
}

func TestConformance(t *testing.T) {
	for _, half := range []bool{false, true} {
		for _, l := range lines {
			name := l.name
			if half {
				name += " half duplex"
			}
			t.Run(name, func(t *testing.T) {
				seed := l.lc.Seed
				linktest.Run(t, func(t *testing.T) (link.Link, link.Link) {
					lc := l.lc
					seed++
					lc.Seed = seed
					a, b, _, _ := newPair(t, lc, Config{HalfDuplex: half, MaxRTO: 200 * time.Millisecond})
					return a, b
				})
			})
		}
	}
}

// TestNoGoroutineLeak closes links in every way they end and checks no
// goroutine stays behind (the synctest tests check the same inside their
// bubbles).
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, half := range []bool{false, true} {
		cfg := Config{HalfDuplex: half, MaxRTO: 200 * time.Millisecond}
		// A transfer and a clean close.
		a, b, _, _ := newPair(t, linktest.LossyConfig{Seed: 1, BER: 1e-4}, cfg)
		transfer(t, a, b, bytes.Repeat([]byte("leak? "), 1000))
		// The line cut under both.
		a, b, la, _ := newPair(t, linktest.LossyConfig{}, cfg)
		la.CutAfter(0)
		a.Close()
		b.Close()
		// A peer gone silent.
		cfg.GiveUp = time.Second
		a, b, _, lb := newPair(t, linktest.LossyConfig{}, cfg)
		lb.Stall()
		a.Write([]byte("anyone?"))
		if err := a.Close(); !errors.Is(err, ErrPeerGone) {
			t.Errorf("Close() to a silent peer = %v, want ErrPeerGone", err)
		}
		b.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after closing everything, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{BitRate: -1},
		{Window: MaxWindow + 1},
		{Window: -1},
		{MaxPayload: MaxPayloadLimit + 1},
		{MinRTO: time.Second, MaxRTO: time.Millisecond},
		{GiveUp: -time.Second},
	}
	for _, c := range bad {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v.Validate() = %v, want ErrConfig", c, err)
		}
		if _, err := New(nopRWC{}, c); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", c, err)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("Config{}.Validate() = %v, want nil", err)
	}
}

type nopRWC struct{}

func (nopRWC) Read([]byte) (int, error)    { return 0, io.EOF }
func (nopRWC) Write(b []byte) (int, error) { return len(b), nil }
func (nopRWC) Close() error                { return nil }

// TestPayloadSize follows the frame size through clean and lossy spells:
// a new link starts below MaxPayload, grows to it as frames get through,
// and shrinks (not below 16 bytes) as they are lost.
func TestPayloadSize(t *testing.T) {
	c := &Conn{cfg: Config{}.withDefaults(), loss: lossPrior, lossLen: priorLen}
	start := c.payloadSize()
	if start >= c.cfg.MaxPayload || start < minPayload {
		t.Errorf("payloadSize() of a new link = %d, want between %d and %d", start, minPayload, c.cfg.MaxPayload)
	}
	o := &outFrame{payload: make([]byte, 40)}
	for range 100 {
		c.noteOutcome(false, o)
	}
	if got := c.payloadSize(); got != c.cfg.MaxPayload {
		t.Errorf("payloadSize() after 100 frames through = %d, want MaxPayload %d", got, c.cfg.MaxPayload)
	}
	prev := c.payloadSize()
	for range 20 {
		c.noteOutcome(true, o) // half the frames lost
		c.noteOutcome(false, o)
		if got := c.payloadSize(); got > prev {
			t.Fatalf("payloadSize() grew from %d to %d while half the frames were lost", prev, got)
		} else {
			prev = got
		}
	}
	if prev >= 32 || prev < minPayload {
		t.Errorf("payloadSize() with half the frames lost = %d, want between %d and 32", prev, minPayload)
	}
	small := &Conn{cfg: Config{MaxPayload: 8}.withDefaults(), loss: 0.9, lossLen: 20}
	if got := small.payloadSize(); got != 8 {
		t.Errorf("payloadSize() with MaxPayload 8 = %d, want 8", got)
	}
}

// TestImports keeps the package independent of modems, the line simulator
// and the channel: the standard library and package link only.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			external := strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
			own := strings.HasPrefix(path, "cardlink/")
			if (external || own) && path != "cardlink/internal/link" {
				t.Errorf("%s imports %s; arq may import only the standard library and cardlink/internal/link", f, path)
			}
		}
	}
}
