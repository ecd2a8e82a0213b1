package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"

	"cardlink/internal/hal"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 10 * time.Second

// rig is a UI running on a simulated screen.
type rig struct {
	t      *testing.T
	sim    tcell.SimulationScreen
	ui     *UI
	cancel context.CancelFunc
	runErr chan error
}

// start runs a UI on an 80×25 simulated screen and waits until it has
// drawn the device; the test's cleanup stops it.
func start(t *testing.T, opts Options) *rig {
	t.Helper()
	sim := &initScreen{SimulationScreen: tcell.NewSimulationScreen("UTF-8"), inited: make(chan struct{})}
	r := &rig{t: t, sim: sim, ui: New(sim, opts), runErr: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.runErr <- r.ui.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.runErr:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Run did not return %v after its context ended", testTimeout)
		}
	})
	select {
	case <-sim.inited: // the simulation may not be touched before Init
	case <-time.After(testTimeout):
		t.Fatal("Run did not initialize the screen")
	}
	title := []rune(r.ui.opts.Title)
	r.waitText(string(title[:min(len(title), 20)])) // a long title is cut
	return r
}

// initScreen tells when Init has returned.
type initScreen struct {
	tcell.SimulationScreen
	inited chan struct{}
}

func (s *initScreen) Init() error {
	defer close(s.inited)
	return s.SimulationScreen.Init()
}

// lines returns the screen's text, one string per row.
func (r *rig) lines() []string {
	cells, w, h := r.sim.GetContents()
	l := r.sim.(*initScreen).SimulationScreen.(sync.Locker) // the simulation draws into cells under this lock
	l.Lock()
	defer l.Unlock()
	out := make([]string, h)
	for y := 0; y < h; y++ {
		var b strings.Builder
		for x := 0; x < w && y*w+x < len(cells); x++ {
			rs := cells[y*w+x].Runes
			if len(rs) == 0 {
				b.WriteByte(' ')
				continue
			}
			b.WriteRune(rs[0])
		}
		out[y] = b.String()
	}
	return out
}

// wait polls the screen until ok accepts it; it fails the test after
// testTimeout, showing the screen.
func (r *rig) wait(what string, ok func(lines []string) bool) []string {
	r.t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		lines := r.lines()
		if ok(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("waiting for %s: the screen is\n%s", what, strings.Join(lines, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitText waits until some row contains text.
func (r *rig) waitText(text string) []string {
	r.t.Helper()
	return r.wait(fmt.Sprintf("%q", text), func(lines []string) bool {
		return strings.Contains(strings.Join(lines, "\n"), text)
	})
}

// origin returns the frame's top left corner on a w × h screen.
func origin(w, h int) (int, int) { return (w - frameW) / 2, (h - frameH) / 2 }

// display returns the text inside the display's border.
func display(lines []string) hal.Screen {
	ox, oy := origin(len([]rune(lines[0])), len(lines))
	var s hal.Screen
	for i := range s {
		row := []rune(lines[oy+dispY+1+i])
		s[i] = string(row[ox+dispX+1 : ox+dispX+1+hal.Cols])
	}
	return s
}

// key reads one key, bounded.
func (r *rig) key() (hal.Key, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return r.ui.Key(ctx)
}

func TestShowDrawsTheDisplay(t *testing.T) {
	r := start(t, Options{})
	want := hal.Screen{"Paid 12.50 EUR", "Corner Cafe", "a row much longer than twenty", "OK"}
	if err := r.ui.Show(want); err != nil {
		t.Fatalf("Show = %v", err)
	}
	lines := r.waitText("Corner Cafe")
	got := display(lines)
	for i := range got {
		if got[i] != hal.Fit(want[i]) {
			t.Errorf("display row %d = %q, want %q", i, got[i], hal.Fit(want[i]))
		}
	}
	if got := r.ui.Screen(); got != want {
		t.Errorf("Screen() = %q, want %q", got, want)
	}
	// The border sits around the 4 × 20 cells.
	ox, oy := origin(80, 25)
	top := []rune(lines[oy+dispY])
	if top[ox+dispX] != '╔' || top[ox+dispX+hal.Cols+1] != '╗' {
		t.Errorf("display border row = %q, want ╔ and ╗ around %d cells", string(top), hal.Cols)
	}
	// A new screen replaces the old one entirely.
	r.ui.Show(hal.Screen{"Insert card"})
	lines = r.waitText("Insert card")
	if got := display(lines); got != (hal.Screen{hal.Fit("Insert card"), hal.Fit(""), hal.Fit(""), hal.Fit("")}) {
		t.Errorf("display after the second Show = %q", got)
	}
}

func TestIndicators(t *testing.T) {
	r := start(t, Options{})
	cases := []struct {
		name string
		ind  hal.Indicators
		want []string
	}{
		{"battery", hal.Indicators{Power: hal.PowerStatus{Source: hal.SourceBattery, Level: 80}, Link: hal.LinkUp, Card: true},
			[]string{"battery       80%", "████████░░", "Link  up", "Card  in"}},
		{"low", hal.Indicators{Power: hal.PowerStatus{Source: hal.SourceRechargeable, Level: 12, Low: true}, Link: hal.LinkConnecting},
			[]string{"rechargeable  12%", "█░░░░░░░░░ LOW", "Link  connecting", "Card  out"}},
		{"critical", hal.Indicators{Power: hal.PowerStatus{Source: hal.SourceBattery, Level: 2, Critical: true}},
			[]string{"battery        2%", "░░░░░░░░░░ EMPTY", "Link  down"}},
		{"charging", hal.Indicators{Power: hal.PowerStatus{Source: hal.SourceInlet, Level: 100, Charging: true}},
			[]string{"inlet        100%", "██████████ chg"}},
		{"widest", hal.Indicators{Power: hal.PowerStatus{Source: hal.SourceRechargeable, Level: 100, Critical: true}, Link: hal.LinkConnecting},
			[]string{"rechargeable 100%", "██████████ EMPTY", "Link  connecting"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r.ui.Indicate(c.ind)
			r.wait("the indicators of "+c.name, func(lines []string) bool {
				all := strings.Join(lines, "\n")
				for _, w := range c.want {
					if !strings.Contains(all, w) {
						return false
					}
				}
				return true
			})
			checkBorder(t, r.lines())
		})
	}
}

// checkBorder checks that nothing is drawn over the frame's sides.
func checkBorder(t *testing.T, lines []string) {
	t.Helper()
	ox, oy := origin(len([]rune(lines[0])), len(lines))
	for y := oy + 1; y < oy+frameH-1; y++ {
		row := []rune(lines[y])
		if row[ox] != '│' || row[ox+frameW-1] != '│' {
			t.Errorf("row %d of the frame = %q, want │ at both sides", y-oy, string(row[ox:ox+frameW]))
		}
	}
	top := []rune(lines[oy])
	if top[ox] != '┌' || top[ox+frameW-1] != '┐' {
		t.Errorf("the frame's top = %q", string(top[ox:ox+frameW]))
	}
}

func TestKeyboard(t *testing.T) {
	cases := []struct {
		name string
		key  tcell.Key
		r    rune
		want hal.Key
	}{
		{"digit 0", tcell.KeyRune, '0', hal.Key0},
		{"digit 5", tcell.KeyRune, '5', hal.Key5},
		{"digit 9", tcell.KeyRune, '9', hal.Key9},
		{"enter", tcell.KeyEnter, 0, hal.KeyOK},
		{"escape", tcell.KeyEscape, 0, hal.KeyCancel},
		{"backspace", tcell.KeyBackspace, 0, hal.KeyClear},
		{"backspace2", tcell.KeyBackspace2, 0, hal.KeyClear},
		{"delete", tcell.KeyDelete, 0, hal.KeyClear},
		{"F1", tcell.KeyF1, 0, hal.KeyF1},
		{"F2", tcell.KeyF2, 0, hal.KeyF2},
		{"F3", tcell.KeyF3, 0, hal.KeyF3},
		{"F4", tcell.KeyF4, 0, hal.KeyF4},
		{"a", tcell.KeyRune, 'a', hal.KeyF1},
		{"d", tcell.KeyRune, 'd', hal.KeyF4},
		{"C", tcell.KeyRune, 'C', hal.KeyF3},
	}
	r := start(t, Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A key the device does not have comes first: it is ignored.
			r.sim.InjectKey(tcell.KeyRune, 'z', tcell.ModNone)
			r.sim.InjectKey(c.key, c.r, tcell.ModNone)
			got, err := r.key()
			if err != nil || got != c.want {
				t.Errorf("key for %s = %v, %v; want %v", c.name, got, err, c.want)
			}
		})
	}
}

func TestKeysKeepTheirOrder(t *testing.T) {
	r := start(t, Options{})
	// (InjectKeyBytes loops forever on a control byte in tcell v2.13.10:
	// the Enter goes in as a key.)
	if !r.sim.InjectKeyBytes([]byte("1234")) {
		t.Fatal("InjectKeyBytes did not understand 1234")
	}
	r.sim.InjectKey(tcell.KeyEnter, 0, tcell.ModNone)
	for _, want := range []hal.Key{hal.Key1, hal.Key2, hal.Key3, hal.Key4, hal.KeyOK} {
		if got, err := r.key(); err != nil || got != want {
			t.Fatalf("Key() = %v, %v; want %v", got, err, want)
		}
	}
}

func TestMouse(t *testing.T) {
	var cards atomic.Int32
	r := start(t, Options{Card: func() { cards.Add(1) }})
	ox, oy := origin(80, 25)
	for _, b := range layout {
		t.Run(b.label, func(t *testing.T) {
			// Press and release on the middle of the label; a click
			// outside every button comes first and does nothing.
			r.sim.InjectMouse(0, 0, tcell.Button1, tcell.ModNone)
			r.sim.InjectMouse(0, 0, tcell.ButtonNone, tcell.ModNone)
			x, y := ox+b.x+len(b.label)/2, oy+b.y
			r.sim.InjectMouse(x, y, tcell.Button1, tcell.ModNone)
			r.sim.InjectMouse(x, y, tcell.ButtonNone, tcell.ModNone)
			got, err := r.key()
			if err != nil || got != b.key {
				t.Errorf("click on %s at %d,%d = %v, %v; want %v", b.label, x, y, got, err, b.key)
			}
		})
	}
	// Holding the button down is one press; the right button is none.
	x, y := ox+layout[0].x+1, oy+layout[0].y
	r.sim.InjectMouse(x, y, tcell.Button1, tcell.ModNone)
	r.sim.InjectMouse(x, y, tcell.Button1, tcell.ModNone)
	r.sim.InjectMouse(x, y, tcell.ButtonNone, tcell.ModNone)
	r.sim.InjectMouse(x, y, tcell.Button2, tcell.ModNone)
	r.sim.InjectMouse(x, y, tcell.ButtonNone, tcell.ModNone)
	r.sim.InjectKey(tcell.KeyEnter, 0, tcell.ModNone)
	for _, want := range []hal.Key{layout[0].key, hal.KeyOK} {
		if got, err := r.key(); err != nil || got != want {
			t.Fatalf("after holding %s: Key() = %v, %v; want %v", layout[0].label, got, err, want)
		}
	}

	// The card button and the i key call Card.
	r.waitText("[  CARD  ]")
	r.waitText("i=card")
	r.sim.InjectMouse(ox+cardButton.x+2, oy+cardButton.y, tcell.Button1, tcell.ModNone)
	r.sim.InjectMouse(ox+cardButton.x+2, oy+cardButton.y, tcell.ButtonNone, tcell.ModNone)
	r.sim.InjectKey(tcell.KeyRune, 'i', tcell.ModNone)
	r.sim.InjectKey(tcell.KeyEnter, 0, tcell.ModNone) // after the card events
	if got, err := r.key(); err != nil || got != hal.KeyOK {
		t.Fatalf("Key() = %v, %v; want OK", got, err)
	}
	if n := cards.Load(); n != 2 {
		t.Errorf("Card called %d times, want 2 (a click and i)", n)
	}
}

// reversed reports whether the cell at x, y is drawn reversed.
func (r *rig) reversed(x, y int) bool {
	cells, w, _ := r.sim.GetContents()
	l := r.sim.(*initScreen).SimulationScreen.(sync.Locker)
	l.Lock()
	defer l.Unlock()
	_, _, attr := cells[y*w+x].Style.Decompose()
	return attr&tcell.AttrReverse != 0
}

func TestPressedKeyFlashes(t *testing.T) {
	defer func(d time.Duration) { flash = d }(flash)
	var five button
	for _, five = range layout {
		if five.key == hal.Key5 {
			break
		}
	}
	ox, oy := origin(80, 25)
	x, y := ox+five.x+2, oy+five.y
	for _, c := range []struct {
		name  string
		flash time.Duration
		want  bool // drawn pressed at the end
	}{
		{"held", time.Hour, true},             // long enough to see on a loaded machine
		{"released", time.Millisecond, false}, // the timer releases it
	} {
		t.Run(c.name, func(t *testing.T) {
			flash = c.flash // read by Run's goroutine, started after this
			r := start(t, Options{})
			if r.reversed(x, y) {
				t.Fatal("a key is drawn pressed before any press")
			}
			r.sim.InjectKey(tcell.KeyRune, '5', tcell.ModNone)
			if got, err := r.key(); err != nil || got != hal.Key5 {
				t.Fatalf("Key() = %v, %v; want 5", got, err)
			}
			r.sim.InjectKey(tcell.KeyF4, 0, tcell.ModNone) // drawn after the 5
			if got, err := r.key(); err != nil || got != hal.KeyF4 {
				t.Fatalf("Key() = %v, %v; want F4", got, err)
			}
			deadline := time.Now().Add(testTimeout)
			for r.reversed(x, y) != c.want {
				if time.Now().After(deadline) {
					t.Fatalf("the 5 key is not drawn pressed=%v", c.want)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestLongTitleIsCut(t *testing.T) {
	r := start(t, Options{Title: "cardlink device dev_0123456789abcdef0123456789"})
	lines := r.waitText("cardlink device dev_0123")
	checkBorder(t, lines)
	if !strings.Contains(strings.Join(lines, "\n"), "…") {
		t.Errorf("a cut title does not end in …:\n%s", strings.Join(lines, "\n"))
	}
}

func TestNoCardButtonWithoutCard(t *testing.T) {
	r := start(t, Options{Title: "kiosk"})
	lines := r.waitText("kiosk")
	if all := strings.Join(lines, "\n"); strings.Contains(all, "CARD") || strings.Contains(all, "i=card") {
		t.Errorf("without Options.Card the screen offers a card button:\n%s", all)
	}
	// i does nothing, and is not a key.
	r.sim.InjectKey(tcell.KeyRune, 'i', tcell.ModNone)
	r.sim.InjectKey(tcell.KeyRune, '7', tcell.ModNone)
	if got, err := r.key(); err != nil || got != hal.Key7 {
		t.Fatalf("Key() = %v, %v; want 7", got, err)
	}
}

func TestTooSmall(t *testing.T) {
	r := start(t, Options{})
	r.ui.Show(hal.Screen{"Insert card"})
	r.waitText("Insert card")
	for _, size := range [][2]int{{MinWidth - 1, 30}, {80, MinHeight - 1}, {10, 4}} {
		r.sim.SetSize(size[0], size[1])
		r.sim.PostEvent(tcell.NewEventResize(size[0], size[1]))
		lines := r.waitText("small")
		if all := strings.Join(lines, ""); strings.Contains(all, "Insert card") {
			t.Errorf("at %dx%d the device is drawn: %q", size[0], size[1], lines)
		}
		// Keys still work.
		r.sim.InjectKey(tcell.KeyRune, '3', tcell.ModNone)
		if got, err := r.key(); err != nil || got != hal.Key3 {
			t.Fatalf("at %dx%d Key() = %v, %v; want 3", size[0], size[1], got, err)
		}
	}
	r.sim.SetSize(MinWidth, MinHeight)
	r.sim.PostEvent(tcell.NewEventResize(MinWidth, MinHeight))
	lines := r.waitText("Insert card")
	if got := display(lines)[0]; got != hal.Fit("Insert card") {
		t.Errorf("at the minimum size, display row 0 = %q", got)
	}
	// The mouse finds the keys where they are drawn now.
	b := layout[len(layout)-1]
	ox, oy := origin(MinWidth, MinHeight)
	r.sim.InjectMouse(ox+b.x+1, oy+b.y, tcell.Button1, tcell.ModNone)
	if got, err := r.key(); err != nil || got != b.key {
		t.Fatalf("click on %s after the resize = %v, %v; want %v", b.label, got, err, b.key)
	}
}

func TestQuitKeys(t *testing.T) {
	for _, k := range []tcell.Key{tcell.KeyCtrlC, tcell.KeyCtrlQ} {
		t.Run(tcell.KeyNames[k], func(t *testing.T) {
			r := start(t, Options{})
			r.sim.InjectKey(tcell.KeyRune, '1', tcell.ModNone)
			r.sim.InjectKey(k, 0, tcell.ModCtrl)
			select {
			case <-r.ui.Done():
			case <-time.After(testTimeout):
				t.Fatalf("%s did not end Run", tcell.KeyNames[k])
			}
			// The key pressed before is still read, then none comes.
			if got, err := r.key(); err != nil || got != hal.Key1 {
				t.Errorf("first Key() after quitting = %v, %v; want 1", got, err)
			}
			if _, err := r.key(); !errors.Is(err, ErrClosed) {
				t.Errorf("Key() after quitting = %v, want ErrClosed", err)
			}
			// The terminal is restored (the simulation has no cells).
			if _, w, h := r.sim.GetContents(); w != 0 || h != 0 {
				t.Errorf("after Run returned the screen is %dx%d, want finalized (0x0)", w, h)
			}
			// Show and Indicate still work.
			if err := r.ui.Show(hal.Screen{"Switched off"}); err != nil {
				t.Errorf("Show after Run = %v", err)
			}
		})
	}
}

func TestContextEndsRun(t *testing.T) {
	r := start(t, Options{})
	r.cancel()
	select {
	case <-r.ui.Done():
	case <-time.After(testTimeout):
		t.Fatal("Run did not return when its context ended")
	}
	if err := r.ui.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
}

func TestKeyContext(t *testing.T) {
	r := start(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if k, err := r.ui.Key(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Key(cancelled) = %v, %v; want context.Canceled", k, err)
	}
}

func TestCloseFromAnotherGoroutine(t *testing.T) {
	r := start(t, Options{})
	r.ui.Close() // as a panicking controller would
	select {
	case <-r.ui.Done():
	case <-time.After(testTimeout):
		t.Fatal("Run did not return after Close")
	}
	r.ui.Close()
}

func TestFullKeyBufferDropsKeys(t *testing.T) {
	// Nobody reads: the buffer fills and the rest are dropped without
	// blocking the UI's loop.
	u := New(tcell.NewSimulationScreen("UTF-8"), Options{})
	for i := 0; i < keyQueue+8; i++ {
		u.press(hal.Key0 + hal.Key(i%10))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < keyQueue; i++ {
		if got, err := u.Key(ctx); err != nil || got != hal.Key0+hal.Key(i%10) {
			t.Fatalf("key %d = %v, %v; want %v", i, got, err, hal.Key0+hal.Key(i%10))
		}
	}
	if got, err := u.Key(ctx); err == nil {
		t.Errorf("key %d = %v, want none (dropped)", keyQueue, got)
	}
}

func TestConcurrentShowAndKeys(t *testing.T) {
	r := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			r.ui.Show(hal.Screen{"PIN: " + strings.Repeat("*", i%12)})
			r.ui.Indicate(hal.Indicators{Power: hal.PowerStatus{Level: i % 101}, Card: i%2 == 0})
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			r.sim.InjectKey(tcell.KeyRune, '5', tcell.ModNone)
			if _, err := r.ui.Key(ctx); err != nil {
				t.Errorf("Key() = %v", err)
				return
			}
		}
	}()
	wg.Wait()
	r.ui.Show(hal.Screen{"done"})
	r.wait("the last screen", func(lines []string) bool { return display(lines)[0] == hal.Fit("done") })
}

func TestWrapText(t *testing.T) {
	cases := []struct {
		s    string
		w    int
		want []string
	}{
		{"Terminal too small", 8, []string{"Terminal", "too", "small"}},
		{"abcdefghij kl", 4, []string{"abcd", "efgh", "ij", "kl"}},
		{"a b c", 80, []string{"a b c"}},
		{"", 5, nil},
	}
	for _, c := range cases {
		got := wrapText(c.s, c.w)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("wrapText(%q, %d) = %q, want %q", c.s, c.w, got, c.want)
		}
	}
}
