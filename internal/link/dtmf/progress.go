package dtmf

import (
	"fmt"
	"math"
	"math/cmplx"
	"time"

	"cardlink/internal/audio"
)

// Progress is what a telephone line is doing, as a caller hears it.
type Progress int

const (
	Unknown  Progress = iota // not yet heard long enough
	Silence                  // nothing above -45 dBFS
	Dial                     // dial tone: 350+440 Hz, or 425 Hz, steady
	Ringback                 // the far end rings: 440+480 Hz 2 s on 4 s off, or 425 Hz 1 s on
	Busy                     // 480+620 Hz or 425 Hz, 0.5 s on 0.5 s off (also reorder)
	Answer                   // V.25 answer tone, 2100 Hz: a modem or fax answered
	AnswerPR                 // answer tone with 180° phase reversals every 450 ms (V.25 §5.2, disables echo cancellers)
	Other                    // a signal that is none of these: voice, music, data
)

var progressNames = [...]string{"unknown", "silence", "dial tone", "ringback", "busy", "answer tone", "answer tone with phase reversals", "other"}

func (p Progress) String() string {
	if p < 0 || int(p) >= len(progressNames) {
		return fmt.Sprintf("Progress(%d)", int(p))
	}
	return progressNames[p]
}

// Plan is a national plan of call-progress tones.
type Plan int

const (
	NorthAmerica Plan = iota // the precise tone plan (ANSI T1.401)
	Europe                   // CEPT/ETSI TR 101 041: 425 Hz with cadences
)

// cadence describes a tone: its frequencies and its on and off times (off
// zero: steady).
type cadence struct {
	freqs   []float64
	on, off time.Duration
}

var plans = map[Plan]map[Progress]cadence{
	NorthAmerica: {
		Dial:     {[]float64{350, 440}, 0, 0},
		Ringback: {[]float64{440, 480}, 2 * time.Second, 4 * time.Second},
		Busy:     {[]float64{480, 620}, 500 * time.Millisecond, 500 * time.Millisecond},
	},
	Europe: {
		Dial:     {[]float64{425}, 0, 0},
		Ringback: {[]float64{425}, time.Second, 4 * time.Second},
		Busy:     {[]float64{425}, 500 * time.Millisecond, 500 * time.Millisecond},
	},
}

// answerFreq is the V.25 answer tone (2100 ± 15 Hz), and answerReversal
// the interval between its phase reversals (450 ± 25 ms).
const (
	answerFreq     = 2100
	answerReversal = 450 * time.Millisecond
)

// GenerateProgress returns d of tone p in plan at level dBFS per
// frequency: Dial, Ringback and Busy with their cadence (starting with
// the tone), Answer and AnswerPR (the plan does not matter), or Silence.
// Errors wrap ErrParams.
func GenerateProgress(p Progress, plan Plan, d time.Duration, level float64) ([]float64, error) {
	if d < 0 || d > time.Hour {
		return nil, fmt.Errorf("%w: duration %v", ErrParams, d)
	}
	if level > -6 || level < -60 || math.IsNaN(level) {
		return nil, fmt.Errorf("%w: level %g dBFS (want -60 to -6)", ErrParams, level)
	}
	n := samples(d)
	a := amplitude(level)
	switch p {
	case Silence:
		return make([]float64, n), nil
	case Answer, AnswerPR:
		out := make([]float64, 0, n)
		seg := n
		if p == AnswerPR {
			seg = samples(answerReversal)
		}
		var phase float64
		for len(out) < n {
			k := min(seg, n-len(out))
			for i := range k {
				out = append(out, a*math.Sin(2*math.Pi*answerFreq*float64(i)/audio.Rate+phase))
			}
			// Keep the tone continuous, then turn it over.
			phase += 2*math.Pi*answerFreq*float64(k)/audio.Rate + math.Pi
		}
		return out, nil
	}
	c, ok := plans[plan][p]
	if !ok {
		return nil, fmt.Errorf("%w: no %v in plan %d", ErrParams, p, plan)
	}
	amps := make([]float64, len(c.freqs))
	for i := range amps {
		amps[i] = a
	}
	if c.off == 0 {
		return appendTones(nil, n, c.freqs, amps), nil
	}
	out := make([]float64, 0, n)
	for len(out) < n {
		out = appendTones(out, min(samples(c.on), n-len(out)), c.freqs, amps)
		out = append(out, make([]float64, min(samples(c.off), n-len(out)))...)
	}
	return out, nil
}

// Progress analysis: frames of frameLen samples (25 ms), each labelled by
// the tones it holds.
const frameLen = 200

type label int

const (
	lSilence label = iota
	lDial          // 350+440
	lRing          // 440+480
	lBusy          // 480+620
	l425
	l2100
	lOther
)

var progressFreqs = [...]float64{350, 440, 480, 620, 425, answerFreq}

const (
	i350 = iota
	i440
	i480
	i620
	i425
	i2100
)

var progressTable = func() (t [len(progressFreqs)][frameLen]complex128) {
	for k, f := range progressFreqs {
		for n := range frameLen {
			t[k][n] = cmplx.Exp(complex(0, -2*math.Pi*f*float64(n)/audio.Rate))
		}
	}
	return t
}()

// gapRatio is how far (8 dB) below the strongest tone frame heard a frame
// that holds no tone must be to count as a gap in the tone's cadence
// rather than as something else: it lets a cadence be followed on a line
// with noise up to about 10 dB SNR.
var gapRatio = math.Pow(10, 8.0/10)

// ProgressEvent is a change in what a ProgressDetector hears.
type ProgressEvent struct {
	Progress Progress
	At       time.Duration // start of the signal that shows it
}

// ProgressDetector classifies a line's sound at audio.Rate as it is fed:
// silence, dial tone, ringback, busy, answer tone (with or without phase
// reversals), or other, in both plans at once. It needs about a second of
// a tone (less for busy and answer tones) to decide, and reports silence
// only after 5 s of it once it has heard something else (longer than any
// cadence's gap). Its memory is bounded. It is not safe for concurrent use.
type ProgressDetector struct {
	buf   [frameLen]float64
	fill  int
	frame int64 // frames analysed so far

	cur     label // debounced label of the current segment
	curLen  int   // frames in it
	curAt   int64 // its first frame
	pending label // a different label seen in the last frame
	state   Progress

	toneEnergy float64 // the most energy of a frame holding a tone, since the last silence or other

	// Phase-reversal tracking of the 2100 Hz tone.
	prev      complex128 // last frame's 2100 Hz coefficient, 0 if none
	drift     float64    // average phase advance beyond the nominal, per frame
	jump      float64    // phase deviation accumulated over a reversal
	gap       int        // frames since prev
	reversals int        // in the current 2100 Hz segment
}

// NewProgressDetector returns a detector that has heard nothing.
func NewProgressDetector() *ProgressDetector {
	return &ProgressDetector{cur: -1, pending: -1}
}

// Process analyses samples, which continue those of earlier calls, and
// returns the changes in what the line is doing that they show. Samples
// outside [-1, 1] are clipped and NaNs read as silence.
func (d *ProgressDetector) Process(samples []float64) []ProgressEvent {
	var out []ProgressEvent
	for _, s := range samples {
		if s != s {
			s = 0
		}
		d.buf[d.fill] = max(-1, min(1, s))
		d.fill++
		if d.fill < frameLen {
			continue
		}
		d.fill = 0
		if p, at := d.step(d.label()); p != d.state {
			d.state = p
			out = append(out, ProgressEvent{Progress: p, At: at})
		}
		d.frame++
	}
	return out
}

// label classifies the frame in d.buf and tracks the answer tone's phase.
func (d *ProgressDetector) label() label {
	var sum, energy float64
	for _, v := range d.buf {
		sum += v
		energy += v * v
	}
	energy -= sum * sum / frameLen
	// -45 dBFS for a sine is an energy of A²/2 per sample.
	if energy < frameLen*math.Pow(10, -45.0/10)/2 {
		d.trackPhase(0, false)
		return lSilence
	}
	var x [len(progressFreqs)]complex128
	var p [len(progressFreqs)]float64 // share of the frame's energy
	for k := range progressFreqs {
		var acc complex128
		for n, v := range d.buf {
			acc += complex(v, 0) * progressTable[k][n]
		}
		x[k] = acc
		p[k] = 2 * (real(acc)*real(acc) + imag(acc)*imag(acc)) / frameLen / energy
	}
	d.trackPhase(x[i2100], p[i2100] >= 0.5)
	pair := func(a, b int) float64 {
		if p[a] < 0.15 || p[b] < 0.15 {
			return 0
		}
		return p[a] + p[b]
	}
	best, bestP := lOther, 0.6
	for _, c := range []struct {
		l label
		p float64
	}{
		{lDial, pair(i350, i440)},
		{lRing, pair(i440, i480)},
		{lBusy, pair(i480, i620)},
		{l425, p[i425]},
		{l2100, p[i2100]},
	} {
		if c.p > bestP {
			best, bestP = c.l, c.p
		}
	}
	switch {
	case best != lOther:
		d.toneEnergy = max(d.toneEnergy, energy)
	case energy < d.toneEnergy/gapRatio:
		// Once a tone is established, its cadence's gaps hold the
		// line's noise: anything else well below the tone is a gap.
		best = lSilence
	}
	// A 425 Hz tone leaks into the 440 Hz bin and back (they are 15 Hz
	// apart); a single strong 425 Hz tone is 425, not a pair.
	if (best == lDial || best == lRing) && p[i425] > p[i440] && p[i425] >= 0.6 {
		best = l425
	}
	return best
}

// trackPhase counts phase reversals of the 2100 Hz tone. A frame is 52.5
// cycles of it, so its coefficient turns by π per frame, plus a steady
// drift if the tone is off nominal; a reversal adds π once, spread over
// the one or two frames it falls in.
func (d *ProgressDetector) trackPhase(x complex128, present bool) {
	d.gap++
	if !present {
		// A reversal in mid-frame cancels the tone in that frame: keep
		// the reference across one such frame.
		if d.gap > 2 {
			d.prev, d.jump = 0, 0
		}
		return
	}
	if d.prev != 0 {
		g := float64(d.gap)
		adv := math.Remainder(cmplx.Phase(x*cmplx.Conj(d.prev))-g*math.Pi, 2*math.Pi)
		dev := math.Remainder(adv-g*d.drift, 2*math.Pi)
		switch {
		case math.Abs(dev) > math.Pi/4:
			d.jump += dev
			if math.Abs(math.Remainder(d.jump, 2*math.Pi)) > 0.6*math.Pi {
				d.reversals++
				d.jump = 0
			}
		case d.gap == 1:
			d.jump = 0
			d.drift += dev / 4
		}
	}
	d.prev, d.gap = x, 0
}

// step takes the label of one frame and returns what the line is doing
// and since when.
func (d *ProgressDetector) step(l label) (Progress, time.Duration) {
	// Debounce: a new label needs two frames in a row.
	switch {
	case l == d.cur:
		d.curLen++
		d.pending = -1
	case l == d.pending:
		ended, endedLen, endedAt := d.cur, d.curLen-1, d.curAt
		d.cur, d.curLen, d.curAt, d.pending = l, 2, d.frame-1, -1
		if d.cur != l2100 {
			d.reversals, d.drift = 0, 0
		}
		if p, ok := d.ended(ended, endedLen); ok {
			return p, at(endedAt * frameLen)
		}
	default:
		d.pending = l
		d.curLen++ // a one-frame glitch counts as the segment going on
	}
	frames := func(t time.Duration) int { return int(t / (frameLen * time.Second / audio.Rate)) }
	since := at(d.curAt * frameLen)
	switch d.cur {
	case lDial:
		if d.curLen >= frames(time.Second) {
			return Dial, since
		}
	case l425:
		if d.curLen >= frames(2*time.Second) {
			return Dial, since
		}
	case lRing:
		if d.curLen >= frames(500*time.Millisecond) {
			return Ringback, since
		}
	case lBusy:
		if d.curLen >= frames(200*time.Millisecond) {
			return Busy, since
		}
	case l2100:
		// V.25's first reversal comes 450 ms into the tone: wait for it.
		if d.curLen >= frames(600*time.Millisecond) || d.reversals > 0 && d.curLen >= frames(300*time.Millisecond) {
			if d.reversals > 0 {
				return AnswerPR, since
			}
			return Answer, since
		}
	case lSilence:
		if d.curLen >= frames(5*time.Second) || (d.state == Unknown && d.curLen >= frames(time.Second)) {
			d.toneEnergy = 0
			return Silence, since
		}
	case lOther:
		if d.curLen >= frames(500*time.Millisecond) {
			d.toneEnergy = 0
			return Other, since
		}
	}
	return d.state, 0
}

// ended judges a segment of a 425 Hz tone by its length when it ends: the
// European plan tells ringback from busy only by cadence.
func (d *ProgressDetector) ended(l label, n int) (Progress, bool) {
	if l != l425 {
		return 0, false
	}
	ms := n * frameLen * 1000 / audio.Rate
	switch {
	case ms >= 700 && ms <= 1600:
		return Ringback, true
	case ms >= 200 && ms < 700:
		return Busy, true
	}
	return 0, false
}

// ClassifyProgress returns the changes in what samples, a whole recording
// at audio.Rate, show the line doing.
func ClassifyProgress(samples []float64) []ProgressEvent {
	return NewProgressDetector().Process(samples)
}
