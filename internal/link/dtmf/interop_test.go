package dtmf

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cardlink/internal/audio"
)

// need skips the test when a peer program is not installed (CI installs
// them all: multimon-ng, sox, espeak-ng).
func need(t testing.TB, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (Debian package %s); skipping the interop test", p, p)
		}
	}
}

// run runs a peer program with a time limit and returns its standard
// output.
func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

func writeWAV(t testing.TB, path string, s []float64) {
	t.Helper()
	var buf bytes.Buffer
	if err := audio.WriteWAV(&buf, audio.Rate, s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readWAV(t testing.TB, path string) []float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, rate, err := audio.ReadWAV(f)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if rate != audio.Rate {
		t.Fatalf("%s is at %d Hz, want %d", path, rate, audio.Rate)
	}
	return s
}

// multimon decodes the WAV file at path with multimon-ng (which resamples
// it with sox) and returns the digits it prints.
func multimon(t testing.TB, path string) string {
	t.Helper()
	out := run(t, "multimon-ng", "-q", "-t", "wav", "-a", "DTMF", path)
	var b strings.Builder
	for line := range strings.Lines(string(out)) {
		if k, ok := strings.CutPrefix(strings.TrimSpace(line), "DTMF: "); ok && len(k) == 1 {
			b.WriteString(k)
		}
	}
	return b.String()
}

// TestMultimonDecodesOurs: multimon-ng reads our tones at the default
// timing, at the fastest Q.24 timing it copes with, and at several levels
// and twists.
func TestMultimonDecodesOurs(t *testing.T) {
	need(t, "multimon-ng", "sox")
	dir := t.TempDir()
	const digits = "0123456789*#ABCD1155"
	for _, p := range []Params{
		{},
		{Tone: 50 * time.Millisecond, Pause: 50 * time.Millisecond},
		{Level: -25},
		{Level: -12, Twist: 2},
		{Level: -8, Twist: -4},
	} {
		t.Run(fmt.Sprintf("%v/%v/%gdB/%+gdB", p.Tone, p.Pause, p.Level, p.Twist), func(t *testing.T) {
			path := filepath.Join(dir, "ours.wav")
			writeWAV(t, path, cat(silence(100*time.Millisecond), mustGenerate(t, digits, p), silence(100*time.Millisecond)))
			if got := multimon(t, path); got != digits {
				t.Fatalf("multimon-ng read %q, want %q", got, digits)
			}
		})
	}
}

// soxDigits builds digits with sox: for each, two sines of equal level
// averaged into one channel (so each tone is at gain-6 dBFS) and amplified
// by gain dB, then a pause, all concatenated by sox.
func soxDigits(t testing.TB, dir, digits string, tone, pause time.Duration, gain float64) string {
	t.Helper()
	var parts []string
	for i := range len(digits) {
		lo, hi, ok := Frequencies(digits[i])
		if !ok {
			t.Fatalf("%q is not a digit", digits[i])
		}
		p := filepath.Join(dir, fmt.Sprintf("d%03d.wav", i))
		run(t, "sox", "-n", "-r", "8000", "-b", "16", "-c", "1", p,
			"synth", fmt.Sprint(tone.Seconds()), "sine", fmt.Sprint(lo), "sine", fmt.Sprint(hi),
			"remix", "1,2", "gain", fmt.Sprint(gain), "pad", "0", fmt.Sprint(pause.Seconds()))
		parts = append(parts, p)
	}
	out := filepath.Join(dir, "sox.wav")
	run(t, "sox", append(parts, out)...)
	return out
}

// TestWeDecodeSox: tones built by another generator (sox's synth) read
// right, alone and in sox's own band-limited noise.
func TestWeDecodeSox(t *testing.T) {
	need(t, "sox")
	const digits = "159D*0#8426AB37C"
	for _, tc := range []struct {
		tone, pause time.Duration
		gain        float64
	}{
		{70 * time.Millisecond, 70 * time.Millisecond, -6},
		{40 * time.Millisecond, 40 * time.Millisecond, -6},
		{100 * time.Millisecond, 50 * time.Millisecond, -24}, // -30 dBFS per tone
	} {
		t.Run(fmt.Sprintf("%v/%v/%gdB", tc.tone, tc.pause, tc.gain), func(t *testing.T) {
			dir := t.TempDir()
			s := readWAV(t, soxDigits(t, dir, digits, tc.tone, tc.pause, tc.gain))
			if got := Decode(s); got != digits {
				t.Fatalf("Decode(sox tones) = %q, want %q", got, digits)
			}
		})
	}
	t.Run("in sox noise at 15 dB", func(t *testing.T) {
		dir := t.TempDir()
		sig := readWAV(t, soxDigits(t, dir, digits, 70*time.Millisecond, 70*time.Millisecond, -6))
		np := filepath.Join(dir, "noise.wav")
		run(t, "sox", "-R", "-n", "-r", "8000", "-b", "16", "-c", "1", np,
			"synth", fmt.Sprint(float64(len(sig))/audio.Rate+0.1), "whitenoise", "sinc", "300-3400", "gain", "-20")
		noise := readWAV(t, np)[:len(sig)]
		g := rmsOf(sig) * math.Pow(10, -15.0/20) / rmsOf(noise)
		mixed := make([]float64, len(sig))
		for i := range sig {
			mixed[i] = sig[i] + g*noise[i]
		}
		if got := Decode(mixed); got != digits {
			t.Fatalf("Decode(sox tones + noise) = %q, want %q", got, digits)
		}
	})
}

// TestMultimonAgreesInNoise: the same noisy files read by both receivers;
// ours must be exact where we claim it, and we log multimon-ng's result
// for comparison (docs/telephone-dtmf.md).
func TestMultimonAgreesInNoise(t *testing.T) {
	need(t, "multimon-ng", "sox")
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	const digits = "0123456789*#ABCD"
	sig := cat(silence(100*time.Millisecond), mustGenerate(t, digits, Params{}), silence(100*time.Millisecond))
	for _, snr := range []float64{20, 12} {
		noisy := add(sig, bandNoise(rng, len(sig), rmsOf(sig)*math.Pow(10, -snr/20)))
		path := filepath.Join(dir, fmt.Sprintf("snr%g.wav", snr))
		writeWAV(t, path, noisy)
		if got := Decode(noisy); got != digits {
			t.Errorf("SNR %g dB: we read %q, want %q", snr, got, digits)
		}
		t.Logf("SNR %g dB: multimon-ng read %q", snr, multimon(t, path))
	}
}

func lookPath(name string) (string, bool) {
	p, err := exec.LookPath(name)
	return p, err == nil
}
