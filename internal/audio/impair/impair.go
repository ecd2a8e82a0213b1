// Package impair makes telephone-line impairments on 8 kHz audio (package
// audio's float samples): the 300–3400 Hz band limit of the telephone
// channel, band-limited white noise at a chosen level or signal-to-noise
// ratio, attenuation, sample-clock drift between sender and receiver, and
// periodic bursts of noise. The modem and DTMF tests and benchmarks use it
// on whole buffers (ApplySNR); the line simulator runs one streaming Line
// per direction of a call.
//
// Levels are in dBFS, where a full-scale sine (power 0.5) is 0 dBFS. The
// signal-to-noise ratio is measured in the telephone band: the power of the
// band-limited signal over the power of the (always band-limited) noise.
//
// It imports only audio and the standard library.
package impair

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"cardlink/internal/audio"
)

// The telephone band.
const (
	LowHz  = 300
	HighHz = 3400
)

// Config describes one direction of a line. The zero Config passes audio
// through unchanged.
type Config struct {
	// BandLimit filters the signal to 300–3400 Hz (4th-order Butterworth
	// high-pass at 300 Hz and low-pass at 3400 Hz).
	BandLimit bool
	// NoiseDBFS is the in-band power of white noise added to the line;
	// 0 means no noise. It must not be positive.
	NoiseDBFS float64
	// AttenuationDB weakens the signal (not the noise); it must not be
	// negative.
	AttenuationDB float64
	// DriftPPM is the receiver's sample clock against the sender's, in
	// parts per million: +100 means the receiver takes 100 ppm more
	// samples for the same stretch of signal. At most ±50,000.
	DriftPPM float64
	// BurstEvery and BurstLength add a burst of noise of BurstLength at
	// the start of every BurstEvery (the first one after BurstEvery);
	// zero means no bursts. BurstDBFS is the in-band power of a burst,
	// which must then be set (non-positive and not 0).
	BurstEvery, BurstLength time.Duration
	BurstDBFS               float64
	// Seed makes the noise reproducible.
	Seed uint64
}

func (c Config) validate() error {
	switch {
	case c.NoiseDBFS > 0 || math.IsNaN(c.NoiseDBFS):
		return fmt.Errorf("impair: noise level %v dBFS is above full scale", c.NoiseDBFS)
	case c.AttenuationDB < 0 || math.IsNaN(c.AttenuationDB) || math.IsInf(c.AttenuationDB, 0):
		return fmt.Errorf("impair: attenuation %v dB must be 0 or more", c.AttenuationDB)
	case math.Abs(c.DriftPPM) > 50000 || math.IsNaN(c.DriftPPM):
		return fmt.Errorf("impair: drift %v ppm is beyond ±50000", c.DriftPPM)
	case c.BurstEvery < 0 || c.BurstLength < 0:
		return errors.New("impair: negative burst timing")
	case c.BurstEvery > 0 && c.BurstLength > 0 && c.BurstLength >= c.BurstEvery:
		return fmt.Errorf("impair: bursts of %v every %v leave no quiet line", c.BurstLength, c.BurstEvery)
	case c.bursts() && (c.BurstDBFS >= 0 || math.IsNaN(c.BurstDBFS)):
		return fmt.Errorf("impair: burst level %v dBFS must be below full scale (and set)", c.BurstDBFS)
	}
	return nil
}

func (c Config) bursts() bool { return c.BurstEvery > 0 && c.BurstLength > 0 }

// Line is one direction of a line, impairing audio as it streams through:
// the filters, the noise generator, the burst timing and the resampler
// keep their state from one Process call to the next, so processing a
// buffer in chunks gives the same samples as processing it whole. It is
// not safe for concurrent use.
type Line struct {
	cfg    Config
	gain   float64
	signal *band // nil without BandLimit
	noise  *noiseSource
	burst  *noiseSource
	n      int64 // samples processed
	every  int64 // burst period and length in samples
	length int64
	rs     *resampler // nil without drift
}

// New returns a Line impairing audio as cfg says.
func New(cfg Config) (*Line, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Line{cfg: cfg, gain: math.Pow(10, -cfg.AttenuationDB/20)}
	if cfg.BandLimit {
		l.signal = newBand()
	}
	if cfg.NoiseDBFS < 0 {
		l.noise = newNoise(cfg.Seed, 1, cfg.NoiseDBFS)
	}
	if cfg.bursts() {
		l.burst = newNoise(cfg.Seed, 2, cfg.BurstDBFS)
		l.every = samples(cfg.BurstEvery)
		l.length = samples(cfg.BurstLength)
	}
	if cfg.DriftPPM != 0 {
		l.rs = &resampler{step: 1 / (1 + cfg.DriftPPM*1e-6), pos: 2}
	}
	return l, nil
}

func samples(d time.Duration) int64 {
	return max(1, int64(d.Seconds()*audio.Rate+0.5))
}

// Process impairs in and returns the samples the receiver gets: about
// len(in)·(1+DriftPPM·10⁻⁶) of them (the resampler keeps the fraction for
// the next call). Outputs are not clipped: a sum above full scale is the
// caller's to clip (audio.WriteWAV does).
func (l *Line) Process(in []float64) []float64 {
	out := make([]float64, len(in))
	for i, x := range in {
		x *= l.gain
		if l.signal != nil {
			x = l.signal.next(x)
		}
		if l.noise != nil {
			x += l.noise.next()
		}
		if l.burst != nil {
			t := l.n % l.every
			if l.n >= l.every && t < l.length {
				x += l.burst.next()
			}
		}
		l.n++
		out[i] = x
	}
	if l.rs != nil {
		return l.rs.process(out)
	}
	return out
}

// ApplySNR impairs a whole buffer as cfg says, with white noise whose
// in-band power is snrDB below the in-band power of the signal as the
// line delivers it (attenuated and, with BandLimit, filtered);
// cfg.NoiseDBFS is ignored. It fails for a silent signal.
func ApplySNR(s []float64, cfg Config, snrDB float64) ([]float64, error) {
	if math.IsNaN(snrDB) || math.IsInf(snrDB, 0) {
		return nil, fmt.Errorf("impair: SNR %v dB", snrDB)
	}
	clean := cfg
	clean.NoiseDBFS, clean.DriftPPM = 0, 0
	clean.BurstEvery, clean.BurstLength = 0, 0
	l, err := New(clean)
	if err != nil {
		return nil, err
	}
	p := BandPower(l.Process(s))
	if p == 0 {
		return nil, errors.New("impair: the signal is silent in the telephone band")
	}
	cfg.NoiseDBFS = min(DBFS(p)-snrDB, 0)
	if cfg.NoiseDBFS == 0 {
		cfg.NoiseDBFS = -1e-9 // noise at full scale, not none
	}
	if l, err = New(cfg); err != nil {
		return nil, err
	}
	return l.Process(s), nil
}

// BandPower is the mean power of s in the telephone band: the mean square
// of s after the 300–3400 Hz filter, leaving out the filter's first 10 ms
// when s is long enough.
func BandPower(s []float64) float64 {
	b := newBand()
	skip := 0
	if len(s) > 10*settle {
		skip = settle
	}
	var sum float64
	for i, x := range s {
		y := b.next(x)
		if i >= skip {
			sum += y * y
		}
	}
	if len(s) == skip {
		return 0
	}
	return sum / float64(len(s)-skip)
}

// settle is how many samples the band filter takes to forget its start.
const settle = audio.Rate / 100

// DBFS converts a power to dB relative to a full-scale sine (power 0.5).
func DBFS(power float64) float64 { return 10 * math.Log10(power/0.5) }

// Power converts dBFS back to a power.
func Power(dbfs float64) float64 { return 0.5 * math.Pow(10, dbfs/10) }

// biquad is one second-order section (RBJ audio EQ cookbook), direct form I.
type biquad struct {
	b0, b1, b2, a1, a2 float64
	x1, x2, y1, y2     float64
}

func (q *biquad) next(x float64) float64 {
	y := q.b0*x + q.b1*q.x1 + q.b2*q.x2 - q.a1*q.y1 - q.a2*q.y2
	q.x2, q.x1 = q.x1, x
	q.y2, q.y1 = q.y1, y
	return y
}

func newBiquad(highPass bool, f0, qf float64) biquad {
	w := 2 * math.Pi * f0 / audio.Rate
	cw, alpha := math.Cos(w), math.Sin(w)/(2*qf)
	a0 := 1 + alpha
	q := biquad{a1: -2 * cw / a0, a2: (1 - alpha) / a0}
	if highPass {
		q.b0, q.b1, q.b2 = (1+cw)/2/a0, -(1+cw)/a0, (1+cw)/2/a0
	} else {
		q.b0, q.b1, q.b2 = (1-cw)/2/a0, (1-cw)/a0, (1-cw)/2/a0
	}
	return q
}

// band is the 300–3400 Hz filter: two 4th-order Butterworth filters, each
// two biquads with the Butterworth Qs.
type band [4]biquad

var butterworthQ = [2]float64{0.54119610, 1.3065630}

func newBand() *band {
	return &band{
		newBiquad(true, LowHz, butterworthQ[0]), newBiquad(true, LowHz, butterworthQ[1]),
		newBiquad(false, HighHz, butterworthQ[0]), newBiquad(false, HighHz, butterworthQ[1]),
	}
}

func (b *band) next(x float64) float64 {
	for i := range b {
		x = b[i].next(x)
	}
	return x
}

// noiseGain is the power gain of the band filter for white noise: the
// energy of its impulse response.
var noiseGain = func() float64 {
	b := newBand()
	var e float64
	for i := range 1 << 14 {
		x := 0.0
		if i == 0 {
			x = 1
		}
		y := b.next(x)
		e += y * y
	}
	return e
}()

// noiseSource is Gaussian white noise through the band filter, scaled to
// an in-band power.
type noiseSource struct {
	rnd   *rand.Rand
	sigma float64
	band  *band
}

func newNoise(seed, stream uint64, dbfs float64) *noiseSource {
	return &noiseSource{
		rnd:   rand.New(rand.NewPCG(seed, stream)),
		sigma: math.Sqrt(Power(dbfs) / noiseGain),
		band:  newBand(),
	}
}

func (n *noiseSource) next() float64 {
	return n.band.next(n.rnd.NormFloat64() * n.sigma)
}

// resampler reads its input at a fractional step with cubic (Catmull-Rom)
// interpolation, keeping the last samples and the position between calls.
type resampler struct {
	step float64    // input samples per output sample
	pos  float64    // next output's position: buf[floor(pos)+1] and the fraction
	hist [3]float64 // the last three input samples before this call's input
}

func (r *resampler) process(in []float64) []float64 {
	// x(k) for k in [-3, len(in)): history, then the new input. The
	// output at position p (relative to buf index 1) needs buf[i-1..i+2].
	buf := make([]float64, 0, len(in)+3)
	buf = append(buf, r.hist[:]...)
	buf = append(buf, in...)
	out := make([]float64, 0, int(float64(len(in))/r.step)+2)
	for {
		i := int(math.Floor(r.pos)) + 1
		if i+2 >= len(buf) {
			break
		}
		t := r.pos + 1 - float64(i)
		p0, p1, p2, p3 := buf[i-1], buf[i], buf[i+1], buf[i+2]
		out = append(out, p1+0.5*t*(p2-p0+t*(2*p0-5*p1+4*p2-p3+t*(3*(p1-p2)+p3-p0))))
		r.pos += r.step
	}
	r.pos -= float64(len(in))
	copy(r.hist[:], buf[len(buf)-3:])
	return out
}
