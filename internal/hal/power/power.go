// Package power is the device's power manager: a primary internal battery,
// an external inlet, power drawn from the telephone line and a
// rechargeable battery charged from the inlet, an energy model per
// operation, and the policy that refuses card writes and transactions
// below the Low threshold and asks for a clean shutdown at the Critical
// one (docs/device-hardware.md).
//
// Time comes from an injected clock (Config.Now; SimClock in tests), so
// charging and standby drain are deterministic. It imports only hal and
// the standard library.
package power

import (
	"fmt"
	"math"
	"sync"
	"time"

	"cardlink/internal/hal"
)

// Defaults used by New when Config leaves a field zero.
const (
	// DefaultLineMA and DefaultLineVolts are the line budget: 3 mA at 5 V
	// (15 mW), what a device in series with the telephone may take from
	// the loop current without disturbing the call.
	DefaultLineMA    = 3
	DefaultLineVolts = 5
	// DefaultChargeMW is the rate the inlet charges the rechargeable
	// battery: 500 mA at 4 V into the cell.
	DefaultChargeMW = 2000
	// DefaultStandbyMW is the draw while nothing runs: the MCU in stop
	// mode and regulator quiescent current, about 30 µA at 3.3 V.
	DefaultStandbyMW = 0.1
	// DefaultLowPercent and DefaultCriticalPercent are the thresholds.
	DefaultLowPercent      = 15
	DefaultCriticalPercent = 5
)

// Store is a battery's configuration. Its capacity is given either in
// mWh or as mAh at Volts; a Store with no capacity is absent.
type Store struct {
	MWh   float64 // capacity in mWh, or
	MAh   float64 // capacity in mAh
	Volts float64 // at this nominal voltage
	// Level is the initial charge in percent of the capacity, 0–100.
	Level int
}

// capacity returns the store's capacity in µJ (0 if absent).
func (s Store) capacity() int64 {
	mwh := s.MWh
	if mwh == 0 {
		mwh = s.MAh * s.Volts
	}
	return int64(mwh * 3.6e6) // 1 mWh = 3.6 J
}

func (s Store) validate(name string) error {
	switch {
	case s.MWh < 0 || s.MAh < 0 || s.Volts < 0 || math.IsNaN(s.MWh+s.MAh+s.Volts) || math.IsInf(s.MWh+s.MAh+s.Volts, 0):
		return fmt.Errorf("power: %s: negative or invalid capacity", name)
	case s.MWh != 0 && (s.MAh != 0 || s.Volts != 0):
		return fmt.Errorf("power: %s: give the capacity in mWh or as mAh at volts, not both", name)
	case (s.MAh == 0) != (s.Volts == 0):
		return fmt.Errorf("power: %s: a capacity in mAh needs its voltage", name)
	case s.Level < 0 || s.Level > 100:
		return fmt.Errorf("power: %s: level %d%%: want 0–100", name, s.Level)
	case s.capacity() > 1e15: // 280 MWh: no device battery
		return fmt.Errorf("power: %s: capacity too large", name)
	}
	return nil
}

// Config configures a Manager. The zero value is a device with no battery
// and nothing plugged in; DefaultConfig is the reference device.
type Config struct {
	Battery      Store // primary internal battery
	Rechargeable Store // rechargeable battery, charged from the inlet

	Inlet bool // an external supply is plugged into the inlet at start
	Line  bool // the telephone line is connected at start

	// LineMA at LineVolts is the line budget; zero means DefaultLineMA at
	// DefaultLineVolts.
	LineMA, LineVolts float64
	// ChargeMW is the charging rate; zero means DefaultChargeMW.
	ChargeMW float64
	// StandbyMW is the draw while nothing runs; zero means
	// DefaultStandbyMW, negative means none.
	StandbyMW float64
	// LowPercent and CriticalPercent are the thresholds; zero means the
	// defaults. Critical must be below Low.
	LowPercent, CriticalPercent int

	// Model is the energy model; a nil Costs map means DefaultModel.
	Model Model
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig is the reference device: two AA alkaline cells (2500 mAh
// at 3 V) and a Li-ion cell (2000 mAh at 3.7 V), both full, nothing
// plugged in, and the defaults for everything else.
func DefaultConfig() Config {
	return Config{
		Battery:      Store{MAh: 2500, Volts: 3, Level: 100},
		Rechargeable: Store{MAh: 2000, Volts: 3.7, Level: 100},
	}
}

// Validate checks c as New would use it.
func (c Config) Validate() error {
	if err := c.Battery.validate("battery"); err != nil {
		return err
	}
	if err := c.Rechargeable.validate("rechargeable"); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"line current", c.LineMA}, {"line voltage", c.LineVolts}, {"charge rate", c.ChargeMW}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v > 1e6 {
			return fmt.Errorf("power: %s %v: want 0 (the default) or a positive value", f.name, f.v)
		}
	}
	if math.IsNaN(c.StandbyMW) || math.IsInf(c.StandbyMW, 0) || c.StandbyMW > 1e6 {
		return fmt.Errorf("power: standby %v mW: want a finite value", c.StandbyMW)
	}
	low, crit := c.thresholds()
	if low < 0 || low > 100 || crit < 0 || crit >= low {
		return fmt.Errorf("power: thresholds low %d%%, critical %d%%: want 0 ≤ critical < low ≤ 100", low, crit)
	}
	if c.Model.Costs != nil {
		if err := c.Model.Validate(); err != nil {
			return fmt.Errorf("power: %w", err)
		}
	}
	return nil
}

func (c Config) thresholds() (low, crit int) {
	low, crit = c.LowPercent, c.CriticalPercent
	if low == 0 {
		low = DefaultLowPercent
	}
	if crit == 0 {
		crit = DefaultCriticalPercent
	}
	return low, crit
}

// store is a battery's state.
type store struct {
	kind     hal.Source
	capacity int64 // µJ; 0 if absent
	energy   int64 // µJ
	reserve  int64 // µJ kept for a clean shutdown: the Critical level
}

func (s *store) present() bool { return s.capacity > 0 }

// level is the charge in whole percent, rounded down.
func (s *store) level() int {
	if s.capacity == 0 {
		return 0
	}
	return int(s.energy * 100 / s.capacity)
}

// Manager is the power manager: it implements hal.Power. Its methods are
// safe for concurrent use.
type Manager struct {
	now       func() time.Time
	costs     [numOps]Cost
	txn       []Part
	budget    int64 // line budget, µW
	chargeUW  float64
	standbyUW float64
	low, crit int

	mu    sync.Mutex
	last  time.Time
	frac  float64 // µJ of charge or drain not yet applied
	inlet bool
	line  bool
	rech  store
	batt  store
}

var _ hal.Power = (*Manager)(nil)

// New makes a Manager from c; it fails if c is not valid.
func New(c Config) (*Manager, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	model := c.Model
	if model.Costs == nil {
		model = DefaultModel()
	}
	m := &Manager{
		now:       c.Now,
		txn:       append([]Part(nil), model.Transaction...),
		inlet:     c.Inlet,
		line:      c.Line,
		chargeUW:  c.ChargeMW * 1000,
		standbyUW: c.StandbyMW * 1000,
	}
	for op := range hal.Operation(numOps) {
		m.costs[op] = model.Costs[op]
	}
	if m.now == nil {
		m.now = time.Now
	}
	ma, v := c.LineMA, c.LineVolts
	if ma == 0 {
		ma = DefaultLineMA
	}
	if v == 0 {
		v = DefaultLineVolts
	}
	m.budget = int64(ma * v * 1000)
	if m.chargeUW == 0 {
		m.chargeUW = DefaultChargeMW * 1000
	}
	switch {
	case m.standbyUW == 0:
		m.standbyUW = DefaultStandbyMW * 1000
	case m.standbyUW < 0:
		m.standbyUW = 0
	}
	m.low, m.crit = c.thresholds()
	mk := func(kind hal.Source, s Store) store {
		cp := s.capacity()
		return store{kind: kind, capacity: cp, energy: cp * int64(s.Level) / 100, reserve: cp * int64(m.crit) / 100}
	}
	m.batt = mk(hal.SourceBattery, c.Battery)
	m.rech = mk(hal.SourceRechargeable, c.Rechargeable)
	m.last = m.now()
	return m, nil
}

// settle brings the stores up to the clock: the inlet charges the
// rechargeable battery until it is full; without the inlet, standby draw
// beyond what the line gives comes from the batteries. m.mu is held.
func (m *Manager) settle() {
	now := m.now()
	dt := now.Sub(m.last)
	m.last = now
	if dt <= 0 {
		return
	}
	var rate float64 // µW into the stores (negative: out of them)
	switch {
	case m.inlet:
		if m.rech.present() && m.rech.energy < m.rech.capacity {
			rate = m.chargeUW
		}
	case m.line && m.standbyUW <= float64(m.budget):
	default:
		rate = -m.standbyUW
		if m.line {
			rate += float64(m.budget)
		}
	}
	if rate == 0 {
		m.frac = 0
		return
	}
	m.frac += rate * dt.Seconds()
	whole := int64(m.frac)
	if math.Abs(m.frac) > 1e17 {
		whole = int64(math.Copysign(1e17, m.frac))
	}
	m.frac -= float64(whole)
	if whole > 0 {
		m.rech.energy = min(m.rech.capacity, m.rech.energy+whole)
		if m.rech.energy == m.rech.capacity {
			m.frac = 0
		}
	} else if whole < 0 {
		m.drain(-whole, true)
	}
}

// stores returns the batteries in the order the device draws on them: the
// rechargeable one while it is at or above Low, then the primary one; when
// both are below Low, the fuller first. Absent batteries are left out.
func (m *Manager) stores() []*store {
	var out []*store
	r, b := &m.rech, &m.batt
	first, second := r, b
	switch {
	case r.present() && r.level() >= m.low:
	case b.present() && b.level() >= m.low:
		first, second = b, r
	case b.level() > r.level():
		first, second = b, r
	}
	for _, s := range []*store{first, second} {
		if s.present() {
			out = append(out, s)
		}
	}
	return out
}

// drain takes e µJ from the stores in order: first what they hold above
// their Critical reserve, then, if reserve, the reserves; never below
// zero.
func (m *Manager) drain(e int64, reserve bool) {
	ss := m.stores()
	for _, s := range ss {
		t := min(e, max(0, s.energy-s.reserve))
		s.energy -= t
		e -= t
	}
	if !reserve {
		return
	}
	for _, s := range ss {
		t := min(e, s.energy)
		s.energy -= t
		e -= t
	}
}

// status computes the status; m.mu is held.
func (m *Manager) status() hal.PowerStatus {
	st := hal.PowerStatus{Source: hal.SourceBattery}
	ss := m.stores()
	if len(ss) > 0 {
		st.Source = ss[0].kind
		st.Level = ss[0].level()
		st.Low = st.Level < m.low
		st.Critical = st.Level < m.crit
	} else {
		st.Low, st.Critical = true, true
	}
	switch {
	case m.inlet:
		st = hal.PowerStatus{Source: hal.SourceInlet, Level: 100,
			Charging: m.rech.present() && m.rech.energy < m.rech.capacity}
	case m.line:
		st.Source, st.Level = hal.SourceLine, 100
		if len(ss) == 0 {
			st.Low, st.Critical = false, false // nothing to assist with, nothing to protect
		}
	}
	return st
}

// Status returns the current source and level (see hal.PowerStatus).
func (m *Manager) Status() hal.PowerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	return m.status()
}

// SetInlet plugs (true) or unplugs the external supply.
func (m *Manager) SetInlet(plugged bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	m.inlet = plugged
	m.frac = 0
}

// SetLine connects (true) or disconnects the telephone line.
func (m *Manager) SetLine(connected bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	m.line = connected
	m.frac = 0
}

// Levels returns the charge of the primary and rechargeable batteries in
// µJ (0 for an absent one).
func (m *Manager) Levels() (battery, rechargeable int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	return m.batt.energy, m.rech.energy
}

// Check reports whether n units of op may start now; it spends nothing.
// It fails with a *LowError (wrapping hal.ErrLowPower) when the power is
// not there, and with a plain error for a negative n or an unknown op.
// Check(hal.OpTransaction, n) checks n whole transactions (Model.Transaction).
func (m *Manager) Check(op hal.Operation, n int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	_, err := m.check(op, n)
	return err
}

// Use spends the energy of n units of op, failing like Check (and then
// spending nothing). A transaction's energy is spent by its parts as they
// run, so Use(hal.OpTransaction, n) checks like Check and spends nothing.
func (m *Manager) Use(op hal.Operation, n int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	need, err := m.check(op, n)
	if err != nil || op == hal.OpTransaction {
		return err
	}
	m.drain(need, op == hal.OpDisplay)
	return nil
}

// Need returns the energy in µJ n units of op would take from the
// batteries now: none on the inlet, and on the line only the part of each
// unit's draw above the line budget.
func (m *Manager) Need(op hal.Operation, n int) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle()
	return m.need(op, n)
}

// need is Need with m.mu held; op and n are valid.
func (m *Manager) need(op hal.Operation, n int) int64 {
	if m.inlet || n <= 0 {
		return 0
	}
	if op == hal.OpTransaction {
		var sum int64
		for _, p := range m.txn {
			sum = satAdd(sum, m.need(p.Op, p.N))
		}
		return satMul(sum, int64(n))
	}
	c := m.costs[op]
	unit := c.Energy
	if m.line {
		if c.Power <= m.budget {
			return 0
		}
		// The line carries budget/Power of the unit's energy.
		unit = int64(math.Ceil(float64(c.Energy) * float64(c.Power-m.budget) / float64(c.Power)))
	}
	return satMul(unit, int64(n))
}

// check applies the power policy to n units of op and returns the energy
// they take from the batteries; m.mu is held.
func (m *Manager) check(op hal.Operation, n int) (int64, error) {
	if int(op) > numOps {
		return 0, fmt.Errorf("power: unknown operation %s", op)
	}
	if n < 0 {
		return 0, fmt.Errorf("power: %s: negative count %d", op, n)
	}
	need := m.need(op, n)
	if need == 0 {
		return 0, nil
	}
	st := m.status()
	e := &LowError{Op: op, Source: st.Source, Need: need}
	ss := m.stores()
	if len(ss) == 0 {
		e.Reason = ReasonNoBattery
		if m.line {
			e.Budget, e.Draw = m.budget, m.drawOf(op)
		}
		return 0, e
	}
	s := ss[0]
	e.Source, e.Level = s.kind, s.level()
	var avail, total int64
	for _, s := range ss {
		total += s.energy
		avail += max(0, s.energy-s.reserve)
	}
	switch {
	case st.Critical && op != hal.OpDisplay:
		e.Reason, e.Threshold = ReasonCritical, m.crit
	case st.Low && (op == hal.OpCardWrite || op == hal.OpTransaction):
		e.Reason, e.Threshold = ReasonLow, m.low
	case op == hal.OpDisplay && need > total, op != hal.OpDisplay && need > avail:
		// Everything but the display leaves the Critical reserve for
		// the shutdown.
		e.Reason = ReasonEnergy
		e.Have = avail
		if op == hal.OpDisplay {
			e.Have = total
		}
		// The level the first battery would need, given what the
		// other one adds.
		others := avail - max(0, s.energy-s.reserve)
		e.Threshold = percentUp(s.reserve+need-others, s.capacity)
		if op == hal.OpDisplay {
			e.Threshold = percentUp(need-(total-s.energy), s.capacity)
		}
	default:
		return need, nil
	}
	return 0, e
}

// drawOf is the largest power op draws (for a transaction, its hungriest
// part).
func (m *Manager) drawOf(op hal.Operation) int64 {
	if op != hal.OpTransaction {
		return m.costs[op].Power
	}
	var p int64
	for _, t := range m.txn {
		if t.N > 0 {
			p = max(p, m.costs[t.Op].Power)
		}
	}
	return p
}

// percentUp is e as a percentage of capacity, rounded up.
func percentUp(e, capacity int64) int {
	if capacity == 0 || e <= 0 {
		return 0
	}
	p := (float64(e)*100 + float64(capacity) - 1) / float64(capacity)
	if p > 1000 {
		return 1000
	}
	return int(p)
}

func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Reason says why a LowError refused an operation.
type Reason uint8

// The reasons.
const (
	// ReasonCritical: the battery is below the Critical threshold; only
	// the display may still run, for the shutdown.
	ReasonCritical Reason = iota + 1
	// ReasonLow: the battery is below the Low threshold, which card
	// writes and transactions need.
	ReasonLow
	// ReasonEnergy: the battery does not hold the energy the operation
	// needs (above the Critical reserve, but for the display).
	ReasonEnergy
	// ReasonNoBattery: the operation needs battery energy (more than the
	// line budget) and there is no battery.
	ReasonNoBattery
)

func (r Reason) String() string {
	switch r {
	case ReasonCritical:
		return "critical"
	case ReasonLow:
		return "low"
	case ReasonEnergy:
		return "energy"
	case ReasonNoBattery:
		return "no battery"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// LowError is why the power manager refused an operation. It wraps
// hal.ErrLowPower; Display says it in at most hal.Cols characters.
type LowError struct {
	Op     hal.Operation
	Reason Reason
	Source hal.Source // the battery the energy would come from (or the line)
	Level  int        // that battery's level in percent
	// Threshold is the level in percent the operation needs: the Low or
	// Critical threshold, or (ReasonEnergy) the level that would hold the
	// energy.
	Threshold int
	Need      int64 // µJ the operation takes from the batteries
	Have      int64 // µJ the batteries can give it (ReasonEnergy)
	// Budget and Draw are the line budget and the operation's draw in µW
	// (ReasonNoBattery on the line).
	Budget, Draw int64
}

func (e *LowError) Error() string {
	var why string
	switch e.Reason {
	case ReasonCritical:
		why = fmt.Sprintf("%s at %d%%, below the critical %d%%: shut down", e.Source, e.Level, e.Threshold)
	case ReasonLow:
		why = fmt.Sprintf("%s at %d%%, below the %d%% a %s needs", e.Source, e.Level, e.Threshold, e.Op)
	case ReasonEnergy:
		why = fmt.Sprintf("%s needs %s from the %s, which has %s to give (at %d%%, needs %d%%)",
			e.Op, energy(e.Need), e.Source, energy(e.Have), e.Level, e.Threshold)
	case ReasonNoBattery:
		if e.Budget > 0 {
			why = fmt.Sprintf("%s draws %d mW, more than the line's %d mW, and there is no battery",
				e.Op, e.Draw/1000, e.Budget/1000)
		} else {
			why = fmt.Sprintf("%s needs %s and there is no battery or supply", e.Op, energy(e.Need))
		}
	default:
		why = e.Op.String()
	}
	return fmt.Sprintf("%v: %s", hal.ErrLowPower, why)
}

func (e *LowError) Unwrap() error { return hal.ErrLowPower }

// Display says why in at most hal.Cols characters, for the display, e.g.
// "Batt 12% need 15%", "Rech 4% shut down", "Line only, no batt".
func (e *LowError) Display() string {
	src := "Batt"
	if e.Source == hal.SourceRechargeable {
		src = "Rech"
	}
	need := fmt.Sprint(e.Threshold, "%")
	if e.Threshold > 100 {
		need = ">100%"
	}
	switch e.Reason {
	case ReasonCritical:
		return fmt.Sprintf("%s %d%% shut down", src, e.Level)
	case ReasonLow, ReasonEnergy:
		return fmt.Sprintf("%s %d%% need %s", src, e.Level, need)
	case ReasonNoBattery:
		if e.Budget > 0 {
			return "Line only, no batt"
		}
		return "No power source"
	}
	return "Power too low"
}

// energy formats µJ for a message.
func energy(uj int64) string {
	switch {
	case uj < 1000:
		return fmt.Sprintf("%d µJ", uj)
	case uj < 1_000_000:
		return fmt.Sprintf("%.1f mJ", float64(uj)/1e3)
	case uj < 3_600_000_000:
		return fmt.Sprintf("%.1f J", float64(uj)/1e6)
	}
	return fmt.Sprintf("%.1f mWh", float64(uj)/3.6e6)
}

// SimClock is a clock for tests and simulations: it stands still until
// Advance moves it. It is safe for concurrent use.
type SimClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewSimClock returns a clock at t.
func NewSimClock(t time.Time) *SimClock { return &SimClock{t: t} }

// Now returns the clock's time.
func (c *SimClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *SimClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
