package arq

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"cardlink/internal/link/linktest"
)

var goodputTable = flag.Bool("goodput", false, "TestGoodput: measure every payload size and print the table for docs/telephone-arq.md")

// goodput sends n random bytes one way over a 1200 bit/s line with lc's
// damage, in fake time, and returns the stream's bit rate as a fraction of
// the line's, the line bytes both sides wrote, and the sender's stats.
func goodput(t *testing.T, lc linktest.LossyConfig, cfg Config, n int) (ratio float64, lineBytes int64, s Stats) {
	synctest.Test(t, func(t *testing.T) {
		cfg.BitRate = lineRate
		a, b, la, lb := newPair(t, slowLine(lc, cfg.HalfDuplex), cfg)
		data := randomBytes(rand.New(rand.NewPCG(lc.Seed, 7)), n)
		start := time.Now()
		go a.Write(data)
		got := make([]byte, n)
		if _, err := io.ReadFull(b, got); err != nil {
			t.Errorf("reading: %v", err)
		}
		elapsed := time.Since(start)
		ratio = float64(n*10) / elapsed.Seconds() / lineRate
		lineBytes = la.Sent() + lb.Sent()
		s = a.Stats()
		a.Close()
		b.Close()
	})
	return ratio, lineBytes, s
}

// TestGoodput measures, in fake time on a 1200 bit/s line, how much of
// the line's bit rate a one-way transfer gets at several error rates, in
// both modes. It checks only that the data arrives; go test -run
// TestGoodput -v -goodput prints the table in docs/telephone-arq.md.
func TestGoodput(t *testing.T) {
	if testing.Short() {
		t.Skip("measures many transfers")
	}
	payloads := []int{64}
	if *goodputTable {
		payloads = []int{32, 64, 128, 256}
	}
	lines := []struct {
		name string
		lc   linktest.LossyConfig
	}{
		{"clean", linktest.LossyConfig{}},
		{"BER 1e-5", linktest.LossyConfig{BER: 1e-5}},
		{"BER 1e-4", linktest.LossyConfig{BER: 1e-4}},
		{"BER 3e-4", linktest.LossyConfig{BER: 3e-4}},
		{"BER 1e-3", linktest.LossyConfig{BER: 1e-3}},
		{"bursts 1/2000 B", linktest.LossyConfig{Burst: 5e-4, BurstLen: 32}},
	}
	var out strings.Builder
	fmt.Fprintf(&out, "| line | mode | payload | goodput / line rate | line bytes / payload byte | resent frames | timeouts |\n|---|---|---|---|---|---|---|\n")
	const n = 4096
	for _, l := range lines {
		for _, half := range modes() {
			for _, p := range payloads {
				lc := l.lc
				lc.Seed = 42
				ratio, lb, s := goodput(t, lc, Config{HalfDuplex: half, MaxPayload: p}, n)
				fmt.Fprintf(&out, "| %s | %s | %d | %.0f%% | %.2f | %d | %d |\n", l.name, modeName(half), p, 100*ratio, float64(lb)/n, s.Resent, s.Timeouts+s.TurnTimeouts)
			}
		}
	}
	t.Logf("4096 bytes one way at 1200 bit/s (fake time):\n%s", out.String())
}

// BenchmarkTransfer is the processing cost of moving data over an
// in-memory line (no airtime waited; with damage, wall-clock timeouts
// dominate the time per op); it reports the line bytes both ways per
// stream byte too, from the pipe's accounting. Goodput against the line's
// bit rate is TestGoodput's, in fake time.
func BenchmarkTransfer(b *testing.B) {
	for _, half := range modes() {
		for _, ber := range []float64{0, 1e-4} {
			b.Run(fmt.Sprintf("%s/BER=%g", strings.ReplaceAll(modeName(half), " ", "-"), ber), func(b *testing.B) {
				data := randomBytes(rand.New(rand.NewPCG(1, 1)), 16384)
				b.SetBytes(int64(len(data)))
				var line, payload int64
				for i := 0; b.Loop(); i++ {
					x, y, lx, ly := newPair(b, linktest.LossyConfig{Seed: uint64(i), BER: ber}, Config{HalfDuplex: half, MaxRTO: 200 * time.Millisecond})
					go x.Write(data)
					if _, err := io.ReadFull(y, make([]byte, len(data))); err != nil {
						b.Fatal(err)
					}
					x.Close()
					y.Close()
					line += lx.Sent() + ly.Sent()
					payload += int64(len(data))
				}
				b.ReportMetric(float64(line)/float64(payload), "line-B/B")
			})
		}
	}
}
