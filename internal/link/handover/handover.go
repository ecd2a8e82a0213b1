// Package handover is the in-band signalling by which an IVR and an
// in-line card device agree to turn a voice call into a modem link and
// back (issue 7, item 5). Both ends speak it as DTMF digits on the audio
// path, using the keys A–D, which a telephone keypad does not have, so
// that the holder's own key presses never read as signalling:
//
//	A op [reference] #   IVR → device: "take the line and run op"
//	B op [reference] #   device → IVR: "the holder asks for op; I take the line"
//	D                    IVR → device: "the line is voice again: report"
//	C code #             device → IVR: "the modem session ended with code"
//
// op is one digit (OpPay '1', OpSignIn '2'); reference is the purchase's
// code (protocol.ReferenceLen digits, pay only); code is a protocol.Code
// in decimal (0 is success), or 999 for a session that did not finish.
// After an A or B sequence the device calls (originates) the modem and the
// IVR answers it. Once the modem link has closed on its side, the IVR
// listens for keys again and sends D; the device, on hearing D (or after
// a timeout, should D be lost), sends C. The D makes the report wait for
// the IVR: the two ends of a link do not close at the same moment, and a
// report sent while the IVR's modem still had the line would be lost.
//
// It imports only the standard library; it knows nothing of audio, the
// line or the protocol above it.
package handover

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind is which sequence a Message is.
type Kind byte

// The sequences, by their first key.
const (
	Trigger Kind = 'A' // IVR → device
	Request Kind = 'B' // device → IVR
	Report  Kind = 'C' // device → IVR
	Resume  Kind = 'D' // IVR → device, a single key
)

func (k Kind) String() string {
	switch k {
	case Trigger:
		return "trigger"
	case Request:
		return "request"
	case Report:
		return "report"
	case Resume:
		return "resume"
	}
	return fmt.Sprintf("Kind(%d)", byte(k))
}

// Op is the operation a trigger or request asks for.
type Op byte

// The operations.
const (
	OpPay    Op = '1' // approve a purchase (device.Buy) with Reference
	OpSignIn Op = '2' // authenticate the holder (device.Authenticate)
)

func (o Op) String() string {
	switch o {
	case OpPay:
		return "pay"
	case OpSignIn:
		return "sign-in"
	}
	return fmt.Sprintf("Op(%d)", byte(o))
}

// Limits of the sequences.
const (
	MaxReference = 16  // digits of a reference
	MaxCode      = 999 // largest code; CodeUnfinished
	maxLen       = 1 + 1 + MaxReference + 1
)

// CodeUnfinished in a report says the modem session did not reach the
// server's verdict (no carrier, link lost, card error).
const CodeUnfinished = 999

// ErrSequence is wrapped by the errors of Parse.
var ErrSequence = errors.New("handover: malformed sequence")

// Message is one signalling sequence.
type Message struct {
	Kind      Kind
	Op        Op     // Trigger and Request
	Reference string // Trigger and Request with OpPay: 1–MaxReference digits
	Code      int    // Report: 0–MaxCode
}

// String is the message as DTMF keys, e.g. "A112345678#".
func (m Message) String() string {
	switch m.Kind {
	case Resume:
		return "D"
	case Report:
		return "C" + strconv.Itoa(m.Code) + "#"
	default:
		return string(m.Kind) + string(m.Op) + m.Reference + "#"
	}
}

// Validate reports whether m can be sent and parsed back as it is.
func (m Message) Validate() error {
	_, err := Parse(m.String())
	if err != nil {
		return err
	}
	return nil
}

// Parse decodes one whole sequence (its keys, terminating '#' included).
// It returns an error wrapping ErrSequence for anything but exactly what
// Message.String writes.
func Parse(s string) (Message, error) {
	if s == "D" {
		return Message{Kind: Resume}, nil
	}
	if len(s) < 3 || len(s) > maxLen || s[len(s)-1] != '#' {
		return Message{}, fmt.Errorf("%w: %q", ErrSequence, s)
	}
	body := s[1 : len(s)-1]
	if strings.Trim(body, "0123456789") != "" {
		return Message{}, fmt.Errorf("%w: %q: not digits", ErrSequence, s)
	}
	switch k := Kind(s[0]); k {
	case Trigger, Request:
		m := Message{Kind: k, Op: Op(body[0]), Reference: body[1:]}
		switch m.Op {
		case OpPay:
			if m.Reference == "" {
				return Message{}, fmt.Errorf("%w: %q: pay without a reference", ErrSequence, s)
			}
		case OpSignIn:
			if m.Reference != "" {
				return Message{}, fmt.Errorf("%w: %q: sign-in with a reference", ErrSequence, s)
			}
		default:
			return Message{}, fmt.Errorf("%w: %q: unknown operation", ErrSequence, s)
		}
		return m, nil
	case Report:
		if body == "" || len(body) > 3 || (len(body) > 1 && body[0] == '0') {
			return Message{}, fmt.Errorf("%w: %q: bad code", ErrSequence, s)
		}
		c, _ := strconv.Atoi(body)
		return Message{Kind: Report, Code: c}, nil
	}
	return Message{}, fmt.Errorf("%w: %q: unknown kind", ErrSequence, s)
}

// MaxGap is how long an open sequence waits for its next key. A
// sequence's keys follow each other within a tone and a pause (about
// 140 ms); a longer wait means its end was lost on the line, or its start
// was a false detection.
const MaxGap = time.Second

// Scanner finds sequences in a stream of detected keys. The holder's keys
// (0–9, *, #) outside a sequence pass through as plain keys; a sequence
// starts with A, B or C; D is a whole message by itself and abandons an
// open sequence. A sequence that does not parse is dropped, and so is
// one left waiting for its next key for more than MaxGap of the audio
// the caller reports with Elapse. The zero value is ready; it is not safe
// for concurrent use.
type Scanner struct {
	buf  []byte
	idle time.Duration // audio since the open sequence's last key
}

// Key feeds one detected key. It returns a whole sequence when key ends
// one (ok true, err nil), a parse error when key ends a bad one (ok
// false), or neither while a sequence is open or for a plain key (then
// plain is true and the caller treats key as the holder's).
func (s *Scanner) Key(key byte) (m Message, ok, plain bool, err error) {
	s.idle = 0
	switch key {
	case 'A', 'B', 'C':
		// A new start abandons any open sequence (its end was lost).
		s.buf = append(s.buf[:0], key)
		return Message{}, false, false, nil
	case 'D':
		s.buf = s.buf[:0]
		return Message{Kind: Resume}, true, false, nil
	}
	if len(s.buf) == 0 {
		return Message{}, false, true, nil
	}
	s.buf = append(s.buf, key)
	if key == '#' || len(s.buf) >= maxLen {
		seq := string(s.buf)
		s.buf = s.buf[:0]
		m, err := Parse(seq)
		if err != nil {
			return Message{}, false, false, err
		}
		return m, true, false, nil
	}
	return Message{}, false, false, nil
}

// Open reports whether a sequence has started and not yet ended.
func (s *Scanner) Open() bool { return len(s.buf) > 0 }

// Reset drops an open sequence.
func (s *Scanner) Reset() { s.buf, s.idle = s.buf[:0], 0 }

// Elapse tells the scanner that d of audio has passed since the keys fed
// last (call it for every chunk read, after feeding its keys). An open
// sequence that has now waited more than MaxGap for its next key is
// dropped: the keys that follow are the holder's again, and a caller that
// mutes the line while a sequence is open hears it again.
func (s *Scanner) Elapse(d time.Duration) {
	if len(s.buf) == 0 {
		return
	}
	if s.idle += d; s.idle > MaxGap {
		s.Reset()
	}
}
