package inline_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/audio/impair"
	"cardlink/internal/device"
	"cardlink/internal/device/inline"
	"cardlink/internal/line"
	"cardlink/internal/line/linetest"
	"cardlink/internal/link"
	"cardlink/internal/link/dtmf"
	"cardlink/internal/link/handover"
	"cardlink/internal/server/servertest"
)

const testTimeout = time.Minute

// noCarrier is a modem that finds nobody answering.
func noCarrier(context.Context, *line.Call) (link.Link, error) { return nil, errors.New("no carrier") }

// rig is a handset calling through the device to a far party (standing
// in for the IVR), on a switch at 20 dB SNR with band limit and drift.
type rig struct {
	dev      *inline.Device
	handset  *line.Call
	far      *line.Call
	sessions chan inline.Session
	done     chan error
}

func newRig(t *testing.T) *rig {
	t.Helper()
	snr := impair.Config{BandLimit: true, DriftPPM: 80, NoiseDBFS: line.NoiseForSNR(20, -10, 0)}
	_, addr := linetest.Start(t, line.Config{Line: snr, Speed: 2})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	card := servertest.Card(t)
	r := &rig{sessions: make(chan inline.Session, 4), done: make(chan error, 1)}
	var err error
	r.dev, err = inline.New(inline.Config{Identity: servertest.Device(t, servertest.SQLite(t), "d", [][]byte{make([]byte, 32)}, "", time.Now()),
		Card: card.Client, Modem: noCarrier, Auth: device.AuthOptions{PIN: wallettest.PIN},
		ResumeTimeout: 20 * time.Second, OnSession: func(s inline.Session) { r.sessions <- s }})
	if err != nil {
		t.Fatal(err)
	}
	devLine, err := line.Listen(ctx, addr, "200", &line.ListenOptions{Window: inline.Window})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devLine.Close() })
	farLine, err := line.Listen(ctx, addr, "100", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { farLine.Close() })
	go func() {
		hs, err := devLine.Accept(ctx)
		if err != nil {
			r.done <- err
			return
		}
		phone, err := line.Dial(ctx, addr, "100", &line.Options{Window: inline.Window})
		if err != nil {
			hs.Hangup()
			r.done <- err
			return
		}
		r.done <- r.dev.Run(ctx, hs, phone)
	}()
	if r.handset, err = line.Dial(ctx, addr, "200", &line.Options{From: "42"}); err != nil {
		t.Fatal(err)
	}
	if r.far, err = farLine.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.handset.Hangup()
		r.far.Hangup()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run() = %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Run did not return after the calls ended")
		}
	})
	return r
}

// record reads call until n samples arrived.
func record(t *testing.T, call *line.Call, n int) []float64 {
	t.Helper()
	a, err := read(call, n)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return a
}

// read reads call until n samples arrived or the call ended.
func read(call *line.Call, n int) ([]float64, error) {
	var a []float64
	buf := make([]float64, 800)
	for len(a) < n {
		k, err := call.Read(buf)
		a = append(a, buf[:k]...)
		if err != nil {
			return a, err
		}
	}
	return a, nil
}

// flush drops what call has received and not read.
func flush(t *testing.T, call *line.Call) {
	t.Helper()
	got, _ := call.Clock()
	if n := got - call.ReadPos(); n > 0 {
		record(t, call, int(n))
	}
}

func send(t *testing.T, call *line.Call, keys string) {
	t.Helper()
	a, err := dtmf.Generate(keys, dtmf.Params{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Write(a); err != nil {
		t.Fatal(err)
	}
}

// toneLevel is the power of a 1 kHz tone in a, in dBFS.
func toneLevel(a []float64) float64 {
	var re, im float64
	for i, v := range a {
		s, c := math.Sincos(2 * math.Pi * 1000 * float64(i) / 8000)
		re += v * c
		im += v * s
	}
	amp := 2 * math.Hypot(re, im) / float64(len(a))
	return 20 * math.Log10(amp+1e-12)
}

// TestVoicePassesBothWays: a tone from either end arrives at the other,
// and the holder's keys reach the far end as keys.
func TestVoicePassesBothWays(t *testing.T) {
	r := newRig(t)
	tone := make([]float64, 8000)
	for i := range tone {
		tone[i] = 0.3 * math.Sin(2*math.Pi*1000*float64(i)/8000)
	}
	go r.far.Write(tone)
	heard := record(t, r.handset, 16000)
	if l := toneLevel(heard); l < -25 {
		t.Errorf("handset heard the far tone at %.1f dBFS, want about -16 (half of 2 s at -10.5)", l)
	}
	flush(t, r.far)
	go func() {
		r.handset.Write(tone)
		a, _ := dtmf.Generate("159#", dtmf.Params{})
		r.handset.Write(a)
	}()
	got := record(t, r.far, 24000)
	if l := toneLevel(got); l < -30 {
		t.Errorf("far end heard the handset's tone at %.1f dBFS", l)
	}
	if k := dtmf.Decode(got); k != "159#" {
		t.Errorf("far end heard keys %q, want 159#", k)
	}
}

// TestTriggerWithoutModem: the far end's trigger makes the device take
// the line; with no modem answering, it waits for D and reports 999.
// Then the holder's request goes out as B. (What the handset hears is
// TestHandsetHearsNoSignalling's.)
func TestTriggerWithoutModem(t *testing.T) {
	r := newRig(t)
	go read(r.handset, math.MaxInt) // the handset listens throughout
	flush(t, r.far)
	send(t, r.far, "A2#")
	// The device's report comes only after D.
	before := record(t, r.far, 8000)
	if k := dtmf.Decode(before); k != "" {
		t.Errorf("device sent %q before the D", k)
	}
	send(t, r.far, "D")
	after := record(t, r.far, 16000)
	if k := dtmf.Decode(after); k != "C999#" {
		t.Errorf("device reported %q, want C999#", k)
	}
	select {
	case s := <-r.sessions:
		if s.Op != handover.OpSignIn || s.Code != handover.CodeUnfinished || s.Err == nil || s.ByHolder {
			t.Errorf("session %+v", s)
		}
	case <-time.After(testTimeout):
		t.Fatal("no session")
	}

	flush(t, r.far)
	if err := r.dev.Start(handover.OpPay, "12345678"); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.Start(handover.OpPay, "1"); !errors.Is(err, inline.ErrBusy) {
		// The first may already be taken; then this one waits: fine too.
		if err != nil {
			t.Errorf("second Start = %v", err)
		}
	}
	req := record(t, r.far, 16000)
	if k := dtmf.Decode(req); !strings.HasPrefix(k, "B112345678#") {
		t.Errorf("far end heard %q, want the request B112345678#", k)
	}
	if err := r.dev.Start(handover.Op('7'), ""); !errors.Is(err, handover.ErrSequence) {
		t.Errorf("Start(op 7) = %v, want ErrSequence", err)
	}
}

// TestHandsetHearsNoSignalling: everything the handset hears while the
// far end signals decodes to no key at all.
func TestHandsetHearsNoSignalling(t *testing.T) {
	r := newRig(t)
	heard := make(chan []float64, 1)
	go func() { a, _ := read(r.handset, 40000); heard <- a }()
	send(t, r.far, "A2#")
	record(t, r.far, 4000)
	send(t, r.far, "D")
	record(t, r.far, 8000)
	send(t, r.far, "123")
	k := dtmf.Decode(<-heard)
	if strings.ContainsAny(k, "ABCD") || k != "123" {
		t.Errorf("handset heard keys %q, want only the far end's plain 123", k)
	}
}
