package handover

import (
	"errors"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Kind: Trigger, Op: OpPay, Reference: "12345678"},
		{Kind: Trigger, Op: OpSignIn},
		{Kind: Request, Op: OpPay, Reference: "0"},
		{Kind: Request, Op: OpSignIn},
		{Kind: Report, Code: 0},
		{Kind: Report, Code: 24},
		{Kind: Report, Code: CodeUnfinished},
		{Kind: Resume},
	} {
		got, err := Parse(m.String())
		if err != nil || got != m {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", m.String(), got, err, m)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v", m, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, s := range []string{"", "#", "A#", "A1#", "A2123#", "A3#", "A1x#", "C#", "C01#", "C1000#",
		"D1#", "DD", "B11234", "A112345678901234567#", "C-1#", "1#"} {
		if m, err := Parse(s); !errors.Is(err, ErrSequence) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrSequence", s, m, err)
		}
	}
	if err := (Message{Kind: Report, Code: 1000}).Validate(); err == nil {
		t.Error("Validate(code 1000) = nil")
	}
}

// TestScanner feeds keys as a detector would: the holder's keys pass
// through as plain; sequences are found; a lost end is abandoned when the
// next sequence starts; D is a message and cancels an open sequence.
func TestScanner(t *testing.T) {
	var s Scanner
	var plain []byte
	var msgs []Message
	var bad int
	for _, k := range []byte("12#A11234#9C0#A2B2#*DA1#C24#") {
		m, ok, p, err := s.Key(k)
		switch {
		case p:
			plain = append(plain, k)
		case ok:
			msgs = append(msgs, m)
		case err != nil:
			bad++
		}
	}
	if string(plain) != "12#9*" {
		t.Errorf("plain keys %q, want %q", plain, "12#9*")
	}
	want := []Message{{Kind: Trigger, Op: OpPay, Reference: "1234"}, {Kind: Report}, {Kind: Request, Op: OpSignIn}, {Kind: Resume}, {Kind: Report, Code: 24}}
	if len(msgs) != len(want) {
		t.Fatalf("messages %+v, want %+v", msgs, want)
	}
	for i := range want {
		if msgs[i] != want[i] {
			t.Errorf("message %d = %+v, want %+v", i, msgs[i], want[i])
		}
	}
	if bad != 1 { // "A1#": pay without a reference
		t.Errorf("%d bad sequences, want 1", bad)
	}
	if s.Open() {
		t.Error("Open() after the last sequence")
	}
}

// FuzzScanner feeds arbitrary keys: no panic, a sequence never grows past
// its limit, and every message found re-encodes to keys that parse back
// to it.
func FuzzScanner(f *testing.F) {
	f.Add([]byte("A112345678#"))
	f.Add([]byte("C24#B2#"))
	f.Add([]byte("AAAA1111111111111111111111111#"))
	f.Fuzz(func(t *testing.T, keys []byte) {
		var s Scanner
		for _, k := range keys {
			m, ok, _, _ := s.Key(k)
			if len(s.buf) > maxLen {
				t.Fatalf("sequence of %d keys held", len(s.buf))
			}
			if ok {
				got, err := Parse(m.String())
				if err != nil || got != m {
					t.Fatalf("found %+v; Parse(%q) = %+v, %v", m, m.String(), got, err)
				}
			}
		}
		if m, err := Parse(string(keys)); err == nil && m.String() != string(keys) {
			t.Fatalf("Parse(%q) = %+v, which encodes as %q", keys, m, m.String())
		}
	})
}

// TestScannerGap: a sequence whose end never comes is dropped after
// MaxGap of audio without a key, and the holder's keys are plain again;
// keys within the gap keep it open, and a later sequence still parses.
func TestScannerGap(t *testing.T) {
	var s Scanner
	for _, k := range []byte("A25") {
		s.Key(k)
	}
	s.Elapse(MaxGap / 2)
	s.Key('1') // within the gap: the sequence goes on
	s.Elapse(MaxGap)
	if !s.Open() {
		t.Fatal("sequence dropped at MaxGap after its last key; want it open until the gap is passed")
	}
	s.Elapse(time.Millisecond)
	if s.Open() {
		t.Fatal("sequence still open after more than MaxGap without a key")
	}
	if _, ok, plain, err := s.Key('7'); ok || !plain || err != nil {
		t.Errorf("Key('7') after the dropped sequence = ok %v plain %v err %v; want a plain key", ok, plain, err)
	}
	s.Elapse(10 * MaxGap) // nothing open: no effect
	var got Message
	for _, k := range []byte("A112345678#") {
		m, ok, _, err := s.Key(k)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = m
		}
		s.Elapse(140 * time.Millisecond)
	}
	if want := (Message{Kind: Trigger, Op: OpPay, Reference: "12345678"}); got != want {
		t.Errorf("sequence after a dropped one = %+v, want %+v", got, want)
	}
}
