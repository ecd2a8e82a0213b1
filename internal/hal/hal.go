// Package hal is the device's hardware abstraction layer: the interfaces the
// controller (package device) drives — display, keypad, power, printer and
// biometric sensor — and the small value types they exchange. Drivers live
// in subpackages: headless (a scripted display and keypad for tests and
// automation), tui (a terminal that draws the device), power (the energy
// model and power sources), printer (ESC/POS) and biometric (a fingerprint
// sensor giving templates for match-on-card).
//
// It imports only the standard library; drivers import it, never the
// reverse, and the controller names no concrete driver.
package hal

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// The display is a character display of Rows lines of Cols characters.
const (
	Rows = 4
	Cols = 20
)

// Screen is the text on the display, one string per row. A row longer than
// Cols runes is cut by the driver; a shorter one is padded with spaces.
type Screen [Rows]string

// String draws the screen as Rows lines of exactly Cols runes.
func (s Screen) String() string {
	var b strings.Builder
	for i, row := range s {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(Fit(row))
	}
	return b.String()
}

// Fit cuts or pads row to exactly Cols runes.
func Fit(row string) string {
	r := []rune(row)
	if len(r) > Cols {
		r = r[:Cols]
	}
	return string(r) + strings.Repeat(" ", Cols-len(r))
}

// Key is one key of the keypad: the digits, OK, Cancel, Clear and four
// function keys.
type Key uint8

// The keys. The zero Key is no key.
const (
	KeyNone Key = iota
	Key0
	Key1
	Key2
	Key3
	Key4
	Key5
	Key6
	Key7
	Key8
	Key9
	KeyOK
	KeyCancel
	KeyClear
	KeyF1
	KeyF2
	KeyF3
	KeyF4
)

var keyNames = [...]string{
	KeyNone: "NONE", Key0: "0", Key1: "1", Key2: "2", Key3: "3", Key4: "4",
	Key5: "5", Key6: "6", Key7: "7", Key8: "8", Key9: "9",
	KeyOK: "OK", KeyCancel: "CANCEL", KeyClear: "CLEAR",
	KeyF1: "F1", KeyF2: "F2", KeyF3: "F3", KeyF4: "F4",
}

// String names the key as ParseKey reads it: "0"–"9", "OK", "CANCEL",
// "CLEAR", "F1"–"F4".
func (k Key) String() string {
	if int(k) < len(keyNames) {
		return keyNames[k]
	}
	return fmt.Sprintf("Key(%d)", uint8(k))
}

// Digit returns the digit a digit key stands for.
func (k Key) Digit() (byte, bool) {
	if k >= Key0 && k <= Key9 {
		return '0' + byte(k-Key0), true
	}
	return 0, false
}

// ParseKey reads a key name as String writes it (case-insensitive).
func ParseKey(s string) (Key, error) {
	u := strings.ToUpper(s)
	for k, name := range keyNames {
		if k != int(KeyNone) && name == u {
			return Key(k), nil
		}
	}
	return KeyNone, fmt.Errorf("hal: unknown key %q (want 0-9, OK, CANCEL, CLEAR, F1-F4)", s)
}

// LinkState is what the display's link indicator shows.
type LinkState uint8

// The link states.
const (
	LinkDown LinkState = iota
	LinkConnecting
	LinkUp
)

func (l LinkState) String() string {
	switch l {
	case LinkDown:
		return "down"
	case LinkConnecting:
		return "connecting"
	case LinkUp:
		return "up"
	}
	return fmt.Sprintf("LinkState(%d)", uint8(l))
}

// Indicators are what the device shows beside the text: its power, its
// link and whether a card is in the reader.
type Indicators struct {
	Power PowerStatus
	Link  LinkState
	Card  bool
}

// Display shows text and indicators. Its methods may be called from one
// goroutine at a time.
type Display interface {
	// Show replaces the text on the display.
	Show(s Screen) error
	// Indicate replaces the indicators.
	Indicate(i Indicators) error
}

// Keypad gives the keys the holder presses, in order.
type Keypad interface {
	// Key blocks until a key is pressed or ctx ends (then it returns
	// ctx's error). A key already pressed and not yet taken is returned
	// even when ctx has ended: the controller drains keys pressed too
	// early (before a review appeared) with an ended context.
	Key(ctx context.Context) (Key, error)
}

// Source is where the device's power comes from.
type Source uint8

// The power sources of the patent's device.
const (
	// SourceBattery is a primary (non-rechargeable) internal battery.
	SourceBattery Source = iota
	// SourceInlet is an external supply on the power inlet.
	SourceInlet
	// SourceLine is power drawn from the telephone line: always there
	// while the line is connected, but with a tight current budget.
	SourceLine
	// SourceRechargeable is a rechargeable battery, charged from the inlet.
	SourceRechargeable
)

func (s Source) String() string {
	switch s {
	case SourceBattery:
		return "battery"
	case SourceInlet:
		return "inlet"
	case SourceLine:
		return "line"
	case SourceRechargeable:
		return "rechargeable"
	}
	return fmt.Sprintf("Source(%d)", uint8(s))
}

// PowerStatus is the power manager's state as the display shows it.
type PowerStatus struct {
	Source   Source
	Level    int  // percent of the active store's capacity, 0–100; 100 on inlet or line
	Charging bool // the rechargeable battery is charging from the inlet
	Low      bool // below the threshold for card writes and transactions
	Critical bool // the device must shut down now
}

// Operation is something the device spends energy on.
type Operation uint8

// The operations of the energy model.
const (
	OpDisplay     Operation = iota // the display and keypad, per second awake
	OpCardRead                     // one APDU that does not write the card
	OpCardWrite                    // one APDU that writes the card's memory
	OpModem                        // one byte sent or received by the modem
	OpRadio                        // one byte over infra-red or radio
	OpNetwork                      // one byte over the wired network
	OpPrinter                      // one printed line
	OpSensor                       // one biometric capture
	OpTransaction                  // a whole transaction, checked before it starts
)

func (o Operation) String() string {
	names := [...]string{"display", "card read", "card write", "modem", "radio",
		"network", "printer", "sensor", "transaction"}
	if int(o) < len(names) {
		return names[o]
	}
	return fmt.Sprintf("Operation(%d)", uint8(o))
}

// ErrLowPower is what Power.Check and Power.Use return (wrapped, saying
// why) when there is not enough energy for an operation.
var ErrLowPower = errors.New("power too low")

// Power is the power manager. Its methods are safe for concurrent use.
type Power interface {
	// Status returns the current source and level.
	Status() PowerStatus
	// Check reports whether op may start now (n units of it: bytes,
	// lines, APDUs, seconds). It fails, wrapping ErrLowPower with the
	// reason, when the level is below the threshold for op; it spends
	// nothing.
	Check(op Operation, n int) error
	// Use spends the energy of n units of op. It fails like Check, and
	// spends nothing, when the energy is not there.
	Use(op Operation, n int) error
}

// Receipt is what the printer prints: a title, lines of text (at most
// ReceiptCols runes each; longer ones wrap) and an optional footer.
type Receipt struct {
	Title  string
	Lines  []string
	Footer string
}

// ReceiptCols is the width of a receipt line in characters (a 58 mm
// printer with font A).
const ReceiptCols = 32

// Printer prints receipts.
type Printer interface {
	// Print prints r.
	Print(ctx context.Context, r Receipt) error
	// Lines returns how many lines Print prints for r: its blank,
	// wrapped and feed lines included. It is the n of
	// Power.Check(OpPrinter, n) and Power.Use(OpPrinter, n) before
	// printing r, which a controller that knows no driver cannot count.
	// It prints nothing and is safe for concurrent use.
	Lines(r Receipt) int
}

// Sensor is a biometric sensor: it captures a template to be matched on
// the card (wallet.BioTemplateLen bytes).
type Sensor interface {
	Capture(ctx context.Context) ([]byte, error)
}
