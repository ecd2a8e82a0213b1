package biometric_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"

	walletapplet "cardlink/internal/applet/wallet"
	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/hal"
	"cardlink/internal/hal/biometric"
	"cardlink/internal/wallet"
)

// TestCardConstants: the sensor's template and thresholds are the card's.
func TestCardConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"TemplateLen vs the card", biometric.TemplateLen, walletapplet.BioTemplateLen},
		{"TemplateLen vs the host client", biometric.TemplateLen, wallet.BioTemplateLen},
		{"DefaultThreshold", biometric.DefaultThreshold, walletapplet.DefaultBioThreshold},
		{"MaxThreshold", biometric.MaxThreshold, walletapplet.MaxBioThreshold},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

func finger(t testing.TB, id uint64) *biometric.Finger {
	t.Helper()
	f, err := biometric.NewFinger(id, biometric.DefaultNoise())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// flip returns t with its first n bits inverted.
func flip(t []byte, n int) []byte {
	return wallettest.Sample(t, n)
}

// TestMatchAgreesWithCard presents a real wallet card, personalized with a
// simulated finger's enrolled template, with genuine and impostor captures
// and templates at the threshold's edge, and checks that the card and
// Match decide alike every time.
func TestMatchAgreesWithCard(t *testing.T) {
	ctx := t.Context()
	const threshold = 40
	holder, other := finger(t, 1), finger(t, 2)
	sensor := biometric.NewSim(holder, 7)
	enrolled := sensor.Enrol()
	env := wallettest.New(t, wallettest.Options{BioTemplate: enrolled, BioThreshold: threshold})

	var presented [][]byte
	for _, n := range []int{0, threshold - 1, threshold, threshold + 1, 2 * threshold, 256} {
		presented = append(presented, flip(enrolled, n))
	}
	for i := range 60 {
		if i%4 == 3 {
			sensor.Present(other)
		} else {
			sensor.Present(holder)
		}
		c, err := sensor.Capture(ctx)
		if errors.Is(err, biometric.ErrPoorCapture) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		presented = append(presented, c)
	}
	var accepted, refused int
	for i, p := range presented {
		want := biometric.Match(enrolled, p, threshold)
		err := env.Client.VerifyBiometric(ctx, p)
		if got := err == nil; got != want {
			t.Errorf("template %d at distance %d: card accepted %v (%v), Match says %v",
				i, biometric.Distance(enrolled, p), got, err, want)
		}
		if err != nil {
			refused++
			// Reset the card's try counter with the enrolled template.
			if err := env.Client.VerifyBiometric(ctx, enrolled); err != nil {
				t.Fatalf("resetting the try counter: %v", err)
			}
		} else {
			accepted++
		}
	}
	if accepted < 10 || refused < 10 {
		t.Errorf("accepted %d, refused %d: want both outcomes exercised", accepted, refused)
	}
}

func TestMatch(t *testing.T) {
	a := finger(t, 3).Master()
	tests := []struct {
		name      string
		b         []byte
		threshold int
		want      bool
	}{
		{"same", a, 0, true},
		{"at threshold", flip(a, 64), 64, true},
		{"over threshold", flip(a, 65), 64, false},
		{"short", a[:63], 128, false},
		{"long", append(append([]byte(nil), a...), 0), 128, false},
	}
	for _, tc := range tests {
		if got := biometric.Match(a, tc.b, tc.threshold); got != tc.want {
			t.Errorf("Match(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if d := biometric.Distance(a, flip(a, 300)); d != 300 {
		t.Errorf("Distance(300 flipped) = %d", d)
	}
}

func TestSimDeterministic(t *testing.T) {
	ctx := context.Background()
	run := func() [][]byte {
		s := biometric.NewSim(finger(t, 9), 42)
		var out [][]byte
		for range 30 {
			c, err := s.Capture(ctx)
			if err != nil {
				out = append(out, []byte(err.Error()))
				continue
			}
			out = append(out, c)
		}
		return out
	}
	a, b := run(), run()
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("capture %d differs between runs with the same seed", i)
		}
	}
	if bytes.Equal(finger(t, 9).Master(), finger(t, 10).Master()) {
		t.Errorf("fingers 9 and 10 have the same master template")
	}
}

func TestSimPoorCapture(t *testing.T) {
	s := biometric.NewSim(finger(t, 4), 1)
	var poor, partial int
	for range 400 {
		_, err := s.Capture(context.Background())
		if err == nil {
			continue
		}
		var pe *biometric.PoorCaptureError
		if !errors.As(err, &pe) || !errors.Is(err, biometric.ErrPoorCapture) {
			t.Fatalf("Capture: %v, want a *PoorCaptureError", err)
		}
		if len([]rune(pe.Display())) > hal.Cols || pe.Quality >= biometric.DefaultNoise().MinQuality {
			t.Errorf("poor capture %+v: display %q", pe, pe.Display())
		}
		poor++
		if pe.Partial {
			partial++
		}
	}
	if poor == 0 || partial == 0 || poor > 60 {
		t.Errorf("%d poor captures (%d partial) of 400: want some of each, and few", poor, partial)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Capture(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Capture(cancelled) = %v", err)
	}
}

// TestRates measures FAR and FRR of the card's rule on generated data and
// checks them against the bounds docs/device-hardware.md states.
func TestRates(t *testing.T) {
	r, err := biometric.Measure(biometric.MeasureConfig{
		Fingers: 400, Captures: 10, Impostors: 40, Seed: 1, Noise: biometric.DefaultNoise(),
		Thresholds: []int{0, 32, biometric.DefaultThreshold, biometric.MaxThreshold, 256},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r)
	rate := map[int]biometric.Rate{}
	for _, rt := range r.Rates {
		rate[rt.Threshold] = rt
	}
	if r.Impostor != 400*10*40 || r.Genuine != 4000 {
		t.Errorf("comparisons: %d genuine, %d impostor", r.Genuine, r.Impostor)
	}
	check := func(what string, got, lo, hi float64) {
		if got < lo || got > hi {
			t.Errorf("%s = %.4g, want within [%g, %g]", what, got, lo, hi)
		}
	}
	check("failure to acquire", r.FTA, 0.02, 0.10)
	check("genuine mean distance", r.GenuineMean, 15, 40)
	check("impostor mean distance", r.ImpostorMean, 245, 267)
	check("impostor distance sd", r.ImpostorSD, 11, 20)
	check("FRR at 0 bits", rate[0].FRR, 0.95, 1)
	check("FRR at 32 bits", rate[32].FRR, 0.15, 0.40)
	check("FRR at the default threshold", rate[64].FRR, 0.01, 0.06)
	check("FRR within 3 tries at the default threshold", rate[64].FRRTries, 0, 0.005)
	check("FRR at the maximum threshold", rate[128].FRR, 0, 0.001)
	// No impostor gets near the card's thresholds; at 256 bits (half the
	// template) about half of them would pass, which shows the
	// measurement can see false accepts.
	if rate[64].FalseAccepts != 0 || rate[128].FalseAccepts != 0 {
		t.Errorf("false accepts at 64/128 bits: %d/%d, want none", rate[64].FalseAccepts, rate[128].FalseAccepts)
	}
	check("FAR at 256 bits", rate[256].FAR, 0.4, 0.6)
	for i := 1; i < len(r.Rates); i++ {
		if r.Rates[i].FAR < r.Rates[i-1].FAR || r.Rates[i].FRR > r.Rates[i-1].FRR {
			t.Errorf("rates not monotonic: %+v then %+v", r.Rates[i-1], r.Rates[i])
		}
	}
}

var table = flag.Bool("table", false, "TestRatesTable: print the FAR/FRR table of docs/device-hardware.md")

// TestRatesTable prints the documented table:
//
//	go test ./internal/hal/biometric -run TestRatesTable -v -args -table
func TestRatesTable(t *testing.T) {
	if !*table {
		t.Skip("prints the documented table with -args -table")
	}
	r, err := biometric.Measure(biometric.MeasureConfig{
		Fingers: 2000, Captures: 20, Impostors: 100, Seed: 1, Noise: biometric.DefaultNoise(),
		Thresholds: []int{16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 128, 160, 192, 208, 224},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r)
}

func TestFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tmpl := finger(t, 5).Master()
	write := func(name string, b []byte) biometric.File {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return biometric.File{Path: p}
	}
	for name, b := range map[string][]byte{
		"raw": tmpl,
		"hex": []byte("  " + hex.EncodeToString(tmpl) + "\n"),
	} {
		got, err := write(name, b).Capture(ctx)
		if err != nil || !bytes.Equal(got, tmpl) {
			t.Errorf("Capture(%s) = %x, %v; want %x", name, got, err, tmpl)
		}
	}
	for name, b := range map[string][]byte{
		"short":   tmpl[:10],
		"bad hex": bytes.Repeat([]byte("zz"), biometric.TemplateLen),
		"empty":   nil,
		"big":     bytes.Repeat([]byte(" "), 1000),
	} {
		if _, err := write(name, b).Capture(ctx); !errors.Is(err, biometric.ErrFormat) {
			t.Errorf("Capture(%s) = %v, want ErrFormat", name, err)
		}
	}
	if _, err := (biometric.File{Path: filepath.Join(dir, "missing")}).Capture(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Capture(missing) = %v", err)
	}
}

func TestNoiseValidate(t *testing.T) {
	bad := []func(*biometric.Noise){
		func(n *biometric.Noise) { n.Features = 0 },
		func(n *biometric.Noise) { n.Enrol = 4 },
		func(n *biometric.Noise) { n.MaxFlip = 0.01 },
		func(n *biometric.Noise) { n.Detail = 2 },
		func(n *biometric.Noise) { n.EnrolQuality = 0.1 },
		func(n *biometric.Noise) { n.Partial = 1 }, // no capture would be whole: enrolment would never end
	}
	for i, mod := range bad {
		n := biometric.DefaultNoise()
		mod(&n)
		if _, err := biometric.NewFinger(1, n); err == nil {
			t.Errorf("bad noise %d: %+v accepted", i, n)
		}
	}
	if _, err := biometric.Measure(biometric.MeasureConfig{Fingers: 1}); err == nil {
		t.Errorf("Measure with one finger: nil error")
	}
}

func FuzzParseTemplate(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0xA5}, biometric.TemplateLen))
	f.Add([]byte(hex.EncodeToString(bytes.Repeat([]byte{1}, biometric.TemplateLen)) + "\n"))
	f.Add([]byte("not a template"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := biometric.ParseTemplate(b)
		if err != nil {
			if !errors.Is(err, biometric.ErrFormat) {
				t.Fatalf("ParseTemplate: %v, want ErrFormat", err)
			}
			return
		}
		if len(got) != biometric.TemplateLen {
			t.Fatalf("ParseTemplate gave %d bytes", len(got))
		}
		if len(b) == biometric.TemplateLen && !bytes.Equal(got, b) {
			t.Fatalf("raw template changed")
		}
	})
}

func BenchmarkDistance(b *testing.B) {
	x, y := finger(b, 1).Master(), finger(b, 2).Master()
	for b.Loop() {
		biometric.Distance(x, y)
	}
}

func BenchmarkCapture(b *testing.B) {
	s := biometric.NewSim(finger(b, 1), 1)
	ctx := context.Background()
	for b.Loop() {
		s.Capture(ctx)
	}
}

// BenchmarkMeasure times Measure and reports the rates at the card's
// default threshold as metrics:
//
//	go test ./internal/hal/biometric -run XXX -bench Measure
func BenchmarkMeasure(b *testing.B) {
	var r *biometric.Report
	for b.Loop() {
		var err error
		r, err = biometric.Measure(biometric.MeasureConfig{
			Fingers: 200, Captures: 10, Impostors: 50, Seed: 1, Noise: biometric.DefaultNoise(),
			Thresholds: []int{biometric.DefaultThreshold},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(100*r.Rates[0].FRR, "FRR64_%")
	b.ReportMetric(100*r.Rates[0].FAR, "FAR64_%")
	b.ReportMetric(100*r.FTA, "FTA_%")
	b.ReportMetric(float64(r.Genuine+r.Impostor)/b.Elapsed().Seconds()*float64(b.N), "comparisons/s")
}

// TestMeasureTheory checks the measurement against a case with a known
// answer: 512 independent features and no detail noise make two fingers'
// templates independent fair coins, so the impostor distance is
// Binomial(512, 1/2): mean 256, standard deviation √128 ≈ 11.31, and FAR at
// 256 bits is P(X ≤ 256) ≈ 0.518.
func TestMeasureTheory(t *testing.T) {
	n := biometric.DefaultNoise()
	n.Features, n.Detail = 512, 0
	r, err := biometric.Measure(biometric.MeasureConfig{
		Fingers: 300, Captures: 5, Impostors: 100, Seed: 3, Noise: n, Thresholds: []int{256},
	})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.ImpostorMean-256) > 0.5 || math.Abs(r.ImpostorSD-11.31) > 0.4 {
		t.Errorf("impostor distance mean %.2f sd %.2f, want 256 ± 0.5 and 11.31 ± 0.4", r.ImpostorMean, r.ImpostorSD)
	}
	if far := r.Rates[0].FAR; math.Abs(far-0.518) > 0.01 {
		t.Errorf("FAR at 256 bits = %.4f, want 0.518 ± 0.01", far)
	}
}
