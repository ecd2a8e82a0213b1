package fsk

import (
	"os"
	"testing"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

func TestExp2(t *testing.T) {
	if os.Getenv("FSKEXP") == "" {
		t.Skip()
	}
	for _, m := range []Mode{Bell202, V23, Bell103} {
		sig := Modulate(m, []byte("hello"))
		x, _ := impair.ApplySNR(sig, impair.Config{BandLimit: true, Seed: 3}, 20)
		d, _ := NewDemodulator(m, audio.Rate)
		ev := d.Demodulate(nil, x)
		ev = d.Flush(ev)
		t.Logf("%s len %d: %+v", m.Name, len(x), ev)
	}
}
