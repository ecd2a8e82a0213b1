package power_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"cardlink/internal/hal"
	"cardlink/internal/hal/power"
)

var epoch = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// newManager builds a manager on a SimClock; it fails the test on error.
func newManager(t *testing.T, c power.Config) (*power.Manager, *power.SimClock) {
	t.Helper()
	clk := power.NewSimClock(epoch)
	c.Now = clk.Now
	m, err := power.New(c)
	if err != nil {
		t.Fatalf("New(%+v): %v", c, err)
	}
	return m, clk
}

// oneWh is a 1 Wh store (3.6e9 µJ; 1% = 36e6 µJ).
func oneWh(level int) power.Store { return power.Store{MWh: 1000, Level: level} }

const pct = 36_000_000 // 1% of oneWh in µJ

func lowError(t *testing.T, err error) *power.LowError {
	t.Helper()
	var le *power.LowError
	if !errors.As(err, &le) || !errors.Is(err, hal.ErrLowPower) {
		t.Fatalf("error %v: want a *LowError wrapping hal.ErrLowPower", err)
	}
	if n := utf8.RuneCountInString(le.Display()); n > hal.Cols {
		t.Errorf("Display() = %q: %d runes, want at most %d", le.Display(), n, hal.Cols)
	}
	return le
}

func TestDefaultConfig(t *testing.T) {
	m, _ := newManager(t, power.DefaultConfig())
	st := m.Status()
	want := hal.PowerStatus{Source: hal.SourceRechargeable, Level: 100}
	if st != want {
		t.Errorf("Status() = %+v, want %+v", st, want)
	}
	for op := range hal.OpTransaction + 1 {
		if err := m.Check(op, 1); err != nil {
			t.Errorf("Check(%s, 1) on full batteries: %v", op, err)
		}
	}
}

// TestUseSpends checks that Use takes exactly the model's energy, Check
// takes none, and a transaction is only checked.
func TestUseSpends(t *testing.T) {
	m, _ := newManager(t, power.Config{Battery: oneWh(50), StandbyMW: -1})
	model := power.DefaultModel()
	before, _ := m.Levels()
	for _, tc := range []struct {
		op hal.Operation
		n  int
	}{{hal.OpCardWrite, 1}, {hal.OpCardRead, 7}, {hal.OpDisplay, 3}, {hal.OpModem, 100}, {hal.OpPrinter, 2}, {hal.OpSensor, 1}, {hal.OpRadio, 50}, {hal.OpNetwork, 1000}} {
		if err := m.Check(tc.op, tc.n); err != nil {
			t.Fatalf("Check(%s, %d): %v", tc.op, tc.n, err)
		}
		if got, _ := m.Levels(); got != before {
			t.Fatalf("Check(%s, %d) spent %d µJ", tc.op, tc.n, before-got)
		}
		if got, want := m.Need(tc.op, tc.n), model.Costs[tc.op].Energy*int64(tc.n); got != want {
			t.Errorf("Need(%s, %d) = %d µJ, want %d", tc.op, tc.n, got, want)
		}
		if err := m.Use(tc.op, tc.n); err != nil {
			t.Fatalf("Use(%s, %d): %v", tc.op, tc.n, err)
		}
		got, _ := m.Levels()
		if want := before - model.Costs[tc.op].Energy*int64(tc.n); got != want {
			t.Errorf("after Use(%s, %d): battery %d µJ, want %d", tc.op, tc.n, got, want)
		}
		before = got
	}
	var txn int64
	for _, p := range model.Transaction {
		txn += model.Costs[p.Op].Energy * int64(p.N)
	}
	if got := m.Need(hal.OpTransaction, 2); got != 2*txn {
		t.Errorf("Need(transaction, 2) = %d, want %d", got, 2*txn)
	}
	if err := m.Use(hal.OpTransaction, 1); err != nil {
		t.Fatalf("Use(transaction): %v", err)
	}
	if got, _ := m.Levels(); got != before {
		t.Errorf("Use(transaction) spent %d µJ, want none (its parts spend)", before-got)
	}
}

func TestThresholds(t *testing.T) {
	tests := []struct {
		name   string
		level  int
		op     hal.Operation
		reason power.Reason // 0: allowed
	}{
		{"low refuses card write", 14, hal.OpCardWrite, power.ReasonLow},
		{"low refuses transaction", 14, hal.OpTransaction, power.ReasonLow},
		{"low allows card read", 14, hal.OpCardRead, 0},
		{"low allows printing", 14, hal.OpPrinter, 0},
		{"at low allows card write", 15, hal.OpCardWrite, 0},
		{"at low allows transaction", 15, hal.OpTransaction, 0},
		{"critical refuses card read", 4, hal.OpCardRead, power.ReasonCritical},
		{"critical refuses modem", 4, hal.OpModem, power.ReasonCritical},
		{"critical refuses card write", 4, hal.OpCardWrite, power.ReasonCritical},
		{"critical allows the display", 4, hal.OpDisplay, 0},
		{"above critical allows card read", 6, hal.OpCardRead, 0},
		{"at critical keeps the reserve", 5, hal.OpCardRead, power.ReasonEnergy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newManager(t, power.Config{Battery: oneWh(tc.level)})
			st := m.Status()
			if st.Low != (tc.level < 15) || st.Critical != (tc.level < 5) || st.Level != tc.level || st.Source != hal.SourceBattery {
				t.Errorf("Status() = %+v at %d%%", st, tc.level)
			}
			before, _ := m.Levels()
			err := m.Use(tc.op, 1)
			if tc.reason == 0 {
				if err != nil {
					t.Fatalf("Use(%s, 1) at %d%%: %v, want nil", tc.op, tc.level, err)
				}
				return
			}
			le := lowError(t, err)
			if le.Reason != tc.reason || le.Level != tc.level || le.Source != hal.SourceBattery {
				t.Errorf("Use(%s, 1) at %d%%: %+v, want reason %s", tc.op, tc.level, le, tc.reason)
			}
			if after, _ := m.Levels(); after != before {
				t.Errorf("refused Use spent %d µJ", before-after)
			}
			if !strings.Contains(le.Error(), "%") {
				t.Errorf("Error() = %q: want the level in it", le.Error())
			}
		})
	}
}

func TestDisplayMessages(t *testing.T) {
	m, _ := newManager(t, power.Config{Battery: oneWh(14)})
	if got, want := lowError(t, m.Check(hal.OpCardWrite, 1)).Display(), "Batt 14% need 15%"; got != want {
		t.Errorf("low Display() = %q, want %q", got, want)
	}
	m, _ = newManager(t, power.Config{Rechargeable: oneWh(3)})
	if got, want := lowError(t, m.Check(hal.OpModem, 1)).Display(), "Rech 3% shut down"; got != want {
		t.Errorf("critical Display() = %q, want %q", got, want)
	}
	m, _ = newManager(t, power.Config{Line: true})
	le := lowError(t, m.Check(hal.OpDisplay, 1))
	if got, want := le.Display(), "Line only, no batt"; got != want || le.Reason != power.ReasonNoBattery {
		t.Errorf("line-only Display() = %q (%s), want %q", got, le.Reason, want)
	}
	if !strings.Contains(le.Error(), "80 mW") || !strings.Contains(le.Error(), "15 mW") {
		t.Errorf("line-only Error() = %q: want the draw and the budget", le.Error())
	}
	m, _ = newManager(t, power.Config{})
	if got, want := lowError(t, m.Check(hal.OpCardRead, 1)).Display(), "No power source"; got != want {
		t.Errorf("no-source Display() = %q, want %q", got, want)
	}
}

// TestDisplayFits drives every reason across levels and sizes and checks
// the display text always fits.
func TestDisplayFits(t *testing.T) {
	for _, cfg := range []power.Config{{Battery: oneWh(0)}, {Rechargeable: oneWh(0)}, {Line: true}, {}} {
		for level := 0; level <= 100; level += 3 {
			if cfg.Battery.MWh > 0 {
				cfg.Battery.Level = level
			}
			if cfg.Rechargeable.MWh > 0 {
				cfg.Rechargeable.Level = level
			}
			m, _ := newManager(t, cfg)
			for op := range hal.OpTransaction + 1 {
				for _, n := range []int{1, 100, 100_000, 1 << 40} {
					if err := m.Check(op, n); err != nil {
						lowError(t, err)
					}
				}
			}
		}
	}
}

// TestReserve checks that the Critical reserve is kept for the shutdown:
// only the display may spend it.
func TestReserve(t *testing.T) {
	m, _ := newManager(t, power.Config{Battery: oneWh(6), StandbyMW: -1})
	// Above the reserve: 1% = 36 J; a printed line is 0.444 J: 81 lines
	// fit, 82 do not.
	if err := m.Check(hal.OpPrinter, 81); err != nil {
		t.Fatalf("Check(printer, 81) with 1%% above the reserve: %v", err)
	}
	le := lowError(t, m.Use(hal.OpPrinter, 82))
	if le.Reason != power.ReasonEnergy || le.Have != pct || le.Need != 82*444_000 || le.Threshold != 7 {
		t.Errorf("Use(printer, 82) = %+v, want ReasonEnergy, have %d, need %d, threshold 7%%", le, pct, 82*444_000)
	}
	if got, want := le.Display(), "Batt 6% need 7%"; got != want {
		t.Errorf("Display() = %q, want %q", got, want)
	}
	// The display may run the battery down to nothing, then not further.
	secs := 6 * pct / 80_000
	if err := m.Use(hal.OpDisplay, int(secs)); err != nil {
		t.Fatalf("Use(display, %d) = %v", secs, err)
	}
	st := m.Status()
	if !st.Critical || st.Level != 0 {
		t.Errorf("Status() = %+v, want critical at 0%%", st)
	}
	if err := m.Use(hal.OpDisplay, 1); err == nil {
		t.Errorf("Use(display, 1) on an empty battery: nil, want an error")
	}
}

// TestLine checks the line budget: draws within it take nothing from the
// battery, draws above it take only the excess.
func TestLine(t *testing.T) {
	model := power.DefaultModel()
	model.Costs[hal.OpSensor] = power.Cost{Energy: 10_000, Power: 15_000} // exactly the budget
	m, clk := newManager(t, power.Config{Battery: oneWh(50), Line: true, Model: model})
	if st := m.Status(); st.Source != hal.SourceLine || st.Level != 100 || st.Low {
		t.Errorf("Status() on the line = %+v", st)
	}
	if got := m.Need(hal.OpSensor, 5); got != 0 {
		t.Errorf("Need(sensor within budget) = %d, want 0", got)
	}
	// The modem draws 25 mW against 15: 10/25 of 208 µJ a byte.
	if got, want := m.Need(hal.OpModem, 1000), int64(1000*84); got != want { // ceil(83.2)
		t.Errorf("Need(modem, 1000) on the line = %d, want %d", got, want)
	}
	before, _ := m.Levels()
	if err := m.Use(hal.OpPrinter, 1); err != nil {
		t.Fatal(err)
	}
	after, _ := m.Levels()
	if want := int64(444_000 * (7_400_000 - 15_000) / 7_400_000); before-after != want {
		t.Errorf("printing a line on the line took %d µJ, want %d", before-after, want)
	}
	// Standby (0.1 mW) is within the budget: a day on the line costs
	// nothing.
	clk.Advance(24 * time.Hour)
	if got, _ := m.Levels(); got != after {
		t.Errorf("a day of standby on the line took %d µJ", after-got)
	}
	m.SetLine(false)
	clk.Advance(time.Hour)
	if got, _ := m.Levels(); after-got != 360_000 { // 0.1 mW for 3600 s
		t.Errorf("an hour of standby on the battery took %d µJ, want 360000", after-got)
	}
	if st := m.Status(); st.Source != hal.SourceBattery {
		t.Errorf("Status() after disconnecting the line = %+v", st)
	}
}

// TestLineLowBattery: on the line a low battery still refuses what needs
// its help, but not what the line carries alone.
func TestLineLowBattery(t *testing.T) {
	model := power.DefaultModel()
	model.Costs[hal.OpCardWrite] = power.Cost{Energy: 1_000, Power: 10_000}
	m, _ := newManager(t, power.Config{Battery: oneWh(10), Line: true, Model: model})
	if st := m.Status(); !st.Low || st.Source != hal.SourceLine {
		t.Errorf("Status() = %+v, want low on the line", st)
	}
	if err := m.Check(hal.OpCardWrite, 1); err != nil {
		t.Errorf("a card write within the line budget: %v", err)
	}
	if le := lowError(t, m.Check(hal.OpTransaction, 1)); le.Reason != power.ReasonLow {
		t.Errorf("transaction on the line with a low battery: %+v", le)
	}
}

func TestInletCharging(t *testing.T) {
	// 1 Wh at 10%, charged at 1 W: +1% every 36 s.
	m, clk := newManager(t, power.Config{Rechargeable: oneWh(10), ChargeMW: 1000, StandbyMW: -1})
	if le := lowError(t, m.Check(hal.OpCardWrite, 1)); le.Reason != power.ReasonLow || le.Source != hal.SourceRechargeable {
		t.Errorf("before plugging in: %+v", le)
	}
	m.SetInlet(true)
	if st := m.Status(); st != (hal.PowerStatus{Source: hal.SourceInlet, Level: 100, Charging: true}) {
		t.Errorf("Status() plugged in = %+v", st)
	}
	if err := m.Check(hal.OpTransaction, 1000); err != nil {
		t.Errorf("on the inlet: %v", err)
	}
	_, r0 := m.Levels()
	if err := m.Use(hal.OpPrinter, 100); err != nil {
		t.Fatal(err)
	}
	if _, r := m.Levels(); r != r0 {
		t.Errorf("printing on the inlet took %d µJ from the battery", r0-r)
	}
	clk.Advance(36 * 50 * time.Second) // +50%
	if _, r := m.Levels(); r != 60*pct {
		t.Errorf("after 30 min charging: %d µJ, want %d", r, 60*pct)
	}
	clk.Advance(time.Hour) // would be +100%: stops at full
	if _, r := m.Levels(); r != 100*pct {
		t.Errorf("after charging past full: %d µJ, want %d", r, 100*pct)
	}
	if st := m.Status(); st.Charging {
		t.Errorf("Status() when full = %+v, want not charging", st)
	}
	m.SetInlet(false)
	if st := m.Status(); st != (hal.PowerStatus{Source: hal.SourceRechargeable, Level: 100}) {
		t.Errorf("Status() unplugged = %+v", st)
	}
}

// TestStoreOrder: the rechargeable battery is used while at or above Low,
// then the primary one.
func TestStoreOrder(t *testing.T) {
	m, _ := newManager(t, power.Config{Battery: oneWh(80), Rechargeable: oneWh(16), StandbyMW: -1})
	if st := m.Status(); st.Source != hal.SourceRechargeable || st.Level != 16 {
		t.Fatalf("Status() = %+v, want rechargeable 16%%", st)
	}
	b0, _ := m.Levels()
	// 1% of the rechargeable battery: 36 J = 81 printed lines and a bit.
	if err := m.Use(hal.OpPrinter, 82); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); st.Source != hal.SourceBattery || st.Level != 80 || st.Low {
		t.Errorf("Status() with the rechargeable at 15%%-: %+v, want primary 80%%", st)
	}
	if b, _ := m.Levels(); b != b0 {
		t.Errorf("primary spent %d µJ while the rechargeable was above Low", b0-b)
	}
	if err := m.Use(hal.OpCardWrite, 1); err != nil {
		t.Errorf("card write on the primary: %v", err)
	}
	if b, _ := m.Levels(); b0-b != 22_500 {
		t.Errorf("card write took %d µJ from the primary, want 22500", b0-b)
	}
}

func TestConcurrentUse(t *testing.T) {
	m, _ := newManager(t, power.Config{Battery: oneWh(50), StandbyMW: -1})
	b0, _ := m.Levels()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if err := m.Use(hal.OpCardRead, 1); err != nil {
					t.Error(err)
					return
				}
				m.Status()
			}
		})
	}
	wg.Wait()
	if b, _ := m.Levels(); b0-b != 800*1_500 {
		t.Errorf("800 concurrent card reads took %d µJ, want %d", b0-b, 800*1_500)
	}
}

func TestBadInput(t *testing.T) {
	m, _ := newManager(t, power.DefaultConfig())
	for _, tc := range []struct {
		op hal.Operation
		n  int
	}{{hal.OpCardRead, -1}, {hal.OpTransaction + 1, 1}} {
		err := m.Use(tc.op, tc.n)
		if err == nil || errors.Is(err, hal.ErrLowPower) {
			t.Errorf("Use(%s, %d) = %v, want a plain error", tc.op, tc.n, err)
		}
	}
	if err := m.Use(hal.OpCardWrite, 0); err != nil {
		t.Errorf("Use(card write, 0) = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]power.Config{
		"level above 100":    {Battery: power.Store{MWh: 10, Level: 101}},
		"negative capacity":  {Battery: power.Store{MWh: -1}},
		"both units":         {Battery: power.Store{MWh: 10, MAh: 5, Volts: 3}},
		"mAh without volts":  {Rechargeable: power.Store{MAh: 5}},
		"critical above low": {LowPercent: 10, CriticalPercent: 20},
		"low above 100":      {LowPercent: 120},
		"negative line":      {LineMA: -3},
		"incomplete model":   {Model: power.Model{Costs: map[hal.Operation]power.Cost{hal.OpDisplay: {}}}},
	}
	for name, c := range bad {
		if _, err := power.New(c); err == nil {
			t.Errorf("New(%s) = nil error", name)
		}
	}
	if err := power.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if err := power.DefaultModel().Validate(); err != nil {
		t.Errorf("DefaultModel().Validate() = %v", err)
	}
	c := power.Config{Battery: power.Store{MAh: 1000, Volts: 3.6, Level: 100}}
	m, _ := newManager(t, c)
	if b, _ := m.Levels(); b != 3600*3_600_000 {
		t.Errorf("1000 mAh at 3.6 V = %d µJ, want %d", b, 3600*3_600_000)
	}
}

// TestRandomWalk drives a manager through a seeded random sequence of
// operations, time and plug events and checks the invariants after every
// step: Check and Use agree; a refusal spends nothing and wraps
// hal.ErrLowPower; a success spends exactly Need; no battery goes below
// zero or above its capacity; only the display (and standby) reaches
// into the Critical reserve; Low and Critical follow the level.
func TestRandomWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 20 {
		cfg := power.Config{
			Battery:      power.Store{MWh: float64(1 + rng.IntN(50)), Level: rng.IntN(101)},
			Rechargeable: power.Store{MWh: float64(rng.IntN(3) * 20), Level: rng.IntN(101)},
			Inlet:        rng.IntN(4) == 0,
			Line:         rng.IntN(3) == 0,
			ChargeMW:     float64(1 + rng.IntN(3000)),
		}
		if cfg.Rechargeable.MWh == 0 {
			cfg.Rechargeable.Level = 0
		}
		m, clk := newManager(t, cfg)
		capB := int64(cfg.Battery.MWh * 3.6e6)
		capR := int64(cfg.Rechargeable.MWh * 3.6e6)
		for step := range 400 {
			switch rng.IntN(10) {
			case 0:
				m.SetInlet(rng.IntN(3) == 0)
			case 1:
				m.SetLine(rng.IntN(2) == 0)
			case 2:
				clk.Advance(time.Duration(rng.IntN(3600)) * time.Second)
			}
			op := hal.Operation(rng.IntN(int(hal.OpTransaction) + 1))
			n := rng.IntN(200)
			st := m.Status()
			b0, r0 := m.Levels()
			need := m.Need(op, n)
			checkErr := m.Check(op, n)
			useErr := m.Use(op, n)
			b1, r1 := m.Levels()
			where := func() string { return fmt.Sprintf("run %d step %d: %s×%d in %+v", run, step, op, n, st) }
			if (checkErr == nil) != (useErr == nil) {
				t.Fatalf("%s: Check %v but Use %v", where(), checkErr, useErr)
			}
			spent := (b0 - b1) + (r0 - r1)
			switch {
			case useErr != nil:
				lowError(t, useErr)
				if spent != 0 {
					t.Fatalf("%s: refused (%v) but spent %d µJ", where(), useErr, spent)
				}
			case op == hal.OpTransaction:
				if spent != 0 {
					t.Fatalf("%s: a transaction spent %d µJ", where(), spent)
				}
			case spent != need:
				t.Fatalf("%s: spent %d µJ, Need said %d", where(), spent, need)
			}
			if useErr == nil && need > 0 {
				if st.Critical && op != hal.OpDisplay {
					t.Fatalf("%s: ran at critical", where())
				}
				if st.Low && (op == hal.OpCardWrite || op == hal.OpTransaction) {
					t.Fatalf("%s: ran at low", where())
				}
				if op != hal.OpDisplay && op != hal.OpTransaction {
					resB, resR := capB*5/100, capR*5/100
					if b1 < min(b0, resB) || r1 < min(r0, resR) {
						t.Fatalf("%s: reached into the reserve: battery %d→%d (reserve %d), rechargeable %d→%d (reserve %d)",
							where(), b0, b1, resB, r0, r1, resR)
					}
				}
			}
			if b1 < 0 || b1 > capB || r1 < 0 || r1 > capR {
				t.Fatalf("%s: levels %d/%d outside 0..%d/%d", where(), b1, r1, capB, capR)
			}
			if st.Source != hal.SourceInlet && st.Source != hal.SourceLine && (st.Low != (st.Level < 15) || st.Critical != (st.Level < 5)) {
				t.Fatalf("%s: flags do not follow the level", where())
			}
		}
	}
}
