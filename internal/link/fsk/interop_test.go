package fsk

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cardlink/internal/audio"
)

// minimodemArgs are minimodem's arguments for a mode: its baud mode and,
// where its defaults are not the mode's tones, --mark and --space.
func minimodemArgs(m Mode) []string {
	args := []string{"-M", fmt.Sprint(m.Mark), "-S", fmt.Sprint(m.Space)}
	switch m {
	case Bell202:
		args = nil // minimodem's 1200 is Bell 202
	case Bell103:
		args = nil // and its 300 is Bell 103, originating
	}
	return append(args, fmt.Sprint(m.Baud))
}

// minimodem returns the path of minimodem, skipping the test without it.
func minimodem(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("minimodem")
	if err != nil {
		t.Skip("minimodem is not installed (Debian: apt-get install minimodem); skipping the interop test")
	}
	return p
}

func runMinimodem(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, minimodem(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("minimodem %s: %v\n%s", strings.Join(args, " "), err, errb.Bytes())
	}
	return out.Bytes()
}

func interopData(m Mode, seed uint64) []byte {
	n := 300
	if m.Baud < 100 {
		n = 24
	}
	return randomBytes(rand.New(rand.NewPCG(seed, 11)), n)
}

// TestMinimodemReceivesOurs: what Modulate sends, minimodem decodes.
func TestMinimodemReceivesOurs(t *testing.T) {
	minimodem(t)
	dir := t.TempDir()
	for i, m := range Modes {
		t.Run(m.Name, func(t *testing.T) {
			data := interopData(m, uint64(i))
			f := filepath.Join(dir, m.Name+".wav")
			writeWAV(t, f, audio.Rate, Modulate(m, data))
			got := runMinimodem(t, nil, append([]string{"--rx", "-q", "-f", f}, minimodemArgs(m)...)...)
			if !bytes.Equal(got, data) {
				t.Errorf("minimodem received %d of %d bytes, %d byte errors", len(got), len(data), editDistance(data, got))
			}
		})
	}
}

// TestWeReceiveMinimodem: what minimodem sends, at its default 48 kHz and
// at 8 kHz (where its bits are whole samples: 1200 bit/s become 1143),
// Demodulate decodes.
func TestWeReceiveMinimodem(t *testing.T) {
	minimodem(t)
	dir := t.TempDir()
	for i, m := range Modes {
		for _, rate := range []int{48000, audio.Rate} {
			t.Run(fmt.Sprintf("%s/%d", m.Name, rate), func(t *testing.T) {
				data := interopData(m, uint64(100+i))
				f := filepath.Join(dir, fmt.Sprintf("%s-%d.wav", m.Name, rate))
				runMinimodem(t, data, append([]string{"--tx", "-q", "-f", f, "-R", fmt.Sprint(rate)}, minimodemArgs(m)...)...)
				s, gotRate := readWAV(t, f)
				if gotRate != rate {
					t.Fatalf("minimodem wrote %d samples per second, want %d", gotRate, rate)
				}
				got, st, err := Demodulate(m, gotRate, s)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Errorf("received %d of %d bytes, %d byte errors (%+v)", len(got), len(data), editDistance(data, got), st)
				}
			})
		}
	}
}

func writeWAV(t testing.TB, name string, rate int, s []float64) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := audio.WriteWAV(f, rate, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readWAV(t testing.TB, name string) ([]float64, int) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, rate, err := audio.ReadWAV(f)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return s, rate
}
