package power

import (
	"fmt"

	"cardlink/internal/hal"
)

// Cost is what one unit of an operation takes: its energy and the power it
// draws while it runs. The power decides whether the telephone line alone
// can carry the operation (docs/device-hardware.md, "Energy model").
type Cost struct {
	Energy int64 // µJ per unit
	Power  int64 // µW drawn while the unit runs
}

// Part is one ingredient of a whole transaction: N units of Op.
type Part struct {
	Op hal.Operation
	N  int
}

// Model is the energy model: a Cost for every operation but
// hal.OpTransaction, and what one transaction is made of.
type Model struct {
	Costs       map[hal.Operation]Cost
	Transaction []Part
}

// numOps is the number of operations with a Cost of their own (all but
// hal.OpTransaction).
const numOps = int(hal.OpTransaction)

// DefaultModel returns the energy model of the reference device
// (figures and their sources in docs/device-hardware.md): a 20×4 character
// LCD with LED backlight and a low-power microcontroller, an ISO 7816-3
// class A (5 V) contact card, a 1200 bit/s FSK modem chip, a sub-GHz radio,
// a 10BASE-T Ethernet PHY, a 58 mm thermal printer and a capacitive
// fingerprint sensor.
func DefaultModel() Model {
	return Model{
		Costs: map[hal.Operation]Cost{
			// MCU run 6 mA at 3.3 V (20 mW) + LCD logic 1.5 mA at 5 V
			// (7.5 mW) + backlight 10 mA at 5 V (50 mW): 80 mW, per second.
			hal.OpDisplay: {Energy: 80_000, Power: 80_000},
			// Class A card, 10 mA at 5 V for a 30 ms APDU exchange.
			hal.OpCardRead: {Energy: 1_500, Power: 50_000},
			// 30 mA at 5 V for 150 ms: EEPROM erase/write and signing.
			hal.OpCardWrite: {Energy: 22_500, Power: 150_000},
			// Modem chip 3 mA + line driver 2 mA at 5 V (25 mW) for the
			// 8.33 ms a 10-bit character takes at 1200 bit/s.
			hal.OpModem: {Energy: 208, Power: 25_000},
			// Sub-GHz transceiver sending at +10 dBm, 30 mA at 3 V, 38.4
			// kbit/s, doubled for preamble, sync word and acknowledgements.
			hal.OpRadio: {Energy: 38, Power: 90_000},
			// Ethernet PHY 40 mA at 3.3 V; 0.8 µs a byte at 10 Mbit/s,
			// rounded up to 1 µJ for framing and idle time between frames.
			hal.OpNetwork: {Energy: 1, Power: 130_000},
			// Thermal head and motor, 1 A average at 7.4 V for the 60 ms
			// a 24-dot text line takes at 50 mm/s.
			hal.OpPrinter: {Energy: 444_000, Power: 7_400_000},
			// Capacitive sensor and template extraction: 18 mA at 3.3 V
			// for one second.
			hal.OpSensor: {Energy: 60_000, Power: 60_000},
		},
		// A purchase: a minute awake, 30 reading and 6 writing APDUs, 800
		// modem bytes (handshake, request, answer, signature), a 14-line
		// receipt.
		Transaction: []Part{
			{hal.OpDisplay, 60},
			{hal.OpCardRead, 30},
			{hal.OpCardWrite, 6},
			{hal.OpModem, 800},
			{hal.OpPrinter, 14},
		},
	}
}

// Validate reports whether m has a non-negative Cost for every operation
// but hal.OpTransaction, and a transaction made of those operations with
// non-negative counts.
func (m Model) Validate() error {
	for op := range hal.Operation(numOps) {
		c, ok := m.Costs[op]
		if !ok {
			return fmt.Errorf("energy model: no cost for %s", op)
		}
		if c.Energy < 0 || c.Power < 0 {
			return fmt.Errorf("energy model: negative cost for %s", op)
		}
	}
	for op := range m.Costs {
		if int(op) >= numOps {
			return fmt.Errorf("energy model: cost for %s, which is not a single operation", op)
		}
	}
	for _, p := range m.Transaction {
		if int(p.Op) >= numOps {
			return fmt.Errorf("energy model: transaction part %s is not a single operation", p.Op)
		}
		if p.N < 0 {
			return fmt.Errorf("energy model: transaction part %s: negative count %d", p.Op, p.N)
		}
	}
	return nil
}
