package ivr

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os/exec"
	"sync"

	"cardlink/internal/audio"
)

// Voice turns a prompt's text into 8 kHz audio (samples in [-1, 1]).
// Implementations must be safe for concurrent use.
type Voice interface {
	Say(ctx context.Context, text string) ([]float64, error)
}

// ErrNoSpeech is returned by NewSpeech when espeak-ng or sox is missing.
var ErrNoSpeech = errors.New("ivr: espeak-ng and sox are needed for spoken prompts")

// Speech speaks prompts with espeak-ng, resampled to 8 kHz by sox, and
// keeps every prompt it rendered (an IVR says the same few sentences all
// day; amounts vary, but a cache entry is a few seconds of audio).
type Speech struct {
	espeak, sox string
	voice       string
	wpm         int

	mu    sync.Mutex
	cache map[string][]float64
}

// NewSpeech finds espeak-ng and sox on PATH; voice is an espeak-ng voice
// name ("" for en-us), wpm the speed (0 for 150 words a minute). It
// returns ErrNoSpeech when either program is missing.
func NewSpeech(voice string, wpm int) (*Speech, error) {
	e, err1 := exec.LookPath("espeak-ng")
	s, err2 := exec.LookPath("sox")
	if err1 != nil || err2 != nil {
		return nil, ErrNoSpeech
	}
	if voice == "" {
		voice = "en-us"
	}
	if wpm == 0 {
		wpm = 150
	}
	return &Speech{espeak: e, sox: s, voice: voice, wpm: wpm, cache: map[string][]float64{}}, nil
}

// Say renders text (rendering each text once; concurrent first calls may
// both render it). The audio is scaled to a peak of -6 dBFS.
func (sp *Speech) Say(ctx context.Context, text string) ([]float64, error) {
	sp.mu.Lock()
	a, ok := sp.cache[text]
	sp.mu.Unlock()
	if ok {
		return a, nil
	}
	// espeak-ng writes a WAV at 22050 Hz to standard output; sox reads it
	// from its standard input and writes 8 kHz 16-bit mono.
	tts := exec.CommandContext(ctx, sp.espeak, "-v", sp.voice, "-s", fmt.Sprint(sp.wpm), "--stdout", "--", text)
	// Raw samples out: a WAV header written to a pipe cannot give the
	// length.
	rs := exec.CommandContext(ctx, sp.sox, "-q", "-t", "wav", "-", "-t", "raw", "-e", "signed", "-b", "16", "-L", "-r", "8000", "-c", "1", "-")
	pipe, err := tts.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("speaking %q: %w", text, err)
	}
	rs.Stdin = pipe
	var out, ttsErr, soxErr bytes.Buffer
	rs.Stdout, rs.Stderr, tts.Stderr = &out, &soxErr, &ttsErr
	if err := rs.Start(); err != nil {
		return nil, fmt.Errorf("speaking %q: starting sox: %w", text, err)
	}
	if err := tts.Run(); err != nil {
		rs.Wait()
		return nil, fmt.Errorf("speaking %q: espeak-ng: %w: %s", text, err, bytes.TrimSpace(ttsErr.Bytes()))
	}
	if err := rs.Wait(); err != nil {
		return nil, fmt.Errorf("speaking %q: sox: %w: %s", text, err, bytes.TrimSpace(soxErr.Bytes()))
	}
	raw := out.Bytes()
	if len(raw) < 2 {
		return nil, fmt.Errorf("speaking %q: no audio from espeak-ng", text)
	}
	a = make([]float64, len(raw)/2)
	for i := range a {
		a[i] = audio.FromInt16(int16(binary.LittleEndian.Uint16(raw[2*i:])))
	}
	normalize(a, 0.5)
	sp.mu.Lock()
	sp.cache[text] = a
	sp.mu.Unlock()
	return a, nil
}

// normalize scales a so that its peak is peak (silence stays silent).
func normalize(a []float64, peak float64) {
	m := 0.0
	for _, v := range a {
		m = max(m, math.Abs(v))
	}
	if m == 0 {
		return
	}
	for i := range a {
		a[i] *= peak / m
	}
}

// Tones is the Voice for hosts without espeak-ng: each prompt text is a
// distinct pattern of four single-frequency beeps chosen by a hash of the
// text (single tones, so that no prompt can read as a DTMF key), followed
// by 300 ms of silence. It tells prompts apart, not what they say.
type Tones struct{}

// toneSteps are the beeps' frequencies: a pentatonic scale well inside
// the telephone band.
var toneSteps = [...]float64{523.25, 587.33, 659.26, 783.99, 880, 1046.5}

// Say returns text's pattern; it never fails.
func (Tones) Say(_ context.Context, text string) ([]float64, error) {
	h := fnv.New32a()
	h.Write([]byte(text))
	v := h.Sum32()
	const beep, gap = 1200, 400 // 150 ms, 50 ms
	var a []float64
	for range 4 {
		f := toneSteps[v%uint32(len(toneSteps))]
		v /= uint32(len(toneSteps))
		for n := range beep {
			// 5 ms raised-cosine ramps keep the beeps' spectrum narrow.
			env := min(1, float64(n)/40, float64(beep-1-n)/40)
			env = 0.5 - 0.5*math.Cos(math.Pi*env)
			a = append(a, 0.3*env*math.Sin(2*math.Pi*f*float64(n)/audio.Rate))
		}
		a = append(a, make([]float64, gap)...)
	}
	return append(a, make([]float64, 2400)...), nil
}

// DefaultVoice is Speech (en-us) when espeak-ng and sox are installed,
// else Tones.
func DefaultVoice() Voice {
	if sp, err := NewSpeech("", 0); err == nil {
		return sp
	}
	return Tones{}
}
