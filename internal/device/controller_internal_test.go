package device

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"cardlink/internal/hal"
)

// TestTransitions: from Off every state can be reached, and from every
// state the device can get back to Idle (the card taken out) and to Off.
func TestTransitions(t *testing.T) {
	seen := map[State]bool{StateOff: true}
	queue := []State{StateOff}
	for len(queue) > 0 {
		from := queue[0]
		queue = queue[1:]
		for to := range State(len(stateNames)) {
			if allowed(from, to) && !seen[to] {
				seen[to] = true
				queue = append(queue, to)
			}
		}
	}
	for s := range State(len(stateNames)) {
		if !seen[s] {
			t.Errorf("state %v cannot be reached from off", s)
		}
		if !allowed(s, StateIdle) || !allowed(s, StateOff) {
			t.Errorf("state %v has no way back to idle and off", s)
		}
	}
	if allowed(StateIdle, StateReview) || allowed(StateResult, StateVerify) {
		t.Error("the table allows a review without a card, or a PIN after the result")
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"VOUCHER CONCERT TICKET 7F3A-22Q9", []string{"VOUCHER CONCERT", "TICKET 7F3A-22Q9"}},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ", []string{"ABCDEFGHIJKLMNOPQRST", "UVWXYZ"}},
		{"one\ntwo", []string{"one", "two"}},
	}
	for _, tt := range tests {
		got := wrap(tt.in)
		if len(got) != len(tt.want) {
			t.Errorf("wrap(%q) = %q, want %q", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] || len([]rune(got[i])) > hal.Cols {
				t.Errorf("wrap(%q) = %q, want %q", tt.in, got, tt.want)
				break
			}
		}
	}
}

// TestImports keeps the controller off concrete drivers and the server:
// it sees hal, reader and link only through their interfaces.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	banned := []string{"cardlink/internal/hal/", "cardlink/internal/reader/", "cardlink/internal/link/", "cardlink/internal/server", "cardlink/internal/store"}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, b := range banned {
				if strings.HasPrefix(path, b) {
					t.Errorf("%s imports %s: the device names no concrete driver and no server package", name, path)
				}
			}
		}
	}
}
