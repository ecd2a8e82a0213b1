// Package headless is a display and keypad driven by a script, for tests
// and automation: a Driver implements hal.Display and hal.Keypad, and Run
// plays a Script against it — pressing keys, waiting for screens, and
// calling hooks the caller registered for events such as a card pulled
// out or a link cut — while it keeps a transcript of every screen shown.
//
// # Script language
//
// One step a line; blank lines and lines starting with # are ignored.
//
//	expect TEXT     wait until the screen contains TEXT (on one row)
//	screen          wait until the whole screen is the next four lines,
//	|Pay Corner Shop   |  each row between | and | (padded to 20 with
//	|...               |  spaces, so trailing spaces may be left out)
//	press KEYS      press the keys in order: 0-9, OK, CANCEL, CLEAR,
//	                F1-F4 (case-insensitive); a run of digits such as
//	                1234 is one key per digit
//	event NAME ARGS call the hook registered for NAME with ARGS
//
// An expect looks at every screen shown from the one the previous expect
// matched on (screens that came and went count), and, after a press,
// only at screens shown after the device took the last key pressed, so
// it cannot match the screen the keys answered. Its wait is bounded
// (Options.Timeout): a screen that does not come fails the step with the
// script's file and line, the text expected and the screen as it is. A
// press does not wait for the device to take its keys: they queue, and
// the device reads them in order.
//
// It imports only hal and the standard library.
package headless

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"cardlink/internal/hal"
)

// DefaultTimeout bounds each wait of Run when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options change how Run plays a script.
type Options struct {
	// Timeout bounds each expect, and the wait for the device to take
	// the keys of a press before the next expect; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// Hook handles an event step; args are the words after its name.
type Hook func(ctx context.Context, args []string) error

// Driver is a display and keypad played by a script. The zero value is
// not usable: call New. It is safe for concurrent use.
type Driver struct {
	mu       sync.Mutex
	screen   hal.Screen
	ind      hal.Indicators
	hist     []hal.Screen  // every screen shown, in order
	cursor   int           // the first screen of hist the next expect may match
	mark     int           // len(hist) when the last pressed key was taken; -1 while keys wait
	changed  chan struct{} // closed and replaced on every Show or key taken
	keys     []hal.Key     // pressed, not yet taken
	log      []entry       // the transcript
	hooks    map[string]Hook
	shownAny bool
}

// entry is one line of the transcript.
type entry struct {
	screen *hal.Screen
	ind    *hal.Indicators
	note   string
}

var (
	_ hal.Display = (*Driver)(nil)
	_ hal.Keypad  = (*Driver)(nil)
)

// New returns a driver with a blank screen and no keys pressed.
func New() *Driver {
	d := &Driver{changed: make(chan struct{}), hooks: map[string]Hook{}}
	for i := range d.screen {
		d.screen[i] = hal.Fit("")
	}
	return d
}

// Handle registers h for event steps named name, replacing any before.
func (d *Driver) Handle(name string, h Hook) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hooks[name] = h
}

// Show records s as the screen and in the transcript.
func (d *Driver) Show(s hal.Screen) error {
	for i, row := range s {
		s[i] = hal.Fit(row)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hist = append(d.hist, s)
	if d.shownAny && s == d.screen {
		d.notify()
		return nil
	}
	d.screen, d.shownAny = s, true
	d.log = append(d.log, entry{screen: &s})
	d.notify()
	return nil
}

// Indicate records i; a change goes into the transcript.
func (d *Driver) Indicate(i hal.Indicators) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i != d.ind {
		d.ind = i
		d.log = append(d.log, entry{ind: &i})
	}
	return nil
}

// Key returns the next key a press step queued, waiting for one until ctx
// ends.
func (d *Driver) Key(ctx context.Context) (hal.Key, error) {
	for {
		d.mu.Lock()
		if len(d.keys) > 0 {
			k := d.keys[0]
			d.keys = d.keys[1:]
			if len(d.keys) == 0 {
				d.mark = len(d.hist)
			}
			d.notify()
			d.mu.Unlock()
			return k, nil
		}
		ch := d.changed
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return hal.KeyNone, ctx.Err()
		}
	}
}

// Press queues keys as a press step does.
func (d *Driver) Press(keys ...hal.Key) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.String()
	}
	d.log = append(d.log, entry{note: "press " + strings.Join(names, " ")})
	d.keys = append(d.keys, keys...)
	d.mark = -1 // until the last is taken, no screen is fresh
	d.notify()
}

// Screen returns the screen as last shown.
func (d *Driver) Screen() hal.Screen {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.screen
}

// Indicators returns the indicators as last set.
func (d *Driver) Indicators() hal.Indicators {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ind
}

// notify wakes the waiters. d.mu is held.
func (d *Driver) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// Note adds a line of text to the transcript (as Run does for events).
func (d *Driver) Note(text string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, entry{note: text})
}

// Transcript returns every screen shown, in order, with the indicator
// changes, key presses and events between them: each screen as a box of
// hal.Rows lines of hal.Cols characters between + and | borders, the
// rest as lines starting with "> " (presses and events) or "  " (the
// indicators).
func (d *Driver) Transcript() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var b strings.Builder
	for _, e := range d.log {
		switch {
		case e.screen != nil:
			b.WriteString(Box(*e.screen))
		case e.ind != nil:
			fmt.Fprintf(&b, "  [%s]\n", FormatIndicators(*e.ind))
		default:
			fmt.Fprintf(&b, "> %s\n", e.note)
		}
	}
	return b.String()
}

// Box draws s between borders, ending with a newline.
func Box(s hal.Screen) string {
	line := "+" + strings.Repeat("-", hal.Cols) + "+\n"
	var b strings.Builder
	b.WriteString(line)
	for _, row := range s {
		b.WriteString("|" + hal.Fit(row) + "|\n")
	}
	b.WriteString(line)
	return b.String()
}

// FormatIndicators writes i as the transcript shows it, such as
// "battery 80% · link up · card in".
func FormatIndicators(i hal.Indicators) string {
	p := fmt.Sprintf("%s %d%%", i.Power.Source, i.Power.Level)
	if i.Power.Charging {
		p += " charging"
	}
	if i.Power.Critical {
		p += " CRITICAL"
	} else if i.Power.Low {
		p += " LOW"
	}
	card := "no card"
	if i.Card {
		card = "card in"
	}
	return fmt.Sprintf("%s · link %s · %s", p, i.Link, card)
}

// StepError is a step of a script that failed.
type StepError struct {
	Name   string // the script's name
	Step   Step
	Screen hal.Screen // the screen when it failed
	Err    error
}

func (e *StepError) Error() string {
	switch e.Step.Kind {
	case Expect:
		return fmt.Sprintf("%s:%d: expect %q: %v; the screen is:\n%s", e.Name, e.Step.Line, e.Step.Text, e.Err, Box(e.Screen))
	case ExpectScreen:
		return fmt.Sprintf("%s:%d: expect screen: %v; want:\n%sthe screen is:\n%s", e.Name, e.Step.Line, e.Err, Box(e.Step.Screen), Box(e.Screen))
	}
	return fmt.Sprintf("%s:%d: %s: %v", e.Name, e.Step.Line, e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// ErrNoHook is wrapped by the error of an event step whose name has no
// hook.
var ErrNoHook = errors.New("no hook registered")

// Run plays s against d until its last step, a step fails, or ctx ends.
// A failed step is a *StepError (with the screen at the time); an expect
// that timed out wraps context.DeadlineExceeded. Run does not stop the
// device: the keys it pressed and the device did not take stay queued.
func (d *Driver) Run(ctx context.Context, s *Script, opts Options) error {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	for _, st := range s.Steps {
		var err error
		switch st.Kind {
		case Expect, ExpectScreen:
			err = d.expect(ctx, st, opts.Timeout)
		case Press:
			d.Press(st.Keys...)
		case Event:
			d.mu.Lock()
			h := d.hooks[st.Name]
			d.mu.Unlock()
			d.Note(st.String())
			if h == nil {
				err = fmt.Errorf("%w for event %q", ErrNoHook, st.Name)
			} else {
				err = h(ctx, st.Args)
			}
		}
		if err != nil {
			return &StepError{Name: s.Name, Step: st, Screen: d.Screen(), Err: err}
		}
	}
	return nil
}

// expect waits, for at most timeout, until st holds of a screen shown
// no earlier than the one the previous expect matched and after the last
// pressed key was taken: screens that came and went in between count,
// so a script sees every screen the device showed, however fast.
func (d *Driver) expect(ctx context.Context, st Step, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d.mu.Lock()
		ok, fresh := false, false
		if d.mark >= 0 {
			d.cursor = max(d.cursor, d.mark)
			fresh = d.cursor < len(d.hist)
			for i := d.cursor; i < len(d.hist); i++ {
				if matches(st, d.hist[i]) {
					d.cursor, ok = i, true
					break
				}
			}
		}
		pending := len(d.keys)
		ch := d.changed
		d.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if pending > 0 {
				return fmt.Errorf("%w: the device did not take %d pressed keys", ctx.Err(), pending)
			}
			if !fresh {
				return fmt.Errorf("%w: no new screen since the last key was taken", ctx.Err())
			}
			return fmt.Errorf("%w: not on the screen after %v", ctx.Err(), timeout)
		}
	}
}

// matches reports whether screen satisfies st.
func matches(st Step, screen hal.Screen) bool {
	if st.Kind == ExpectScreen {
		return screen == st.Screen
	}
	for _, row := range screen {
		if strings.Contains(row, st.Text) {
			return true
		}
	}
	return false
}
