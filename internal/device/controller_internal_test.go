package device

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"cardlink/internal/hal"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
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

func TestPendingRecord(t *testing.T) {
	a := &protocol.TransactionApproval{ID: make([]byte, 16), Counter: 7, CVM: txn.CVMOfflinePIN, Signature: []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}}
	tests := []*pendingTxn{
		{card: "9470000000000002", reference: "12345670", id: [16]byte{1, 2}, approval: a, reason: "link lost"},
		{card: "9470000000000002", id: [16]byte{3}, reason: "card removed"},
	}
	for _, p := range tests {
		b, err := p.encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := parsePending(b)
		if err != nil || !reflect.DeepEqual(got, p) {
			t.Errorf("parsePending(encode(%+v)) = %+v, %v", p, got, err)
		}
	}
	if _, err := (&pendingTxn{card: "123"}).encode(); err == nil {
		t.Error("encode() of a bad card number = nil error")
	}
}

func FuzzParsePending(f *testing.F) {
	a := &protocol.TransactionApproval{ID: make([]byte, 16), Counter: 7, CVM: txn.CVMOfflinePIN, Signature: []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}}
	for _, p := range []*pendingTxn{
		{card: "9470000000000002", reference: "12345670", id: [16]byte{1}, approval: a, reason: "link lost"},
		{card: "9470000000000002", reason: "card removed"},
	} {
		b, err := p.encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePending(b)
		if err != nil {
			return
		}
		// What parses encodes again, and to a record that parses the same.
		again, err := p.encode()
		if err != nil {
			t.Fatalf("encode() of a parsed record: %v", err)
		}
		q, err := parsePending(again)
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip: %+v, %v; want %+v", q, err, p)
		}
	})
}
