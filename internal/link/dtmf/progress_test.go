package dtmf

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func progressOf(t *testing.T, p Progress, plan Plan, d time.Duration, level float64) []float64 {
	t.Helper()
	s, err := GenerateProgress(p, plan, d, level)
	if err != nil {
		t.Fatalf("GenerateProgress(%v, %d, %v, %g): %v", p, plan, d, level, err)
	}
	return s
}

func kinds(ev []ProgressEvent) []Progress {
	var out []Progress
	for _, e := range ev {
		out = append(out, e.Progress)
	}
	return out
}

// TestProgressRoundTrip: every tone of both plans, clean and in 20 dB
// band-limited noise, at two levels, classifies as itself, after a second
// of silence, and nothing else is reported.
func TestProgressRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, tc := range []struct {
		p    Progress
		plan Plan
	}{
		{Dial, NorthAmerica}, {Ringback, NorthAmerica}, {Busy, NorthAmerica},
		{Dial, Europe}, {Ringback, Europe}, {Busy, Europe},
		{Answer, NorthAmerica}, {AnswerPR, NorthAmerica},
	} {
		for _, level := range []float64{-13, -30} {
			for _, snr := range []float64{math.Inf(1), 20, 10} {
				t.Run(fmt.Sprintf("%v/plan%d/%gdB/snr%g", tc.p, tc.plan, level, snr), func(t *testing.T) {
					tone := progressOf(t, tc.p, tc.plan, 8*time.Second, level)
					if !math.IsInf(snr, 1) {
						tone = add(tone, bandNoise(rng, len(tone), rmsOf(tone)*math.Pow(10, -snr/20)))
					}
					s := cat(silence(1500*time.Millisecond), tone)
					ev := ClassifyProgress(s)
					want := []Progress{Silence, tc.p}
					if fmt.Sprint(kinds(ev)) != fmt.Sprint(want) {
						t.Fatalf("ClassifyProgress = %v, want %v", ev, want)
					}
					if at := ev[1].At; at < 1400*time.Millisecond || at > 2600*time.Millisecond {
						t.Errorf("%v at %v, want from 1.5 s on", tc.p, at)
					}
				})
			}
		}
	}
}

// TestProgressNotFooled: DTMF digits, speech-like chords, noise and a
// single 1000 Hz tone are "other", never a call-progress tone.
func TestProgressNotFooled(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	digits, err := Generate("0123456789*#ABCD0123456789", Params{})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string][]float64{
		"digits":  digits,
		"chords":  chords(rng, 10*8000),
		"noise":   bandNoise(rng, 10*8000, 0.1),
		"1000 Hz": pair(1000, 1000, -20, -100, 5*time.Second),
	} {
		for _, e := range ClassifyProgress(s) {
			if e.Progress != Other {
				t.Errorf("%s: heard %v at %v", name, e.Progress, e.At)
			}
		}
	}
}

// TestProgressSequence: a call as a modem hears it: dial tone, dialling
// (DTMF, too short to be "other"), ringback, then the answer tone.
func TestProgressSequence(t *testing.T) {
	s := cat(
		progressOf(t, Dial, NorthAmerica, 2*time.Second, -13),
		mustGenerate(t, "5551234", Params{}),
		silence(time.Second),
		progressOf(t, Ringback, NorthAmerica, 12*time.Second, -19),
		progressOf(t, AnswerPR, NorthAmerica, 3300*time.Millisecond, -12),
		silence(6*time.Second),
	)
	got := kinds(ClassifyProgress(s))
	want := []Progress{Dial, Ringback, AnswerPR, Silence}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ClassifyProgress = %v, want %v", got, want)
	}
}

func TestGenerateProgressErrors(t *testing.T) {
	for _, tc := range []struct {
		p     Progress
		plan  Plan
		d     time.Duration
		level float64
	}{
		{Other, NorthAmerica, time.Second, -13},
		{Dial, Plan(9), time.Second, -13},
		{Dial, NorthAmerica, -time.Second, -13},
		{Dial, NorthAmerica, time.Second, 0},
	} {
		if _, err := GenerateProgress(tc.p, tc.plan, tc.d, tc.level); err == nil {
			t.Errorf("GenerateProgress(%v, %d, %v, %g) succeeded", tc.p, tc.plan, tc.d, tc.level)
		}
	}
}

// TestAnswerAlignment: phase reversals are seen wherever they fall in the
// analysis frames, and a plain answer tone never shows one.
func TestAnswerAlignment(t *testing.T) {
	for _, p := range []Progress{Answer, AnswerPR} {
		tone := progressOf(t, p, NorthAmerica, 3*time.Second, -20)
		for off := 0; off < frameLen; off += 23 {
			s := cat(make([]float64, 8000+off), tone)
			if got := kinds(ClassifyProgress(s)); fmt.Sprint(got) != fmt.Sprint([]Progress{Silence, p}) {
				t.Errorf("%v after %d samples: %v", p, 8000+off, got)
			}
		}
	}
}

// TestProgressSpeech: a voice answering is "other", never a tone, clean
// and over a noisy line.
func TestProgressSpeech(t *testing.T) {
	need(t, "espeak-ng", "sox")
	rng := rand.New(rand.NewPCG(17, 18))
	for _, v := range []string{"en-us", "de", "fr+f3"} {
		sp := speech(t, t.TempDir(), v, 160, 50)
		noisy := add(sp, bandNoise(rng, len(sp), rmsOf(sp)*0.1))
		for name, s := range map[string][]float64{"clean": sp, "20 dB SNR": noisy} {
			for _, e := range ClassifyProgress(s) {
				if e.Progress != Other && e.Progress != Silence {
					t.Errorf("%s speech, %s: heard %v at %v", v, name, e.Progress, e.At)
				}
			}
		}
	}
}
