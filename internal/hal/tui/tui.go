// Package tui is the device drawn in a terminal: a UI implements
// hal.Display and hal.Keypad with a framed 4×20 character display, the
// keypad (0–9, OK, Cancel, Clear, F1–F4) as buttons, and the indicators
// (power source and level, link state, card presence) beside the
// display. The holder uses it with the keyboard or by clicking the keys
// with the mouse; a card key (i, or a click on CARD) can insert and
// remove the card when the caller wires one (Options.Card).
//
// Keyboard: digits are digits, Enter is OK, Esc is Cancel, Backspace and
// Delete are Clear, F1–F4 are the function keys, and a–d stand for F1–F4
// on terminals without function keys. Ctrl-C or Ctrl-Q ends Run.
//
// Drawing happens only on Run's goroutine; Show, Indicate and Key may be
// called from any goroutine, while Run runs, before or after. A terminal
// smaller than the device (MinWidth × MinHeight) says so instead of
// drawing it, and keeps taking keys.
//
// It imports hal, tcell and the standard library.
package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gdamore/tcell/v2"

	"cardlink/internal/hal"
)

// The smallest terminal the device fits in.
const (
	MinWidth  = frameW
	MinHeight = frameH
)

// ErrClosed is what Key returns once Run has returned: no key will come.
var ErrClosed = errors.New("tui: closed")

// keyQueue is how many keys the UI keeps for the device to read, like a
// keypad's buffer; keys beyond it are dropped (with a beep).
const keyQueue = 32

// flash is how long a pressed key is drawn pressed (a variable for the
// tests).
var flash = 150 * time.Millisecond

// Options change what the UI shows and does.
type Options struct {
	// Title is written in the frame's top edge; empty means "cardlink".
	Title string
	// Card, when set, is called (on Run's goroutine) when the holder
	// presses i or clicks the CARD button, to insert or remove the card;
	// nil hides the button. It must not block.
	Card func()
}

// UI is a terminal that draws the device. Make it with New or Open, then
// call Run once.
type UI struct {
	screen tcell.Screen
	opts   Options

	mu   sync.Mutex // guards text and ind
	text hal.Screen
	ind  hal.Indicators

	keys chan hal.Key          // pressed, not yet read by Key
	wake chan struct{}         // Show or Indicate changed what to draw
	done chan struct{}         // closed when Run returns
	fini sync.Once             // restores the terminal once
	ran  sync.Once             // Run runs once
	lit  map[hal.Key]time.Time // buttons drawn pressed until then; Run's goroutine only
	btns []button              // where the buttons are; Run's goroutine only
}

var (
	_ hal.Display = (*UI)(nil)
	_ hal.Keypad  = (*UI)(nil)
)

// New returns a UI on screen, which Run initializes and finalizes.
// Tests pass a tcell.SimulationScreen.
func New(screen tcell.Screen, opts Options) *UI {
	if opts.Title == "" {
		opts.Title = "cardlink"
	}
	return &UI{
		screen: screen,
		opts:   opts,
		keys:   make(chan hal.Key, keyQueue),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		lit:    make(map[hal.Key]time.Time),
	}
}

// Open returns a UI on the process's terminal (per $TERM). It fails when
// there is no terminal or tcell does not know it.
func Open(opts Options) (*UI, error) {
	s, err := tcell.NewScreen()
	if err != nil {
		return nil, fmt.Errorf("tui: opening the terminal: %w", err)
	}
	return New(s, opts), nil
}

// Show replaces the text on the display. It never fails; after Run has
// returned it only records the text.
func (u *UI) Show(s hal.Screen) error {
	u.mu.Lock()
	u.text = s
	u.mu.Unlock()
	u.redraw()
	return nil
}

// Indicate replaces the indicators. It never fails.
func (u *UI) Indicate(i hal.Indicators) error {
	u.mu.Lock()
	u.ind = i
	u.mu.Unlock()
	u.redraw()
	return nil
}

// Screen returns the text on the display (what the last Show gave).
func (u *UI) Screen() hal.Screen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.text
}

// redraw asks Run's loop to draw again.
func (u *UI) redraw() {
	select {
	case u.wake <- struct{}{}:
	default: // a redraw is already due
	}
}

// Key returns the next key the holder pressed. It blocks until one is
// pressed, ctx ends (it returns ctx's error) or Run returns (ErrClosed,
// once the keys pressed before are read).
func (u *UI) Key(ctx context.Context) (hal.Key, error) {
	select {
	case k := <-u.keys:
		return k, nil
	default:
	}
	select {
	case k := <-u.keys:
		return k, nil
	case <-ctx.Done():
		return hal.KeyNone, ctx.Err()
	case <-u.done:
		return hal.KeyNone, ErrClosed
	}
}

// Done is closed when Run returns.
func (u *UI) Done() <-chan struct{} { return u.done }

// Close restores the terminal. Run does it when it returns; call Close
// from another goroutine that is about to panic or exit so the terminal
// is not left in raw mode. It is safe to call more than once and
// concurrently with Run.
func (u *UI) Close() {
	u.fini.Do(u.screen.Fini)
}

// Run takes over the terminal, draws the device and handles keys, mouse
// clicks and resizes until ctx ends or the holder presses Ctrl-C or
// Ctrl-Q; then it restores the terminal (also when it panics) and
// returns nil. It fails when the terminal cannot be initialized, or when
// called a second time.
func (u *UI) Run(ctx context.Context) error {
	first := false
	u.ran.Do(func() { first = true })
	if !first {
		return errors.New("tui: Run called twice")
	}
	defer close(u.done)
	if err := u.screen.Init(); err != nil {
		return fmt.Errorf("tui: initializing the terminal: %w", err)
	}
	defer u.Close()
	u.screen.EnableMouse(tcell.MouseButtonEvents)
	u.screen.HideCursor()

	events := make(chan tcell.Event)
	quit := make(chan struct{})
	go u.screen.ChannelEvents(events, quit)
	defer func() {
		close(quit)
		for range events { // ChannelEvents closes it when it returns
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	pressed := false // whether the left button is down
	u.draw()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-u.wake:
		case <-timer.C:
		case ev, ok := <-events:
			if !ok {
				return nil // the screen stopped
			}
			switch ev := ev.(type) {
			case *tcell.EventResize:
				u.screen.Sync()
			case *tcell.EventKey:
				if ev.Key() == tcell.KeyCtrlC || ev.Key() == tcell.KeyCtrlQ {
					return nil
				}
				u.keyEvent(ev)
			case *tcell.EventMouse:
				down := ev.Buttons()&tcell.Button1 != 0
				if down && !pressed {
					u.click(ev.Position())
				}
				pressed = down
			}
		}
		if d, ok := u.nextFlash(); ok {
			timer.Reset(d)
		}
		u.draw()
	}
}

// keyEvent turns a key of the terminal into a key of the device.
func (u *UI) keyEvent(ev *tcell.EventKey) {
	switch ev.Key() {
	case tcell.KeyEnter:
		u.press(hal.KeyOK)
	case tcell.KeyEscape:
		u.press(hal.KeyCancel)
	case tcell.KeyBackspace, tcell.KeyBackspace2, tcell.KeyDelete:
		u.press(hal.KeyClear)
	case tcell.KeyF1:
		u.press(hal.KeyF1)
	case tcell.KeyF2:
		u.press(hal.KeyF2)
	case tcell.KeyF3:
		u.press(hal.KeyF3)
	case tcell.KeyF4:
		u.press(hal.KeyF4)
	case tcell.KeyRune:
		r := ev.Rune()
		switch {
		case r >= '0' && r <= '9':
			u.press(hal.Key0 + hal.Key(r-'0'))
		case r >= 'a' && r <= 'd':
			u.press(hal.KeyF1 + hal.Key(r-'a'))
		case r >= 'A' && r <= 'D':
			u.press(hal.KeyF1 + hal.Key(r-'A'))
		case r == 'i' || r == 'I':
			u.card()
		}
	}
}

// press queues k for Key and draws its button pressed.
func (u *UI) press(k hal.Key) {
	select {
	case u.keys <- k:
		u.lit[k] = time.Now().Add(flash)
	default:
		u.screen.Beep() // the device is not reading keys: a full keypad buffer
	}
}

// card calls Options.Card, if there is one.
func (u *UI) card() {
	if u.opts.Card != nil {
		u.lit[cardKey] = time.Now().Add(flash)
		u.opts.Card()
	}
}

// click presses the button at x, y, if any.
func (u *UI) click(x, y int) {
	for _, b := range u.btns {
		if y == b.y && x >= b.x && x < b.x+len(b.label) {
			if b.key == cardKey {
				u.card()
			} else {
				u.press(b.key)
			}
			return
		}
	}
}

// nextFlash returns how long until the next pressed button is released,
// forgetting those already released.
func (u *UI) nextFlash() (time.Duration, bool) {
	now := time.Now()
	var next time.Duration
	found := false
	for k, until := range u.lit {
		d := until.Sub(now)
		if d <= 0 {
			delete(u.lit, k)
			continue
		}
		if !found || d < next {
			next, found = d, true
		}
	}
	return next, found
}

// cardKey stands for the CARD button among the keys.
const cardKey = hal.Key(255)

// button is a clickable key on the screen: label drawn at x, y.
type button struct {
	x, y  int
	label string
	key   hal.Key
}

// The device's frame and where things sit in it.
const (
	frameW = 44
	frameH = 19

	dispX, dispY = 2, 2 // the display's border
	indX         = 26   // the indicators' column: 17 cells to the border
	padY         = 9    // the first keypad row
	helpY        = 16   // the first help line
	barLen       = 10   // the battery gauge's cells
)

// layout is the keypad, relative to the frame's top left corner.
var layout = []button{
	{3, padY, "[ 1 ]", hal.Key1}, {10, padY, "[ 2 ]", hal.Key2}, {17, padY, "[ 3 ]", hal.Key3}, {26, padY, "[ CANCEL ]", hal.KeyCancel},
	{3, padY + 1, "[ 4 ]", hal.Key4}, {10, padY + 1, "[ 5 ]", hal.Key5}, {17, padY + 1, "[ 6 ]", hal.Key6}, {26, padY + 1, "[ CLEAR  ]", hal.KeyClear},
	{3, padY + 2, "[ 7 ]", hal.Key7}, {10, padY + 2, "[ 8 ]", hal.Key8}, {17, padY + 2, "[ 9 ]", hal.Key9}, {26, padY + 2, "[   OK   ]", hal.KeyOK},
	{10, padY + 3, "[ 0 ]", hal.Key0},
	{3, padY + 5, "[F1]", hal.KeyF1}, {9, padY + 5, "[F2]", hal.KeyF2}, {15, padY + 5, "[F3]", hal.KeyF3}, {21, padY + 5, "[F4]", hal.KeyF4},
}

// cardButton is the CARD button, drawn when Options.Card is set.
var cardButton = button{26, padY + 5, "[  CARD  ]", cardKey}

var helpLines = [2]string{
	"0-9  Enter=OK  Esc=Cancel  Bksp=Clear",
	"F1-F4 or a-d  Ctrl-C=quit",
}

// Styles.
var (
	styleFrame   = tcell.StyleDefault
	styleLCD     = tcell.StyleDefault.Foreground(tcell.ColorBlack).Background(tcell.ColorLightGreen)
	styleKey     = tcell.StyleDefault.Bold(true)
	styleLit     = tcell.StyleDefault.Reverse(true).Bold(true)
	styleDim     = tcell.StyleDefault.Dim(true)
	styleWarning = tcell.StyleDefault.Foreground(tcell.ColorRed).Bold(true)
)

// draw draws everything: the device, or a message when the terminal is
// too small.
func (u *UI) draw() {
	s := u.screen
	s.Clear()
	w, h := s.Size()
	u.btns = u.btns[:0]
	if w < MinWidth || h < MinHeight {
		msg := fmt.Sprintf("Terminal too small: %dx%d, the device needs %dx%d.", w, h, MinWidth, MinHeight)
		for i, line := range wrapText(msg+" Enlarge the window; Ctrl-C quits.", max(w, 1)) {
			putString(s, 0, i, line, styleWarning)
		}
		s.Show()
		return
	}
	u.mu.Lock()
	text, ind := u.text, u.ind
	u.mu.Unlock()
	ox, oy := (w-frameW)/2, (h-frameH)/2

	box(s, ox, oy, frameW, frameH, styleFrame, false)
	title := []rune(u.opts.Title)
	if len(title) > frameW-6 {
		title = append(title[:frameW-7], '…')
	}
	putString(s, ox+2, oy, " "+string(title)+" ", styleFrame.Bold(true))

	// The display: a double border around Rows × Cols cells.
	box(s, ox+dispX, oy+dispY, hal.Cols+2, hal.Rows+2, styleFrame, true)
	for r, row := range text {
		putString(s, ox+dispX+1, oy+dispY+1+r, hal.Fit(row), styleLCD)
	}

	// The indicators.
	x, y := ox+indX, oy+dispY
	p := ind.Power
	putString(s, x, y, "Power", styleDim)
	putString(s, x, y+1, fmt.Sprintf("%-12s%4d%%", p.Source, p.Level), styleFrame)
	n := (max(0, min(100, p.Level)) + 5) / 10
	gauge := strings.Repeat("█", n) + strings.Repeat("░", barLen-n)
	gaugeStyle := styleFrame
	note := ""
	switch {
	case p.Critical:
		note, gaugeStyle = " EMPTY", styleWarning
	case p.Low:
		note, gaugeStyle = " LOW", styleWarning
	case p.Charging:
		note = " chg"
	}
	putString(s, x, y+2, gauge, gaugeStyle)
	putString(s, x+barLen, y+2, note, gaugeStyle)
	linkStyle := styleFrame
	if ind.Link == hal.LinkDown {
		linkStyle = styleDim
	}
	putString(s, x, y+3, "Link  "+ind.Link.String(), linkStyle)
	card := "out"
	if ind.Card {
		card = "in"
	}
	putString(s, x, y+4, "Card  "+card, styleFrame)

	// The keypad.
	now := time.Now()
	btns := layout
	if u.opts.Card != nil {
		btns = append(btns[:len(btns):len(btns)], cardButton)
	}
	for _, b := range btns {
		b.x += ox
		b.y += oy
		u.btns = append(u.btns, b)
		st := styleKey
		if until, ok := u.lit[b.key]; ok && now.Before(until) {
			st = styleLit
		}
		putString(s, b.x, b.y, b.label, st)
	}

	help := helpLines
	if u.opts.Card != nil {
		help[1] = "F1-F4 or a-d  i=card  Ctrl-C=quit"
	}
	for i, line := range help {
		putString(s, ox+3, oy+helpY+i, line, styleDim)
	}
	s.Show()
}

// box draws a frame of w × h cells at x, y, double-lined when double.
func box(s tcell.Screen, x, y, w, h int, st tcell.Style, double bool) {
	hz, vt, tl, tr, bl, br := '─', '│', '┌', '┐', '└', '┘'
	if double {
		hz, vt, tl, tr, bl, br = '═', '║', '╔', '╗', '╚', '╝'
	}
	for i := 1; i < w-1; i++ {
		s.SetContent(x+i, y, hz, nil, st)
		s.SetContent(x+i, y+h-1, hz, nil, st)
	}
	for j := 1; j < h-1; j++ {
		s.SetContent(x, y+j, vt, nil, st)
		s.SetContent(x+w-1, y+j, vt, nil, st)
	}
	s.SetContent(x, y, tl, nil, st)
	s.SetContent(x+w-1, y, tr, nil, st)
	s.SetContent(x, y+h-1, bl, nil, st)
	s.SetContent(x+w-1, y+h-1, br, nil, st)
}

// putString writes str at x, y, one rune a cell.
func putString(s tcell.Screen, x, y int, str string, st tcell.Style) {
	for _, r := range str {
		s.SetContent(x, y, r, nil, st)
		x++
	}
}

// wrapText breaks s into lines of at most w runes, at spaces where it
// can.
func wrapText(s string, w int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		for len([]rune(word)) > w {
			if line != "" {
				lines = append(lines, line)
				line = ""
			}
			r := []rune(word)
			lines = append(lines, string(r[:w]))
			word = string(r[w:])
		}
		switch {
		case line == "":
			line = word
		case len([]rune(line))+1+len([]rune(word)) <= w:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
