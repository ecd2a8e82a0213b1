package linktest

import (
	"bytes"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"cardlink/internal/link"
)

func lossyRead(t *testing.T, lc LossyConfig, chunks []int, data []byte) ([]byte, Damage) {
	t.Helper()
	a, b := LossyPipe(lc)
	for len(data) > 0 {
		n := min(chunks[0], len(data))
		chunks = append(chunks[1:], chunks[0])
		if _, err := a.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return got, a.Damage()
}

func TestLossyDeterministic(t *testing.T) {
	data := pattern(20000, 3)
	lc := LossyConfig{Seed: 7, BER: 1e-3, Drop: 1e-3, Insert: 1e-3, Burst: 1e-4}
	x, dx := lossyRead(t, lc, []int{20000}, data)
	y, dy := lossyRead(t, lc, []int{1, 7, 300, 64}, data)
	if !bytes.Equal(x, y) || dx != dy {
		t.Errorf("same seed, other write sizes: %d bytes %+v, then %d bytes %+v, want the same", len(x), dx, len(y), dy)
	}
	z, _ := lossyRead(t, LossyConfig{Seed: 8, BER: 1e-3, Drop: 1e-3, Insert: 1e-3, Burst: 1e-4}, []int{20000}, data)
	if bytes.Equal(x, z) {
		t.Errorf("another seed gave the same damage")
	}
	clean, d := lossyRead(t, LossyConfig{Seed: 7}, []int{100}, data)
	if !bytes.Equal(clean, data) || d != (Damage{}) {
		t.Errorf("no impairments: got %d bytes, damage %+v, want the data untouched", len(clean), d)
	}
}

func TestLossyRates(t *testing.T) {
	const n = 100000
	data := pattern(n, 1)
	tests := []struct {
		name  string
		lc    LossyConfig
		count func(Damage) int64
		want  float64 // expected count
	}{
		{"BER", LossyConfig{Seed: 1, BER: 1e-3}, func(d Damage) int64 { return d.Flipped }, n * 8e-3},
		{"drop", LossyConfig{Seed: 2, Drop: 1e-2}, func(d Damage) int64 { return d.Dropped }, n * 1e-2},
		{"insert", LossyConfig{Seed: 3, Insert: 1e-2}, func(d Damage) int64 { return d.Inserted }, n * 1e-2},
		{"burst", LossyConfig{Seed: 4, Burst: 1e-3, BurstLen: 10}, func(d Damage) int64 { return d.Wiped }, n * 1e-3 * 10},
	}
	for _, tc := range tests {
		got, d := lossyRead(t, tc.lc, []int{4096}, data)
		if c := float64(tc.count(d)); c < tc.want*0.8 || c > tc.want*1.2 {
			t.Errorf("%s: %v damaged bytes, want about %v (%+v)", tc.name, c, tc.want, d)
		}
		// A wiped byte is either dropped (and counted so) or replaced.
		if int64(len(got)) != n-d.Dropped+d.Inserted {
			t.Errorf("%s: delivered %d bytes, want %d", tc.name, len(got), n-d.Dropped+d.Inserted)
		}
	}
}

func TestLossyWipe(t *testing.T) {
	a, b := LossyPipe(LossyConfig{Seed: 1})
	a.Write([]byte("before"))
	a.Wipe(5)
	a.Write(bytes.Repeat([]byte{0x55}, 5))
	a.Write([]byte("after"))
	a.Close()
	got, _ := io.ReadAll(b)
	if !bytes.HasPrefix(got, []byte("before")) || !bytes.HasSuffix(got, []byte("after")) || bytes.Contains(got, []byte{0x55, 0x55, 0x55, 0x55, 0x55}) {
		t.Errorf("Wipe(5) delivered %q, want the 5 bytes between wiped", got)
	}
	if d := a.Damage(); d.Wiped != 5 {
		t.Errorf("Damage().Wiped = %d, want 5", d.Wiped)
	}
}

func TestLossyNoiseAndCollisions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 1200 bit/s: 120 bytes a second.
		a, b := LossyPipe(LossyConfig{Config: Config{BitsPerSecond: 1200, Realtime: true}, Seed: 1, HalfDuplex: true})
		msg := bytes.Repeat([]byte{'m'}, 120)
		start := time.Now()
		a.Write(msg)
		if got := time.Since(start); got != time.Second {
			t.Errorf("Write of 120 bytes at 1200 bit/s took %v (fake time), want 1s", got)
		}
		a.Noise(500 * time.Millisecond)
		a.Write(msg) // the first half is wiped
		if d := a.Damage(); d.Wiped != 60 {
			t.Errorf("Noise(500ms) wiped %d bytes of 120 at 120 bytes/s, want 60", d.Wiped)
		}
		done := make(chan struct{})
		go func() {
			b.Write(msg) // overlaps a's next write: both collide
			close(done)
		}()
		a.Write(msg)
		<-done
		if da, db := a.Damage().Collisions, b.Damage().Collisions; da != 1 || db != 1 {
			t.Errorf("Collisions = %d, %d, want 1, 1", da, db)
		}
		a.Close()
		b.Close()
	})
}

func TestLossyConformance(t *testing.T) {
	Run(t, func(t *testing.T) (link.Link, link.Link) { return LossyPipe(LossyConfig{Seed: 1}) })
}
