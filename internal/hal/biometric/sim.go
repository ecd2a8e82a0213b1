package biometric

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"

	"cardlink/internal/hal"
)

// Noise is the simulation's model of fingers and captures
// (docs/device-hardware.md, "Biometric model").
//
// A finger is Features independent latent features (ridge and minutia
// properties); each of the 512 template bits follows one feature, so
// neighbouring bits are correlated as binarized embeddings are, and
// departs from it with probability Detail. Each bit has a stability: most
// bits are stable, some fragile (near their binarization boundary).
//
// A capture has a quality q in [0, 1]: most are good, some poor, and a
// fraction Partial of placements covers only part of the sensor. Below
// MinQuality the sensor rejects the capture and asks for another. An
// accepted capture flips each bit with probability (MinFlip + (MaxFlip −
// MinFlip)·(1 − q)) × that bit's fragility, at most one half.
type Noise struct {
	Features   int     // latent features, 1–512
	Detail     float64 // probability a bit departs from its feature
	MinFlip    float64 // flip rate of an average bit at quality 1
	MaxFlip    float64 // flip rate of an average bit at quality 0
	MinQuality float64 // the sensor rejects captures below this quality
	Partial    float64 // probability of a partial placement
	// Enrol is how many good captures (quality at least EnrolQuality)
	// enrolment majority-votes into the template; odd.
	Enrol        int
	EnrolQuality float64
}

// DefaultNoise is the model the documented rates were measured with.
func DefaultNoise() Noise {
	return Noise{
		Features:     128,
		Detail:       0.15,
		MinFlip:      0.02,
		MaxFlip:      0.18,
		MinQuality:   0.3,
		Partial:      0.02,
		Enrol:        5,
		EnrolQuality: 0.7,
	}
}

// Validate checks that the model's numbers are in range.
func (n Noise) Validate() error {
	in01 := func(v float64) bool { return v >= 0 && v <= 1 }
	switch {
	case n.Features < 1 || n.Features > 8*TemplateLen:
		return fmt.Errorf("biometric: %d features: want 1–%d", n.Features, 8*TemplateLen)
	case !in01(n.Detail) || !in01(n.MinFlip) || !in01(n.MaxFlip) || !in01(n.MinQuality) || !in01(n.Partial) || !in01(n.EnrolQuality):
		return errors.New("biometric: noise probabilities and qualities must be in [0, 1]")
	case n.MaxFlip < n.MinFlip:
		return errors.New("biometric: MaxFlip below MinFlip")
	case n.Enrol < 1 || n.Enrol%2 == 0:
		return fmt.Errorf("biometric: enrolment of %d captures: want an odd number", n.Enrol)
	case n.EnrolQuality < n.MinQuality:
		return errors.New("biometric: enrolment quality below the sensor's minimum")
	case n.Partial >= 1:
		// Every capture partial: none would reach the sensor's minimum
		// quality, and enrolment would wait for ever.
		return errors.New("biometric: Partial must be below 1")
	}
	return nil
}

// Fragility classes of template bits: share of the bits and how much more
// (or less) often than average they flip. The mean fragility is 1.
var fragility = [...]struct{ share, weight float64 }{
	{0.60, 0.30}, // stable
	{0.25, 1.00}, // ordinary
	{0.15, 3.80}, // fragile
}

// Finger is one simulated finger: its master template and the stability
// of each bit. It is immutable and safe for concurrent use.
type Finger struct {
	noise  Noise
	master [TemplateLen]byte
	weight [8 * TemplateLen]float64
}

// populationSeed fixes which feature each template bit follows: the
// template layout, the same for every finger.
const populationSeed = 0x6361726466696e67 // "cardfing"

// NewFinger makes the finger with this id from noise; the same id and
// model always make the same finger. It fails if noise is not valid.
func NewFinger(id uint64, noise Noise) (*Finger, error) {
	if err := noise.Validate(); err != nil {
		return nil, err
	}
	layout := rand.New(rand.NewPCG(populationSeed, uint64(noise.Features)))
	feature := layout.Perm(8 * TemplateLen)
	rng := rand.New(rand.NewPCG(id, populationSeed))
	latent := make([]bool, noise.Features)
	for i := range latent {
		latent[i] = rng.IntN(2) == 1
	}
	f := &Finger{noise: noise}
	for i := range 8 * TemplateLen {
		bit := latent[feature[i]%noise.Features]
		if rng.Float64() < noise.Detail {
			bit = !bit
		}
		if bit {
			f.master[i/8] |= 0x80 >> (i % 8)
		}
		u := rng.Float64()
		for _, c := range fragility {
			f.weight[i] = c.weight
			if u < c.share {
				break
			}
			u -= c.share
		}
	}
	return f, nil
}

// Master returns the finger's noiseless template.
func (f *Finger) Master() []byte { return append([]byte(nil), f.master[:]...) }

// capture simulates one placement of the finger: it returns the template
// and the capture's quality, or a nil template if the sensor rejects it.
func (f *Finger) capture(rng *rand.Rand) ([]byte, float64, bool) {
	n := f.noise
	u := rng.Float64()
	q := 1 - 0.8*u*u*u
	partial := rng.Float64() < n.Partial
	if partial {
		q = 0.1 + 0.3*rng.Float64()
	}
	if q < n.MinQuality {
		return nil, q, partial
	}
	p := n.MinFlip + (n.MaxFlip-n.MinFlip)*(1-q)
	t := f.Master()
	for i := range 8 * TemplateLen {
		if rng.Float64() < math.Min(0.5, p*f.weight[i]) {
			t[i/8] ^= 0x80 >> (i % 8)
		}
	}
	return t, q, partial
}

// enrol majority-votes noise.Enrol captures of at least EnrolQuality.
func (f *Finger) enrol(rng *rand.Rand) []byte {
	var votes [8 * TemplateLen]int
	for got := 0; got < f.noise.Enrol; {
		t, q, _ := f.capture(rng)
		if t == nil || q < f.noise.EnrolQuality {
			continue
		}
		got++
		for i := range votes {
			if t[i/8]&(0x80>>(i%8)) != 0 {
				votes[i]++
			}
		}
	}
	out := make([]byte, TemplateLen)
	for i, v := range votes {
		if 2*v > f.noise.Enrol {
			out[i/8] |= 0x80 >> (i % 8)
		}
	}
	return out
}

// ErrPoorCapture is what Sim.Capture returns (in a *PoorCaptureError) when
// the sensor rejects a capture: the holder should place the finger again.
var ErrPoorCapture = errors.New("poor capture, place the finger again")

// PoorCaptureError is a capture the sensor rejected.
type PoorCaptureError struct {
	Quality float64 // 0–1
	Partial bool    // the finger covered only part of the sensor
}

func (e *PoorCaptureError) Error() string {
	what := "low quality"
	if e.Partial {
		what = "partial finger"
	}
	return fmt.Sprintf("biometric: %s (quality %.2f): %v", what, e.Quality, ErrPoorCapture)
}

func (e *PoorCaptureError) Unwrap() error { return ErrPoorCapture }

// Display says it in at most hal.Cols characters.
func (e *PoorCaptureError) Display() string {
	if e.Partial {
		return "Cover whole sensor"
	}
	return "Poor read, try again"
}

// Sim is a simulated sensor with a finger on it. It implements hal.Sensor;
// its methods are safe for concurrent use. Its captures are a seeded
// random sequence, the same for the same seed and calls.
type Sim struct {
	mu     sync.Mutex
	finger *Finger
	rng    *rand.Rand
}

var _ hal.Sensor = (*Sim)(nil)

// NewSim returns a sensor with f on it whose noise follows seed.
func NewSim(f *Finger, seed uint64) *Sim {
	return &Sim{finger: f, rng: rand.New(rand.NewPCG(seed, 0x73656e736f72))}
}

// Present puts another finger on the sensor (an impostor, or the holder
// using a different finger).
func (s *Sim) Present(f *Finger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finger = f
}

// Enrol captures the finger until it has enough good captures and returns
// the majority-voted template the card is personalized with.
func (s *Sim) Enrol() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finger.enrol(s.rng)
}

// Capture captures one template. It fails if ctx has ended, and with a
// *PoorCaptureError (wrapping ErrPoorCapture) when the sensor rejects the
// capture.
func (s *Sim) Capture(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("capturing template: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, q, partial := s.finger.capture(s.rng)
	if t == nil {
		return nil, &PoorCaptureError{Quality: q, Partial: partial}
	}
	return t, nil
}

// MeasureConfig says what Measure generates.
type MeasureConfig struct {
	Fingers   int    // distinct fingers, each enrolled once
	Captures  int    // accepted captures per finger
	Impostors int    // other fingers' templates each capture is compared with
	Seed      uint64 // fingers are Seed·2^32 + i
	Noise     Noise
	// Thresholds are the rows of the table; nil means 0, 16, … 128.
	Thresholds []int
	// Tries is how many accepted captures a holder may present per
	// verification for the "within tries" rate; 0 means 3.
	Tries int
}

// Rate is one row of the table.
type Rate struct {
	Threshold     int
	FalseAccepts  int // impostor comparisons at or under the threshold
	FalseRejects  int // genuine comparisons over the threshold
	RejectedTries int // genuine verifications failing every one of Tries captures
	FAR, FRR      float64
	FRRTries      float64 // FRR when the holder may try Tries times
}

// Report is what Measure found.
type Report struct {
	Config           MeasureConfig
	Genuine          int     // genuine comparisons
	Impostor         int     // impostor comparisons
	Verifications    int     // genuine verifications of up to Tries captures
	Placements       int     // captures attempted
	Rejected         int     // captures the sensor rejected
	FTA              float64 // failure to acquire: Rejected / Placements
	GenuineMean      float64 // mean Hamming distance, genuine
	ImpostorMean     float64
	GenuineSD        float64 // standard deviation of the distance
	ImpostorSD       float64
	GenuineMax       int
	ImpostorMin      int
	GenuineHist      [8*TemplateLen + 1]int // comparisons by distance
	ImpostorHist     [8*TemplateLen + 1]int
	GenuineTriesHist [8*TemplateLen + 2]int // verifications by best distance of their tries
	Rates            []Rate
}

// Measure generates fingers and captures and measures the false accept
// and false reject rates of the card's rule (Match) at each threshold:
// every accepted capture of every finger against its own enrolled
// template (genuine) and against the enrolled templates of Impostors other
// fingers (impostor). It fails if the configuration is not valid.
func Measure(c MeasureConfig) (*Report, error) {
	if c.Fingers < 2 || c.Captures < 1 || c.Impostors < 1 || c.Impostors >= c.Fingers {
		return nil, errors.New("biometric: measuring: want 2+ fingers, 1+ captures and 1 to fingers-1 impostors")
	}
	if c.Thresholds == nil {
		for t := 0; t <= MaxThreshold; t += 16 {
			c.Thresholds = append(c.Thresholds, t)
		}
	}
	if c.Tries == 0 {
		c.Tries = 3
	}
	r := &Report{Config: c, ImpostorMin: 8*TemplateLen + 1, GenuineMax: -1}
	fingers := make([]*Finger, c.Fingers)
	enrolled := make([][]byte, c.Fingers)
	for i := range fingers {
		f, err := NewFinger(c.Seed<<32+uint64(i), c.Noise)
		if err != nil {
			return nil, err
		}
		fingers[i] = f
		enrolled[i] = f.enrol(rand.New(rand.NewPCG(c.Seed, uint64(i)<<1)))
	}
	var gsum, isum int
	for i, f := range fingers {
		rng := rand.New(rand.NewPCG(c.Seed, uint64(i)<<1|1))
		best := 8*TemplateLen + 1
		tries := 0
		for got := 0; got < c.Captures; {
			r.Placements++
			t, _, _ := f.capture(rng)
			if t == nil {
				r.Rejected++
				continue
			}
			got++
			d := Distance(enrolled[i], t)
			r.GenuineHist[d]++
			gsum += d
			r.GenuineMax = max(r.GenuineMax, d)
			best = min(best, d)
			if tries++; tries == c.Tries {
				r.GenuineTriesHist[best]++
				r.Verifications++
				best, tries = 8*TemplateLen+1, 0
			}
			for k := 1; k <= c.Impostors; k++ {
				d := Distance(enrolled[(i+k)%c.Fingers], t)
				r.ImpostorHist[d]++
				isum += d
				r.ImpostorMin = min(r.ImpostorMin, d)
			}
		}
	}
	r.Genuine = c.Fingers * c.Captures
	r.Impostor = r.Genuine * c.Impostors
	r.FTA = float64(r.Rejected) / float64(r.Placements)
	r.GenuineMean = float64(gsum) / float64(r.Genuine)
	r.ImpostorMean = float64(isum) / float64(r.Impostor)
	r.GenuineSD = sd(r.GenuineHist[:], r.GenuineMean)
	r.ImpostorSD = sd(r.ImpostorHist[:], r.ImpostorMean)
	for _, th := range c.Thresholds {
		rate := Rate{Threshold: th}
		for d, n := range r.ImpostorHist {
			if d <= th {
				rate.FalseAccepts += n
			}
		}
		for d, n := range r.GenuineHist {
			if d > th {
				rate.FalseRejects += n
			}
		}
		for d, n := range r.GenuineTriesHist {
			if d > th {
				rate.RejectedTries += n
			}
		}
		rate.FAR = float64(rate.FalseAccepts) / float64(r.Impostor)
		rate.FRR = float64(rate.FalseRejects) / float64(r.Genuine)
		if r.Verifications > 0 {
			rate.FRRTries = float64(rate.RejectedTries) / float64(r.Verifications)
		}
		r.Rates = append(r.Rates, rate)
	}
	return r, nil
}

// sd is the standard deviation of a histogram of distances with this mean.
func sd(hist []int, mean float64) float64 {
	var n, sum float64
	for d, c := range hist {
		n += float64(c)
		sum += float64(c) * (float64(d) - mean) * (float64(d) - mean)
	}
	return math.Sqrt(sum / n)
}

// String renders the report as the table in docs/device-hardware.md.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d fingers, %d accepted captures each, %d impostor templates per capture (seed %d)\n",
		r.Config.Fingers, r.Config.Captures, r.Config.Impostors, r.Config.Seed)
	fmt.Fprintf(&b, "genuine comparisons %d: distance mean %.1f bits, sd %.1f, max %d\n", r.Genuine, r.GenuineMean, r.GenuineSD, r.GenuineMax)
	fmt.Fprintf(&b, "impostor comparisons %d: distance mean %.1f bits, sd %.1f, min %d\n", r.Impostor, r.ImpostorMean, r.ImpostorSD, r.ImpostorMin)
	fmt.Fprintf(&b, "failure to acquire (sensor asks again): %d of %d placements = %.2f%%\n\n", r.Rejected, r.Placements, 100*r.FTA)
	fmt.Fprintf(&b, "| threshold (bits) | FAR | FRR, one capture | FRR within %d tries |\n|---:|---:|---:|---:|\n", r.Config.Tries)
	for _, rt := range r.Rates {
		far := fmt.Sprintf("%.2g (%d)", rt.FAR, rt.FalseAccepts)
		if rt.FalseAccepts == 0 {
			// Rule of three: no event in n trials bounds the rate below
			// 3/n at 95% confidence.
			far = fmt.Sprintf("0 (< %.1g at 95%%)", 3/float64(r.Impostor))
		}
		fmt.Fprintf(&b, "| %d | %s | %.2f%% (%d) | %.2f%% (%d) |\n", rt.Threshold, far,
			100*rt.FRR, rt.FalseRejects, 100*rt.FRRTries, rt.RejectedTries)
	}
	return b.String()
}
