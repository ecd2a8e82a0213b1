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
	payloads := []int{0}
	if *goodputTable {
		payloads = []int{32, 0, 128, 256}
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
	fmt.Fprintf(&out, "| line | mode | MaxPayload | goodput / line rate | line bytes / payload byte | resent frames | timeouts | payload at the end |\n|---|---|---|---|---|---|---|---|\n")
	const n = 4096
	for _, l := range lines {
		for _, half := range modes() {
			for _, p := range payloads {
				lc := l.lc
				lc.Seed = 42
				ratio, lb, s := goodput(t, lc, Config{HalfDuplex: half, MaxPayload: p}, n)
				name := fmt.Sprint(p)
				if p == 0 {
					name = "64 (default)"
				}
				fmt.Fprintf(&out, "| %s | %s | %s | %.0f%% | %.2f | %d | %d | %d |\n", l.name, modeName(half), name, 100*ratio, float64(lb)/n, s.Resent, s.Timeouts+s.TurnTimeouts, s.Payload)
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

// TestExchangeTime measures, in fake time at 1200 bit/s, an exchange
// shaped like an authentication over the Noise channel (channel frames of
// 98, 50, 19, 218, 618 and 58 bytes, alternating direction), averaged
// over 10 seeds, for two frame sizes; go test -run TestExchangeTime -v
// -goodput prints it.
func TestExchangeTime(t *testing.T) {
	if !*goodputTable {
		t.Skip("a measurement: run with -goodput")
	}
	sizes := []int{98, 50, 19, 218, 618, 58}
	raw := 0
	for _, n := range sizes {
		raw += n
	}
	var out strings.Builder
	fmt.Fprintf(&out, "| line | mode | MaxPayload 64 | MaxPayload 128 |\n|---|---|---|---|\n")
	for _, l := range []struct {
		name string
		lc   linktest.LossyConfig
	}{
		{"clean", linktest.LossyConfig{}},
		{"BER 1e-4", linktest.LossyConfig{BER: 1e-4}},
		{"noisy", linktest.LossyConfig{BER: 5e-4, Drop: 3e-4, Insert: 3e-4, Burst: 2e-4}},
		{"BER 1e-3", linktest.LossyConfig{BER: 1e-3}},
	} {
		for _, half := range modes() {
			fmt.Fprintf(&out, "| %s | %s |", l.name, modeName(half))
			for _, p := range []int{64, 128} {
				const runs = 10
				var total time.Duration
				for seed := range runs {
					lc := l.lc
					lc.Seed = uint64(seed + 100)
					synctest.Test(t, func(t *testing.T) {
						a, b, _, _ := newPair(t, slowLine(lc, half), Config{BitRate: lineRate, HalfDuplex: half, MaxPayload: p})
						r := rand.New(rand.NewPCG(uint64(seed), 1))
						start := time.Now()
						for i, size := range sizes {
							from, to := a, b
							if i%2 == 1 {
								from, to = b, a
							}
							go from.Write(randomBytes(r, size))
							if _, err := io.ReadFull(to, make([]byte, size)); err != nil {
								t.Errorf("%s %s payload %d seed %d message %d: reading: %v", l.name, modeName(half), p, seed, i, err)
							}
						}
						total += time.Since(start)
						a.Close()
						b.Close()
					})
				}
				fmt.Fprintf(&out, " %.1f s |", (total / runs).Seconds())
			}
			fmt.Fprintln(&out)
		}
	}
	t.Logf("%d bytes in 6 messages, alternating; raw line time %.1f s:\n%s", raw, float64(raw*10)/lineRate, out.String())
}
