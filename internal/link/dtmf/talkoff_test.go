package dtmf

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"cardlink/internal/audio"
)

// talkText is read aloud for the talk-off test: an IVR's own prompts (the
// speech most likely to reach its receiver) and ordinary prose.
const talkText = `Welcome to cardlink. To pay your bill, press one. To hear your balance,
press two. To speak to an operator, press zero, or stay on the line.
Please insert your card into the device, and enter your personal
identification number, followed by the hash key.

The quick brown fox jumps over the lazy dog. She sells sea shells by the
sea shore, and the shells she sells are surely sea shells. Peter Piper
picked a peck of pickled peppers; how many pickled peppers did Peter Piper
pick? Eleven benevolent elephants, seventy seven singing sailors, and a
whistling kettle on a Tuesday morning in early November.`

// speech returns talkText spoken by espeak-ng with voice v at words per
// minute wpm and pitch, resampled to 8 kHz by sox.
func speech(t testing.TB, dir, v string, wpm, pitch int) []float64 {
	t.Helper()
	raw := filepath.Join(dir, "speech.wav")
	run(t, "espeak-ng", "-v", v, "-s", fmt.Sprint(wpm), "-p", fmt.Sprint(pitch), "-w", raw, talkText)
	narrow := filepath.Join(dir, "speech8k.wav")
	run(t, "sox", raw, "-r", "8000", "-b", "16", narrow, "sinc", "300-3400", "norm", "-3")
	return readWAV(t, narrow)
}

// TestTalkOff: speech in several voices, speeds and pitches must not read
// as a single digit. multimon-ng's count on the same files is logged for
// comparison.
func TestTalkOff(t *testing.T) {
	need(t, "espeak-ng", "sox")
	_, haveMultimon := lookPath("multimon-ng")
	var total time.Duration
	for _, tc := range []struct {
		voice      string
		wpm, pitch int
	}{
		{"en", 175, 50},
		{"en-us", 120, 30},
		{"en-us+f3", 220, 70},
		{"en+m3", 160, 20},
		{"de", 175, 60},
		{"fr", 200, 50},
		{"en+f4", 300, 99},
		{"it", 140, 54},
		{"es", 200, 60},
		{"nl", 140, 54},
		{"pl", 200, 60},
		{"en+f2", 140, 54},
		{"en-gb", 200, 60},
		{"sv", 140, 54},
	} {
		t.Run(fmt.Sprintf("%s/%dwpm/pitch%d", tc.voice, tc.wpm, tc.pitch), func(t *testing.T) {
			dir := t.TempDir()
			s := speech(t, dir, tc.voice, tc.wpm, tc.pitch)
			total += at(int64(len(s)))
			if ds := Detect(s, Config{}); len(ds) != 0 {
				t.Errorf("%v of speech read as %d digits: %v", at(int64(len(s))), len(ds), ds)
			}
			// The control: the same speech with digits between its halves
			// reads as exactly those digits.
			const digits = "15#9"
			mixed := cat(s[:len(s)/2], mustGenerate(t, digits, Params{Level: -20}), s[len(s)/2:])
			if got := Decode(mixed); got != digits {
				t.Errorf("speech with %q in the middle read as %q", digits, got)
			}
			if haveMultimon {
				t.Logf("multimon-ng reads %q in the same %v", multimon(t, filepath.Join(dir, "speech8k.wav")), at(int64(len(s))))
			}
		})
	}
	t.Logf("%v of speech in all", total)
}

// TestMusicAndNoise: chords of harmonic notes (equal temperament puts F5
// and F#6 within 0.3 % of 697 and 1477 Hz), sweeps, clicks and noise must
// not read as digits either. multimon-ng's count is logged.
func TestMusicAndNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	n := 30 * audio.Rate
	for name, s := range map[string][]float64{
		"chords":      chords(rng, n),
		"white noise": whiteNoise(rng, n, 0.3),
		"band noise":  bandNoise(rng, n, 0.2),
		"sweeps":      sweeps(n),
		"clicks":      clicks(rng, n),
	} {
		if ds := Detect(s, Config{}); len(ds) != 0 {
			t.Errorf("%s: read as %d digits: %v", name, len(ds), ds)
		}
		if _, ok := lookPath("multimon-ng"); ok {
			p := filepath.Join(t.TempDir(), "music.wav")
			writeWAV(t, p, s)
			t.Logf("%s: multimon-ng reads %d digits", name, len(multimon(t, p)))
		}
	}
}

// chords returns n samples of random three- and four-note chords from the
// equal-tempered scale (A4 = 440 Hz, C4 to C7), each note with five
// harmonics falling as 1/k, changing every 150 to 600 ms.
func chords(rng *rand.Rand, n int) []float64 {
	out := make([]float64, 0, n)
	for len(out) < n {
		notes := 3 + rng.IntN(2)
		var freqs, amps []float64
		for range notes {
			f := 440 * math.Pow(2, float64(rng.IntN(37)-9)/12)
			for k := 1; k <= 5 && f*float64(k) < 3800; k++ {
				freqs = append(freqs, f*float64(k))
				amps = append(amps, 0.25/float64(notes*k))
			}
		}
		out = appendTones(out, min(samples(time.Duration(150+rng.IntN(450))*time.Millisecond), n-len(out)), freqs, amps)
	}
	return out
}

func whiteNoise(rng *rand.Rand, n int, rms float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = rms * rng.NormFloat64()
	}
	return out
}

// sweeps returns a tone gliding up and down across the band with its
// second and third harmonics (a whistle), passing every DTMF frequency
// slowly. (Two steady tones at a digit's frequencies are a digit by
// definition, so only one glides.)
func sweeps(n int) []float64 {
	out := make([]float64, n)
	var p float64
	for i := range out {
		x := float64(i%(4*audio.Rate)) / (2 * audio.Rate) // 4 s up and down
		if x > 1 {
			x = 2 - x
		}
		p += 2 * math.Pi * (300 + 1500*x) / audio.Rate
		out[i] = 0.4*math.Sin(p) + 0.2*math.Sin(2*p) + 0.1*math.Sin(3*p)
	}
	return out
}

func clicks(rng *rand.Rand, n int) []float64 {
	out := make([]float64, n)
	for i := 0; i < n; i += 200 + rng.IntN(2000) {
		out[i] = 2*rng.Float64() - 1
	}
	return out
}
