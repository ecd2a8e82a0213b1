// Package iso7816 holds the byte formats of ISO/IEC 7816: command and response
// APDUs (7816-4 §5.1), status words (7816-4 §5.6), BER-TLV data objects
// (7816-4 §6.3 / ISO 8825-1) and the Answer-to-Reset (7816-3 §8).
//
// It is pure bytes: it must not import anything that does I/O. Card code and
// host code both use it.
package iso7816

import (
	"errors"
	"fmt"
)

// Command is a command APDU (ISO/IEC 7816-4 §5.1).
//
// The case is implied: Data empty and Ne zero is case 1, Ne only is case 2,
// Data only is case 3, both is case 4.
type Command struct {
	CLA, INS, P1, P2 byte
	// Data is the command data field (Nc = len(Data), at most 65535).
	Data []byte
	// Ne is the maximum number of response bytes expected: 0 means no Le
	// field; 1..256 fits a short Le (256 is encoded as 00); up to 65536 needs
	// an extended Le (65536 is encoded as 0000).
	Ne int
	// Extended forces the extended-length encoding even when short would do.
	// ParseCommand sets it when the input used extended length.
	Extended bool
}

// Limits of the length fields (ISO/IEC 7816-4 §5.1).
const (
	maxShortNc    = 255
	maxShortNe    = 256
	maxExtendedNc = 65535
	maxExtendedNe = 65536
)

// ParseCommand decodes a command APDU in any of the seven encodings of
// ISO/IEC 7816-4 §5.1 (cases 1, 2S, 3S, 4S, 2E, 3E, 4E). Malformed input gives
// an error wrapping ErrMalformed; the card answers it with SWWrongLength.
//
// The returned Data is a copy: b may be reused afterwards. Data is nil when
// the command has no data field.
func ParseCommand(b []byte) (Command, error) {
	if len(b) < 4 {
		return Command{}, fmt.Errorf("%w APDU: %d bytes, shorter than the 4-byte header", ErrMalformed, len(b))
	}
	c := Command{CLA: b[0], INS: b[1], P1: b[2], P2: b[3]}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return c, nil
	case len(body) == 1: // case 2S
		c.Ne = shortLe(body[0])
		return c, nil
	case body[0] != 0: // case 3S or 4S
		nc := int(body[0])
		switch len(body) - 1 {
		case nc: // case 3S
		case nc + 1: // case 4S
			c.Ne = shortLe(body[1+nc])
		default:
			return Command{}, fmt.Errorf("%w APDU: short Lc is %d but %d bytes follow it", ErrMalformed, nc, len(body)-1)
		}
		c.Data = clone(body[1 : 1+nc])
		return c, nil
	}
	// body[0] == 0 and more bytes follow: extended length.
	c.Extended = true
	if len(body) < 3 {
		return Command{}, fmt.Errorf("%w APDU: short Lc is 0 (or extended length field truncated)", ErrMalformed)
	}
	if len(body) == 3 { // case 2E
		c.Ne = extendedLe(body[1], body[2])
		return c, nil
	}
	nc := int(body[1])<<8 | int(body[2])
	if nc == 0 {
		return Command{}, fmt.Errorf("%w APDU: extended Lc is 0000 but %d bytes follow it", ErrMalformed, len(body)-3)
	}
	switch len(body) - 3 {
	case nc: // case 3E
	case nc + 2: // case 4E
		c.Ne = extendedLe(body[3+nc], body[4+nc])
	default:
		return Command{}, fmt.Errorf("%w APDU: extended Lc is %d but %d bytes follow it", ErrMalformed, nc, len(body)-3)
	}
	c.Data = clone(body[3 : 3+nc])
	return c, nil
}

func shortLe(le byte) int {
	if le == 0 {
		return maxShortNe
	}
	return int(le)
}

func extendedLe(hi, lo byte) int {
	n := int(hi)<<8 | int(lo)
	if n == 0 {
		return maxExtendedNe
	}
	return n
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// Bytes encodes c, choosing short length unless Data exceeds 255 bytes, Ne
// exceeds 256 or Extended is set. It fails if Data is over 65535 bytes or Ne
// is out of range.
func (c Command) Bytes() ([]byte, error) {
	nc := len(c.Data)
	if nc > maxExtendedNc {
		return nil, fmt.Errorf("encoding APDU: data field of %d bytes exceeds %d", nc, maxExtendedNc)
	}
	if c.Ne < 0 || c.Ne > maxExtendedNe {
		return nil, fmt.Errorf("encoding APDU: Ne %d out of range 0..%d", c.Ne, maxExtendedNe)
	}
	ext := c.Extended || nc > maxShortNc || c.Ne > maxShortNe
	n := 4
	switch {
	case !ext && nc > 0:
		n += 1 + nc
	case ext && nc > 0:
		n += 3 + nc
	}
	switch {
	case c.Ne == 0:
	case !ext:
		n++
	case nc > 0:
		n += 2
	default:
		n += 3
	}
	b := make([]byte, 4, n)
	b[0], b[1], b[2], b[3] = c.CLA, c.INS, c.P1, c.P2
	if nc > 0 {
		if ext {
			b = append(b, 0, byte(nc>>8), byte(nc))
		} else {
			b = append(b, byte(nc))
		}
		b = append(b, c.Data...)
	}
	if c.Ne > 0 {
		ne := c.Ne
		if ext {
			if ne == maxExtendedNe {
				ne = 0
			}
			if nc == 0 {
				b = append(b, 0)
			}
			b = append(b, byte(ne>>8), byte(ne))
		} else {
			b = append(b, byte(ne)) // 256 encodes as 00
		}
	}
	return b, nil
}

// Response is a response APDU: data field and trailer.
type Response struct {
	Data []byte
	SW   SW
}

// ParseResponse splits a response APDU into data and status word. It fails
// when b is shorter than two bytes. The returned Data is a copy (nil when
// empty).
func ParseResponse(b []byte) (Response, error) {
	if len(b) < 2 {
		return Response{}, fmt.Errorf("%w response APDU: %d bytes, shorter than the 2-byte trailer", ErrMalformed, len(b))
	}
	n := len(b) - 2
	return Response{Data: clone(b[:n]), SW: SW(b[n])<<8 | SW(b[n+1])}, nil
}

// Bytes encodes r as data followed by SW1 SW2.
func (r Response) Bytes() []byte {
	b := make([]byte, 0, len(r.Data)+2)
	b = append(b, r.Data...)
	return append(b, r.SW.SW1(), r.SW.SW2())
}

// ErrMalformed is wrapped by every error about bytes that do not follow the
// encoding rules (APDU, TLV, ATR).
var ErrMalformed = errors.New("malformed")
