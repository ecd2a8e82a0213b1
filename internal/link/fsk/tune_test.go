package fsk

import (
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

func TestTune(t *testing.T) {
	if os.Getenv("FSKTUNE") == "" {
		t.Skip()
	}
	for _, c := range []struct {
		m   Mode
		snr float64
	}{{Bell202, 10}, {Bell202, 9}, {V23, 12}, {V23, 11}} {
		var mu sync.Mutex
		var wg sync.WaitGroup
		total := 0
		for seed := range uint64(6) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := randomBytes(rand.New(rand.NewPCG(seed, 77)), 4096)
				x, _ := impair.ApplySNR(Modulate(c.m, data), impair.Config{BandLimit: true, Seed: seed + 500}, c.snr)
				got, _, _ := Demodulate(c.m, audio.Rate, x)
				e := editDistance(data, got)
				mu.Lock()
				total += e
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("%s %v dB: %d byte errors in 6×4096", c.m.Name, c.snr, total)
	}
}
