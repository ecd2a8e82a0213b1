package dtmf

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var table = flag.Bool("dtmf.table", false, "print the detection-versus-SNR-and-level table of docs/telephone-dtmf.md")

// benchFile is one minute of digits at the default timing, 20 dB SNR.
func benchFile(b *testing.B) []float64 {
	rng := rand.New(rand.NewPCG(13, 14))
	var s []float64
	for len(s) < 60*8000 {
		s = append(s, mustGenerate(b, Digits, Params{})...)
	}
	return add(s, bandNoise(rng, len(s), rmsOf(s)*0.1))
}

// BenchmarkDetect reports how many times faster than real time the
// detector runs; BenchmarkMultimon does the same for multimon-ng on the
// same file (process start and its sox resampling included, as a user
// would run it). Run them together:
//
//	go test ./internal/link/dtmf/ -run '^$' -bench . -benchtime 20x
func BenchmarkDetect(b *testing.B) {
	s := benchFile(b)
	b.ResetTimer()
	for b.Loop() {
		if got := Decode(s); len(got) < 400 {
			b.Fatalf("only %d digits", len(got))
		}
	}
	b.ReportMetric(float64(len(s))/8000*float64(b.N)/b.Elapsed().Seconds(), "x-realtime")
}

func BenchmarkMultimon(b *testing.B) {
	need(b, "multimon-ng", "sox")
	path := filepath.Join(b.TempDir(), "bench.wav")
	s := benchFile(b)
	writeWAV(b, path, s)
	b.ResetTimer()
	for b.Loop() {
		if got := multimon(b, path); len(got) < 400 {
			b.Fatalf("only %d digits", len(got))
		}
	}
	b.ReportMetric(float64(len(s))/8000*float64(b.N)/b.Elapsed().Seconds(), "x-realtime")
}

// BenchmarkMultimonRaw runs multimon-ng on the same file already
// resampled to its native 22050 Hz raw input, leaving out sox.
func BenchmarkMultimonRaw(b *testing.B) {
	need(b, "multimon-ng", "sox")
	dir := b.TempDir()
	path, raw := filepath.Join(dir, "bench.wav"), filepath.Join(dir, "bench.raw")
	s := benchFile(b)
	writeWAV(b, path, s)
	run(b, "sox", path, "-t", "raw", "-r", "22050", "-e", "signed-integer", "-b", "16", "-c", "1", raw)
	b.ResetTimer()
	for b.Loop() {
		out := run(b, "multimon-ng", "-q", "-t", "raw", "-a", "DTMF", raw)
		if n := strings.Count(string(out), "DTMF: "); n < 400 {
			b.Fatalf("only %d digits", n)
		}
	}
	b.ReportMetric(float64(len(s))/8000*float64(b.N)/b.Elapsed().Seconds(), "x-realtime")
}

// TestTable measures, with -dtmf.table, the share of digits read exactly
// (right key, no extra, none missing) by us and by multimon-ng, across
// SNRs (noise band-limited to 300-3400 Hz, SNR over the tones' power) and
// tone levels, at the default 70/70 ms timing:
//
//	go test ./internal/link/dtmf/ -run TestTable -dtmf.table -v
func TestTable(t *testing.T) {
	if !*table {
		t.Skip("run with -dtmf.table to print the table")
	}
	_, mm := lookPath("multimon-ng")
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(15, 16))
	const trials = 10
	var out strings.Builder
	fmt.Fprintf(&out, "| level per tone | SNR | ours: digits right | multimon-ng: digits right |\n|---|---|---|---|\n")
	for _, level := range []float64{-10, -20, -30} {
		for _, snr := range []float64{20, 12, 8, 6, 4, 2, 0} {
			var ours, theirs, total int
			for i := range trials {
				var want strings.Builder
				for range 32 {
					want.WriteByte(Digits[rng.IntN(len(Digits))])
				}
				sig := cat(silence(100*time.Millisecond), mustGenerate(t, want.String(), Params{Level: level}), silence(100*time.Millisecond))
				noisy := add(sig, bandNoise(rng, len(sig), rmsOf(sig)*math.Pow(10, -snr/20)))
				total += want.Len()
				ours += matching(want.String(), Decode(noisy))
				if mm {
					p := filepath.Join(dir, fmt.Sprintf("t%d.wav", i))
					writeWAV(t, p, noisy)
					theirs += matching(want.String(), multimon(t, p))
					os.Remove(p)
				}
			}
			fmt.Fprintf(&out, "| %g dBFS | %g dB | %.1f %% | %.1f %% |\n", level, snr, 100*float64(ours)/float64(total), 100*float64(theirs)/float64(total))
		}
	}
	t.Log("\n" + out.String())

	// Q.24 cases, 16 digits each, clean: how many each receiver reads.
	out.Reset()
	fmt.Fprintf(&out, "| 16 digits, clean | Q.24 asks | ours | multimon-ng |\n|---|---|---|---|\n")
	for _, c := range []struct {
		name  string
		want  bool
		dev   float64 // relative frequency deviation of both tones
		twist float64
		tone  time.Duration
	}{
		{"40 ms tone, 40 ms pause", true, 0, 0, 40 * time.Millisecond},
		{"20 ms tone", false, 0, 0, 20 * time.Millisecond},
		{"both tones +1.5 %", true, 0.015, 0, 0},
		{"both tones -1.5 %", true, -0.015, 0, 0},
		{"both tones +3.5 %", false, 0.035, 0, 0},
		{"both tones -3.5 %", false, -0.035, 0, 0},
		{"high group +4 dB", true, 0, 4, 0},
		{"high group -8 dB", true, 0, -8, 0},
		{"high group +8 dB", false, 0, 8, 0},
		{"high group -14 dB", false, 0, -14, 0},
	} {
		tone, pause := 70*time.Millisecond, 70*time.Millisecond
		if c.tone != 0 {
			tone, pause = c.tone, 40*time.Millisecond
		}
		s := silence(100 * time.Millisecond)
		for i := range len(Digits) {
			lo, hi, _ := Frequencies(Digits[i])
			s = cat(s, pair(lo*(1+c.dev), hi*(1+c.dev), -16, -16+c.twist, tone), silence(pause))
		}
		s = cat(s, silence(100*time.Millisecond))
		theirs := "-"
		if mm {
			p := filepath.Join(dir, "q24.wav")
			writeWAV(t, p, s)
			theirs = fmt.Sprint(len(multimon(t, p)))
		}
		asks := "none"
		if c.want {
			asks = "16"
		}
		fmt.Fprintf(&out, "| %s | %s | %d | %s |\n", c.name, asks, len(Decode(s)), theirs)
	}
	t.Log("\n" + out.String())
}

// matching counts the digits of want read right in got: the length of
// want less the edit distance between them, so extra digits count against.
func matching(want, got string) int {
	prev := make([]int, len(got)+1)
	cur := make([]int, len(got)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(want); i++ {
		cur[0] = i
		for j := 1; j <= len(got); j++ {
			c := prev[j-1]
			if want[i-1] != got[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return max(0, len(want)-prev[len(got)])
}
