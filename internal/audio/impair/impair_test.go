package impair

import (
	"math"
	"testing"
	"time"

	"cardlink/internal/audio"
)

func tone(hz, dbfs float64, n int) []float64 {
	a := math.Sqrt(2 * Power(dbfs))
	s := make([]float64, n)
	for i := range s {
		s[i] = a * math.Sin(2*math.Pi*hz*float64(i)/audio.Rate)
	}
	return s
}

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s: got %.3f, want %.3f ± %.3f", what, got, want, tol)
	}
}

func TestBandLimit(t *testing.T) {
	for _, tt := range []struct {
		hz       float64
		min, max float64 // dB of gain
	}{
		{100, -100, -30}, {300, -3.5, -2.5}, {1000, -0.2, 0.2}, {2000, -0.2, 0.2},
		{3400, -3.5, -2.5}, {3900, -100, -20},
	} {
		l, err := New(Config{BandLimit: true})
		if err != nil {
			t.Fatal(err)
		}
		in := tone(tt.hz, -10, audio.Rate)
		gain := DBFS(meanSquare(l.Process(in)[800:])) - DBFS(meanSquare(in))
		if gain < tt.min || gain > tt.max {
			t.Errorf("%v Hz: gain %.2f dB, want %v..%v", tt.hz, gain, tt.min, tt.max)
		}
	}
}

func meanSquare(s []float64) float64 {
	var sum float64
	for _, x := range s {
		sum += x * x
	}
	return sum / float64(len(s))
}

func TestAttenuation(t *testing.T) {
	l, err := New(Config{AttenuationDB: 12})
	if err != nil {
		t.Fatal(err)
	}
	in := tone(1000, -6, 8000)
	near(t, "attenuated level", DBFS(meanSquare(l.Process(in))), -18, 0.05)
}

func TestNoiseLevel(t *testing.T) {
	l, err := New(Config{NoiseDBFS: -30, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	out := l.Process(make([]float64, 10*audio.Rate))
	near(t, "noise in band", DBFS(BandPower(out)), -30, 0.3)
	near(t, "noise overall", DBFS(meanSquare(out)), -30, 0.4) // it is band-limited already
}

func TestApplySNR(t *testing.T) {
	in := tone(1700, -12, 5*audio.Rate)
	for _, snr := range []float64{0, 6, 20} {
		cfg := Config{BandLimit: true, AttenuationDB: 3, Seed: 1}
		out, err := ApplySNR(in, cfg, snr)
		if err != nil {
			t.Fatal(err)
		}
		clean, _ := New(Config{BandLimit: true, AttenuationDB: 3})
		sig := clean.Process(in)
		noise := make([]float64, len(out))
		for i := range out {
			noise[i] = out[i] - sig[i]
		}
		near(t, "SNR", DBFS(BandPower(sig))-DBFS(BandPower(noise)), snr, 0.3)
	}
	if _, err := ApplySNR(make([]float64, 100), Config{}, 10); err == nil {
		t.Error("silence: want an error")
	}
}

func TestDrift(t *testing.T) {
	for _, ppm := range []float64{-2000, 500, 5000} {
		l, err := New(Config{DriftPPM: ppm})
		if err != nil {
			t.Fatal(err)
		}
		in := tone(1200, -6, 40000)
		var out []float64
		for i := 0; i < len(in); i += 333 {
			out = append(out, l.Process(in[i:min(i+333, len(in))])...)
		}
		want := float64(len(in)) * (1 + ppm*1e-6)
		near(t, "samples out", float64(len(out)), want, 3)
		// The tone's frequency moves by the drift: count zero crossings.
		cross := 0
		for i := 1; i < len(out); i++ {
			if (out[i-1] < 0) != (out[i] < 0) {
				cross++
			}
		}
		hz := float64(cross) / 2 / (float64(len(out)) / audio.Rate)
		near(t, "tone after drift", hz, 1200/(1+ppm*1e-6), 0.5)
	}
}

func TestChunksMatchWhole(t *testing.T) {
	cfg := Config{BandLimit: true, NoiseDBFS: -20, AttenuationDB: 6, DriftPPM: 300,
		BurstEvery: 100 * time.Millisecond, BurstLength: 20 * time.Millisecond, BurstDBFS: -5, Seed: 3}
	in := tone(1300, -10, 12345)
	a, _ := New(cfg)
	whole := a.Process(in)
	b, _ := New(cfg)
	var parts []float64
	for i, n := 0, 1; i < len(in); i, n = i+n, n*2%997+1 {
		parts = append(parts, b.Process(in[i:min(i+n, len(in))])...)
	}
	if len(parts) != len(whole) {
		t.Fatalf("chunked: %d samples, whole: %d", len(parts), len(whole))
	}
	for i := range whole {
		if math.Abs(parts[i]-whole[i]) > 1e-9 {
			t.Fatalf("sample %d: chunked %v, whole %v", i, parts[i], whole[i])
		}
	}
}

func TestBursts(t *testing.T) {
	l, err := New(Config{BurstEvery: 500 * time.Millisecond, BurstLength: 100 * time.Millisecond, BurstDBFS: -10, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	out := l.Process(make([]float64, 2*audio.Rate))
	// Quiet before the first burst and between bursts; loud within.
	if p := meanSquare(out[:3900]); p != 0 {
		t.Errorf("before the first burst: power %v, want silence", p)
	}
	near(t, "burst level", DBFS(meanSquare(out[4050:4750])), -10, 1)
	if p := meanSquare(out[5200:7900]); p > Power(-60) {
		t.Errorf("between bursts: %.1f dBFS", DBFS(p))
	}
}

func TestBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"loud noise":      {NoiseDBFS: 3},
		"gain":            {AttenuationDB: -1},
		"drift":           {DriftPPM: 1e6},
		"burst no level":  {BurstEvery: time.Second, BurstLength: time.Millisecond},
		"burst too long":  {BurstEvery: time.Second, BurstLength: time.Second, BurstDBFS: -3},
		"negative timing": {BurstEvery: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func BenchmarkLine(b *testing.B) {
	l, _ := New(Config{BandLimit: true, NoiseDBFS: -30, DriftPPM: 100, Seed: 1})
	in := tone(1200, -10, 160)
	b.SetBytes(int64(len(in)) * 2)
	for b.Loop() {
		l.Process(in)
	}
	// One 20 ms frame per iteration: real time is 20 ms per op.
	b.ReportMetric(float64(20*time.Millisecond)/(float64(b.Elapsed())/float64(b.N)), "x-realtime")
}
