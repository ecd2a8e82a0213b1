package fsk

import (
	"math"
	"math/cmplx"
)

// How the Demodulator works (docs/telephone-fsk.md has more)
//
// A channel filter first keeps out what lies beside the mode's tones (the
// other direction of a full-duplex call): for the 300 and 75 bit/s modes,
// mixing to baseband, an 8th-order low-pass split around a decimation to
// a low rate; for V.23, a high-pass above its back channel. Each sample
// is then mixed down with the mark and the space frequency.
// Running sums of the mixed samples give the correlation over any stretch
// of time, with fractional ends: the exact integrate-and-dump matched
// filter of a bit of either tone, whatever its phase, at any sample rate.
//
// A sliding one-bit correlator says where a start bit may begin (mark
// turning to space). The demodulator then tries start times within half a
// bit of that edge (a quarter bit of where the previous character predicts
// it, when characters come back to back), coarse to fine down to 1/32 bit,
// and keeps the one whose ten bits fit best, the start bit counted as
// space and the stop bit as mark: maximum-likelihood timing per character.
// Back to back, the timing is smoothed and the sender's bit rate tracked.
// Data bits are decided coherently over three bits once the phase step
// the line puts between the two tones has been learnt, otherwise alone.
// A character is accepted when its start bit is space and its stop bit
// mark (a character that follows the last one on time keeps a bad stop
// bit); one found by searching must also look like part of the carrier.
//
// The carrier is up while the two correlators hold most of the power
// (their share, averaged over 16 bits, with hysteresis) and the level is
// above −60 dBFS; it goes down at once when the power falls and what
// remains is not tones.

// EventKind says what an Event reports.
type EventKind uint8

// The events a Demodulator reports.
const (
	CarrierUp    EventKind = iota + 1 // the tones appeared
	CarrierDown                       // the tones went away
	Byte                              // a character was received
	FramingError                      // a start bit without a stop bit: no character
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case CarrierUp:
		return "carrier up"
	case CarrierDown:
		return "carrier down"
	case Byte:
		return "byte"
	case FramingError:
		return "framing error"
	}
	return "unknown event"
}

// Event is something the demodulator found in its input. At is the index
// (from 0, counting every sample the Demodulator was given) of the start
// of the character, or of the sample where the carrier change was
// detected.
type Event struct {
	Kind EventKind
	Byte byte // for Byte
	At   int64
}

// Stats counts what a Demodulator has found so far.
type Stats struct {
	Bytes         int // characters received
	FramingErrors int // characters dropped for a missing stop bit
	Carriers      int // times the carrier came up
}

// Carrier detection: the share of the window's power held by the two
// correlators (about 1 for a clean carrier, a little more where the tones
// leak into each other's correlator), averaged over carrierBits bit
// periods, must stay above carrierOn for carrierUpHold bit periods for the
// carrier to come up, and below carrierOff for carrierDownHold for it to
// go down; the mean power must be above minPower. Telephone-band noise
// alone holds 0.5–0.75 of it (0.85–0.9 at worst, for the 1200 bit/s modes,
// whose correlators span most of the band), a carrier 0.9 and more down
// to 4 dB SNR.
const (
	carrierBits     = 16
	carrierOn       = 0.9
	carrierOff      = 0.8
	leakWeight      = 0.6 // how much of the tones' leak the thresholds add
	narrowOn        = 1.0 // for the narrow modes, plus narrowLeak of the leak
	narrowLeak      = 0.25
	narrowOff       = 0.06 // below narrowOn
	narrowFrame     = 0.04 // below narrowOn
	carrierUpHold   = 8
	carrierDownHold = 4
	// The carrier also goes down when, for fadeHold bit periods, the
	// power averaged over fastBits is below fadeRatio of its average while
	// the carrier was up and the share over fastBits is below carrierOn:
	// the end of a transmission shows at once there, long before the
	// slow share falls (a weaker signal keeps its share).
	fastBits  = 2
	fadeRatio = 0.25
	fadeHold  = 1
	// The end of the carrier is seen up to fadeBits bit periods late; a
	// character starting after that is not decoded.
	fadeBits = 4
	// noiseShare is a share typical of noise alone.
	noiseShare = 0.6
	// The channel filter of the narrow modes passes the tones and
	// channelMargin times the bit rate on either side.
	channelMargin = 0.75
	// A wide mode whose tones leave highPassMargin times the bit rate
	// above highPassFrom gets a 4th-order high-pass filter at highPassAt
	// (sharper ones cost V.23 1–2 dB).
	highPassFrom   = 500
	highPassMargin = 0.6
	highPassAt     = 600 // Hz
	// The narrow modes are decimated at most by maxDecimation, keeping
	// minSamplesPerBit.
	maxDecimation    = 16
	minSamplesPerBit = 6
	// A character is accepted only if the correlators hold frameShare of
	// its power, each bit at its own tone: noise alone that happens to
	// look like a start and a stop bit (before the carrier is detected,
	// or after it ends) does not.
	frameShare = 0.85
	bitEnergy  = 0.2
	// The start bit of a character from before the carrier was detected
	// must have startEnergy of the mean (not be the carrier's onset).
	startEnergy = 0.5
	// When the carrier comes up, the start of a character is looked for
	// lookBackBits back in the historyBits of soft decisions kept: carrier
	// detection lags, and a short lead-in must not cost the first byte.
	lookBackBits = 24
	historyBits  = 40
	minPower     = 0.5e-6 // −60 dBFS
)

type demodState uint8

const (
	stIdle demodState = iota // no carrier
	stHunt                   // looking for a start bit from scan on
	stWait                   // waiting for the samples of a character
)

// Demodulator receives one FSK mode from a stream of samples. It is not
// safe for concurrent use. Its memory is fixed when it is made (a few
// thousand samples of history at 8 kHz), whatever it is fed.
type Demodulator struct {
	mode Mode
	rate int
	bit  float64 // samples per bit
	win  int     // correlator window, samples
	pre  filter  // if hasPre
	// narrow: the front end below; hasPre: the high-pass pre.
	narrow, hasPre bool
	// The narrow modes' front end: mixing to baseband (oscC), low-pass
	// lpI and lpQ, decimation by dec (a sample out when phase reaches dec).
	dec      int
	irate    float64 // rate/dec
	markHz   float64 // tones at irate, relative to the mixing
	spaceHz  float64
	pscale   float64 // power of a tone over its mean square: ½ real, 1 complex
	oscC     complex128
	stepC    complex128
	lpI, lpQ filter
	lp2I     filter // after decimation
	lp2Q     filter
	phase    int
	inN      int64   // input samples consumed
	on       float64 // carrier thresholds
	off      float64
	frame    float64 // frameShare
	calph    float64 // carrier average
	falph    float64 // fast power average

	oscM, oscS   complex128 // e^{-iωn}
	stepM, stepS complex128
	ring         []ringEntry // the last win samples, mixed down
	ri           int
	sumM, sumS   complex128
	sumP         float64
	cNum, cDen   float64 // carrier share, averaged
	fNum, fDen   float64 // carrier share, averaged over fastBits
	held         float64 // power, averaged over carrierBits while the carrier is up
	fade         int     // samples the carrier has been fading

	carrier bool
	n       int64       // samples consumed
	hist    []histEntry // by sample index & mask
	sumAllM complex128
	sumAllS complex128
	sumAllX float64
	mask    int64
	pw      float64 // win × pscale
	pnorm   float64 // 2 / win²

	state    demodState
	scan     int64   // next sample to look at for a start bit
	run      int     // consecutive samples with D > 0 (up to win)
	armed    bool    // D has been positive for half a bit since the last start bit
	hold     int     // samples the carrier share has been across its threshold
	locked   bool    // the last character was good: the next may follow it
	pred     float64 // where the next character starts, if it follows
	period   float64 // samples per bit as measured, near bit
	last     float64 // start of the last good character
	haveLast bool
	dphi     complex128 // phase step from space to mark, averaged
	downAt   int64      // where the carrier last went down
	upAt     int64      // where the carrier last came up
	start    int64      // where the stream started (0, or where Flush left it)
	c        float64    // centre of the start-time search
	span     int        // search c−span … c+span
	evalAt   int64

	stats Stats
}

// ringEntry is a sample mixed down with the mark and the space, and its
// power.
type ringEntry struct {
	m, s complex128
	p    float64
}

// histEntry is what the Demodulator keeps of each sample.
type histEntry struct {
	m, s complex128 // running sums of the mixed-down samples through it
	x    float64    // running sum of the squared samples
	f    float64    // power averaged over fastBits
	d    float64    // the sliding one-bit soft decision: only its sign matters
}

// NewDemodulator returns a Demodulator for mode at rate samples per
// second. It fails for a mode the rate cannot carry.
func NewDemodulator(mode Mode, rate int) (*Demodulator, error) {
	if err := mode.check(rate); err != nil {
		return nil, err
	}
	// The narrow modes are mixed down to baseband around the middle of
	// their tones, low-passed there (an 8th-order band-pass in effect) and
	// decimated by dec: the rest runs at rate/dec on complex samples.
	lo, hi := min(mode.Mark, mode.Space)-channelMargin*mode.Baud, max(mode.Mark, mode.Space)+channelMargin*mode.Baud
	narrow := hi-lo < float64(rate)/4 && lo > 0 && hi < 0.45*float64(rate)
	dec, centre := 1, 0.0
	if narrow {
		centre = (mode.Mark + mode.Space) / 2
		for dec*2 <= maxDecimation && float64(rate)/float64(dec*2) >= 3*(hi-lo) && float64(rate)/float64(dec*2)/mode.Baud >= minSamplesPerBit {
			dec *= 2
		}
	}
	irate := float64(rate) / float64(dec)
	bit := irate / mode.Baud
	win := max(2, int(math.Round(bit)))
	d := &Demodulator{
		mode:    mode,
		rate:    rate,
		dec:     dec,
		irate:   irate,
		markHz:  mode.Mark - centre,
		spaceHz: mode.Space - centre,
		pscale:  0.5,
		bit:     bit,
		win:     win,
		period:  bit,
		calph:   1 / (carrierBits * bit),
		falph:   1 / (fastBits * bit),
		oscM:    1,
		oscS:    1,
		oscC:    1,
		stepM:   cmplx.Rect(1, -2*math.Pi*(mode.Mark-centre)/irate),
		stepS:   cmplx.Rect(1, -2*math.Pi*(mode.Space-centre)/irate),
		stepC:   cmplx.Rect(1, -2*math.Pi*centre/float64(rate)),
		ring:    make([]ringEntry, win),
	}
	switch {
	case narrow:
		d.pscale = 1 // |z|² of the complex baseband is half a real tone's power
		// 4th order before decimating (enough against aliasing), 4th order
		// after it: 8th order in all, half of it at the low rate.
		d.narrow = true
		for i, q := range butterworth4Q {
			d.lpI[i] = newBiquad(false, (hi-lo)/2, q, rate)
			d.lpQ[i] = newBiquad(false, (hi-lo)/2, q, rate)
			d.lp2I[i] = newBiquad(false, (hi-lo)/2, q, int(irate))
			d.lp2Q[i] = newBiquad(false, (hi-lo)/2, q, int(irate))
		}
	case min(mode.Mark, mode.Space)-highPassMargin*mode.Baud > highPassFrom:
		// V.23's forward channel, above its back channel.
		d.pre, d.hasPre = newHighPass(highPassAt, rate), true
	}
	// A clean carrier's share is 1 plus what each tone leaks into the
	// other's correlator over a bit, sinc²(shift/baud): 1.04 for Bell 202,
	// 1.17 for V.23 and the 300 bit/s modes. Noise alone holds 0.6–0.92.
	x := math.Pi * math.Abs(mode.Mark-mode.Space) / mode.Baud
	leak := math.Pow(math.Sin(x)/x, 2)
	d.on, d.off, d.frame = carrierOn+leakWeight*leak, carrierOff+leakWeight*leak, frameShare+leakWeight*leak
	if narrow {
		// The channel filter leaves noise little room beside the two
		// correlators: noise alone holds 0.75–1.01 of the share, a
		// carrier 1.06–1.18 even at 0 dB SNR.
		d.on = narrowOn + narrowLeak*leak
		d.off, d.frame = d.on-narrowOff, d.on-narrowFrame
	}
	size := int64(1)
	for size < int64(historyBits*bit)+int64(win)+64 {
		size <<= 1
	}
	d.hist = make([]histEntry, size)
	d.mask = size - 1
	d.pw = float64(d.win) * d.pscale
	d.pnorm = 2 / float64(d.win*d.win)
	return d, nil
}

// Mode returns the mode the Demodulator receives.
func (d *Demodulator) Mode() Mode { return d.mode }

// Stats returns the counts so far.
func (d *Demodulator) Stats() Stats { return d.stats }

// Carrier reports whether the carrier is up.
func (d *Demodulator) Carrier() bool { return d.carrier }

// Demodulate consumes samples and appends what it found to dst. Samples
// that are not numbers count as 0 and samples are limited to ±4.
func (d *Demodulator) Demodulate(dst []Event, samples []float64) []Event {
	if !d.narrow {
		// sample's, for the wide modes, inline.
		for _, x := range samples {
			if x != x { // NaN
				x = 0
			}
			if x > 4 {
				x = 4
			} else if x < -4 {
				x = -4
			}
			d.inN++
			if d.hasPre {
				x = d.pre.next(x)
			}
			dst = d.baseband(dst, complex(x, 0))
		}
		return dst
	}
	// The narrow modes' front end: sample's, in a loop of its own (most
	// samples go no further than the decimation), with the low-pass
	// filters before decimating written out on local variables (the same
	// arithmetic as filter.next: the I and Q filters share coefficients,
	// and the second section's past inputs are the first's past outputs).
	s0, s1 := &d.lpI[0], &d.lpI[1]
	b00, b01, b02, a01, a02 := s0.b0, s0.b1, s0.b2, s0.a1, s0.a2
	b10, b11, b12, a11, a12 := s1.b0, s1.b1, s1.b2, s1.a1, s1.a2
	ix1, ix2, iu1, iu2, iv1, iv2 := d.lpI[0].x1, d.lpI[0].x2, d.lpI[0].y1, d.lpI[0].y2, d.lpI[1].y1, d.lpI[1].y2
	qx1, qx2, qu1, qu2, qv1, qv2 := d.lpQ[0].x1, d.lpQ[0].x2, d.lpQ[0].y1, d.lpQ[0].y2, d.lpQ[1].y1, d.lpQ[1].y2
	osc, step, phase, inN := d.oscC, d.stepC, d.phase, d.inN
	for _, x := range samples {
		if x != x { // NaN
			x = 0
		}
		if x > 4 {
			x = 4
		} else if x < -4 {
			x = -4
		}
		inN++
		ci, cq := x*real(osc), x*imag(osc)
		osc *= step
		if inN&1023 == 0 {
			osc = unit(osc)
		}
		iu := b00*ci + b01*ix1 + b02*ix2 - a01*iu1 - a02*iu2
		qu := b00*cq + b01*qx1 + b02*qx2 - a01*qu1 - a02*qu2
		iv := b10*iu + b11*iu1 + b12*iu2 - a11*iv1 - a12*iv2
		qv := b10*qu + b11*qu1 + b12*qu2 - a11*qv1 - a12*qv2
		ix2, ix1, iu2, iu1, iv2, iv1 = ix1, ci, iu1, iu, iv1, iv
		qx2, qx1, qu2, qu1, qv2, qv1 = qx1, cq, qu1, qu, qv1, qv
		if phase++; phase < d.dec {
			continue
		}
		phase = 0
		d.inN = inN
		dst = d.baseband(dst, complex(d.lp2I.next(iv), d.lp2Q.next(qv)))
	}
	d.lpI[0].x1, d.lpI[0].x2, d.lpI[0].y1, d.lpI[0].y2 = ix1, ix2, iu1, iu2
	d.lpI[1].x1, d.lpI[1].x2, d.lpI[1].y1, d.lpI[1].y2 = iu1, iu2, iv1, iv2
	d.lpQ[0].x1, d.lpQ[0].x2, d.lpQ[0].y1, d.lpQ[0].y2 = qx1, qx2, qu1, qu2
	d.lpQ[1].x1, d.lpQ[1].x2, d.lpQ[1].y1, d.lpQ[1].y2 = qu1, qu2, qv1, qv2
	d.oscC, d.phase, d.inN = osc, phase, inN
	return dst
}

// Flush ends the stream: it decodes a character still waiting for
// samples as if silence followed, reports the carrier going down and
// leaves the Demodulator ready for a new stream (sample indexes go on
// counting from where they were).
func (d *Demodulator) Flush(dst []Event) []Event {
	for d.state == stWait {
		dst = d.sample(dst, 0)
	}
	if d.carrier {
		d.carrier = false
		dst = append(dst, Event{Kind: CarrierDown, At: d.inN})
	}
	d.state, d.locked, d.haveLast = stIdle, false, false
	d.hold, d.fade = 0, 0
	d.cNum, d.cDen, d.fNum, d.fDen, d.held = 0, 0, 0, 0, 0
	d.start, d.scan, d.downAt = d.n, d.n, d.n
	return dst
}

func (d *Demodulator) sample(dst []Event, x float64) []Event {
	if x != x { // NaN
		x = 0
	}
	if x > 4 {
		x = 4
	} else if x < -4 {
		x = -4
	}
	d.inN++
	var z complex128
	switch {
	case d.narrow:
		ci, cq := x*real(d.oscC), x*imag(d.oscC)
		d.oscC *= d.stepC
		if d.inN&1023 == 0 {
			d.oscC = unit(d.oscC)
		}
		i, q := d.lpI.next(ci), d.lpQ.next(cq)
		if d.phase++; d.phase < d.dec {
			return dst
		}
		d.phase = 0
		z = complex(d.lp2I.next(i), d.lp2Q.next(q))
	case d.hasPre:
		z = complex(d.pre.next(x), 0)
	default:
		z = complex(x, 0)
	}
	return d.baseband(dst, z)
}

// baseband consumes a sample after the channel filter (at irate).
func (d *Demodulator) baseband(dst []Event, z complex128) []Event {
	var zm, zs complex128
	if imag(z) == 0 {
		zm, zs = complex(real(z)*real(d.oscM), real(z)*imag(d.oscM)), complex(real(z)*real(d.oscS), real(z)*imag(d.oscS))
	} else {
		zm, zs = z*d.oscM, z*d.oscS
	}
	p := real(z)*real(z) + imag(z)*imag(z)
	d.oscM *= d.stepM
	d.oscS *= d.stepS
	i := d.ri
	r := &d.ring[i]
	d.sumM += zm - r.m
	d.sumS += zs - r.s
	d.sumP += p - r.p
	r.m, r.s, r.p = zm, zs, p // (a struct literal here stalls store forwarding)
	d.ri++
	if d.ri == d.win {
		d.ri = 0
	}
	if d.n&1023 == 1023 {
		d.renormalize()
	}

	em := real(d.sumM)*real(d.sumM) + imag(d.sumM)*imag(d.sumM)
	es := real(d.sumS)*real(d.sumS) + imag(d.sumS)*imag(d.sumS)
	d.cNum += d.calph * (em + es - d.cNum)
	wp := 0.0
	if d.sumP > 0 {
		wp = d.pw * d.sumP
	}
	d.cDen += d.calph * (wp - d.cDen)
	n := d.n
	d.sumAllM += zm
	d.sumAllS += zs
	d.sumAllX += p
	d.n++

	power := d.pnorm * d.cDen // mean square of the input
	d.fNum += d.falph * (em + es - d.fNum)
	d.fDen += d.falph * (wp - d.fDen)
	fast := d.pnorm * d.fDen
	h := &d.hist[n&d.mask]
	h.m, h.s, h.x, h.f, h.d = d.sumAllM, d.sumAllS, d.sumAllX, fast, em-es
	// The end of a transmission: the power falls and what is left is not
	// the tones (a signal that merely grows weaker keeps its share).
	fading := d.carrier && fast < d.held*fadeRatio && d.fNum < d.on*d.fDen
	if d.carrier && !fading {
		d.held += d.calph * (power - d.held)
	}
	if fading {
		d.fade++
	} else {
		d.fade = 0
	}
	// The share means nothing until its average has seen a few bits.
	warm := float64(n-d.start) > carrierBits*d.bit
	crossing := (!d.carrier && warm && d.cNum > d.on*d.cDen && power > minPower) ||
		(d.carrier && (d.cNum < d.off*d.cDen || power < minPower/2))
	if crossing {
		d.hold++
	} else {
		d.hold = 0
	}
	switch {
	case !d.carrier && d.hold >= d.win*carrierUpHold:
		d.hold = 0
		d.carrier = true
		d.held = power
		d.upAt = n
		d.period, d.haveLast = d.bit, false
		d.dphi = 0
		d.stats.Carriers++
		dst = append(dst, Event{Kind: CarrierUp, At: d.inN})
		if d.state == stIdle {
			d.state = stHunt
			// Look back for the first start bit, to where the power rose
			// (a bit before, for the average's lag), but not at what was
			// looked at before.
			from := max(int64(d.win), n-int64(lookBackBits*d.bit), n-d.mask+int64(d.win), d.scan)
			i := n
			for i > from && d.hist[(i-1)&d.mask].f >= power*fadeRatio {
				i--
			}
			d.scan = max(from, i-int64(d.bit))
			d.armed, d.run = false, 0
		}
	case d.carrier && (d.hold >= d.win*carrierDownHold || d.fade >= d.win*fadeHold):
		d.hold, d.fade = 0, 0
		d.carrier = false
		d.locked = false
		d.downAt = n
		// Forget the carrier's share: a new carrier must build it anew.
		d.cNum = min(d.cNum, noiseShare*d.cDen)
		dst = append(dst, Event{Kind: CarrierDown, At: d.inN})
		if d.state == stHunt {
			d.state = stIdle
		}
	}

	switch d.state {
	case stHunt:
		for ; d.scan <= n; d.scan++ {
			v := d.hist[d.scan&d.mask].d
			if !d.armed {
				if v > 0 {
					d.run++
				} else {
					d.run = 0
				}
				d.armed = d.run >= d.win/2
				continue
			}
			if v < 0 {
				edge := float64(d.scan) + 0.5 - float64(d.win)/2
				if d.locked && math.Abs(edge-d.pred) <= d.period/2 {
					d.c, d.span = d.pred, searchSteps/4
				} else {
					d.c, d.span = edge, searchSteps/2
				}
				d.state = stWait
				d.evalAt = int64(math.Ceil(d.c+d.period*(frameBits+float64(d.span)/searchSteps))) + 1
				break
			}
		}
	}
	if d.state == stWait && n >= d.evalAt {
		dst = d.character(dst)
	}
	return dst
}

// at is the sample that ends bit k of a character starting at t0.
func (d *Demodulator) at(t0 float64, k int) int64 {
	return int64(math.Round(t0+float64(k+1)*d.period)) - 1
}

// searchSteps is how finely the start of a character is searched: in
// steps of this fraction of a bit.
const (
	searchSteps  = 32
	searchCoarse = 4 // steps between the first, coarse, tries
)

// timingGain is the share of a character's own timing estimate in the
// timing used to decode a character that follows the last one.
const timingGain = 0.5

// The phase step between the tones is averaged with phaseGain over their
// changes; bits are decided coherently over three bits once the average's
// magnitude (1 for a steady step) exceeds phaseSure.
const (
	phaseGain = 0.02
	phaseSure = 0.7
)

// The bit rate is tracked from one character to the next with periodGain,
// within maxRateError of the nominal rate: sample-clock drift, and
// transmitters whose bits are a whole number of samples (minimodem at 8 kHz
// sends 1200 bit/s as 1143).
const (
	periodGain   = 0.1
	maxRateError = 0.06
)

// prefix returns the running sums of the mark and the space mixer up to
// time t (in samples), the sample at index i spanning [i, i+1).
func (d *Demodulator) prefix(t float64) (m, s complex128) {
	i := floor(t)
	fr := t - float64(i)
	a, b := &d.hist[(i-1)&d.mask], &d.hist[i&d.mask]
	dm, ds := b.m-a.m, b.s-a.s
	return a.m + complex(fr*real(dm), fr*imag(dm)), a.s + complex(fr*real(ds), fr*imag(ds))
}

// prefixPower is prefix for the running sum of the squared samples.
func (d *Demodulator) prefixPower(t float64) float64 {
	i := floor(t)
	a, b := d.hist[(i-1)&d.mask].x, d.hist[i&d.mask].x
	return a + (t-float64(i))*(b-a)
}

// floor is math.Floor for the times of samples, as an integer.
func floor(t float64) int64 {
	i := int64(t)
	if float64(i) > t {
		i--
	}
	return i
}

// frame holds the correlations of the bits of a character with the mark
// and the space tone: the integrate-and-dump over exactly each bit.
type frame struct {
	t0     float64
	cm, cs [frameBits]complex128
	// ph[k] is e^{−iΔω·t} at the start t of bit k, Δω the mark's angular
	// frequency less the space's (k from 1; see phases).
	ph     [frameBits]complex128
	havePh bool
}

// phases fills f.ph, once.
func (d *Demodulator) phases(f *frame) {
	if f.havePh {
		return
	}
	dw := 2 * math.Pi * (d.markHz - d.spaceHz) / d.irate
	u := cmplx.Rect(1, -dw*f.t0)
	du := cmplx.Rect(1, -dw*d.period)
	for k := 1; k < frameBits; k++ {
		u *= du
		f.ph[k] = u
	}
	f.havePh = true
}

// correlate fills f with the character starting at t0.
func (d *Demodulator) correlate(f *frame, t0 float64) {
	f.t0 = t0
	pm, ps := d.prefix(t0)
	for k := range frameBits {
		qm, qs := d.prefix(t0 + float64(k+1)*d.period)
		f.cm[k], f.cs[k] = qm-pm, qs-ps
		pm, ps = qm, qs
	}
}

// soft is the soft decision for bit k: the difference of the mark and
// space energies over exactly that bit.
func (f *frame) soft(k int) float64 {
	m, s := f.cm[k], f.cs[k]
	return real(m)*real(m) + imag(m)*imag(m) - real(s)*real(s) - imag(s)*imag(s)
}

// character decodes the character whose start-time search is complete.
func (d *Demodulator) character(dst []Event) []Event {
	// Coarse to fine: every searchCoarse steps, then halving the step
	// around the best so far.
	best, bestM, bestJ := d.c, math.Inf(-1), 0
	for j := -d.span; j <= d.span; j += searchCoarse {
		t0 := d.c + float64(j)*d.period/searchSteps
		if m := d.fit(t0); m > bestM {
			best, bestM, bestJ = t0, m, j
		}
	}
	for step := searchCoarse / 2; step > 0; step /= 2 {
		around := bestJ
		for _, j := range [2]int{around - step, around + step} {
			if j < -d.span || j > d.span {
				continue
			}
			t0 := d.c + float64(j)*d.period/searchSteps
			if m := d.fit(t0); m > bestM {
				best, bestM, bestJ = t0, m, j
			}
		}
	}
	followed := d.locked && d.c == d.pred
	if !d.carrier && best > float64(d.downAt)-fadeBits*d.bit {
		// Noise after the end of the carrier, before it was seen to end.
		d.state = stIdle
		return dst
	}
	if followed && (bestJ == -d.span || bestJ == d.span) {
		// The best fit at the edge of the search: not a character that
		// follows the last one on time. Look for its start bit instead.
		d.locked = false
		d.state = stHunt
		return dst
	}
	if followed {
		// Timing changes slowly from one character to the next: smooth it.
		best = d.pred + timingGain*(best-d.pred)
	}
	var f frame
	d.correlate(&f, best)
	b := d.bits(&f)
	stop := d.at(best, frameBits-1)
	start := int64(math.Round(best * float64(d.dec)))
	startOK := f.soft(0) < 0 && d.tonal(&f, !followed)
	// A character that follows the last one on time keeps a bad stop bit:
	// noise is as likely to hit it as any data bit.
	stopOK := f.soft(frameBits-1) > 0
	if startOK && (stopOK || followed) {
		d.stats.Bytes++
		dst = append(dst, Event{Kind: Byte, Byte: b, At: start})
		d.learnPhase(&f, b)
		d.locked = true
		if d.haveLast {
			// Characters back to back (or nearly) measure the sender's bit
			// rate against our sample clock.
			if p := (best - d.last) / frameBits; math.Abs(p/d.bit-1) < maxRateError {
				d.period += periodGain * (p - d.period)
				d.period = max(d.bit*(1-maxRateError), min(d.bit*(1+maxRateError), d.period))
			}
		}
		d.last, d.haveLast = best, true
		d.pred = best + frameBits*d.period
		d.scan, d.armed = stop+1, true
		if d.carrier {
			// The next character may follow at once: try it there, and
			// look for a start bit only if it does not.
			d.c, d.span = d.pred, searchSteps/4
			d.evalAt = int64(math.Ceil(d.c+d.period*(frameBits+float64(d.span)/searchSteps))) + 1
			d.state = stWait
			return dst
		}
	} else if followed && !startOK {
		// No character right after the last one: the line is idle.
		d.locked = false
	} else {
		d.stats.FramingErrors++
		dst = append(dst, Event{Kind: FramingError, At: start})
		d.locked, d.haveLast = false, false
		// Look again just after the edge that started this attempt.
		d.scan, d.armed, d.run = int64(math.Round(d.c+float64(d.win)/2)), false, 0
	}
	d.state = stHunt
	if !d.carrier {
		d.state = stIdle
	}
	return dst
}

// tonal reports whether the character f looks like one: its
// bits' correlators hold frameShare of its power and, if even, no bit has
// less than bitEnergy of the mean energy of its bits (a character
// straddling the start of a carrier, noise before it, does not pass; one
// that follows another on time may straddle a change of level) and their
// mean is at least fadeRatio of the carrier's (noise after the end of the
// carrier, before that end is detected, does not pass).
func (d *Demodulator) tonal(f *frame, even bool) bool {
	var e [frameBits]float64
	var sum float64
	for k := range frameBits {
		m, s := f.cm[k], f.cs[k]
		e[k] = real(m)*real(m) + imag(m)*imag(m) + real(s)*real(s) + imag(s)*imag(s)
		sum += e[k]
	}
	t0 := f.t0
	end := t0 + frameBits*d.period
	x := d.prefixPower(end) - d.prefixPower(t0)
	need := d.frame
	if even && t0 < float64(d.upAt) {
		need = d.on // from before the carrier was detected: as sure as it
	}
	if x <= 0 || sum < need*d.period*x*d.pscale {
		return false
	}
	if even && sum/frameBits < fadeRatio*d.held*d.period*d.period/2 {
		return false // much weaker than the carrier: noise after its end
	}
	if even && t0 < float64(d.upAt) && e[0] < startEnergy*sum/frameBits {
		return false // a start bit made of the carrier's onset
	}
	for _, v := range e {
		if even && v < bitEnergy*sum/frameBits {
			return false
		}
	}
	return true
}

// fit is how well a character starting at t0 fits the samples: the sum of
// its bits' soft decisions, the start bit counted as space, the stop bit
// as mark, the data bits as whichever they are. It is the receiver's hot
// loop: correlate and soft in one pass, the bits' boundaries shared.
func (d *Demodulator) fit(t0 float64) float64 {
	hist, mask, period := d.hist, d.mask, d.period
	pm, ps := d.prefix(t0)
	var m float64
	for k := range frameBits {
		// d.prefix, by hand: the compiler does not inline it here.
		t := t0 + float64(k+1)*period
		i := int64(t) // floor(t), by hand too
		if float64(i) > t {
			i--
		}
		fr := t - float64(i)
		a, b := &hist[(i-1)&mask], &hist[i&mask]
		dm, ds := b.m-a.m, b.s-a.s
		qm, qs := a.m+complex(fr*real(dm), fr*imag(dm)), a.s+complex(fr*real(ds), fr*imag(ds))
		cm, cs := qm-pm, qs-ps
		v := real(cm)*real(cm) + imag(cm)*imag(cm) - real(cs)*real(cs) - imag(cs)*imag(cs)
		switch k {
		case 0:
			m -= v
		case frameBits - 1:
			m += v
		default:
			m += math.Abs(v)
		}
		pm, ps = qm, qs
	}
	return m
}

// bits returns the data bits of the character f. Once the phase step
// that the line puts between the two tones is known (see learnPhase),
// each bit is decided over three bits, coherently: the tones' phase runs
// on continuously from bit to bit, so the correlations of a bit and its
// neighbours add up for the right pattern of bits, and a bit is decided
// with three bits' energy. Until then, or when the neighbours of a bit
// are the start or stop bit, it uses what is known.
func (d *Demodulator) bits(f *frame) byte {
	var out byte
	if cmplx.Abs(d.dphi) <= phaseSure {
		for k := 1; k <= dataBits; k++ {
			if f.soft(k) > 0 {
				out |= 1 << (k - 1)
			}
		}
		return out
	}
	// c[1][k] is the correlation of bit k with the mark, c[0][k] with the
	// space; rot[a][b][k] turns the correlation of bit k in tone b into
	// the phase of bit k−1 in tone a: continuous phase at the boundary
	// plus the line's step (space after mark), or its conjugate (mark
	// after space).
	c := [2]*[frameBits]complex128{&f.cs, &f.cm}
	var rot [2][2][frameBits + 1]complex128
	step := unit(d.dphi)
	d.phases(f)
	for k := 1; k < frameBits; k++ {
		u := f.ph[k] * step
		rot[0][0][k], rot[1][1][k] = 1, 1
		rot[1][0][k] = u
		rot[0][1][k] = complex(real(u), -imag(u))
	}
	for k := 1; k <= dataBits; k++ {
		// w[b][r]: bits k and k+1 as b and r, in the phase of bit k
		// (multiplying by a rotation of exactly 1 is left out).
		var w [2][2]complex128
		for b := range 2 {
			for r := range 2 {
				if b == r {
					w[b][r] = c[b][k] + c[r][k+1]
				} else {
					w[b][r] = c[b][k] + c[r][k+1]*rot[b][r][k+1]
				}
			}
		}
		var best [2]float64
		for p := range 2 {
			if k == 1 && p == 1 {
				continue // the start bit is space
			}
			for r := range 2 {
				if k == dataBits && r == 0 {
					continue // the stop bit is mark
				}
				for b := range 2 {
					z := c[p][k-1]
					if p == b {
						z += w[b][r]
					} else {
						z += rot[p][b][k] * w[b][r]
					}
					if e := real(z)*real(z) + imag(z)*imag(z); e > best[b] {
						best[b] = e
					}
				}
			}
		}
		if best[1] > best[0] {
			out |= 1 << (k - 1)
		}
	}
	return out
}

// learnPhase updates the estimate of the phase step between the tones at
// their changes, from an accepted character b (correlations f): for each
// change from mark to space, the phase of the space bit's correlation
// against where a continuous-phase change would put it (the line's filters
// delay the two tones differently).
func (d *Demodulator) learnPhase(f *frame, b byte) {
	d.phases(f)
	bits := uint(b)<<1 | 1<<(frameBits-1) // start (0), data, stop (1)
	for k := 0; k+1 < frameBits; k++ {
		a, c := bits>>k&1 == 1, bits>>(k+1)&1 == 1
		if a == c {
			continue
		}
		// The phase a continuous change of tone at the start of bit k+1
		// puts between the tones: e^{∓iΔω·t}.
		var x, y, ph complex128
		if a {
			x, y, ph = f.cm[k], f.cs[k+1], f.ph[k+1]
		} else {
			x, y, ph = f.cs[k], f.cm[k+1], complex(real(f.ph[k+1]), -imag(f.ph[k+1]))
		}
		r := y * complex(real(x), -imag(x)) * ph
		if r != 0 {
			r = unit(r)
		}
		if a {
			r = complex(real(r), -imag(r)) // space after mark: the step's conjugate
		}
		d.dphi += phaseGain * (r - d.dphi)
	}
}

// renormalize keeps the oscillators on the unit circle and recomputes the
// window sums, so that rounding errors cannot build up.
func (d *Demodulator) renormalize() {
	d.oscM = unit(d.oscM)
	d.oscS = unit(d.oscS)
	d.sumM, d.sumS, d.sumP = 0, 0, 0
	for _, r := range d.ring {
		d.sumM += r.m
		d.sumS += r.s
		d.sumP += r.p
	}
}

// Demodulate decodes a whole buffer of samples at rate samples per
// second: the bytes received and what the demodulator counted. It fails
// for a mode the rate cannot carry.
func Demodulate(mode Mode, rate int, samples []float64) ([]byte, Stats, error) {
	d, err := NewDemodulator(mode, rate)
	if err != nil {
		return nil, Stats{}, err
	}
	var out []byte
	var ev []Event
	for len(samples) > 0 {
		chunk := samples[:min(len(samples), 4096)]
		samples = samples[len(chunk):]
		ev = d.Demodulate(ev[:0], chunk)
		out = appendBytes(out, ev)
	}
	out = appendBytes(out, d.Flush(ev[:0]))
	return out, d.Stats(), nil
}

func appendBytes(dst []byte, ev []Event) []byte {
	for _, e := range ev {
		if e.Kind == Byte {
			dst = append(dst, e.Byte)
		}
	}
	return dst
}

// unit returns z/|z| for z ≠ 0 (as z / complex(|z|, 0) would, without
// the cost of a complex division).
func unit(z complex128) complex128 {
	a := cmplx.Abs(z)
	return complex(real(z)/a, imag(z)/a)
}
