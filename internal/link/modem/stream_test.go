package modem_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"math"
	"os"
	"testing"
	"time"

	"cardlink/internal/audio/impair"
	"cardlink/internal/line"
	"cardlink/internal/line/linetest"
	"cardlink/internal/link/modem"
)

// testTimeout bounds every exchange a test starts.
const testTimeout = 60 * time.Second

// speed is the switch's speed in the Stream tests: at 8 under -race on a loaded
// machine the sender sometimes fell behind the line (an underrun).
var speed = 4.0

// call places a call through a new switch with line impairments imp (both
// directions) at speed, and returns both ends, hung up when the test ends.
func call(t *testing.T, imp impair.Config, speed float64) (caller, callee *line.Call) {
	t.Helper()
	_, addr := linetest.Start(t, line.Config{Line: imp, Speed: speed, RecordDir: os.Getenv("MODEM_RECORD")})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l, err := line.Listen(context.Background(), addr, "5551234", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	type res struct {
		c   *line.Call
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := l.Accept(ctx)
		acc <- res{c, err}
	}()
	caller, err = line.Dial(ctx, addr, "5551234", &line.Options{From: "42"})
	if err != nil {
		t.Fatal(err)
	}
	r := <-acc
	if r.err != nil {
		caller.Hangup()
		t.Fatal(r.err)
	}
	callee = r.c
	t.Cleanup(func() {
		caller.Hangup()
		callee.Hangup()
	})
	return caller, callee
}

// signalDBFS is the level a Stream transmits at: a sine of peak
// modem.DefaultAmplitude (0.5) is −6 dBFS (0 dBFS is a full-scale sine).
var signalDBFS = 20 * math.Log10(modem.DefaultAmplitude)

// snr is a line at snrDB (a Stream's signal against white noise, both in
// 300–3400 Hz) with the band limit and drift ppm.
func snr(snrDB, ppm float64) impair.Config {
	return impair.Config{BandLimit: true, DriftPPM: ppm, NoiseDBFS: line.NoiseForSNR(snrDB, signalDBFS, 0)}
}

// TestStreamBytes sends random bytes each way through a call on a clean
// band-limited line, in every mode, and checks they arrive unchanged: the
// modem Stream alone, without the link layer.
func TestStreamBytes(t *testing.T) {
	for _, mode := range []modem.Mode{modem.Bell202, modem.V23, modem.Bell103, modem.V21} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			a, b := call(t, impair.Config{BandLimit: true, DriftPPM: 100}, speed)
			sa, err := modem.New(a, modem.Config{Mode: mode, Role: modem.Originating})
			if err != nil {
				t.Fatal(err)
			}
			defer sa.Close()
			sb, err := modem.New(b, modem.Config{Mode: mode, Role: modem.Answering})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			n := 40
			if mode == modem.V23 {
				n = 10 // 75 bit/s back
			}
			send := func(from, to *modem.Stream) {
				t.Helper()
				want := make([]byte, n)
				rand.Read(want)
				// Two writes: a transmission, and one that may follow it.
				go func() {
					from.Write(want[:n/2])
					from.Write(want[n/2:])
				}()
				got := make([]byte, n)
				done := make(chan error, 1)
				go func() { _, err := io.ReadFull(to, got); done <- err }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(testTimeout):
					t.Fatal("bytes did not arrive")
				}
				if !bytes.Equal(got, want) {
					t.Errorf("received %x, want %x", got, want)
				}
			}
			send(sa, sb)
			send(sb, sa)
		})
	}
}
