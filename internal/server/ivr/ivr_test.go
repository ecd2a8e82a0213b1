package ivr_test

import (
	"context"
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/line"
	"cardlink/internal/link"
	"cardlink/internal/link/dtmf"
	"cardlink/internal/server/ivr"
	"cardlink/internal/store"
)

// noModem is an answering modem that finds no device on the line.
func noModem(context.Context, *line.Call) (link.Link, error) {
	return nil, errors.New("no carrier")
}

// caller dials number through the impaired line, types keys (DTMF, at
// once: the IVR takes keys typed ahead) and hears the call to its end.
// It returns what it heard.
func (b *bed) caller(t *testing.T, number, from, keys string) []float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	call, err := line.Dial(ctx, b.addr, number, &line.Options{From: from, Forward: &b.impaired, Back: &b.impaired})
	if err != nil {
		t.Errorf("Dial(%s) = %v", number, err)
		return nil
	}
	defer call.Hangup()
	stop := context.AfterFunc(ctx, func() { call.Hangup() })
	defer stop()
	if keys != "" {
		tones, err := dtmf.Generate(keys, dtmf.Params{})
		if err != nil {
			t.Fatal(err)
		}
		go call.Write(tones)
	}
	var heard []float64
	buf := make([]float64, 800)
	for {
		n, err := call.Read(buf)
		heard = append(heard, buf[:n]...)
		if err != nil {
			if !errors.Is(err, line.ErrHangup) {
				t.Errorf("caller %s: call ended with %v, want the IVR's hang-up", from, err)
			}
			return heard
		}
	}
}

// loud counts the samples in 20 ms blocks louder than -30 dBFS (the
// line's noise is at -30 dBFS in band over all; a prompt is far above).
func loud(a []float64) int {
	n := 0
	for i := 0; i+160 <= len(a); i += 160 {
		p := 0.0
		for _, v := range a[i : i+160] {
			p += v * v
		}
		if 10*math.Log10(p/160/0.5+1e-12) > -24 {
			n += 160
		}
	}
	return n
}

func promptLen(t *testing.T, v ivr.Voice, texts ...string) int {
	t.Helper()
	n := 0
	for _, s := range texts {
		a, err := v.Say(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		n += len(a)
	}
	return n
}

// TestMenu runs the voice menu through the switch at 20 dB SNR with band
// limit and drift: the caller's keys reach the IVR, which asks for the
// reference, looks the purchase up, and hands the line over with the
// trigger the caller hears; without a device on the line it says so and
// hangs up. Unknown references and silence end as such. Three calls run
// at once.
func TestMenu(t *testing.T) {
	b := newBed(t)
	p := b.newPurchase(t, 1250)
	// The real answering modem: with no device on the line its carrier
	// never comes, and the IVR gives up after CarrierTimeout.
	out := b.serveIVR(t, "100", 3, ivr.Config{Modem: answerModem, Voice: ivr.Tones{}, KeyTimeout: 3 * time.Second, Tries: 2})

	cases := []struct {
		from, keys string
		result     string
		choices    []string
		trigger    string // the handover sequence the caller must hear
	}{
		{"11", "1" + p.Reference + "#", "no-device", []string{"1 pay", "ref " + p.Reference, "handover pay"}, "A1" + p.Reference + "#"},
		{"12", "2", "no-device", []string{"2 sign-in", "handover sign-in"}, "A2#"},
		{"13", "199#", "unknown-reference", []string{"1 pay", "ref 99"}, ""},
	}
	var wg sync.WaitGroup
	heard := make([][]float64, len(cases))
	for i, c := range cases {
		wg.Go(func() { heard[i] = b.caller(t, "100", c.from, c.keys) })
	}
	wg.Wait()
	got := map[string]ivr.Outcome{}
	for range cases {
		o := waitOutcome(t, out)
		got[o.Caller] = o
	}
	for i, c := range cases {
		o := got[c.from]
		if o.Result != c.result || !slices.Equal(o.Choices[:min(len(o.Choices), len(c.choices))], c.choices) || o.Err != nil {
			t.Errorf("caller %s: outcome %+v; want %s with choices %q", c.from, o, c.result, c.choices)
		}
		if o.LineTime <= 0 {
			t.Errorf("caller %s: line time %v", c.from, o.LineTime)
		}
		keys := dtmf.Decode(heard[i])
		if c.trigger != "" && !strings.Contains(keys, c.trigger) {
			t.Errorf("caller %s heard keys %q, want the trigger %q", c.from, keys, c.trigger)
		}
		if c.trigger == "" && strings.ContainsAny(keys, "ABCD") {
			t.Errorf("caller %s heard signalling %q", c.from, keys)
		}
	}
	if o := got["11"]; o.Purchase != p.ID || o.Amount.Minor != 1250 {
		t.Errorf("pay outcome names purchase %s of %v, want %s of 1250", o.Purchase, o.Amount, p.ID)
	}
	if st, _ := b.ms.Purchase(context.Background(), "", p.ID); st.Status != store.PurchasePending {
		t.Errorf("purchase %s after no device: %s, want pending", p.ID, st.Status)
	}
	logs := b.logText()
	for _, c := range cases {
		if !strings.Contains(logs, "caller="+c.from+" ") || !strings.Contains(logs, "outcome="+c.result) {
			t.Errorf("log lacks the call from %s (%s):\n%s", c.from, c.result, logs)
		}
	}
}

// TestBargeIn: a key pressed at once stops the welcome prompt, so the
// caller hears far less of it than a caller who waits hears; the silent
// caller is asked again and the call ends with no input.
func TestBargeIn(t *testing.T) {
	b := newBed(t)
	v := ivr.Tones{}
	out := b.serveIVR(t, "100", 1, ivr.Config{Modem: noModem, Voice: v, KeyTimeout: 2 * time.Second, Tries: 1})

	quiet := b.caller(t, "100", "21", "")
	o := waitOutcome(t, out)
	if o.Result != "no-input" || !slices.Equal(o.Choices, []string{"none"}) {
		t.Errorf("silent caller: outcome %+v, want no-input after one try", o)
	}
	full := promptLen(t, v, ivr.PromptWelcome, ivr.PromptMenu)
	if n := loud(quiet); n < full*8/10 {
		t.Errorf("silent caller heard %d loud samples, want about the %d of welcome and menu at least", n, full)
	}

	// '9' is no choice: it cuts the welcome and menu; then come "sorry"
	// and goodbye.
	hasty := b.caller(t, "100", "22", "9")
	o = waitOutcome(t, out)
	if !slices.Equal(o.Choices, []string{"9 ?"}) {
		t.Errorf("hasty caller: choices %q, want [9 ?]", o.Choices)
	}
	rest := promptLen(t, v, ivr.PromptNoInput, ivr.PromptGoodbye)
	if n := loud(hasty); n >= rest+full/2 {
		t.Errorf("hasty caller heard %d loud samples; the prompts after the key are %d, welcome and menu %d: no barge-in", n, rest, full)
	}
}

// TestSpeech renders the prompts with espeak-ng (skipped without it):
// each is speech-length audio at 8 kHz, rendered once.
func TestSpeech(t *testing.T) {
	sp, err := ivr.NewSpeech("", 0)
	if err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	a, err := sp.Say(ctx, ivr.PromptMenu)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) < 8000 || len(a) > 8*8000 {
		t.Errorf("%q is %d samples, want 1-8 s at 8 kHz", ivr.PromptMenu, len(a))
	}
	if keys := dtmf.Decode(a); keys != "" {
		t.Errorf("the prompt reads as keys %q", keys)
	}
	again, _ := sp.Say(ctx, ivr.PromptMenu)
	if &again[0] != &a[0] {
		t.Error("the prompt was rendered twice")
	}
}

// TestCallerHangsUp: a caller who hangs up during the welcome ends the
// call as hung-up, without an error.
func TestCallerHangsUp(t *testing.T) {
	b := newBed(t)
	out := b.serveIVR(t, "100", 1, ivr.Config{Modem: noModem, Voice: ivr.Tones{}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	call, err := line.Dial(ctx, b.addr, "100", &line.Options{From: "31"})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float64, 2000)
	if _, err := call.Read(buf); err != nil {
		t.Fatal(err)
	}
	call.Hangup()
	o := waitOutcome(t, out)
	if o.Result != "hung-up" || o.Err != nil || o.Caller != "31" {
		t.Errorf("outcome %+v, want hung-up without error", o)
	}
}

// TestShutdownWithCallUp: ending Serve's context hangs up the calls in
// progress, Serve returns, and no goroutine is left behind.
func TestShutdownWithCallUp(t *testing.T) {
	b := newBed(t)
	base := runtime.NumGoroutine()
	s, err := ivr.New(ivr.Config{Modem: noModem, Devices: b.srv, Purchases: b.ms, Voice: ivr.Tones{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l, err := line.Listen(ctx, b.addr, "100", &line.ListenOptions{Lines: 2, Window: ivr.Window})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l, nil) }()
	dctx, dcancel := context.WithTimeout(context.Background(), testTimeout)
	defer dcancel()
	call, err := line.Dial(dctx, b.addr, "100", nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float64, 2000)
	if _, err := call.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve() = %v after cancel, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return after cancel")
	}
	l.Close()
	for {
		if _, err := call.Read(buf); err != nil {
			if !errors.Is(err, line.ErrHangup) {
				t.Errorf("caller: %v, want the IVR's hang-up", err)
			}
			break
		}
	}
	call.Hangup()
	deadline := time.Now().Add(testTimeout)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines after shutdown, %d before", n, base)
	}
}

// TestConfig: the required fields.
func TestConfig(t *testing.T) {
	if _, err := ivr.New(ivr.Config{}); !errors.Is(err, ivr.ErrConfig) {
		t.Errorf("New(empty) = %v, want ErrConfig", err)
	}
}
