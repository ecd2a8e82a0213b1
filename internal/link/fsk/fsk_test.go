package fsk

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

func randomBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// receive runs samples through a Demodulator in chunks of random sizes
// (up to max) and returns the bytes and all events.
func receive(t *testing.T, mode Mode, rate int, samples []float64, r *rand.Rand, maxChunk int) ([]byte, []Event) {
	t.Helper()
	d, err := NewDemodulator(mode, rate)
	if err != nil {
		t.Fatalf("NewDemodulator(%v, %d): %v", mode, rate, err)
	}
	var ev []Event
	for len(samples) > 0 {
		n := min(len(samples), 1+r.IntN(maxChunk))
		ev = d.Demodulate(ev, samples[:n])
		samples = samples[n:]
	}
	ev = d.Flush(ev)
	return appendBytes(nil, ev), ev
}

func TestParseMode(t *testing.T) {
	for _, m := range Modes {
		got, err := ParseMode(m.Name)
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v, want %v", m.Name, got, err, m)
		}
	}
	if got, err := ParseMode("V23"); err != nil || got != V23 {
		t.Errorf("ParseMode(\"V23\") = %v, %v, want V.23", got, err)
	}
	if _, err := ParseMode("2400"); err == nil {
		t.Error("ParseMode(\"2400\") succeeded")
	}
}

func TestBadParameters(t *testing.T) {
	for _, c := range []struct {
		name string
		mode Mode
		rate int
	}{
		{"rate too low", Bell202, 500},
		{"baud above rate/4", Bell202, 4000},
		{"tone above Nyquist", Mode{Baud: 300, Mark: 5000, Space: 5200}, 8000},
		{"tones too close", Mode{Baud: 300, Mark: 1000, Space: 1100}, 8000},
		{"zero mode", Mode{}, 8000},
		{"NaN baud", Mode{Baud: math.NaN(), Mark: 1200, Space: 2200}, 8000},
	} {
		if _, err := NewDemodulator(c.mode, c.rate); err == nil {
			t.Errorf("%s: NewDemodulator(%v, %d) succeeded", c.name, c.mode, c.rate)
		}
		if _, err := NewModulator(c.mode, c.rate, 0.5); err == nil {
			t.Errorf("%s: NewModulator(%v, %d) succeeded", c.name, c.mode, c.rate)
		}
	}
	for _, a := range []float64{0, -0.1, 1.5, math.NaN()} {
		if _, err := NewModulator(Bell202, 8000, a); err == nil {
			t.Errorf("NewModulator(amplitude %v) succeeded", a)
		}
	}
}

// TestModulatorTones checks the transmitted waveform against the mode: the
// number of samples per bit and the frequency of each tone, measured by
// counting zero crossings, with no phase jumps between bits.
func TestModulatorTones(t *testing.T) {
	for _, m := range Modes {
		mod, err := NewModulator(m, audio.Rate, 1)
		if err != nil {
			t.Fatal(err)
		}
		bits := int(m.Baud) // one second
		var s []float64
		for i := range bits {
			s = mod.AppendBit(s, i < bits/2)
		}
		if len(s) != audio.Rate {
			t.Errorf("%s: %d bits took %d samples, want %d", m.Name, bits, len(s), audio.Rate)
		}
		for half, want := range []float64{m.Mark, m.Space} {
			part := s[half*len(s)/2 : (half+1)*len(s)/2]
			var crossings int
			for i := 1; i < len(part); i++ {
				if (part[i-1] < 0) != (part[i] < 0) {
					crossings++
				}
			}
			if got := float64(crossings); math.Abs(got-want) > 2 { // half a second: 2·f/2 crossings
				t.Errorf("%s: %v crossings in half a second, want about %v", m.Name, got, want)
			}
		}
		// Continuous phase: no step larger than the faster tone's.
		maxStep := 2*math.Pi*max(m.Mark, m.Space)/audio.Rate + 1e-9
		for i := 1; i < len(s); i++ {
			if d := math.Abs(s[i] - s[i-1]); d > maxStep {
				t.Fatalf("%s: step of %v at sample %d, more than %v", m.Name, d, i, maxStep)
			}
		}
	}
}

func TestRoundTripClean(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, m := range Modes {
		data := append(append([]byte{}, all...), randomBytes(r, 100)...)
		if m.Baud < 100 {
			data = data[:64]
		}
		sig := Modulate(m, data)
		got, ev := receive(t, m, audio.Rate, sig, r, 5000)
		if !bytes.Equal(got, data) {
			t.Errorf("%s: received %d bytes, %d byte errors", m.Name, len(got), editDistance(data, got))
		}
		if len(ev) < 2 || ev[0].Kind != CarrierUp || ev[len(ev)-1].Kind != CarrierDown {
			t.Errorf("%s: events do not start with carrier up and end with carrier down: %v ... %v", m.Name, ev[0], ev[len(ev)-1])
		}
		whole, st, err := Demodulate(m, audio.Rate, sig)
		if err != nil || !bytes.Equal(whole, data) || st.Bytes != len(data) || st.FramingErrors != 0 || st.Carriers != 1 {
			t.Errorf("%s: Demodulate = %d bytes, %+v, %v; want %d bytes, one carrier, no errors", m.Name, len(whole), st, err, len(data))
		}
	}
}

// TestOtherRates receives at sample rates other than 8 kHz, as WAV files
// from other programs come.
func TestOtherRates(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 9))
	for _, rate := range []int{11025, 44100, 48000} {
		for _, m := range []Mode{Bell202, Bell103} {
			data := randomBytes(r, 50)
			mod, err := NewModulator(m, rate, 0.3)
			if err != nil {
				t.Fatal(err)
			}
			s := mod.AppendIdle(nil, 20)
			s = mod.AppendBytes(s, data)
			s = mod.AppendIdle(s, 4)
			got, _, err := Demodulate(m, rate, s)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s at %d Hz: %d byte errors, %v", m.Name, rate, editDistance(data, got), err)
			}
		}
	}
}

// targetSNR is the in-band SNR at which each mode must be byte-exact over
// 4096 random bytes (the goals of issue 7).
func targetSNR(m Mode) float64 {
	switch m.Baud {
	case 1200:
		if m == Bell202 {
			return 10
		}
		return 12
	}
	return 6
}

// TestProperty sends random bytes through random lines — level from −30
// to 0 dBFS, band-limited or not, sample-clock drift up to ±0.5 %, noise
// 6 dB above each mode's goal — and wants the same bytes out.
func TestProperty(t *testing.T) {
	cases := 200
	if testing.Short() {
		cases = 10
	}
	for i := range cases {
		r := rand.New(rand.NewPCG(2026, uint64(i))) // each case alone reproduces
		m := Modes[r.IntN(len(Modes))]
		n := 40 + r.IntN(160)
		if m.Baud < 100 {
			n = 10 + r.IntN(20)
		}
		data := randomBytes(r, n)
		cfg := impair.Config{
			BandLimit:     r.IntN(2) == 0,
			AttenuationDB: 30 * r.Float64(),
			DriftPPM:      (2*r.Float64() - 1) * 5000,
			Seed:          r.Uint64(),
		}
		snr := targetSNR(m) + 6
		name := fmt.Sprintf("%d/%s/%.0fdB/%+.0fppm/band=%v", i, m.Name, -cfg.AttenuationDB, cfg.DriftPPM, cfg.BandLimit)
		t.Run(name, func(t *testing.T) {
			tx := Modulate(m, data)
			// The transmitter's level is −9 dBFS: attenuate to −9−A.
			level := impair.DBFS(impair.BandPower(tx)) - cfg.AttenuationDB
			cfg.NoiseDBFS = level - snr
			line, err := impair.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Silence with line noise before and after the call.
			var rx []float64
			rx = append(rx, line.Process(make([]float64, r.IntN(4000)))...)
			rx = append(rx, line.Process(tx)...)
			rx = append(rx, line.Process(make([]float64, 2000))...)
			got, _ := receive(t, m, audio.Rate, rx, r, 3000)
			if !bytes.Equal(got, data) {
				t.Errorf("received %d of %d bytes, %d byte errors", len(got), len(data), editDistance(data, got))
			}
		})
	}
}

// TestLevelChange: the level falls by 20 dB, then rises by 26 dB, each
// within 50 ms, in the middle of a transmission; and it steps by 6 dB
// down and up.
func TestLevelChange(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	ramp := 0.05 * audio.Rate
	for _, m := range []Mode{Bell202, V23, Bell103, V21} {
		data := randomBytes(r, 300)
		s := Modulate(m, data)
		a, b := float64(len(s)/3), float64(2*len(s)/3)
		for i := range s {
			db := 0.0
			switch x := float64(i); {
			case x >= b:
				db = -20 + 26*min(1, (x-b)/ramp)
			case x >= a:
				db = -20 * min(1, (x-a)/ramp)
			}
			s[i] *= math.Pow(10, db/20)
		}
		got, _ := receive(t, m, audio.Rate, s, r, 1000)
		if !bytes.Equal(got, data) {
			t.Errorf("%s, ramps: %d byte errors", m.Name, editDistance(data, got))
		}
		s = Modulate(m, data)
		for i := range s {
			if i > len(s)/3 && i < 2*len(s)/3 {
				s[i] *= 0.5
			}
		}
		got, _ = receive(t, m, audio.Rate, s, r, 1000)
		if !bytes.Equal(got, data) {
			t.Errorf("%s, steps: %d byte errors", m.Name, editDistance(data, got))
		}
	}
}

// TestNoiseAlone: seconds of telephone-band noise give no bytes.
func TestNoiseAlone(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, m := range Modes {
		line, err := impair.New(impair.Config{NoiseDBFS: -20, Seed: r.Uint64()})
		if err != nil {
			t.Fatal(err)
		}
		noise := line.Process(make([]float64, 10*audio.Rate))
		got, ev := receive(t, m, audio.Rate, noise, r, 4000)
		if len(got) > 0 {
			t.Errorf("%s: %d bytes out of noise (%d events)", m.Name, len(got), len(ev))
		}
	}
}

// TestFullDuplex: both directions of a 300 bit/s call on one line, the
// local transmitter 10 dB louder than the far one (its echo), and V.23's
// back channel under its forward channel, 10 dB apart too. (15 dB passes;
// at 20 dB V.21's second channel, 470 Hz from the first, loses bytes.)
func TestFullDuplex(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, pair := range [][2]Mode{{Bell103, Bell103Answer}, {V21, V21Answer}, {V23, V23Back}} {
		near, far := randomBytes(r, 100), randomBytes(r, 100)
		if pair[1].Baud < 100 {
			far = far[:6]
		}
		a, b := Modulate(pair[0], near), Modulate(pair[1], far)
		n := max(len(a), len(b))
		mix := make([]float64, n)
		for i := range mix {
			if i < len(a) {
				mix[i] += 0.9 * a[i]
			}
			if i < len(b) {
				mix[i] += 0.9 / math.Sqrt(10) * b[i]
			}
		}
		for j, want := range [][]byte{near, far} {
			got, _ := receive(t, pair[j], audio.Rate, mix, r, 2000)
			if !bytes.Equal(got, want) {
				t.Errorf("%s beside %s: %d byte errors", pair[j].Name, pair[1-j].Name, editDistance(want, got))
			}
		}
	}
}

// TestChunking: the events do not depend on how the samples are cut.
func TestChunking(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	data := randomBytes(r, 200)
	s, err := impair.ApplySNR(Modulate(V23, data), impair.Config{BandLimit: true, Seed: 1}, 8)
	if err != nil {
		t.Fatal(err)
	}
	_, whole := receive(t, V23, audio.Rate, s, r, len(s))
	_, bits := receive(t, V23, audio.Rate, s, r, 3)
	if fmt.Sprint(whole) != fmt.Sprint(bits) {
		t.Errorf("events differ between whole-buffer and 1–3-sample chunks:\n%v\n%v", whole, bits)
	}
}

// TestTurns: half-duplex turns on one line — two transmissions with line
// noise between them — are two carriers, each with its bytes, and a
// Demodulator that is flushed receives a second stream as well.
func TestTurns(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, m := range []Mode{Bell202, V23, Bell103} {
		a, b := randomBytes(r, 50), randomBytes(r, 70)
		line, err := impair.New(impair.Config{BandLimit: true, NoiseDBFS: -35, Seed: 8})
		if err != nil {
			t.Fatal(err)
		}
		var rx []float64
		rx = append(rx, line.Process(Modulate(m, a))...)
		rx = append(rx, line.Process(make([]float64, audio.Rate/2))...)
		rx = append(rx, line.Process(Modulate(m, b))...)
		d, err := NewDemodulator(m, audio.Rate)
		if err != nil {
			t.Fatal(err)
		}
		ev := d.Flush(d.Demodulate(nil, rx))
		var ups, downs int
		for _, e := range ev {
			switch e.Kind {
			case CarrierUp:
				ups++
			case CarrierDown:
				downs++
			}
		}
		want := append(append([]byte{}, a...), b...)
		if got := appendBytes(nil, ev); !bytes.Equal(got, want) || ups != 2 || downs != 2 {
			t.Errorf("%s: %d byte errors, carrier up %d and down %d times, want 0, 2, 2", m.Name, editDistance(want, got), ups, downs)
		}
		// After Flush, the same Demodulator takes a new stream.
		ev = d.Flush(d.Demodulate(nil, Modulate(m, a)))
		if got := appendBytes(nil, ev); !bytes.Equal(got, a) {
			t.Errorf("%s after Flush: %d byte errors", m.Name, editDistance(a, got))
		}
	}
}
