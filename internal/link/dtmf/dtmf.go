// Package dtmf generates and detects the tones of the telephone line at
// audio.Rate (8 kHz) on float samples in [-1, 1]: dual-tone multifrequency
// digits (ITU-T Q.23 frequencies, Q.24 reception limits), the V.25 answer
// tone with optional phase reversals, and the North American precise
// call-progress tones (dial, ringback, busy) with the European 425 Hz ones.
//
// Generation is a pure function of its parameters. Detection is streaming:
// a Detector or ProgressDetector is fed chunks of any size and returns what
// it recognised with the time it started, so that an IVR can answer while
// the caller is still pressing keys; Decode and ClassifyProgress do a whole
// buffer at once.
//
// It imports only the standard library and package audio; it knows nothing
// of links, frames or the IVR above it.
package dtmf

import (
	"errors"
	"fmt"
	"math"
	"time"

	"cardlink/internal/audio"
)

// Digits lists the sixteen DTMF keys in keypad order, row by row: row i
// uses lowFreqs[i], column j highFreqs[j] (ITU-T Q.23, Table 1).
const Digits = "123A456B789C*0#D"

// Q.23 nominal frequencies in Hz: the low (row) group and the high (column)
// group.
var (
	lowFreqs  = [4]float64{697, 770, 852, 941}
	highFreqs = [4]float64{1209, 1336, 1477, 1633}
)

// Frequencies returns the low- and high-group frequencies of digit d (one
// of Digits, letters in either case) and false when d is not a DTMF key.
func Frequencies(d byte) (low, high float64, ok bool) {
	i := digitIndex(d)
	if i < 0 {
		return 0, 0, false
	}
	return lowFreqs[i/4], highFreqs[i%4], true
}

func digitIndex(d byte) int {
	if d >= 'a' && d <= 'd' {
		d -= 'a' - 'A'
	}
	for i := range len(Digits) {
		if Digits[i] == d {
			return i
		}
	}
	return -1
}

// ErrDigit is wrapped by the errors Generate returns for a character that
// is not a DTMF key.
var ErrDigit = errors.New("dtmf: not a DTMF digit")

// ErrParams is wrapped by the errors Generate returns for parameters out of
// range: durations outside 10 ms to 10 s, or levels that would clip.
var ErrParams = errors.New("dtmf: parameters out of range")

// Default generation parameters: Q.24 receivers must accept 40 ms tones and
// pauses, so 70 ms of each (about 7 digits a second) leaves a margin for
// line distortion while staying quick.
const (
	DefaultTone  = 70 * time.Millisecond
	DefaultPause = 70 * time.Millisecond
	DefaultLevel = -10.0 // dBFS per tone
)

// Params shapes generated digits. The zero value means the defaults.
type Params struct {
	// Tone and Pause are the length of each tone and of the silence after
	// it; zero means DefaultTone and DefaultPause.
	Tone, Pause time.Duration
	// Level is the level of the low-group tone in dBFS (0 dBFS is a sine of
	// amplitude 1); zero means DefaultLevel.
	Level float64
	// Twist is the level of the high-group tone relative to the low one,
	// in dB (Q.23 §4 lets the high group be the stronger one, to make up
	// for the line's loss at high frequencies).
	Twist float64
}

func (p Params) withDefaults() Params {
	if p.Tone == 0 {
		p.Tone = DefaultTone
	}
	if p.Pause == 0 {
		p.Pause = DefaultPause
	}
	if p.Level == 0 {
		p.Level = DefaultLevel
	}
	return p
}

// Validate reports, wrapping ErrParams, durations outside 10 ms to 10 s
// and levels whose two tones together would exceed full scale.
func (p Params) Validate() error {
	p = p.withDefaults()
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"tone", p.Tone}, {"pause", p.Pause}} {
		if d.v < 10*time.Millisecond || d.v > 10*time.Second {
			return fmt.Errorf("%w: %s of %v (want 10ms to 10s)", ErrParams, d.name, d.v)
		}
	}
	if math.IsNaN(p.Level) || math.IsNaN(p.Twist) || math.Abs(p.Twist) > 20 {
		return fmt.Errorf("%w: twist of %g dB (want -20 to 20)", ErrParams, p.Twist)
	}
	if peak := amplitude(p.Level) + amplitude(p.Level+p.Twist); peak > 1 || p.Level < -60 {
		return fmt.Errorf("%w: level %g dBFS with twist %g dB (the peak of both tones must stay within full scale, and levels above -60 dBFS)", ErrParams, p.Level, p.Twist)
	}
	return nil
}

// amplitude converts a level in dBFS to a sine's peak amplitude.
func amplitude(dBFS float64) float64 { return math.Pow(10, dBFS/20) }

// ramp is the raised-cosine rise and fall at each end of a tone, so that a
// tone starts without a click that would spread energy over the band.
const ramp = 2 * time.Millisecond

// Generate returns the tones of digits (any of Digits; letters in either
// case) each followed by its pause, at audio.Rate. Errors wrap ErrDigit or
// ErrParams.
func Generate(digits string, p Params) ([]float64, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p = p.withDefaults()
	for i := range len(digits) {
		if digitIndex(digits[i]) < 0 {
			return nil, fmt.Errorf("%w: %q at position %d", ErrDigit, digits[i], i+1)
		}
	}
	if len(digits) > 100000 {
		return nil, fmt.Errorf("%w: %d digits, more than 100000", ErrParams, len(digits))
	}
	nTone, nPause := samples(p.Tone), samples(p.Pause)
	out := make([]float64, 0, len(digits)*(nTone+nPause))
	for i := range len(digits) {
		lo, hi, _ := Frequencies(digits[i])
		out = appendTones(out, nTone, []float64{lo, hi}, []float64{amplitude(p.Level), amplitude(p.Level + p.Twist)})
		out = append(out, make([]float64, nPause)...)
	}
	return out, nil
}

// samples converts a duration to a number of samples at audio.Rate.
func samples(d time.Duration) int {
	return int(d * audio.Rate / time.Second)
}

// at converts a sample index at audio.Rate to a duration.
func at(n int64) time.Duration {
	return time.Duration(n) * time.Second / audio.Rate
}

// appendTones appends n samples of the sum of sines freqs with peak
// amplitudes amps, ramped at both ends.
func appendTones(out []float64, n int, freqs, amps []float64) []float64 {
	nr := min(samples(ramp), n/2)
	for i := range n {
		var v float64
		for k, f := range freqs {
			v += amps[k] * math.Sin(2*math.Pi*f*float64(i)/audio.Rate)
		}
		switch {
		case i < nr:
			v *= 0.5 - 0.5*math.Cos(math.Pi*float64(i)/float64(nr))
		case i >= n-nr:
			v *= 0.5 - 0.5*math.Cos(math.Pi*float64(n-1-i)/float64(nr))
		}
		out = append(out, v)
	}
	return out
}
