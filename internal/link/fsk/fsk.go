// Package fsk is the telephone-line modem: binary frequency-shift keying
// at 8 kHz (package audio's float samples) for Bell 202 and ITU-T V.23
// (1200 bit/s, V.23 with its 75 bit/s back channel) and Bell 103 and ITU-T
// V.21 (300 bit/s, one channel each way), with asynchronous character
// framing: one start bit (space), 8 data bits least significant first,
// one stop bit (mark), as minimodem frames them.
//
// A Modulator writes continuous-phase tones; a Demodulator recovers bytes
// from a stream of samples in chunks of any size, with carrier detection,
// level-independent soft decisions and bit-clock recovery per character
// (see demodulate.go for how). Demodulate is the whole-buffer helper.
//
// The modem knows nothing of frames, checksums or retransmission (package
// link and its lossy-link layer sit above it) nor of the line simulator.
// It imports only audio and the standard library.
package fsk

import (
	"fmt"
	"math"
	"strings"
)

// Mode is one direction of one FSK modem: its bit rate and the two tones.
// Mark is the tone of a 1 bit (and of the idle line), Space of a 0 bit.
type Mode struct {
	Name  string  // short name, as ParseMode accepts it
	Baud  float64 // bits per second
	Mark  float64 // Hz
	Space float64 // Hz
}

// The modes, with their tones from the standards: Bell System Technical
// Reference PUB 41212 (Bell 202), ITU-T V.23 §2 (forward channel mode 2
// and backward channel), Bell 103 and ITU-T V.21 §2. A full-duplex modem
// transmits on one channel and receives on the other: the calling
// (originating) side sends on Bell103 / V21, the answering side on
// Bell103Answer / V21Answer.
var (
	Bell202       = Mode{Name: "1200", Baud: 1200, Mark: 1200, Space: 2200}
	V23           = Mode{Name: "v23", Baud: 1200, Mark: 1300, Space: 2100}
	V23Back       = Mode{Name: "v23-back", Baud: 75, Mark: 390, Space: 450}
	Bell103       = Mode{Name: "300", Baud: 300, Mark: 1270, Space: 1070}
	Bell103Answer = Mode{Name: "300-answer", Baud: 300, Mark: 2225, Space: 2025}
	V21           = Mode{Name: "v21", Baud: 300, Mark: 980, Space: 1180}
	V21Answer     = Mode{Name: "v21-answer", Baud: 300, Mark: 1650, Space: 1850}
)

// Modes lists every predefined mode.
var Modes = []Mode{Bell202, V23, V23Back, Bell103, Bell103Answer, V21, V21Answer}

// ParseMode returns the predefined mode called name (case-insensitive).
func ParseMode(name string) (Mode, error) {
	for _, m := range Modes {
		if strings.EqualFold(m.Name, name) {
			return m, nil
		}
	}
	var names []string
	for _, m := range Modes {
		names = append(names, m.Name)
	}
	return Mode{}, fmt.Errorf("fsk: unknown mode %q (known: %s)", name, strings.Join(names, ", "))
}

// String returns the mode's name and parameters.
func (m Mode) String() string {
	return fmt.Sprintf("%s (%g bit/s, mark %g Hz, space %g Hz)", m.Name, m.Baud, m.Mark, m.Space)
}

// check reports whether the mode can run at rate samples per second.
func (m Mode) check(rate int) error {
	nyq := float64(rate) / 2
	switch {
	case rate < 1000 || rate > 384000:
		return fmt.Errorf("fsk: sample rate %d", rate)
	case !(m.Baud >= 10 && m.Baud <= float64(rate)/4):
		return fmt.Errorf("fsk: %v bit/s at %d samples per second", m.Baud, rate)
	case !(m.Mark > 0 && m.Mark < nyq) || !(m.Space > 0 && m.Space < nyq):
		return fmt.Errorf("fsk: tones %v and %v Hz must lie between 0 and %v Hz", m.Mark, m.Space, nyq)
	case math.Abs(m.Mark-m.Space) < m.Baud/2:
		return fmt.Errorf("fsk: tones %v and %v Hz are closer than half the bit rate", m.Mark, m.Space)
	}
	return nil
}

// Character framing (asynchronous, 8N1).
const (
	dataBits  = 8
	frameBits = 1 + dataBits + 1
)
