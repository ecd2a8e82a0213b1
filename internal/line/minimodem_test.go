package line

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

// TestMinimodem sends a Bell 202 transmission made by minimodem through a
// call at 20 dB SNR with band-limiting, 6 dB of loss and 100 ppm of drift,
// and has minimodem decode what arrives: the line is fit for a modem.
func TestMinimodem(t *testing.T) {
	for _, peer := range []string{"minimodem", "sox"} {
		if _, err := exec.LookPath(peer); err != nil {
			t.Skipf("%s is not installed (apt install minimodem sox)", peer)
		}
	}
	ctx := testCtx(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	text := make([]byte, 256)
	for i := range text {
		text[i] = byte('a' + rng.IntN(26))
	}
	// minimodem at 8 kHz sends 1143 baud (7 samples a bit), on which its
	// receiver is fragile; at 48 kHz it sends 1200 baud exactly, which
	// sox brings to the line's rate (6 dB down, so as not to clip).
	tx48 := filepath.Join(dir, "tx48.wav")
	run(t, ctx, text, "minimodem", "--tx", "1200", "-R", "48000", "-f", tx48)
	tx := filepath.Join(dir, "tx.wav")
	run(t, ctx, nil, "sox", tx48, "-r", "8000", "-b", "16", tx, "gain", "-6")
	f, err := os.Open(tx)
	if err != nil {
		t.Fatal(err)
	}
	src, rate, err := audio.ReadWAV(f)
	f.Close()
	if err != nil || rate != audio.Rate {
		t.Fatalf("minimodem's WAV: %v at %d Hz", err, rate)
	}
	level := impair.DBFS(impair.BandPower(src))
	cfg := impair.Config{BandLimit: true, AttenuationDB: 6, DriftPPM: 100, NoiseDBFS: NoiseForSNR(20, level, 6)}

	// At speed 2 the writer has a second of real time to spare before it
	// would underrun the line (a gap minimodem would not survive).
	_, addr := startSwitch(t, Config{Speed: 2})
	caller, callee := connect(t, ctx, addr, "1202", &Options{Forward: &cfg, Back: &cfg, Window: maxWindow})
	errc := make(chan error, 1)
	go func() {
		if _, err := caller.Write(src); err != nil {
			errc <- err
			return
		}
		err := caller.Drain(ctx)
		caller.Hangup()
		errc <- err
	}()
	var got []float64
	buf := make([]float64, 1024)
	for {
		n, err := callee.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if !errors.Is(err, ErrHangup) {
				t.Fatal(err)
			}
			break
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	got = append(got, make([]float64, audio.Rate/2)...) // room for minimodem to see the carrier go
	rx := filepath.Join(dir, "rx.wav")
	f, err = os.Create(rx)
	if err != nil {
		t.Fatal(err)
	}
	if err := audio.WriteWAV(f, audio.Rate, got); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out := run(t, ctx, nil, "minimodem", "--rx", "1200", "-q", "-R", "8000", "-f", rx); !bytes.Equal(out, text) {
		t.Errorf("minimodem decoded %q from the line, want %q", out, text)
	}
}

// run runs a command with stdin, bounded by ctx and 30 s, and returns its
// standard output.
func run(t *testing.T, ctx context.Context, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, stderr.Bytes())
	}
	return out
}
