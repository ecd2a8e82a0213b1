package fsk

import (
	"os"
	"sort"
	"testing"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

func TestExp3(t *testing.T) {
	if os.Getenv("FSKEXP") == "" {
		t.Skip()
	}
	for _, m := range Modes {
		l, _ := impair.New(impair.Config{NoiseDBFS: -20, Seed: 5})
		x := l.Process(make([]float64, 200000))
		d, _ := NewDemodulator(m, audio.Rate)
		var sh []float64
		for i := range x {
			d.sample(nil, x[i])
			if i > 2000 && i%5 == 0 {
				sh = append(sh, d.cNum/d.cDen)
			}
		}
		sort.Float64s(sh)
		q := func(p float64) float64 { return sh[int(p*float64(len(sh)-1))] }
		t.Logf("%-10s noise share q0.001 %.3f q0.5 %.3f q0.999 %.3f max %.3f", m.Name, q(0.001), q(0.5), q(0.999), q(1))
	}
}
