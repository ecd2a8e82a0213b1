package device

import (
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
