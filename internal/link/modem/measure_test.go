package modem_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/line"
	"cardlink/internal/link/modem"
)

// TestSixDB completes a purchase at 6 dB SNR (band limit, ±100 ppm) over
// the 300 bit/s modes, the goal for transactions through the link
// layer's retransmission. Bell 202 and V.23 complete too in TestLineTime,
// but slowly (their receivers lose about 4% of bytes at 6 dB), and under
// -race on a loaded machine Bell 202 once gave up (nothing valid heard
// for 30 s of line time): not a test that passes reliably.
func TestSixDB(t *testing.T) {
	if testing.Short() {
		t.Skip("short: a minute of line time per mode")
	}
	fwd, back := snr(6, 100), snr(6, -100)
	for _, mode := range sixDBModes {
		t.Run(mode.String(), func(t *testing.T) {
			s := newShop(t, line.Config{Speed: e2eSpeed()})
			p := s.newPurchase(t, 250)
			var res device.BuyResult
			sess, err := s.call(t, mode, &line.Options{From: "42", Forward: &fwd, Back: &back}, func(ctx context.Context, l *modem.Link) error {
				var err error
				res, err = device.Buy(ctx, l, s.id, s.card.Client, device.BuyOptions{
					AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
				return err
			})
			if err != nil || !res.OK() {
				t.Fatalf("Buy() at 6 dB = %+v, %v; want success (device %+v, server %+v)", res, err, sess.device, sess.server)
			}
			t.Logf("purchase at 6 dB: %v of line time, device %+v, server %+v", sess.lineTime, sess.device, sess.server)
		})
	}
}

var sixDBModes = []modem.Mode{modem.Bell103, modem.V21}

// TestLineTime measures the line time of an authentication and of a
// purchase per mode and SNR against the bound the bit rates set, and
// prints a table for docs/telephone-modem.md. It runs only with
// MODEM_MEASURE=1; MODEM_MODES (1200,v23,300,v21), MODEM_SNRS (20,6) and
// MODEM_SPEED (the switch's speed, 4) change what it runs.
func TestLineTime(t *testing.T) {
	if os.Getenv("MODEM_MEASURE") == "" {
		t.Skip("set MODEM_MEASURE=1 to measure")
	}
	modes := []modem.Mode{modem.Bell202, modem.V23, modem.Bell103, modem.V21}
	if v := os.Getenv("MODEM_MODES"); v != "" {
		modes = nil
		for _, n := range strings.Split(v, ",") {
			m, err := modem.ParseMode(n)
			if err != nil {
				t.Fatal(err)
			}
			modes = append(modes, m)
		}
	}
	snrs := []float64{20, 6}
	if v := os.Getenv("MODEM_SNRS"); v != "" {
		snrs = nil
		for _, n := range strings.Split(v, ",") {
			f, err := strconv.ParseFloat(n, 64)
			if err != nil {
				t.Fatal(err)
			}
			snrs = append(snrs, f)
		}
	}
	speed := 4.0
	if v, err := strconv.ParseFloat(os.Getenv("MODEM_SPEED"), 64); err == nil && v > 0 {
		speed = v
	}
	var rows []string
	for _, mode := range modes {
		devTx, srvTx, _ := mode.Channels(modem.Originating)
		for _, db := range snrs {
			fwd, back := snr(db, 100), snr(db, -100)
			dial := &line.Options{From: "42", Forward: &fwd, Back: &back}
			s := newShop(t, line.Config{Speed: speed})
			row := func(what string, sess session, err error) {
				// The bound: the secure channel's bytes each way at that
				// way's bit rate, 10 bits a byte (the exchange is a
				// request and its answer in turn, so the two do not overlap).
				up, down := sess.device.PayloadSent, sess.server.PayloadSent
				bound := time.Duration(float64(up*10)/devTx.Baud*float64(time.Second)) +
					time.Duration(float64(down*10)/srvTx.Baud*float64(time.Second))
				status := "ok"
				if err != nil {
					status = "FAILED: " + err.Error()
				}
				r := fmt.Sprintf("| %s | %g | %s | %d + %d | %d + %d | %.1f s | %.1f s | %.2f | %d + %d | %s |", mode, db, what, up, down,
					sess.device.BytesSent, sess.server.BytesSent, sess.lineTime.Seconds(), bound.Seconds(),
					sess.lineTime.Seconds()/bound.Seconds(), sess.device.Resent, sess.server.Resent, status)
				t.Log(r)
				t.Logf("  call over at %.1f s; device %+v %+v; server %+v %+v", sess.done.Seconds(), sess.device, sess.devModem, sess.server, sess.srvModem)
				rows = append(rows, r)
			}
			var ares device.Result
			sess, err := s.call(t, mode, dial, func(ctx context.Context, l *modem.Link) error {
				var err error
				ares, err = device.Authenticate(ctx, l, s.id, s.card.Client, device.AuthOptions{PIN: wallettest.PIN})
				return err
			})
			if err == nil && !ares.OK() {
				err = fmt.Errorf("code %v", ares.Code)
			}
			row("authentication", sess, err)
			p := s.newPurchase(t, 250)
			var bres device.BuyResult
			sess, err = s.call(t, mode, dial, func(ctx context.Context, l *modem.Link) error {
				var err error
				bres, err = device.Buy(ctx, l, s.id, s.card.Client, device.BuyOptions{
					AuthOptions: device.AuthOptions{PIN: wallettest.PIN}, Reference: p.Reference})
				return err
			})
			if err == nil && !bres.OK() {
				err = fmt.Errorf("code %v", bres.Code)
			}
			row("purchase", sess, err)
		}
	}
	fmt.Println("| mode | SNR dB | exchange | channel bytes up + down | line bytes up + down | line time | bound | ratio | resent up + down | result |")
	fmt.Println("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
}
