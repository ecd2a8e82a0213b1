package modem_test

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/line"
	"cardlink/internal/link/modem"
)

// burstCall is a call whose outgoing audio gets a burst of loud noise
// once the party has sent at samples: the burst hits a transmission (a
// Stream writes only while it transmits), wherever the protocol is then.
type burstCall struct {
	*line.Call
	at, length int64
	std        float64
	rng        *rand.Rand

	mu     sync.Mutex
	signal int64 // samples of the device's signal written so far
	hit    int64 // samples the burst covered
}

// Write adds the burst to the device's signal from its at-th sample on,
// counting only samples that carry a signal: the silence between
// transmissions (exact zeros) does not move the burst, so it always
// lands on data, however the turns fall.
func (b *burstCall) Write(p []float64) (int, error) {
	b.mu.Lock()
	q := append([]float64(nil), p...)
	for i := range q {
		if q[i] == 0 {
			continue
		}
		if b.signal >= b.at && b.signal < b.at+b.length {
			q[i] += b.rng.NormFloat64() * b.std
			b.hit++
		}
		b.signal++
	}
	b.mu.Unlock()
	return b.Call.Write(q)
}

func (b *burstCall) covered() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hit
}

// TestNoiseBurst buys over Bell 202 at 20 dB SNR with the band limit and
// drift, with a burst of noise above the signal (−3 dBFS; +6 dBFS for
// Bell 103, whose narrow channels shrug off less) for 250 ms
// in the middle of the device's transmissions: the frames it hits are
// lost, and the link layer's retransmission completes the purchase. The
// line also has its own bursts (200 ms every 4 s).
func TestNoiseBurst(t *testing.T) {
	for _, mode := range []modem.Mode{modem.Bell202, modem.Bell103} {
		t.Run(mode.String(), func(t *testing.T) {
			if testing.Short() && mode != modem.Bell202 {
				t.Skip("short: Bell 202 only")
			}
			imp := snr(20, 100)
			imp.BurstEvery, imp.BurstLength, imp.BurstDBFS = 4*time.Second, 200*time.Millisecond, -6
			s := newShop(t, line.Config{Line: imp, Speed: e2eSpeed()})
			p := s.newPurchase(t, 250)
			// The device sends about 300 bytes: burst in the middle.
			bits := map[modem.Mode]float64{modem.Bell202: 1200, modem.Bell103: 300}[mode]
			// White noise 3 dB above the signal spoils Bell 202 frames;
			// Bell 103's narrow channels filter most of it out and decode
			// through it, so its burst is louder (clipped by the line:
			// the signal is gone for 250 ms).
			burstDBFS := map[modem.Mode]float64{modem.Bell202: -3, modem.Bell103: 6}
			at := int64(150 * 10 * 8000 / bits)
			var bc *burstCall
			wrap := func(c *line.Call) modem.Audio {
				bc = &burstCall{Call: c, at: at, length: 2000, std: math.Sqrt(0.5 * math.Pow(10, burstDBFS[mode]/10)), rng: rand.New(rand.NewPCG(1, 2))}
				return bc
			}
			var res device.BuyResult
			sess, err := s.callWith(t, mode, &line.Options{From: "42"}, wrap, func(ctx context.Context, l *modem.Link) error {
				var err error
				res, err = device.Buy(ctx, l, s.id, s.card.Client, device.BuyOptions{
					AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
				return err
			})
			if err != nil || !res.OK() {
				t.Fatalf("Buy() through a noise burst = %+v, %v; want success (device %+v, server %+v)", res, err, sess.device, sess.server)
			}
			if bc.covered() != bc.length {
				t.Fatalf("the burst covered %d samples of the device's signal, want %d", bc.covered(), bc.length)
			}
			// 250 ms of noise 3 dB above the signal destroys 30 bytes (1200
			// bit/s) or 7 (300): whatever frame they were in was resent.
			if sess.device.Resent == 0 {
				t.Errorf("device resent no frame after the burst: %+v", sess.device)
			}
			t.Logf("purchase through a burst: %v of line time, device %+v, server %+v", sess.lineTime, sess.device, sess.server)
		})
	}
}
