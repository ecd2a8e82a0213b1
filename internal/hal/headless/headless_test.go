package headless

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"cardlink/internal/hal"
)

func TestParse(t *testing.T) {
	src := `# a comment
  expect Insert card
press 1 2 ok F1
press 1234 CANCEL
event battery 3
screen
|Corner Shop|
  |Two coffees         |
|Pay 7.50 EUR        |
||

`
	s, err := Parse("t.txt", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Step{
		{Line: 2, Kind: Expect, Text: "Insert card"},
		{Line: 3, Kind: Press, Keys: []hal.Key{hal.Key1, hal.Key2, hal.KeyOK, hal.KeyF1}},
		{Line: 4, Kind: Press, Keys: []hal.Key{hal.Key1, hal.Key2, hal.Key3, hal.Key4, hal.KeyCancel}},
		{Line: 5, Kind: Event, Name: "battery", Args: []string{"3"}},
		{Line: 6, Kind: ExpectScreen, Screen: hal.Screen{hal.Fit("Corner Shop"), hal.Fit("Two coffees"), hal.Fit("Pay 7.50 EUR"), hal.Fit("")}},
	}
	if !reflect.DeepEqual(s.Steps, want) {
		t.Fatalf("Parse() = %+v\nwant %+v", s.Steps, want)
	}
	again, err := Parse("t.txt", []byte(s.String()))
	if err != nil || again.String() != s.String() {
		t.Errorf("Parse(String()) = %v, %v; want the same script", again, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unknown step", "expect a\nwait 3\n", "t.txt:2: unknown step \"wait\""},
		{"empty expect", "expect\n", "t.txt:1: expect needs the text"},
		{"long expect", "expect " + strings.Repeat("x", 21), "t.txt:1: expect"},
		{"bad key", "\n\npress 1 ENTER\n", "t.txt:3: hal: unknown key \"ENTER\""},
		{"no keys", "press\n", "t.txt:1: press needs keys"},
		{"no event name", "event\n", "t.txt:1: event needs a name"},
		{"short screen", "screen\n|a|\n|b|\n", "t.txt:4: screen: want 4 rows, got 2"},
		{"row without bars", "screen\n|a|\nb\n|c|\n|d|\n", "t.txt:3: screen row 2"},
		{"wide row", "screen\n|" + strings.Repeat("x", 21) + "|\n|b|\n|c|\n|d|\n", "t.txt:2: screen row 1: 21 characters"},
		{"screen argument", "screen x\n", "t.txt:1: screen takes no argument"},
		{"not UTF-8", "expect a\nexpect \xff\n", "t.txt:2: not UTF-8"},
		{"long line", strings.Repeat("#", maxLine+1), "t.txt:1: reading"},
		{"too many keys", "press " + strings.Repeat("9", maxPressKeys+1), "t.txt:1: press: more than 512 keys"},
		{"long screen row", "screen\n|a|\n" + strings.Repeat("x", maxLine+1) + "\n", "t.txt:3: screen row 2: reading"},
		{"too long", strings.Repeat("\n", MaxScript+1), "t.txt:1: script of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.txt", []byte(tt.src))
			var se *SyntaxError
			if !errors.As(err, &se) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Parse() error = %v, want a *SyntaxError starting %q", err, tt.want)
			}
		})
	}
}

// device is a tiny device for the driver: it shows a prompt, reads digits
// until OK and shows them, forever.
func device(ctx context.Context, d *Driver) {
	for {
		d.Show(hal.Screen{"Code?"})
		var code []byte
		for {
			k, err := d.Key(ctx)
			if err != nil {
				return
			}
			if k == hal.KeyOK {
				break
			}
			if c, ok := k.Digit(); ok {
				code = append(code, c)
				d.Show(hal.Screen{"Code?", strings.Repeat("*", len(code))})
			}
		}
		d.Show(hal.Screen{"You typed", string(code)})
		d.Show(hal.Screen{"Done"})
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := New()
	done := make(chan struct{})
	go func() { defer close(done); device(ctx, d) }()
	defer func() { cancel(); <-done }()
	var got []string
	d.Handle("note", func(_ context.Context, args []string) error { got = append(got, args...); return nil })
	s, err := Parse("t.txt", []byte(`expect Code?
press 4 2
expect **
press OK
# shown briefly, then replaced: still seen
expect You typed
expect 42
expect Done
event note hello world
screen
|Code?|
||
||
||
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx, s, Options{Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []string{"hello", "world"}) {
		t.Errorf("hook got %q, want [hello world]", got)
	}
	tr := d.Transcript()
	for _, want := range []string{"|You typed           |", "> press 4 2", "> event note hello world"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
}

func TestRunFails(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   []string // in the error
	}{
		{"text never shown", "expect Code?\nexpect Approved\n", []string{"t.txt:2: expect \"Approved\"", "|Code?", "not on the screen"}},
		{"stale screen after a press", "expect Code?\npress 7\nexpect Code?\npress 1\nexpect You typed\n", []string{"t.txt:5", "did not take 1 pressed keys"}},
		{"no hook", "event cut-link\n", []string{"t.txt:1", "no hook registered"}},
		{"whole screen differs", "screen\n|Code|\n||\n||\n||\n", []string{"t.txt:1: expect screen", "|Code                |", "|Code?               |"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			d := New()
			done := make(chan struct{})
			go func() {
				defer close(done)
				// A device that takes one key only.
				d.Show(hal.Screen{"Code?"})
				if _, err := d.Key(ctx); err == nil {
					d.Show(hal.Screen{"Code?", "*"})
				}
				<-ctx.Done()
			}()
			defer func() { cancel(); <-done }()
			s, err := Parse("t.txt", []byte(tt.script))
			if err != nil {
				t.Fatal(err)
			}
			err = d.Run(ctx, s, Options{Timeout: 200 * time.Millisecond})
			var se *StepError
			if !errors.As(err, &se) {
				t.Fatalf("Run() = %v, want a *StepError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run() error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("expect Insert card\npress 1234 OK\nevent battery 3\n"))
	f.Add([]byte("screen\n|a|\n|b|\n|c|\n|d|\n"))
	f.Add([]byte("# only a comment\n\n"))
	f.Add([]byte("press F1 f2 cancel clear 0\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := Parse("fuzz", src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Line < 1 {
				t.Fatalf("Parse() error %v is not a *SyntaxError with a line", err)
			}
			return
		}
		// What parses writes back to a script that parses the same.
		again, err := Parse("fuzz", []byte(s.String()))
		if err != nil {
			t.Fatalf("Parse(String()) = %v for %q", err, s.String())
		}
		if again.String() != s.String() {
			t.Fatalf("round trip changed the script:\n%q\n%q", s.String(), again.String())
		}
		for _, st := range s.Steps {
			if st.Kind == Press && len(st.Keys) == 0 {
				t.Fatal("a press step without keys")
			}
		}
	})
}

// TestLongestPress: the most keys a press step takes, each of the
// longest name, writes back (String) to a line Parse reads.
func TestLongestPress(t *testing.T) {
	src := "press" + strings.Repeat(" cancel", maxPressKeys) + "\n"
	s, err := Parse("t.txt", []byte(src))
	if err != nil {
		t.Fatalf("Parse(%d CANCEL keys) = %v", maxPressKeys, err)
	}
	if _, err := Parse("t.txt", []byte(s.String())); err != nil {
		t.Errorf("Parse(String()) of %d CANCEL keys = %v", maxPressKeys, err)
	}
}
