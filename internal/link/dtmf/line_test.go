package dtmf

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"cardlink/internal/audio/impair"
)

// bandpass filters s to 300-3400 Hz (101-tap windowed sinc), as a
// telephone channel does.
func bandpass(s []float64) []float64 {
	const taps = 101
	h := make([]float64, taps)
	for i := range h {
		m := float64(i - taps/2)
		bp := func(fc float64) float64 {
			if m == 0 {
				return 2 * fc / 8000
			}
			return math.Sin(2*math.Pi*fc*m/8000) / (math.Pi * m)
		}
		w := 0.42 - 0.5*math.Cos(2*math.Pi*float64(i)/(taps-1)) + 0.08*math.Cos(4*math.Pi*float64(i)/(taps-1))
		h[i] = (bp(3400) - bp(300)) * w
	}
	out := make([]float64, len(s))
	for i := range out {
		var v float64
		for k, c := range h {
			if j := i + k - taps/2; j >= 0 && j < len(s) {
				v += c * s[j]
			}
		}
		out[i] = v
	}
	return out
}

// mulaw passes s through G.711 µ-law companding (the continuous µ = 255
// law quantised to 8 bits), as a digital telephone network does.
func mulaw(s []float64) []float64 {
	out := make([]float64, len(s))
	for i, v := range s {
		y := math.Copysign(math.Log1p(255*math.Abs(v))/math.Log1p(255), v)
		y = math.Round(y*127) / 127
		out[i] = math.Copysign((math.Pow(256, math.Abs(y))-1)/255, y)
	}
	return out
}

// drift resamples s as if the far end's clock ran fast by ppm parts per
// million (linear interpolation).
func drift(s []float64, ppm float64) []float64 {
	step := 1 + ppm/1e6
	var out []float64
	for t := 0.0; t < float64(len(s)-1); t += step {
		i := int(t)
		f := t - float64(i)
		out = append(out, s[i]*(1-f)+s[i+1]*f)
	}
	return out
}

// TestLine: digits through a telephone channel — band limit, µ-law, a
// sample clock off by up to 1 %, 10 dB of loss and noise at 10 dB SNR —
// read exactly.
func TestLine(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const digits = "0123456789*#ABCD"
	for _, ppm := range []float64{-10000, -1000, 0, 1000, 10000} {
		for _, level := range []float64{-10, -25} {
			t.Run(fmt.Sprintf("%+gppm/%gdBFS", ppm, level), func(t *testing.T) {
				s := cat(silence(80*time.Millisecond), mustGenerate(t, digits, Params{Level: level, Tone: 50 * time.Millisecond, Pause: 50 * time.Millisecond}))
				s = drift(bandpass(s), ppm)
				s = add(s, bandNoise(rng, len(s), rmsOf(s)*math.Pow(10, -10.0/20)))
				s = mulaw(s)
				if got := Decode(s); got != digits {
					t.Fatalf("Decode = %q, want %q", got, digits)
				}
			})
		}
	}
}

// TestTalkDown: keys pressed while a prompt is playing (the IVR hears its
// own prompt's echo under the caller's tones; a hybrid's echo return loss
// is typically 10 to 20 dB): with the speech 20 dB below the tones every
// digit reads, 12 dB below at least 95 %. The figures for each
// speech-to-tone ratio, and multimon-ng's on the same mixes, are logged
// for the docs.
func TestTalkDown(t *testing.T) {
	need(t, "espeak-ng", "sox")
	dir := t.TempDir()
	sp := speech(t, dir, "en-us", 175, 50)
	_, mm := lookPath("multimon-ng")
	const digits = "159*0#2684ABCD73"
	tones := cat(silence(200*time.Millisecond), mustGenerate(t, digits, Params{Level: -15}), silence(100*time.Millisecond))
	for _, rel := range []float64{-20, -12, -6, 0} {
		var right, theirs, total int
		for start := 0; start+len(tones) <= len(sp); start += len(tones) {
			seg := sp[start : start+len(tones)]
			g := rmsOf(tones) * math.Pow(10, rel/20) / max(rmsOf(seg), 1e-9)
			mix := make([]float64, len(tones))
			for i := range mix {
				mix[i] = tones[i] + g*seg[i]
			}
			got := Decode(mix)
			right += matching(digits, got)
			total += len(digits)
			if rel <= -20 && got != digits {
				t.Errorf("speech %g dB below the tones at %v: read %q, want %q", -rel, at(int64(start)), got, digits)
			}
			if mm {
				p := filepath.Join(dir, "talkdown.wav")
				writeWAV(t, p, mix)
				theirs += matching(digits, multimon(t, p))
			}
		}
		if rel <= -12 && right*100 < total*95 {
			t.Errorf("speech %g dB below the tones: %d of %d digits right, want 95 %%", -rel, right, total)
		}
		t.Logf("speech at %+g dB relative to the tones: %d of %d digits right (multimon-ng: %d)", rel, right, total, theirs)
	}
}

// TestImpairedLine: digits through package impair's line — band limit,
// 20 dB of loss, the receiver's clock 300 ppm off, noise (SNR as impair
// measures it: over the whole buffer, pauses included, so about 3 dB
// below the tones' own) and, in one case, a 30 ms burst of noise every
// second that may cost the digit it hits but must not invent one.
func TestImpairedLine(t *testing.T) {
	const digits = "0123456789*#ABCD0123456789*#ABCD"
	s := cat(silence(100*time.Millisecond), mustGenerate(t, digits, Params{}), silence(100*time.Millisecond))
	for _, tc := range []struct {
		name string
		cfg  impair.Config
		snr  float64
	}{
		{"20 dB", impair.Config{BandLimit: true, AttenuationDB: 20, DriftPPM: 300, Seed: 1}, 20},
		{"6 dB", impair.Config{BandLimit: true, AttenuationDB: 20, DriftPPM: -300, Seed: 2}, 6},
		{"bursts", impair.Config{BandLimit: true, DriftPPM: 300, BurstEvery: time.Second, BurstLength: 30 * time.Millisecond, BurstDBFS: -10, Seed: 3}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := impair.ApplySNR(s, tc.cfg, tc.snr)
			if err != nil {
				t.Fatal(err)
			}
			read := Decode(got)
			if tc.cfg.BurstEvery == 0 {
				if read != digits {
					t.Fatalf("Decode = %q, want %q", read, digits)
				}
				return
			}
			// A burst may hide a digit; every digit read is right and in order.
			if m := matching(digits, read); m != len(read) || m < len(digits)-5 {
				t.Fatalf("Decode = %q, want %q less at most 5 digits, nothing extra", read, digits)
			}
			t.Logf("with bursts: read %d of %d digits", len(read), len(digits))
		})
	}
}
