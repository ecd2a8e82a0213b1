package dtmf

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"cardlink/internal/audio"
)

func mustGenerate(t testing.TB, digits string, p Params) []float64 {
	t.Helper()
	s, err := Generate(digits, p)
	if err != nil {
		t.Fatalf("Generate(%q, %+v): %v", digits, p, err)
	}
	return s
}

func silence(d time.Duration) []float64 { return make([]float64, samples(d)) }

func cat(parts ...[]float64) []float64 {
	var out []float64
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// pair is one tone of two sines at the given frequencies and levels (dBFS).
func pair(f1, f2, l1, l2 float64, d time.Duration) []float64 {
	return appendTones(nil, samples(d), []float64{f1, f2}, []float64{amplitude(l1), amplitude(l2)})
}

// bandNoise returns n samples of Gaussian noise band-limited to
// 300-3400 Hz (a windowed-sinc FIR), scaled to an RMS of rms.
func bandNoise(rng *rand.Rand, n int, rms float64) []float64 {
	const taps = 101
	h := make([]float64, taps)
	for i := range h {
		m := float64(i - taps/2)
		bp := func(fc float64) float64 {
			if m == 0 {
				return 2 * fc / audio.Rate
			}
			return math.Sin(2*math.Pi*fc*m/audio.Rate) / (math.Pi * m)
		}
		w := 0.42 - 0.5*math.Cos(2*math.Pi*float64(i)/(taps-1)) + 0.08*math.Cos(4*math.Pi*float64(i)/(taps-1))
		h[i] = (bp(3400) - bp(300)) * w
	}
	white := make([]float64, n+taps)
	for i := range white {
		white[i] = rng.NormFloat64()
	}
	out := make([]float64, n)
	var p float64
	for i := range out {
		var v float64
		for k, c := range h {
			v += c * white[i+k]
		}
		out[i] = v
		p += v * v
	}
	g := rms / math.Sqrt(p/float64(n))
	for i := range out {
		out[i] *= g
	}
	return out
}

// rmsOf returns the RMS of the non-silent samples (the tones only).
func rmsOf(s []float64) float64 {
	var p float64
	var n int
	for _, v := range s {
		if v != 0 {
			p += v * v
			n++
		}
	}
	return math.Sqrt(p / float64(max(n, 1)))
}

func add(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

func keys(ds []Digit) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteByte(d.Key)
	}
	return b.String()
}

func TestAllDigits(t *testing.T) {
	s := cat(silence(100*time.Millisecond), mustGenerate(t, Digits, Params{}))
	ds := Detect(s, Config{})
	if got := keys(ds); got != Digits {
		t.Fatalf("Detect(Generate(%q)) = %q", Digits, got)
	}
	// Each digit starts 140 ms after the previous one, after 100 ms of silence;
	// a digit's time is the start of its first window, which may reach
	// into the silence before it by up to half a window.
	for i, d := range ds {
		want := 100*time.Millisecond + time.Duration(i)*140*time.Millisecond
		if d.At < want-7*time.Millisecond || d.At > want+7*time.Millisecond {
			t.Errorf("digit %d (%c) at %v, want %v ± 7 ms", i, d.Key, d.At, want)
		}
	}
}

func TestLowerCaseLetters(t *testing.T) {
	if got := Decode(mustGenerate(t, "abcd", Params{})); got != "ABCD" {
		t.Fatalf("Decode(Generate(abcd)) = %q, want ABCD", got)
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		digits string
		p      Params
	}{
		{"bad digit", "12E", Params{}},
		{"space", "1 2", Params{}},
		{"short tone", "1", Params{Tone: 5 * time.Millisecond}},
		{"long pause", "1", Params{Pause: time.Minute}},
		{"clipping", "1", Params{Level: -3}},
		{"clipping twist", "1", Params{Level: -7, Twist: 4}},
		{"too quiet", "1", Params{Level: -80}},
		{"huge twist", "1", Params{Level: -40, Twist: 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Generate(tc.digits, tc.p); err == nil {
				t.Fatalf("Generate(%q, %+v) succeeded", tc.digits, tc.p)
			}
		})
	}
}

// TestSameDigitTwice: one digit per tone, also for a repeated key, and a
// short interruption inside a tone is bridged (Q.24: 10 ms).
func TestSameDigitTwice(t *testing.T) {
	tone := func(d time.Duration) []float64 { return pair(697, 1209, -10, -10, d) }
	for _, tc := range []struct {
		name string
		s    []float64
		want string
	}{
		{"40ms pause", cat(tone(60*time.Millisecond), silence(40*time.Millisecond), tone(60*time.Millisecond)), "11"},
		{"long tone", tone(2 * time.Second), "1"},
		{"10ms break", cat(tone(80*time.Millisecond), silence(10*time.Millisecond), tone(80*time.Millisecond)), "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cat(silence(30*time.Millisecond), tc.s, silence(100*time.Millisecond))
			for off := range 6 { // every alignment with the windows
				got := Decode(s[off*hop/6:])
				if got != tc.want {
					t.Fatalf("offset %d: Decode = %q, want %q", off*hop/6, got, tc.want)
				}
			}
		})
	}
}

// TestDuration checks Q.24's timing: 40 ms tones are found in every
// alignment, tones under 23 ms never.
func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{20 * time.Millisecond, ""},
		{23 * time.Millisecond, ""},
		{40 * time.Millisecond, "5"},
		{45 * time.Millisecond, "5"},
	} {
		for off := range 8 {
			s := cat(silence(20*time.Millisecond+time.Duration(off)*time.Millisecond), pair(770, 1336, -10, -10, tc.d), silence(60*time.Millisecond))
			if got := Decode(s); got != tc.want {
				t.Errorf("%v tone at offset %d ms: Decode = %q, want %q", tc.d, off, got, tc.want)
			}
		}
	}
}

// TestFrequencyTolerance: Q.24 operation within ±1.5 %, none beyond ±3.5 %.
func TestFrequencyTolerance(t *testing.T) {
	for _, dev := range []float64{-0.05, -0.035, -0.015, 0, 0.015, 0.035, 0.05} {
		for i := range len(Digits) {
			lo, hi, _ := Frequencies(Digits[i])
			want := string(Digits[i])
			if math.Abs(dev) > 0.02 {
				want = ""
			}
			// Deviate each group alone and both together.
			for _, f := range [][2]float64{{lo * (1 + dev), hi}, {lo, hi * (1 + dev)}, {lo * (1 + dev), hi * (1 + dev)}} {
				s := cat(silence(20*time.Millisecond), pair(f[0], f[1], -10, -10, 60*time.Millisecond), silence(60*time.Millisecond))
				if got := Decode(s); got != want {
					t.Errorf("%.1f+%.1f Hz (%+.1f%% from %c): Decode = %q, want %q", f[0], f[1], dev*100, Digits[i], got, want)
				}
			}
		}
	}
}

// TestTwist: the high group may be up to 4 dB stronger, the low group up
// to 8 dB (Q.24); 2 dB beyond, nothing.
func TestTwist(t *testing.T) {
	for _, tc := range []struct {
		twist float64 // high minus low, dB
		ok    bool
	}{
		{-12, false}, {-10, false}, {-8, true}, {-4, true}, {0, true}, {4, true}, {6, false}, {8, false},
	} {
		for i := range len(Digits) {
			lo, hi, _ := Frequencies(Digits[i])
			want := string(Digits[i])
			if !tc.ok {
				want = ""
			}
			s := cat(silence(20*time.Millisecond), pair(lo, hi, -12-max(tc.twist, 0), -12+min(tc.twist, 0), 60*time.Millisecond), silence(60*time.Millisecond))
			if got := Decode(s); got != want {
				t.Errorf("%c with twist %+g dB: Decode = %q, want %q", Digits[i], tc.twist, got, want)
			}
		}
	}
}

// TestLevel: digits are found from full scale down to -33 dBFS per tone,
// not below -40 dBFS.
func TestLevel(t *testing.T) {
	for _, tc := range []struct {
		level float64
		want  string
	}{{-7, "0#D"}, {-20, "0#D"}, {-33, "0#D"}, {-40, ""}, {-50, ""}} {
		if got := Decode(mustGenerate(t, "0#D", Params{Level: tc.level})); got != tc.want {
			t.Errorf("level %g dBFS: Decode = %q, want %q", tc.level, got, tc.want)
		}
	}
}

// TestThirdTone: a third tone as strong as the digit's two together is not
// a digit (its energy is "others"), nor are two tones of one group.
func TestThirdTone(t *testing.T) {
	n := samples(60 * time.Millisecond)
	three := appendTones(nil, n, []float64{697, 1209, 1800}, []float64{0.2, 0.2, 0.2 * math.Sqrt2})
	rows := appendTones(nil, n, []float64{697, 852, 1209}, []float64{0.2, 0.2, 0.2})
	for name, s := range map[string][]float64{"third tone": three, "two rows": rows} {
		if got := Decode(cat(silence(20*time.Millisecond), s, silence(60*time.Millisecond))); got != "" {
			t.Errorf("%s: Decode = %q, want nothing", name, got)
		}
	}
}

// TestNoise: digits in noise band-limited to 300-3400 Hz at a realistic
// SNR (the tones' power over the noise's) come out exactly, at various
// levels; and noise alone yields nothing.
func TestNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const digits = "0123456789*#ABCD"
	for _, level := range []float64{-10, -25} {
		for _, snr := range []float64{20, 12, 6, 4} {
			t.Run(fmt.Sprintf("level%g/snr%g", level, snr), func(t *testing.T) {
				sig := cat(silence(50*time.Millisecond), mustGenerate(t, digits, Params{Level: level}))
				noise := bandNoise(rng, len(sig), rmsOf(sig)*math.Pow(10, -snr/20))
				if got := Decode(add(sig, noise)); got != digits {
					t.Errorf("Decode = %q, want %q", got, digits)
				}
			})
		}
	}
	if got := Decode(bandNoise(rng, 10*audio.Rate, 0.3)); got != "" {
		t.Errorf("Decode(10 s of noise) = %q, want nothing", got)
	}
}

// TestChunks: feeding the stream in pieces of any size gives the same
// digits at the same times as feeding it whole.
func TestChunks(t *testing.T) {
	s := mustGenerate(t, "147*2580369#", Params{Tone: 45 * time.Millisecond, Pause: 45 * time.Millisecond})
	want := Detect(s, Config{})
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		d := NewDetector(Config{})
		var got []Digit
		for rest := s; len(rest) > 0; {
			n := min(len(rest), rng.IntN(300))
			got = append(got, d.Process(rest[:n])...)
			rest = rest[n:]
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("in chunks: %v, whole: %v", got, want)
		}
	}
	d := NewDetector(Config{})
	d.Process(s)
	d.Reset()
	if got := d.Process(s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after Reset: %v, want %v", got, want)
	}
}

// TestLatency: fed 10 ms at a time, as an IVR hears a call, a digit is
// returned by the chunk that completes 40 ms of its tone, whatever the
// alignment, so that a menu can react while the key is still held.
func TestLatency(t *testing.T) {
	const chunk = 80 // 10 ms
	for lead := 0; lead < 2*hop; lead += 7 {
		tone := pair(941, 1336, -10, -10, 200*time.Millisecond)
		s := cat(make([]float64, 400+lead), tone)
		d := NewDetector(Config{})
		var got []Digit
		fed := 0
		for fed < len(s) && len(got) == 0 {
			n := min(chunk, len(s)-fed)
			got = d.Process(s[fed : fed+n])
			fed += n
		}
		if len(got) != 1 || got[0].Key != '0' {
			t.Fatalf("lead %d: got %v, want one 0", lead, got)
		}
		if heard := fed - (400 + lead); heard > 320+chunk-1 {
			t.Errorf("lead %d: digit returned after %v of tone, want by 40 ms (+ one chunk)", lead, at(int64(heard)))
		}
	}
}
