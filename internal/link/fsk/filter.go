package fsk

import "math"

// biquad is a second-order IIR section (direct form I), from the RBJ
// audio-EQ cookbook's low- and high-pass designs.
type biquad struct {
	b0, b1, b2, a1, a2 float64
	x1, x2, y1, y2     float64
}

func newBiquad(highPass bool, f0, q float64, rate int) biquad {
	w := 2 * math.Pi * f0 / float64(rate)
	cw, alpha := math.Cos(w), math.Sin(w)/(2*q)
	a0 := 1 + alpha
	var b0, b1 float64
	if highPass {
		b0, b1 = (1+cw)/2, -(1 + cw)
	} else {
		b0, b1 = (1-cw)/2, 1-cw
	}
	return biquad{b0: b0 / a0, b1: b1 / a0, b2: b0 / a0, a1: -2 * cw / a0, a2: (1 - alpha) / a0}
}

func (q *biquad) next(x float64) float64 {
	y := q.b0*x + q.b1*q.x1 + q.b2*q.x2 - q.a1*q.y1 - q.a2*q.y2
	q.x2, q.x1 = q.x1, x
	q.y2, q.y1 = q.y1, y
	return y
}

// butterworth4Q are the section Qs of a 4th-order Butterworth filter.
var butterworth4Q = [2]float64{0.5411961, 1.3065630}

// newHighPass returns a 4th-order Butterworth high-pass at lo.
func newHighPass(lo float64, rate int) filter {
	return filter{newBiquad(true, lo, butterworth4Q[0], rate), newBiquad(true, lo, butterworth4Q[1], rate)}
}

// filter is a 4th-order filter: a cascade of two biquads (a fixed size,
// so that next compiles to straight-line code).
type filter [2]biquad

func (f *filter) next(x float64) float64 {
	return f[1].next(f[0].next(x))
}
