package headless

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"cardlink/internal/hal"
)

// Limits of a script, so that a hostile one cannot make Parse use much
// memory.
const (
	// MaxScript is the largest script Parse reads, in bytes.
	MaxScript = 1 << 20
	// maxLine is the longest line Parse reads, in bytes.
	maxLine = 4096
	// maxPressKeys is the most keys one press step takes: String writes
	// them one by one, each name (CANCEL the longest) and a space, and
	// that line must stay within maxLine for Parse to read it back.
	maxPressKeys = 512
)

// Kind is what a step of a script does.
type Kind uint8

// The kinds of step.
const (
	// Expect waits until the screen contains Text.
	Expect Kind = iota + 1
	// ExpectScreen waits until the whole screen equals Screen.
	ExpectScreen
	// Press presses Keys in order.
	Press
	// Event calls the hook registered for Name with Args.
	Event
)

func (k Kind) String() string {
	switch k {
	case Expect:
		return "expect"
	case ExpectScreen:
		return "screen"
	case Press:
		return "press"
	case Event:
		return "event"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Step is one step of a script.
type Step struct {
	Line   int        // the line it starts on, from 1
	Kind   Kind       // what it does
	Text   string     // Expect: the text the screen must contain
	Screen hal.Screen // ExpectScreen: the whole screen, rows padded to hal.Cols
	Keys   []hal.Key  // Press: the keys, in order
	Name   string     // Event: the hook's name
	Args   []string   // Event: its arguments
}

// Script is a parsed script.
type Script struct {
	Name  string // the file name errors cite
	Steps []Step
}

// SyntaxError is a line of a script Parse cannot read.
type SyntaxError struct {
	Name string // the script's name
	Line int    // from 1
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.Name, e.Line, e.Msg)
}

// Parse reads a script (see the package comment for the language); name
// is the file name its errors cite. A line it cannot read is a
// *SyntaxError naming the line.
func Parse(name string, src []byte) (*Script, error) {
	if len(src) > MaxScript {
		return nil, &SyntaxError{Name: name, Line: 1, Msg: fmt.Sprintf("script of %d bytes, over the limit of %d", len(src), MaxScript)}
	}
	if !utf8.Valid(src) {
		line := 1 + bytes.Count(src[:firstInvalid(src)], []byte("\n"))
		return nil, &SyntaxError{Name: name, Line: line, Msg: "not UTF-8"}
	}
	s := &Script{Name: name}
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 256), maxLine)
	n := 0
	bad := func(format string, args ...any) error {
		return &SyntaxError{Name: name, Line: n, Msg: fmt.Sprintf(format, args...)}
	}
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		verb, rest, _ := strings.Cut(trimmed, " ")
		rest = strings.TrimLeft(rest, " \t")
		switch verb {
		case "expect":
			if rest == "" {
				return nil, bad("expect needs the text to wait for")
			}
			if utf8.RuneCountInString(rest) > hal.Cols {
				return nil, bad("expect %q: longer than a row (%d characters)", rest, hal.Cols)
			}
			s.Steps = append(s.Steps, Step{Line: n, Kind: Expect, Text: rest})
		case "screen":
			if rest != "" {
				return nil, bad("screen takes no argument: the next %d lines are the rows, each between | and |", hal.Rows)
			}
			st := Step{Line: n, Kind: ExpectScreen}
			for i := range hal.Rows {
				if !sc.Scan() {
					n++
					if err := sc.Err(); err != nil {
						return nil, bad("screen row %d: reading: %v", i+1, err)
					}
					return nil, bad("screen: want %d rows, got %d", hal.Rows, i)
				}
				n++
				row := strings.Trim(sc.Text(), " \t\r")
				r := []rune(row)
				if len(r) < 2 || r[0] != '|' || r[len(r)-1] != '|' {
					return nil, bad("screen row %d: want the row between | and |", i+1)
				}
				text := string(r[1 : len(r)-1])
				if utf8.RuneCountInString(text) > hal.Cols {
					return nil, bad("screen row %d: %d characters, a row has %d", i+1, utf8.RuneCountInString(text), hal.Cols)
				}
				st.Screen[i] = hal.Fit(text)
			}
			s.Steps = append(s.Steps, st)
		case "press":
			keys, err := parseKeys(rest)
			if err != nil {
				return nil, bad("%v", err)
			}
			s.Steps = append(s.Steps, Step{Line: n, Kind: Press, Keys: keys})
		case "event":
			f := strings.Fields(rest)
			if len(f) == 0 {
				return nil, bad("event needs a name")
			}
			s.Steps = append(s.Steps, Step{Line: n, Kind: Event, Name: f[0], Args: f[1:]})
		default:
			return nil, bad("unknown step %q (want expect, screen, press, event or a # comment)", verb)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &SyntaxError{Name: name, Line: n + 1, Msg: fmt.Sprintf("reading: %v", err)}
	}
	return s, nil
}

// parseKeys reads the keys of a press step: key names (hal.ParseKey)
// separated by spaces, where a run of digits such as 1234 is one key per
// digit.
func parseKeys(s string) ([]hal.Key, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, fmt.Errorf("press needs keys (0-9, OK, CANCEL, CLEAR, F1-F4)")
	}
	var keys []hal.Key
	for _, w := range f {
		if isDigits(w) {
			for _, d := range w {
				keys = append(keys, hal.Key0+hal.Key(d-'0'))
			}
			continue
		}
		k, err := hal.ParseKey(w)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) > maxPressKeys {
		return nil, fmt.Errorf("press: more than %d keys in one step (split them over several press lines)", maxPressKeys)
	}
	return keys, nil
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// String writes the script back in the language Parse reads, one step a
// line (digit keys one by one), without comments.
func (s *Script) String() string {
	var b strings.Builder
	for _, st := range s.Steps {
		b.WriteString(st.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// String writes the step as a script line (a screen step as its five
// lines).
func (st Step) String() string {
	switch st.Kind {
	case Expect:
		return "expect " + st.Text
	case ExpectScreen:
		var b strings.Builder
		b.WriteString("screen")
		for _, row := range st.Screen {
			b.WriteString("\n|" + hal.Fit(row) + "|")
		}
		return b.String()
	case Press:
		names := make([]string, len(st.Keys))
		for i, k := range st.Keys {
			names[i] = k.String()
		}
		return "press " + strings.Join(names, " ")
	case Event:
		return strings.Join(append([]string{"event", st.Name}, st.Args...), " ")
	}
	return "# " + st.Kind.String()
}
