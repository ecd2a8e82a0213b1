package fsk

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

func TestExp(t *testing.T) {
	if os.Getenv("FSKEXP") == "" {
		t.Skip()
	}
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, m := range []Mode{Bell202, V23, Bell103, V21, V23Back} {
		sig := Modulate(m, data)
		line := ""
		for snr := 0.0; snr <= 24; snr += 2 {
			x, err := impair.ApplySNR(sig, impair.Config{BandLimit: true, Seed: uint64(snr)}, snr)
			if err != nil {
				t.Fatal(err)
			}
			got, st, _ := Demodulate(m, audio.Rate, x)
			e := editDistance(data, got)
			line += fmt.Sprintf(" %2.0f:%d/%d/%d/%d", snr, e, len(got), st.FramingErrors, st.Carriers)
		}
		t.Logf("%-8s %s", m.Name, line)
	}
}
