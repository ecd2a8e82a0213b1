package device

import (
	"time"

	"cardlink/internal/protocol"
)

// ROM is the device's read-only memory: the firmware's constants, fixed
// when the firmware is built and the same on every device that runs it.
// The controller reads them (Firmware) and nothing writes them; what a
// device keeps of its own is in its NVM (Memory: identity, pinned server
// keys, the pending purchase, Settings), and what it holds while it runs
// is RAM (the Controller's state, screen, indicators, the purchase it is
// settling), lost at power-off.
type ROM struct {
	// Software is the firmware's name and version, sent in Hello.
	Software string
	// MinPIN and MaxPIN bound the digits of a PIN (and PUK) the keypad
	// takes (ISO 9564: 4 to 12).
	MinPIN, MaxPIN int
	// ReferenceLen is the digits of a purchase's reference code.
	ReferenceLen int
	// MaxAmountDigits bounds the digits of an amount typed in minor units.
	MaxAmountDigits int
	// Timeout bounds one exchange with the server; HolderTimeout is how
	// long the device waits for a key unless Settings say otherwise;
	// PowerPoll is how often it reads the power manager.
	Timeout, HolderTimeout, PowerPoll time.Duration
	// MinHolderTimeout and MaxHolderTimeout bound the HolderTimeout
	// Settings may choose.
	MinHolderTimeout, MaxHolderTimeout time.Duration
	// ReviewRedials is how often a purchase whose link dropped while the
	// holder reviewed it is fetched again over a new link.
	ReviewRedials int
	// MaxPending is how many interrupted purchases the device keeps to
	// settle (a second interruption replaces the first).
	MaxPending int
	// MaxPayee bounds the bytes of the offline payee's name (a
	// transaction's merchant field).
	MaxPayee int
}

// rom is the firmware's ROM.
var rom = ROM{
	Software:         Software,
	MinPIN:           4,
	MaxPIN:           12,
	ReferenceLen:     protocol.ReferenceLen,
	MaxAmountDigits:  9,
	Timeout:          DefaultTimeout,
	HolderTimeout:    DefaultHolderTimeout,
	PowerPoll:        DefaultPowerPoll,
	MinHolderTimeout: 10 * time.Second,
	MaxHolderTimeout: 10 * time.Minute,
	ReviewRedials:    2,
	MaxPending:       1,
	MaxPayee:         40,
}

// Firmware returns the firmware's ROM (a copy: it cannot be changed).
func Firmware() ROM { return rom }
