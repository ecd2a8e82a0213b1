package linetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"cardlink/internal/audio/impair"
	"cardlink/internal/line"
)

// TestStart places a call through a started switch at 20 dB SNR with
// band-limiting and drift, as the end-to-end tests will, and hears the
// line's noise at the level asked for.
func TestStart(t *testing.T) {
	_, addr := Start(t, line.Config{Speed: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := line.Listen(ctx, addr, "1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(ctx); err == nil {
			<-c.Done()
		}
	}()
	cfg := impair.Config{BandLimit: true, DriftPPM: 80, NoiseDBFS: line.NoiseForSNR(20, -10, 0)}
	c, err := line.Dial(ctx, addr, "1", &line.Options{Forward: &cfg, Back: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Hangup()
	got := make([]float64, 16000)
	for n := 0; n < len(got); {
		k, err := c.Read(got[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	// impair's drift resampler (cubic interpolation) takes about 0.6 dB
	// off the upper band, noise included.
	if db := impair.DBFS(impair.BandPower(got)); db < -31 || db > -29.5 {
		t.Errorf("line noise at %.2f dBFS, want -30 (-31 to -29.5)", db)
	}
	c.Hangup()
	for {
		if _, err := c.Read(got); err != nil {
			if !errors.Is(err, line.ErrClosed) {
				t.Errorf("Read after Hangup: %v, want ErrClosed", err)
			}
			break
		}
	}
}
