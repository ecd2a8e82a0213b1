package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"cardlink/internal/card/nvm"
)

// keySettings is the memory record of the device's settings.
const keySettings = "device/settings"

// Settings are what the device's owner sets on it, kept in its NVM
// (Memory.SetSettings, one atomic update) and read by the controller at
// each card. The zero value is the firmware's defaults (ROM).
type Settings struct {
	// Payee is the merchant name this device pays from the purse
	// offline (service "Pay"), as at a shop's counter; "" hides the
	// service. At most ROM.MaxPayee bytes of printable UTF-8.
	Payee string
	// HolderTimeout is how long the device waits for the holder's key;
	// 0 means ROM.HolderTimeout. Else whole seconds within
	// [ROM.MinHolderTimeout, ROM.MaxHolderTimeout].
	HolderTimeout time.Duration
	// NoReceipts stops the printer printing receipts (a shop that
	// prints its own).
	NoReceipts bool
}

// settingsVersion is the first byte of the record.
const settingsVersion = 1

// Validate checks that s can be stored.
func (s Settings) Validate() error {
	if len(s.Payee) > rom.MaxPayee || !utf8.ValidString(s.Payee) {
		return fmt.Errorf("settings: payee: want at most %d bytes of UTF-8", rom.MaxPayee)
	}
	for _, r := range s.Payee {
		if r < 0x20 || r == 0x7F {
			return errors.New("settings: payee: control characters")
		}
	}
	if d := s.HolderTimeout; d != 0 && (d < rom.MinHolderTimeout || d > rom.MaxHolderTimeout || d%time.Second != 0) {
		return fmt.Errorf("settings: holder timeout %v: want whole seconds from %v to %v (or 0: %v)",
			d, rom.MinHolderTimeout, rom.MaxHolderTimeout, rom.HolderTimeout)
	}
	return nil
}

// encode writes s as a memory record: version, flags (bit 0: no
// receipts), the holder timeout in seconds (2 bytes, big-endian), the
// payee's length (1 byte) and the payee.
func (s Settings) encode() []byte {
	var flags byte
	if s.NoReceipts {
		flags |= 1
	}
	b := []byte{settingsVersion, flags}
	b = binary.BigEndian.AppendUint16(b, uint16(s.HolderTimeout/time.Second))
	b = append(b, byte(len(s.Payee)))
	return append(b, s.Payee...)
}

// parseSettings reads a record encode wrote; what it returns is valid.
func parseSettings(b []byte) (Settings, error) {
	bad := errors.New("settings: malformed record")
	if len(b) < 5 || b[0] != settingsVersion || b[1]&^1 != 0 || int(b[4]) != len(b)-5 {
		return Settings{}, bad
	}
	s := Settings{
		NoReceipts:    b[1]&1 != 0,
		HolderTimeout: time.Duration(binary.BigEndian.Uint16(b[2:4])) * time.Second,
		Payee:         string(b[5:]),
	}
	if err := s.Validate(); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// Settings reads the stored settings; the zero Settings when none were
// stored. It returns an error when the record is not valid.
func (m *Memory) Settings() (Settings, error) {
	rec := m.mem.Get(keySettings)
	if rec == nil {
		return Settings{}, nil
	}
	return parseSettings(rec)
}

// SetSettings replaces the stored settings with s, in one atomic update:
// after a power cut the memory holds the old settings or the new ones.
// It returns an error for settings Validate refuses.
func (m *Memory) SetSettings(s Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("storing settings: %w", err)
	}
	err := m.mem.Update(func(tx *nvm.Tx) error {
		tx.Put(keySettings, s.encode())
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing settings: %w", err)
	}
	return nil
}
