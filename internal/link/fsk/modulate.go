package fsk

import (
	"fmt"
	"math"

	"cardlink/internal/audio"
)

// DefaultAmplitude is the peak level Modulate transmits at: half of full
// scale (−6 dBFS), leaving headroom for the line's noise.
const DefaultAmplitude = 0.5

// Lead-in and trailer of Modulate, in bit periods of mark tone: enough
// for a receiver to detect the carrier and settle on the level before the
// first start bit, and to see the last stop bit whole.
const (
	LeadInBits  = 32
	TrailerBits = 8
)

// Modulator writes continuous-phase FSK: the tone changes at bit
// boundaries without a jump in phase. Bit boundaries fall on the nearest
// sample, the fraction carried over, so any bit rate works at any sample
// rate. A Modulator is not safe for concurrent use.
type Modulator struct {
	mode  Mode
	rate  float64
	amp   float64
	phase float64 // radians, in [0, 2π)
	acc   float64 // samples written, with the fraction of the current bit boundary
	n     int64   // whole samples written
}

// NewModulator returns a Modulator for mode at rate samples per second
// with peak amplitude amp (in (0, 1]). It fails for a mode the rate
// cannot carry or an amplitude out of range.
func NewModulator(mode Mode, rate int, amp float64) (*Modulator, error) {
	if err := mode.check(rate); err != nil {
		return nil, err
	}
	if !(amp > 0 && amp <= 1) {
		return nil, fmt.Errorf("fsk: amplitude %v is not in (0, 1]", amp)
	}
	return &Modulator{mode: mode, rate: float64(rate), amp: amp}, nil
}

// AppendBit appends one bit period of mark (true) or space tone to dst.
func (m *Modulator) AppendBit(dst []float64, mark bool) []float64 {
	f := m.mode.Space
	if mark {
		f = m.mode.Mark
	}
	step := 2 * math.Pi * f / m.rate
	m.acc += m.rate / m.mode.Baud
	end := int64(math.Round(m.acc))
	for ; m.n < end; m.n++ {
		dst = append(dst, m.amp*math.Sin(m.phase))
		m.phase += step
		if m.phase >= 2*math.Pi {
			m.phase -= 2 * math.Pi
		}
	}
	return dst
}

// AppendIdle appends bits bit periods of mark tone (the idle carrier).
func (m *Modulator) AppendIdle(dst []float64, bits int) []float64 {
	for range bits {
		dst = m.AppendBit(dst, true)
	}
	return dst
}

// AppendBytes appends p as asynchronous characters, back to back: a
// start bit (space), the 8 data bits least significant first, a stop bit
// (mark).
func (m *Modulator) AppendBytes(dst []float64, p []byte) []float64 {
	for _, b := range p {
		dst = m.AppendBit(dst, false)
		for i := range dataBits {
			dst = m.AppendBit(dst, b>>i&1 == 1)
		}
		dst = m.AppendBit(dst, true)
	}
	return dst
}

// Modulate returns p as a transmission in mode at audio.Rate and
// DefaultAmplitude: LeadInBits of mark, the characters, TrailerBits of
// mark. It panics if mode is not valid at audio.Rate (every predefined
// mode is).
func Modulate(mode Mode, p []byte) []float64 {
	m, err := NewModulator(mode, audio.Rate, DefaultAmplitude)
	if err != nil {
		panic(err)
	}
	n := int(float64(LeadInBits+TrailerBits+frameBits*len(p))*audio.Rate/mode.Baud) + 2
	out := make([]float64, 0, n)
	out = m.AppendIdle(out, LeadInBits)
	out = m.AppendBytes(out, p)
	return m.AppendIdle(out, TrailerBits)
}
