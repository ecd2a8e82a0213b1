package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"cardlink/internal/hal"
	"cardlink/internal/link"
	"cardlink/internal/reader"
	"cardlink/internal/wallet"
)

// State is a state of the controller (docs/device.md draws them).
type State uint8

// The controller's states.
const (
	StateOff           State = iota // not running, or shut down
	StateIdle                       // no card: "Insert card"
	StateCardInserted               // reading the card
	StateMenu                       // choose a service
	StateVerify                     // PIN or finger
	StateReview                     // the holder reviews what they approve
	StateCommunicating              // talking to the server
	StateResult                     // showing an outcome, or the card's data
	StateError                      // showing what went wrong
	StateLowPower                   // refusing an operation for low power
)

var stateNames = [...]string{"off", "idle", "card inserted", "choose service", "PIN or finger",
	"review", "communicating", "result", "error", "low power"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// transitions are the moves the controller may make, besides those every
// state has: to StateIdle (the card went away), StateOff (shut down) and
// StateLowPower (power too low for what was asked), and those every state
// with a card has: to StateError.
var transitions = map[State][]State{
	StateOff:           {StateIdle},
	StateIdle:          {StateCardInserted},
	StateCardInserted:  {StateMenu, StateCommunicating, StateError},
	StateMenu:          {StateMenu, StateVerify, StateReview, StateCommunicating, StateResult, StateError},
	StateVerify:        {StateVerify, StateReview, StateCommunicating, StateResult, StateError, StateMenu},
	StateReview:        {StateReview, StateVerify, StateCommunicating, StateResult, StateError, StateMenu},
	StateCommunicating: {StateCommunicating, StateReview, StateVerify, StateResult, StateError, StateMenu},
	StateResult:        {StateResult, StateMenu},
	StateError:         {StateMenu, StateCommunicating, StateResult},
	StateLowPower:      {StateMenu},
}

// allowed reports whether the controller may move from one state to
// another.
func allowed(from, to State) bool {
	if to == StateIdle || to == StateOff || to == StateLowPower {
		return true
	}
	if to == StateError && from != StateOff && from != StateIdle {
		return true
	}
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// ErrShutdown is what Run returns when it shut the device down because
// the power manager said power was critical; it wraps hal.ErrLowPower.
var ErrShutdown = fmt.Errorf("device shut down: %w", hal.ErrLowPower)

// Errors that end a holder's step, as the cause of its context.
var (
	errCardRemoved = fmt.Errorf("card removed (%w)", ErrInterrupted)
	errCritical    = fmt.Errorf("power critical (%w)", ErrInterrupted)
	errCancelled   = fmt.Errorf("cancelled by the holder (%w)", ErrInterrupted)
	errTimeout     = fmt.Errorf("no key pressed in time (%w)", ErrInterrupted)
)

// Defaults of the Controller's durations.
const (
	DefaultTimeout       = 2 * time.Minute
	DefaultHolderTimeout = 2 * time.Minute
	DefaultPowerPoll     = 200 * time.Millisecond
)

// Controller is the device's firmware: a state machine that waits for a
// card, offers the services on the display, takes the holder's keys and
// drives the card, the server link, the power manager, the printer and
// the biometric sensor. Set the fields, then call Run once.
//
// Display, Keypad, Reader and Dial are required. The reader should also
// implement reader.Watcher: without it, a card is looked for every
// PowerPoll and its removal is noticed only when the card stops
// answering.
type Controller struct {
	Display hal.Display
	Keypad  hal.Keypad
	Reader  reader.Reader
	// Power is the power manager; nil means mains power that never runs
	// low.
	Power hal.Power
	// Printer prints receipts of approved purchases and payments; nil
	// means none is attached.
	Printer hal.Printer
	// Sensor captures fingerprints for match-on-card; nil means none: the
	// holder gives a PIN.
	Sensor hal.Sensor
	// Dial opens a new link to the server.
	Dial func(ctx context.Context) (link.Link, error)
	// Memory is the device's NVM: its identity (a server key update is
	// pinned in it), the purchase it has to settle and its Settings.
	// When nil, Identity is used, updates and the purchase to settle
	// are kept in RAM only, and the settings are the defaults.
	Memory   *Memory
	Identity Identity
	// Payee, when set, is the merchant name this device pays from the
	// purse offline (service "Pay"), as at a shop's counter; Receipts
	// takes each debit receipt for the merchant to redeem (and the
	// printer prints it). Empty means the Settings' payee in Memory;
	// none hides the service.
	Payee    string
	Receipts func(ctx context.Context, r PayReceipt) error
	// LinkOp is the energy operation of one byte on the link; the zero
	// value (hal.OpDisplay) means hal.OpNetwork.
	LinkOp hal.Operation
	// Clock gives the time of offline payments; nil means time.Now.
	Clock func() time.Time
	// Rand makes transaction ids and nonces and fills PIN blocks; nil
	// means crypto/rand.
	Rand io.Reader
	// Timeout bounds one exchange with the server; HolderTimeout how long
	// the device waits for a key; PowerPoll how often it reads the power
	// manager. Zero means the defaults: the ROM's, and for HolderTimeout
	// the Settings' in Memory first.
	Timeout, HolderTimeout, PowerPoll time.Duration
	// Log receives what the device did; nil discards.
	Log *slog.Logger
	// OnState, if set, is called on every state change (from Run's
	// goroutine).
	OnState func(State)

	mu      sync.Mutex // guards state, ind, shown and the display
	state   State
	ind     hal.Indicators
	shown   hal.Screen
	pending *pendingTxn // an interrupted transaction to settle
}

// State returns the controller's current state. It is safe for
// concurrent use.
func (c *Controller) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// enter moves to state s, refusing (a programming error) a move the
// transitions do not allow.
func (c *Controller) enter(s State) {
	c.mu.Lock()
	from := c.state
	if !allowed(from, s) {
		c.mu.Unlock()
		panic(fmt.Sprintf("device: no transition from %v to %v", from, s))
	}
	c.state = s
	c.mu.Unlock()
	if from != s {
		c.Log.Debug("state", "from", from.String(), "to", s.String())
	}
	if c.OnState != nil {
		c.OnState(s)
	}
}

// show puts rows on the display.
func (c *Controller) show(rows ...string) {
	var s hal.Screen
	copy(s[:], rows)
	c.mu.Lock()
	c.shown = s
	err := c.Display.Show(s)
	c.mu.Unlock()
	if err != nil {
		c.Log.Warn("display", "err", err)
	}
}

// showIdle shows s unless it is already on the display: the idle loop
// redraws only what changed.
func (c *Controller) showIdle(rows ...string) {
	var s hal.Screen
	copy(s[:], rows)
	c.mu.Lock()
	same := c.shown == s
	c.mu.Unlock()
	if !same {
		c.show(rows...)
	}
}

// indicate updates the indicators when they changed.
func (c *Controller) indicate(f func(*hal.Indicators)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ind := c.ind
	f(&ind)
	if ind == c.ind {
		return
	}
	c.ind = ind
	if err := c.Display.Indicate(ind); err != nil {
		c.Log.Warn("indicators", "err", err)
	}
}

// power returns the power status (mains when there is no manager).
func (c *Controller) power() hal.PowerStatus {
	if c.Power == nil {
		return hal.PowerStatus{Source: hal.SourceInlet, Level: 100}
	}
	return c.Power.Status()
}

// check asks the power manager whether op may start.
func (c *Controller) check(op hal.Operation, n int) error {
	if c.Power == nil {
		return nil
	}
	return c.Power.Check(op, n)
}

// spend spends the energy of an operation under way: a refusal (the
// reserve is going) is logged, and the watcher shuts the device down at
// the critical level.
func (c *Controller) spend(op hal.Operation, n int) {
	if err := c.use(op, n); err != nil {
		c.Log.Debug("energy not spent", "op", op.String(), "err", err)
	}
}

// use spends the energy of op; it returns the manager's refusal.
func (c *Controller) use(op hal.Operation, n int) error {
	if c.Power == nil || n <= 0 {
		return nil
	}
	return c.Power.Use(op, n)
}

func (c *Controller) defaults() error {
	if c.Display == nil || c.Keypad == nil || c.Reader == nil || c.Dial == nil {
		return errors.New("device: Controller needs Display, Keypad, Reader and Dial")
	}
	if c.Memory == nil {
		if err := c.Identity.Validate(); err != nil {
			return fmt.Errorf("device: %w", err)
		}
	} else if _, err := c.Memory.Identity(); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if c.LinkOp == hal.OpDisplay {
		c.LinkOp = hal.OpNetwork
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Timeout <= 0 {
		c.Timeout = rom.Timeout
	}
	if c.PowerPoll <= 0 {
		c.PowerPoll = rom.PowerPoll
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// settings returns the settings in force: the Controller's fields where
// set, else those stored in Memory, else the ROM's defaults. A stored
// record that does not read is logged and the defaults used.
func (c *Controller) settings() Settings {
	var st Settings
	if c.Memory != nil {
		var err error
		if st, err = c.Memory.Settings(); err != nil {
			c.Log.Warn("settings unreadable: using the defaults", "err", err)
			st = Settings{}
		}
	}
	if c.Payee != "" {
		st.Payee = c.Payee
	}
	if c.HolderTimeout > 0 {
		st.HolderTimeout = c.HolderTimeout
	}
	if st.HolderTimeout <= 0 {
		st.HolderTimeout = rom.HolderTimeout
	}
	return st
}

// identity reads the device's identity.
func (c *Controller) identity() (Identity, error) {
	if c.Memory != nil {
		return c.Memory.Identity()
	}
	return c.Identity, nil
}

// Run runs the device until ctx ends (it returns nil) or the power
// manager reports critical power (it shows so, settles what it can,
// powers the card down and returns ErrShutdown). It returns an error at
// once when a required field is missing or the identity is not valid.
// Run must not be called twice at once.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.defaults(); err != nil {
		return err
	}
	c.mu.Lock()
	c.state = StateOff
	c.mu.Unlock()
	if c.Memory != nil {
		p, err := c.Memory.pending()
		if err != nil {
			c.Log.Warn("forgetting an unreadable pending purchase", "err", err)
			c.Memory.setPending(nil)
		}
		c.pending = p
	}
	c.enter(StateIdle)
	defer func() {
		c.enter(StateOff)
	}()
	for {
		if c.critical() {
			return c.shutdown()
		}
		c.idleScreen()
		present, err := c.waitCard(ctx)
		if ctx.Err() != nil {
			c.show("", "    Switched off")
			return nil
		}
		if err != nil {
			c.Log.Warn("reader", "err", err)
			continue
		}
		if !present {
			continue // a power poll
		}
		if err := c.session(ctx); errors.Is(err, ErrShutdown) {
			return c.shutdown()
		}
		if ctx.Err() != nil {
			c.show("", "    Switched off")
			return nil
		}
		c.enter(StateIdle)
	}
}

// setPending keeps p (nil: none) as the purchase to settle, in RAM and
// in Memory when there is one.
func (c *Controller) setPending(p *pendingTxn) {
	c.pending = p
	if c.Memory != nil {
		if err := c.Memory.setPending(p); err != nil {
			c.Log.Warn("pending purchase not stored", "err", err)
		}
	}
}

// critical reads the power manager and updates the indicators; it
// reports whether the device must shut down.
func (c *Controller) critical() bool {
	st := c.power()
	c.indicate(func(i *hal.Indicators) { i.Power = st })
	return st.Critical
}

// shutdown shows that the device is shutting down and returns
// ErrShutdown.
func (c *Controller) shutdown() error {
	st := c.power()
	c.enter(StateLowPower)
	c.show("Battery empty", fmt.Sprintf("%s %d%%", st.Source, st.Level), "Shutting down", "Card is safe")
	c.Log.Warn("power critical: shutting down", "source", st.Source.String(), "level", st.Level)
	return ErrShutdown
}

// idleScreen shows the idle screen with the power source and level.
func (c *Controller) idleScreen() {
	st := c.power()
	c.showIdle("cardlink", "", "Insert card", powerLine(st))
}

// powerLine writes the power status on one row, such as "battery 80%".
func powerLine(st hal.PowerStatus) string {
	s := fmt.Sprintf("%s %d%%", st.Source, st.Level)
	switch {
	case st.Critical:
		s += " EMPTY"
	case st.Low:
		s += " LOW"
	case st.Charging:
		s += " charging"
	}
	return s
}

// waitCard waits at most PowerPoll for a card; it reports whether one is
// in the reader.
func (c *Controller) waitCard(ctx context.Context) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, c.PowerPoll)
	defer cancel()
	if w, ok := c.Reader.(reader.Watcher); ok {
		present, err := w.Present(ctx)
		if err != nil || present {
			return present, err
		}
		if err := w.Wait(wctx, false); err != nil {
			if wctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
		return w.Present(ctx)
	}
	<-wctx.Done()
	return true, nil // Connect finds out
}

// session is one card in the reader: connect, settle an interrupted
// transaction, offer the services until the card goes away. It returns
// ErrShutdown when power went critical, and nil otherwise.
func (c *Controller) session(ctx context.Context) error {
	c.enter(StateCardInserted)
	c.show("Reading card...")
	conn, err := c.Reader.Connect(ctx)
	if errors.Is(err, reader.ErrNoCard) {
		return nil
	}
	if err != nil {
		return c.cardError(ctx, err)
	}
	c.indicate(func(i *hal.Indicators) { i.Card = true })
	defer c.indicate(func(i *hal.Indicators) { i.Card = false })
	mc := &meteredConn{Conn: conn, c: c}
	defer mc.Close()

	// The holder's steps end when the card goes away or power fails.
	hctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop(nil) // before Wait: ends the watchers
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.watch(hctx, stop)
	}()

	s := &cardSession{c: c, ctx: ctx, hctx: hctx, set: c.settings()}
	s.card, err = wallet.Select(hctx, mc)
	if err == nil {
		s.info, err = cardInfo(hctx, s.card)
	}
	if err != nil {
		return s.unusable(err)
	}
	if p := c.pending; p != nil && p.card == s.info.CardNumber {
		c.enter(StateCommunicating)
		s.settle()
	}
	return s.menu()
}

// watch cancels hctx with errCardRemoved when the card leaves the reader,
// or errCritical when power goes critical; it updates the power
// indicator meanwhile. It returns when hctx ends.
func (c *Controller) watch(hctx context.Context, stop context.CancelCauseFunc) {
	if w, ok := c.Reader.(reader.Watcher); ok {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			if err := w.Wait(hctx, true); err == nil {
				stop(errCardRemoved)
			}
		}()
	}
	t := time.NewTicker(c.PowerPoll)
	defer t.Stop()
	// The display and keypad are awake while a card is in: their energy
	// is spent by the second (hal.OpDisplay).
	since := c.Clock()
	for {
		if secs := int(c.Clock().Sub(since) / time.Second); secs > 0 {
			c.spend(hal.OpDisplay, secs)
			since = since.Add(time.Duration(secs) * time.Second)
		}
		if c.critical() {
			stop(errCritical)
			return
		}
		select {
		case <-t.C:
		case <-hctx.Done():
			return
		}
	}
}

// cardError shows a card that does not answer and waits until it is
// taken out (or PowerPoll passes, without a reader.Watcher).
func (c *Controller) cardError(ctx context.Context, err error) error {
	c.enter(StateError)
	c.Log.Info("card error", "err", err)
	c.show("Card error", clip(err.Error()), "", "Remove card")
	if w, ok := c.Reader.(reader.Watcher); ok {
		w.Wait(ctx, true)
		return nil
	}
	t := time.NewTimer(c.PowerPoll)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// clip cuts s to one row.
func clip(s string) string {
	r := []rune(s)
	if len(r) > hal.Cols {
		return string(r[:hal.Cols])
	}
	return s
}

// wrap breaks s into rows of at most hal.Cols runes, at spaces where it
// can.
func wrap(s string) []string {
	var rows []string
	for _, para := range strings.Split(s, "\n") {
		line := ""
		for _, w := range strings.Fields(para) {
			for len([]rune(w)) > hal.Cols {
				if line != "" {
					rows = append(rows, line)
					line = ""
				}
				r := []rune(w)
				rows = append(rows, string(r[:hal.Cols]))
				w = string(r[hal.Cols:])
			}
			switch {
			case line == "":
				line = w
			case len([]rune(line))+1+len([]rune(w)) <= hal.Cols:
				line += " " + w
			default:
				rows = append(rows, line)
				line = w
			}
		}
		rows = append(rows, line)
	}
	return rows
}

// meteredConn spends the energy of each APDU. It refuses none: whether
// a card write or a transaction may start is checked before it starts
// (Power.Check); one under way runs to its end on the reserve the power
// manager keeps below its critical level, so that a payment is never cut
// between the card's signature and the server's answer by the device
// itself.
type meteredConn struct {
	reader.Conn
	c *Controller
}

func (m *meteredConn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	op := hal.OpCardWrite
	if len(apdu) >= 2 {
		switch apdu[1] {
		case 0xA4, 0xB0, 0xB2, 0xC0, 0xCA, 0xCB, 0xE4, 0xE6: // SELECT, READ, GET RESPONSE, GET DATA, LIST/READ ITEM
			op = hal.OpCardRead
		}
	}
	m.c.spend(op, 1)
	return m.Conn.Transmit(ctx, apdu)
}

// meteredLink spends the energy of the bytes it carries; like
// meteredConn it refuses none.
type meteredLink struct {
	link.Link
	c *Controller
}

func (m *meteredLink) Write(p []byte) (int, error) {
	m.c.spend(m.c.LinkOp, len(p))
	return m.Link.Write(p)
}

func (m *meteredLink) Read(p []byte) (int, error) {
	n, err := m.Link.Read(p)
	m.c.spend(m.c.LinkOp, n)
	return n, err
}

// deadlineLink is a meteredLink over a link with deadlines, which it
// passes through.
type deadlineLink struct {
	*meteredLink
	d interface{ SetDeadline(time.Time) error }
}

func (m deadlineLink) SetDeadline(t time.Time) error { return m.d.SetDeadline(t) }

// metered wraps l to spend the energy of its bytes.
func (c *Controller) metered(l link.Link) link.Link {
	m := &meteredLink{Link: l, c: c}
	if d, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
		return deadlineLink{m, d}
	}
	return m
}
