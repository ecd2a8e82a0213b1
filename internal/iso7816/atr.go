package iso7816

import (
	"fmt"
	"slices"
)

// ATR is a parsed Answer-to-Reset (ISO/IEC 7816-3 §8.2).
//
// It keeps what a host or a card needs to talk: convention, protocols, TA1
// and the T=1 parameters. Other interface bytes (TB1, TC1, TA2, TC2, T=1 TCi,
// the T=15 global bytes) are checked for structure by ParseATR but not kept,
// so Bytes of a parsed ATR may be shorter than the input; parsing it again
// gives an equal ATR.
type ATR struct {
	// Inverse reports the inverse convention (TS 3F) instead of the direct
	// one (TS 3B). The other bytes are held as logical values either way.
	Inverse bool
	// Protocols lists the transmission protocols offered, in the order the
	// interface bytes announce them (e.g. [1] for T=1 only). An ATR with no
	// TD1 offers only T=0. T=15 (global interface bytes) is not a protocol
	// and is not listed; a protocol announced twice is listed once.
	Protocols []int
	// Fi and Di are the clock rate conversion and baud rate adjustment
	// indices from TA1 (defaults 1 and 1 when TA1 is absent).
	Fi, Di byte
	// IFSC is the T=1 information field size of the card (default 32).
	IFSC int
	// BWI and CWI are the T=1 block and character waiting time integers
	// (defaults 4 and 13).
	BWI, CWI int
	// Historical holds the historical bytes (at most 15).
	Historical []byte
}

// Defaults of ISO/IEC 7816-3 §8.3 and §11.4 for absent interface bytes.
const (
	defaultFi   = 1
	defaultDi   = 1
	defaultIFSC = 32
	defaultBWI  = 4
	defaultCWI  = 13
)

// ATR encoding constants (ISO/IEC 7816-3 §8.1, §8.2).
const (
	atrDirect    = 0x3B
	atrInverse   = 0x3F
	atrMaxLen    = 33
	atrMaxHist   = 15
	protoGlobal  = 15 // T=15: global interface bytes follow
	yTA, yTB     = 0x10, 0x20
	yTC, yTD     = 0x40, 0x80
	ifscMin      = 1
	ifscMax      = 254
	cardlinkBWI  = 4
	cardlinkCWI  = 5
	cardlinkIFSC = 254
)

// NewATR returns the ATR a cardlink card sends: direct convention, offering
// T=1 only, IFSC 254, with the given historical bytes.
//
// It encodes as 3B 8K 81 31 FE 45 <historical> TCK: TD1 and TD2 announce T=1,
// TA3 is the IFSC and TB3 sets BWI 4, CWI 5. The historical bytes are
// copied; Bytes fails if there are more than 15.
func NewATR(historical []byte) ATR {
	return ATR{
		Protocols:  []int{1},
		Fi:         defaultFi,
		Di:         defaultDi,
		IFSC:       cardlinkIFSC,
		BWI:        cardlinkBWI,
		CWI:        cardlinkCWI,
		Historical: clone(historical),
	}
}

// Bytes encodes a, including TCK when any protocol other than T=0 is offered.
// TA1 is sent unless Fi and Di are both 1; T=1 parameters are sent, after a
// TD announcing T=1 at position 2 or later, unless they are the defaults.
// Bytes fails on more than 15 historical bytes, protocols outside 0..14 or
// repeated, out-of-range fields, or a result over 33 bytes.
func (a ATR) Bytes() ([]byte, error) {
	if len(a.Historical) > atrMaxHist {
		return nil, fmt.Errorf("encoding ATR: %d historical bytes, at most %d", len(a.Historical), atrMaxHist)
	}
	if a.Fi > 15 || a.Di > 15 {
		return nil, fmt.Errorf("encoding ATR: Fi %d or Di %d over 15", a.Fi, a.Di)
	}
	protos := a.Protocols
	if len(protos) == 0 {
		protos = []int{0}
	}
	t1 := -1 // index of T=1 in protos
	for i, p := range protos {
		if p < 0 || p >= protoGlobal {
			return nil, fmt.Errorf("encoding ATR: protocol T=%d out of range 0..14", p)
		}
		if slices.Index(protos, p) != i {
			return nil, fmt.Errorf("encoding ATR: protocol T=%d listed twice", p)
		}
		if p == 1 {
			t1 = i
		}
	}
	var t1Bytes []byte // TA, TB of the first T=1 specific group, as present
	var t1Y byte
	if t1 >= 0 {
		if a.IFSC < ifscMin || a.IFSC > ifscMax {
			return nil, fmt.Errorf("encoding ATR: IFSC %d out of range %d..%d", a.IFSC, ifscMin, ifscMax)
		}
		if a.BWI < 0 || a.BWI > 15 || a.CWI < 0 || a.CWI > 15 {
			return nil, fmt.Errorf("encoding ATR: BWI %d or CWI %d out of range 0..15", a.BWI, a.CWI)
		}
		if a.IFSC != defaultIFSC {
			t1Y |= yTA
			t1Bytes = append(t1Bytes, byte(a.IFSC))
		}
		if a.BWI != defaultBWI || a.CWI != defaultCWI {
			t1Y |= yTB
			t1Bytes = append(t1Bytes, byte(a.BWI<<4|a.CWI))
		}
	}
	// The TD chain: T=1 specific bytes sit in group i ≥ 3 after TD(i-1)
	// announcing T=1, so T=1 first in TD1 is announced again in TD2.
	chain := protos
	if len(t1Bytes) > 0 && t1 == 0 {
		chain = slices.Insert(slices.Clone(protos), 1, 1)
	}
	if len(chain) == 1 && chain[0] == 0 {
		chain = nil // T=0 only: no TD1
	}
	specificAt := -1 // chain index whose TD is followed by the T=1 group
	if len(t1Bytes) > 0 {
		specificAt = slices.Index(chain[1:], 1) + 1
	}

	b := make([]byte, 2, atrMaxLen)
	b[0] = atrDirect
	if a.Inverse {
		b[0] = atrInverse
	}
	var y1 byte
	if a.Fi != defaultFi || a.Di != defaultDi {
		y1 |= yTA
		b = append(b, a.Fi<<4|a.Di)
	}
	if len(chain) > 0 {
		y1 |= yTD
	}
	b[1] = y1 | byte(len(a.Historical))
	for i, p := range chain {
		var y byte
		if i+1 < len(chain) {
			y |= yTD
		}
		if i == specificAt {
			y |= t1Y
		}
		b = append(b, y|byte(p))
		if i == specificAt {
			b = append(b, t1Bytes...)
		}
	}
	b = append(b, a.Historical...)
	if len(chain) > 0 { // some protocol other than T=0 is offered
		var tck byte
		for _, c := range b[1:] {
			tck ^= c
		}
		b = append(b, tck)
	}
	if len(b) > atrMaxLen {
		return nil, fmt.Errorf("encoding ATR: %d bytes, over %d", len(b), atrMaxLen)
	}
	return b, nil
}

func atrError(format string, args ...any) error {
	return fmt.Errorf("%w ATR: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// ParseATR decodes an ATR, checking TS, the interface byte chain, the number
// of historical bytes and TCK. Errors wrap ErrMalformed.
//
// TS may be 3B (direct) or 3F (inverse); the other bytes must already be
// logical values, as PC/SC readers report them. TCK must be present exactly
// when a TD byte announces a protocol other than T=0, and the input must end
// after it. TD1 must not announce T=15; an IFSC of 00 or FF is rejected.
func ParseATR(b []byte) (ATR, error) {
	if len(b) > atrMaxLen {
		return ATR{}, atrError("%d bytes, over %d", len(b), atrMaxLen)
	}
	if len(b) < 2 {
		return ATR{}, atrError("%d bytes, shorter than TS and T0", len(b))
	}
	a := ATR{Fi: defaultFi, Di: defaultDi, IFSC: defaultIFSC, BWI: defaultBWI, CWI: defaultCWI}
	switch b[0] {
	case atrDirect:
	case atrInverse:
		a.Inverse = true
	default:
		return ATR{}, atrError("TS %02X is neither 3B nor 3F", b[0])
	}
	k := int(b[1] & 0x0F)
	y := b[1] & 0xF0
	pos := 2
	next := func(name string, i int) (byte, error) {
		if pos >= len(b) {
			return 0, atrError("%s%d missing at offset %d", name, i, pos)
		}
		pos++
		return b[pos-1], nil
	}
	needTCK := false
	t1Specific := false // first T=1 specific group seen
	proto := 0          // protocol announced by the previous TD
	for i := 1; ; i++ {
		inT1Group := i >= 3 && proto == 1 && !t1Specific
		if inT1Group {
			t1Specific = true
		}
		if y&yTA != 0 {
			ta, err := next("TA", i)
			if err != nil {
				return ATR{}, err
			}
			switch {
			case i == 1:
				a.Fi, a.Di = ta>>4, ta&0x0F
			case inT1Group:
				if ta == 0x00 || ta == 0xFF {
					return ATR{}, atrError("TA%d (IFSC) %02X is reserved", i, ta)
				}
				a.IFSC = int(ta)
			}
		}
		if y&yTB != 0 {
			tb, err := next("TB", i)
			if err != nil {
				return ATR{}, err
			}
			if inT1Group {
				a.BWI, a.CWI = int(tb>>4), int(tb&0x0F)
			}
		}
		if y&yTC != 0 {
			if _, err := next("TC", i); err != nil {
				return ATR{}, err
			}
		}
		if y&yTD == 0 {
			break
		}
		td, err := next("TD", i)
		if err != nil {
			return ATR{}, err
		}
		proto = int(td & 0x0F)
		y = td & 0xF0
		if proto != 0 {
			needTCK = true
		}
		switch {
		case proto == protoGlobal:
			if i == 1 {
				return ATR{}, atrError("TD1 announces T=15")
			}
		case !slices.Contains(a.Protocols, proto):
			a.Protocols = append(a.Protocols, proto)
		}
	}
	if a.Protocols == nil {
		a.Protocols = []int{0}
	}
	if len(b)-pos < k {
		return ATR{}, atrError("T0 announces %d historical bytes, %d left at offset %d", k, len(b)-pos, pos)
	}
	a.Historical = clone(b[pos : pos+k])
	pos += k
	if needTCK {
		if pos >= len(b) {
			return ATR{}, atrError("TCK missing at offset %d", pos)
		}
		var x byte
		for _, c := range b[1 : pos+1] {
			x ^= c
		}
		if x != 0 {
			return ATR{}, atrError("TCK %02X does not check: want %02X", b[pos], x^b[pos])
		}
		pos++
	}
	if pos != len(b) {
		return ATR{}, atrError("%d bytes after the end at offset %d", len(b)-pos, pos)
	}
	return a, nil
}
