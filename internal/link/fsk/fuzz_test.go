package fsk

import (
	"encoding/binary"
	"math"
	"testing"

	"cardlink/internal/audio"
)

// FuzzDemodulate feeds arbitrary samples (16-bit, or float64 bit patterns
// including NaN and infinities) to a Demodulator in arbitrary chunks: it
// must not panic, must report at most one character per bit period plus a
// carrier change per two, and must not grow its memory.
func FuzzDemodulate(f *testing.F) {
	f.Add(byte(0), byte(7), false, []byte{})
	tone := Modulate(Bell202, []byte("seed"))
	pcm := make([]byte, 2*len(tone))
	for i, s := range tone {
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(audio.ToInt16(s)))
	}
	f.Add(byte(0), byte(100), false, pcm)
	f.Add(byte(3), byte(1), true, []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x7f, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f})
	f.Fuzz(func(t *testing.T, mode, chunk byte, floats bool, raw []byte) {
		m := Modes[int(mode)%len(Modes)]
		var s []float64
		if floats {
			for i := 0; i+8 <= len(raw); i += 8 {
				s = append(s, math.Float64frombits(binary.LittleEndian.Uint64(raw[i:])))
			}
		} else {
			for i := 0; i+2 <= len(raw); i += 2 {
				s = append(s, audio.FromInt16(int16(binary.LittleEndian.Uint16(raw[i:]))))
			}
		}
		d, err := NewDemodulator(m, audio.Rate)
		if err != nil {
			t.Fatal(err)
		}
		step := 1 + int(chunk)
		var ev []Event
		for i := 0; i < len(s); i += step {
			ev = d.Demodulate(ev, s[i:min(len(s), i+step)])
		}
		ev = d.Flush(ev)
		limit := 4 + 2*int(float64(int64(len(s))+d.mask)*m.Baud/audio.Rate)
		if len(ev) > limit {
			t.Errorf("%d events from %d samples, more than %d", len(ev), len(s), limit)
		}
		if len(d.ring) != d.win {
			t.Errorf("the demodulator's ring holds %d samples, want its window %d", len(d.ring), d.win)
		}
		for _, e := range ev {
			if e.At < -int64(d.mask)*int64(d.dec) || e.At > d.inN {
				t.Errorf("event %v outside the stream of %d samples", e, d.inN)
			}
		}
	})
}
