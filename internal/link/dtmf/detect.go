package dtmf

import (
	"math"
	"math/cmplx"
	"time"

	"cardlink/internal/audio"
)

// Analysis geometry. Each window of winLen samples (12.75 ms, the block
// length of the classic Goertzel receivers) is analysed every hop samples,
// so that durations are measured to 6.4 ms.
const (
	winLen = 102
	hop    = winLen / 2
	// The frequency of the strongest row and column tone is measured from
	// the phase advance between two Hann-windowed sub-windows of subLen
	// samples, lag samples apart: unambiguous within ±audio.Rate/(2·lag),
	// ±118 Hz, beyond the widest rejection limit (3.5 % of 1633 Hz).
	subLen = 68
	lag    = winLen - subLen
)

// Config holds the reception limits. The zero value of each field means
// its default, which follows ITU-T Q.24 as the common national limits (and
// the AT&T/Bell receivers) state them.
type Config struct {
	// FreqTolerance is the largest relative deviation from a nominal
	// frequency accepted. Q.24 asks for operation within ±1.5 % and none
	// beyond ±3.5 %; default 2.5 %, the middle.
	FreqTolerance float64
	// MaxHighOverLow and MaxLowOverHigh bound the twist in dB: how much
	// stronger the high-group tone may be than the low one, and the
	// reverse. Q.24 (and the Bell receivers' "reverse" and "normal"
	// twist) asks that 4 dB and 8 dB be accepted; a window measures the
	// twist to about ±0.5 dB, so the defaults are 5 dB and 9 dB. (The line
	// attenuates high frequencies, so the low group usually arrives the
	// stronger.)
	MaxHighOverLow, MaxLowOverHigh float64
	// MinLevel is the weakest tone accepted, in dBFS per tone (0 dBFS is a
	// sine of amplitude 1). Default -36 dBFS.
	MinLevel float64
	// MinSignalRatio is the least share of a window's energy that the two
	// tones must carry, in dB relative to the whole (so negative): what is
	// left (noise, speech harmonics, a third tone, second harmonics) is
	// the "others" that talk-off protection limits. Default -4 dB: the two
	// tones carry at least 40 % of the energy.
	MinSignalRatio float64
	// MinGuardRatio is how much stronger, in dB, each tone must be than
	// the strongest other component of the spectrum between 250 and
	// 3750 Hz (Hann window, 62.5 Hz bins): speech and music put harmonics
	// there, steady noise only its own small share per bin. Default 3 dB.
	// This is the main talk-off guard: on 31 minutes of espeak-ng speech
	// (16 voices, 3 speeds) and 5 minutes of chords it leaves no digit,
	// where the signal ratio alone (at -4 dB) let 6 and 9 through, and it
	// costs little in noise (99.7 % of digits right at 2 dB SNR). It is
	// also what limits talk-down: keys over speech 6 dB below them read
	// 86 % right (docs/telephone-dtmf.md).
	MinGuardRatio float64
	// MinPeakRatio is how much stronger, in dB, the chosen tone must be
	// than any other tone of its group: two keys at once read as neither.
	// Default 6 dB (the Bell receivers' 8 dB lost a third of the digits at
	// 2 dB SNR to noise in the neighbouring bins, with no gain in
	// talk-off on our speech set).
	MinPeakRatio float64
	// MinWindows is how many consecutive analysis windows (6.375 ms apart)
	// must agree before a digit is reported. Default 4: every tone of
	// 40 ms or more covers at least 4 whole windows. One failed window
	// inside a run that then goes on is forgiven (not counted), so that a
	// burst of noise does not break it.
	MinWindows int
	// EndWindows is how many consecutive windows without the digit end it,
	// so the same key can be reported again. Default 5: a 40 ms pause
	// fails at least 6 windows, a 10 ms interruption (which Q.24 asks to
	// bridge) at most 4.
	EndWindows int
}

// DefaultConfig is the configuration the zero Config stands for.
var DefaultConfig = Config{
	FreqTolerance:  0.025,
	MaxHighOverLow: 5,
	MaxLowOverHigh: 9,
	MinLevel:       -36,
	MinSignalRatio: -4,
	MinPeakRatio:   6,
	MinGuardRatio:  3,
	MinWindows:     4,
	EndWindows:     5,
}

func (c Config) withDefaults() Config {
	d := DefaultConfig
	if c.FreqTolerance != 0 {
		d.FreqTolerance = c.FreqTolerance
	}
	if c.MaxHighOverLow != 0 {
		d.MaxHighOverLow = c.MaxHighOverLow
	}
	if c.MaxLowOverHigh != 0 {
		d.MaxLowOverHigh = c.MaxLowOverHigh
	}
	if c.MinLevel != 0 {
		d.MinLevel = c.MinLevel
	}
	if c.MinSignalRatio != 0 {
		d.MinSignalRatio = c.MinSignalRatio
	}
	if c.MinGuardRatio != 0 {
		d.MinGuardRatio = c.MinGuardRatio
	}
	if c.MinPeakRatio != 0 {
		d.MinPeakRatio = c.MinPeakRatio
	}
	if c.MinWindows > 0 {
		d.MinWindows = c.MinWindows
	}
	if c.EndWindows > 0 {
		d.EndWindows = c.EndWindows
	}
	return d
}

// Digit is one key recognised by a Detector.
type Digit struct {
	Key byte          // one of Digits
	At  time.Duration // start of the tone from the first sample fed
}

// tables holds the correlation tables shared by every detector.
type tables struct {
	// cos[t] and sin[t] are cos ωn and sin ωn, n < winLen, for tone t
	// (0-3 low, 4-7 high).
	cos, sin [8][winLen]float64
	// hann[t] is w(n)·e^{-jωn}, n < subLen, with w a Hann window.
	hann [8][subLen]complex128
	// turn[t] is ω·lag, the phase a nominal tone advances over lag samples.
	turn [8]float64
	freq [8]float64 // nominal frequency
}

var tbl = func() *tables {
	t := new(tables)
	for k := range 8 {
		f := lowFreqs[k%4]
		if k >= 4 {
			f = highFreqs[k%4]
		}
		w := 2 * math.Pi * f / audio.Rate
		for n := range winLen {
			t.sin[k][n], t.cos[k][n] = math.Sincos(w * float64(n))
		}
		for n := range subLen {
			h := 0.5 - 0.5*math.Cos(2*math.Pi*(float64(n)+0.5)/subLen)
			t.hann[k][n] = complex(h, 0) * cmplx.Exp(complex(0, -w*float64(n)))
		}
		t.turn[k] = w * lag
		t.freq[k] = f
	}
	return t
}()

// Detector recognises DTMF digits in a stream of samples at audio.Rate.
// Its memory is bounded (one analysis window) whatever it is fed. A
// Detector is not safe for concurrent use.
type Detector struct {
	c        Config
	minLevel float64 // per-tone amplitude
	minRatio float64 // power ratio
	minPeak  float64 // power ratio
	minGuard float64 // power ratio
	maxHi    float64 // power ratio, high over low
	maxLo    float64 // power ratio, low over high
	buf      [winLen]float64
	fill     int   // samples in buf
	next     int64 // index of buf[0] in the stream

	cand      byte  // digit of the current run of windows, or 0
	hits      int   // windows in that run
	candStart int64 // first sample of the run's first window
	hole      bool  // the run has had its one failed window
	active    byte  // digit reported and not yet ended, or 0
	misses    int   // windows since active was last seen
}

// NewDetector returns a detector with the limits c (zero fields take the
// defaults of DefaultConfig).
func NewDetector(c Config) *Detector {
	c = c.withDefaults()
	db := func(v float64) float64 { return math.Pow(10, v/10) }
	return &Detector{
		c:        c,
		minLevel: amplitude(c.MinLevel),
		minRatio: db(c.MinSignalRatio),
		minPeak:  db(c.MinPeakRatio),
		minGuard: db(c.MinGuardRatio),
		maxHi:    db(c.MaxHighOverLow),
		maxLo:    db(c.MaxLowOverHigh),
	}
}

// Process analyses samples, which continue those of earlier calls, and
// returns the digits whose tones were confirmed within them (at most one
// per 25 ms of input). Samples outside [-1, 1] are clipped and NaNs read as
// silence.
func (d *Detector) Process(samples []float64) []Digit {
	var out []Digit
	for _, s := range samples {
		if s != s {
			s = 0
		}
		d.buf[d.fill] = max(-1, min(1, s))
		d.fill++
		if d.fill < winLen {
			continue
		}
		if k := d.step(d.window()); k != 0 {
			out = append(out, Digit{Key: k, At: at(d.candStart)})
		}
		copy(d.buf[:], d.buf[hop:])
		d.fill -= hop
		d.next += hop
	}
	return out
}

// Reset forgets everything fed so far: the next sample is time zero.
func (d *Detector) Reset() {
	*d = *NewDetector(d.c)
}

// step advances the state machine by one window whose verdict is k (a
// digit or 0) and returns the digit confirmed by it, or 0.
func (d *Detector) step(k byte) byte {
	if d.active != 0 {
		if k == d.active {
			d.misses = 0
			return 0
		}
		d.misses++
		if d.misses >= d.c.EndWindows {
			d.active = 0
		}
	}
	if k == 0 && d.cand != 0 && !d.hole {
		// One window spoiled by noise does not break a run in progress.
		d.hole = true
		return 0
	}
	if k == 0 || k != d.cand {
		d.cand, d.hits, d.candStart, d.hole = k, 0, d.next, false
	}
	if k == 0 {
		return 0
	}
	d.hits++
	if d.hits < d.c.MinWindows || k == d.active {
		return 0
	}
	// A new key: either after a pause, or replacing the previous one
	// outright, whose tone has been gone as long as this one lasted.
	d.active, d.misses = k, 0
	d.cand, d.hits, d.hole = 0, 0, false
	return k
}

// window returns the digit that the window in d.buf holds, or 0.
func (d *Detector) window() byte {
	x := &d.buf
	var sum, energy float64
	for _, v := range x {
		sum += v
		energy += v * v
	}
	energy -= sum * sum / winLen // without the DC offset
	// Level: a sine of amplitude A carries A²·N/2 in the window, and
	// the two tones together at least twice the least of that.
	minPow := d.minLevel * d.minLevel * winLen / 2
	if energy < 2*minPow {
		return 0
	}
	var pow [8]float64 // tone energy in the window, 2|X|²/N
	for k := range 8 {
		var re, im float64
		c, s := &tbl.cos[k], &tbl.sin[k]
		for n, v := range x {
			re += v * c[n]
			im += v * s[n]
		}
		pow[k] = 2 * (re*re + im*im) / winLen
	}
	row, col := best(pow[0:4]), 4+best(pow[4:8])
	pr, pc := pow[row], pow[col]
	switch {
	case pr < minPow || pc < minPow:
		return 0
	case pr+pc < d.minRatio*energy:
		return 0
	case pc > d.maxHi*pr || pr > d.maxLo*pc:
		return 0
	}
	for k := range 4 {
		if k != row && pow[k]*d.minPeak > pr {
			return 0
		}
		if k+4 != col && pow[k+4]*d.minPeak > pc {
			return 0
		}
	}
	if !d.onFrequency(row) || !d.onFrequency(col) {
		return 0
	}
	others, p1, p2 := guardPeak(&d.buf, tbl.freq[row], tbl.freq[col])
	if min(p1, p2) < d.minGuard*others {
		return 0
	}
	return Digits[row*4+col-4]
}

// onFrequency reports whether tone k's frequency, measured from the phase
// it advances between the two sub-windows, is within the tolerance.
func (d *Detector) onFrequency(k int) bool {
	var a, b complex128
	h := &tbl.hann[k]
	for n := range subLen {
		a += complex(d.buf[n], 0) * h[n]
		b += complex(d.buf[n+lag], 0) * h[n]
	}
	dphi := cmplx.Phase(b*cmplx.Conj(a)) - tbl.turn[k]
	dphi = math.Remainder(dphi, 2*math.Pi)
	df := dphi * audio.Rate / (2 * math.Pi * lag)
	f := lowFreqs[k%4]
	if k >= 4 {
		f = highFreqs[k%4]
	}
	return math.Abs(df) <= d.c.FreqTolerance*f
}

func best(p []float64) int {
	b := 0
	for i := range p {
		if p[i] > p[b] {
			b = i
		}
	}
	return b
}

// Detect returns the digits in samples, a whole recording at audio.Rate,
// with a Detector of configuration c.
func Detect(samples []float64, c Config) []Digit {
	return NewDetector(c).Process(samples)
}

// Decode returns the keys in samples as a string, with the default limits.
func Decode(samples []float64) string {
	var b []byte
	for _, d := range Detect(samples, Config{}) {
		b = append(b, d.Key)
	}
	return string(b)
}
