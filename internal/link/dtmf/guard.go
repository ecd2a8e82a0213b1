package dtmf

import (
	"math"
	"math/cmplx"

	"cardlink/internal/audio"
)

// The guard spectrum: a Hann-windowed window, zero-padded to fftLen,
// whose strongest bin away from the two tones is the "others" that speech
// and music show as harmonics and steady noise does not (its power is
// spread over every bin).
const (
	fftLen = 128 // bins of 62.5 Hz
	// guardLo and guardHi bound the bins searched: 250 to 3750 Hz.
	guardLo = 4
	guardHi = 60
	// guardSkip bins each side of a tone belong to it: the Hann main lobe
	// of a 102-sample window is ±157 Hz, and the tone may be 3.5 % off.
	guardSkip = 3
)

var (
	hann102 = func() (w [winLen]float64) {
		for n := range w {
			w[n] = 0.5 - 0.5*math.Cos(2*math.Pi*(float64(n)+0.5)/winLen)
		}
		return w
	}()
	// twiddle[k] is e^{-2πjk/fftLen}.
	twiddle = func() (t [fftLen / 2]complex128) {
		for k := range t {
			t[k] = cmplx.Exp(complex(0, -2*math.Pi*float64(k)/fftLen))
		}
		return t
	}()
	bitrev = func() (r [fftLen]int) {
		for i := range r {
			for b, v := 0, i; b < 7; b++ {
				r[i] = r[i]<<1 | v&1
				v >>= 1
			}
		}
		return r
	}()
)

// guardPeak returns the power of the strongest bin of the windowed
// spectrum of x outside the bins of frequencies f1 and f2, and the power
// of the bins of f1 and f2 themselves (the larger of each tone's nearest
// two), on one scale.
func guardPeak(x *[winLen]float64, f1, f2 float64) (others, p1, p2 float64) {
	var a [fftLen]complex128
	for n, v := range x {
		a[bitrev[n]] = complex(v*hann102[n], 0)
	}
	for size := 2; size <= fftLen; size <<= 1 {
		half, step := size/2, fftLen/size
		for start := 0; start < fftLen; start += size {
			for k := range half {
				t := twiddle[k*step] * a[start+k+half]
				a[start+k+half] = a[start+k] - t
				a[start+k] += t
			}
		}
	}
	bin := func(f float64) float64 { return f * fftLen / audio.Rate }
	b1, b2 := bin(f1), bin(f2)
	pw := func(k int) float64 { return real(a[k])*real(a[k]) + imag(a[k])*imag(a[k]) }
	for k := guardLo; k <= guardHi; k++ {
		fk := float64(k)
		if math.Abs(fk-b1) <= guardSkip || math.Abs(fk-b2) <= guardSkip {
			continue
		}
		others = max(others, pw(k))
	}
	near := func(b float64) float64 {
		k := int(b)
		return max(pw(k), pw(k+1))
	}
	return others, near(b1), near(b2)
}
