package iso7816

import (
	"fmt"
	"slices"
)

// Tag is a BER-TLV tag of one to three bytes, stored big-endian in the low
// bytes (ISO/IEC 7816-4 §6.3, ISO/IEC 8825-1 §8.1.2): 0x5A, 0x9F36, 0x7F4910.
type Tag uint32

// len returns the number of bytes t encodes to (1 to 4; 4 is never valid).
func (t Tag) len() int {
	switch {
	case t > 0xFFFFFF:
		return 4
	case t > 0xFFFF:
		return 3
	case t > 0xFF:
		return 2
	}
	return 1
}

// first returns the first byte of t's encoding.
func (t Tag) first() byte { return byte(t >> (8 * (t.len() - 1))) }

// Constructed reports whether the tag's first byte has bit 6 (0x20) set.
func (t Tag) Constructed() bool { return t.first()&0x20 != 0 }

// String gives the tag in hex, e.g. "7F49".
func (t Tag) String() string { return fmt.Sprintf("%0*X", 2*t.len(), uint32(t)) }

// TLV is one BER-TLV data object. For a constructed tag Children holds the
// parsed contents and Value the raw contents; for a primitive tag Children is
// nil.
//
// ParseTLV returns Values that alias its input.
type TLV struct {
	Tag      Tag
	Value    []byte
	Children []TLV
}

// Limits bound what ParseTLV accepts from untrusted bytes.
type Limits struct {
	MaxDepth   int // nesting of constructed objects; 1 = no nesting
	MaxLength  int // largest length field accepted
	MaxObjects int // total objects in the whole input
}

// DefaultLimits suits every structure a cardlink card or host parses.
var DefaultLimits = Limits{MaxDepth: 8, MaxLength: 65535, MaxObjects: 1024}

// ParseTLV decodes a sequence of BER-TLV objects that must fill b exactly,
// with DefaultLimits. Padding bytes 00 and FF between objects are not
// accepted. Errors wrap ErrMalformed and say what was wrong and at which
// offset (truncated length, truncated value, depth, length over limit,
// indefinite length, non-minimal length, tag longer than three bytes).
//
// Tags follow ISO/IEC 7816-4 §6.3: the first byte is neither 00 nor FF, and
// the second byte of a two-byte tag is 1F to 7F. Lengths are definite and
// minimal (00–7F, 81 80–FF, 82 0100–FFFF, 83 010000–FFFFFF), so that
// encoding the result gives b again. Values alias b.
func ParseTLV(b []byte) ([]TLV, error) { return ParseTLVLimits(b, DefaultLimits) }

// ParseTLVLimits is ParseTLV with explicit limits.
func ParseTLVLimits(b []byte, lim Limits) ([]TLV, error) {
	p := tlvParser{lim: lim}
	return p.parse(b, 0, 1)
}

type tlvParser struct {
	lim     Limits
	objects int
}

func tlvError(off int, format string, args ...any) error {
	return fmt.Errorf("%w TLV at offset %d: %s", ErrMalformed, off, fmt.Sprintf(format, args...))
}

// parse decodes the objects filling b, which starts at offset base of the
// whole input, at nesting depth.
func (p *tlvParser) parse(b []byte, base, depth int) ([]TLV, error) {
	var list []TLV
	for i := 0; i < len(b); {
		start := base + i
		if depth > p.lim.MaxDepth {
			return nil, tlvError(start, "nesting deeper than %d", p.lim.MaxDepth)
		}
		p.objects++
		if p.objects > p.lim.MaxObjects {
			return nil, tlvError(start, "more than %d objects", p.lim.MaxObjects)
		}
		tag, n, err := parseTag(b[i:], start)
		if err != nil {
			return nil, err
		}
		i += n
		length, n, err := parseLength(b[i:], base+i)
		if err != nil {
			return nil, err
		}
		if length > p.lim.MaxLength {
			return nil, tlvError(base+i, "length %d over limit %d", length, p.lim.MaxLength)
		}
		i += n
		if length > len(b)-i {
			return nil, tlvError(base+i, "value of tag %v truncated: length %d, %d bytes left", tag, length, len(b)-i)
		}
		t := TLV{Tag: tag, Value: b[i : i+length : i+length]}
		if tag.Constructed() && length > 0 {
			t.Children, err = p.parse(t.Value, base+i, depth+1)
			if err != nil {
				return nil, err
			}
		}
		i += length
		list = append(list, t)
	}
	return list, nil
}

// parseTag decodes the tag at the start of b, which is at offset off.
func parseTag(b []byte, off int) (Tag, int, error) {
	if len(b) == 0 {
		return 0, 0, tlvError(off, "tag truncated")
	}
	t := Tag(b[0])
	if b[0] == 0x00 || b[0] == 0xFF {
		return 0, 0, tlvError(off, "invalid first tag byte %02X (padding is not accepted)", b[0])
	}
	if b[0]&0x1F != 0x1F {
		return t, 1, nil
	}
	if len(b) < 2 {
		return 0, 0, tlvError(off, "tag %02X truncated", b[0])
	}
	// A subsequent byte 80 would pad the tag number with a leading zero
	// group. Numbers below 31 in two-byte form (9F02, 9F17, 5F20) break
	// ISO/IEC 8825-1's minimal rule but are how EMV Book 3 Annex B
	// spells its tags, so they are accepted: the tag is kept as its bytes,
	// so parsing and encoding still round-trip.
	if b[1] == 0x80 {
		return 0, 0, tlvError(off, "tag %02X80 has a non-minimal subsequent byte", b[0])
	}
	t = t<<8 | Tag(b[1])
	if b[1]&0x80 == 0 {
		return t, 2, nil
	}
	if len(b) < 3 {
		return 0, 0, tlvError(off, "tag %04X truncated", uint32(t))
	}
	t = t<<8 | Tag(b[2])
	if b[2]&0x80 != 0 {
		return 0, 0, tlvError(off, "tag %06X… longer than three bytes", uint32(t))
	}
	return t, 3, nil
}

// parseLength decodes the length field at the start of b, which is at
// offset off.
func parseLength(b []byte, off int) (int, int, error) {
	if len(b) == 0 {
		return 0, 0, tlvError(off, "length truncated")
	}
	l := b[0]
	switch {
	case l < 0x80:
		return int(l), 1, nil
	case l == 0x80:
		return 0, 0, tlvError(off, "indefinite length")
	case l > 0x83:
		return 0, 0, tlvError(off, "length field %02X longer than four bytes", l)
	}
	n := int(l & 0x7F)
	if len(b) < 1+n {
		return 0, 0, tlvError(off, "length truncated: %02X needs %d more bytes, %d left", l, n, len(b)-1)
	}
	v := 0
	for _, c := range b[1 : 1+n] {
		v = v<<8 | int(c)
	}
	if lengthSize(v) != 1+n {
		return 0, 0, tlvError(off, "non-minimal length %X", b[:1+n])
	}
	return v, 1 + n, nil
}

// lengthSize returns the size of the minimal encoding of length n.
func lengthSize(n int) int {
	switch {
	case n < 0x80:
		return 1
	case n <= 0xFF:
		return 2
	case n <= 0xFFFF:
		return 3
	case n <= 0xFFFFFF:
		return 4
	case uint64(n) <= 0xFFFFFFFF:
		return 5
	}
	panic("iso7816: TLV value of 2^32 bytes or more")
}

func appendTag(dst []byte, t Tag) []byte {
	for i := t.len() - 1; i >= 0; i-- {
		dst = append(dst, byte(t>>(8*i)))
	}
	return dst
}

func appendLength(dst []byte, n int) []byte {
	switch size := lengthSize(n); size {
	case 1:
		return append(dst, byte(n))
	default:
		dst = append(dst, 0x80|byte(size-1))
		for i := size - 2; i >= 0; i-- {
			dst = append(dst, byte(n>>(8*i)))
		}
		return dst
	}
}

// AppendTLV appends the encoding of tag, definite minimal length and value.
// Values of 2^24 bytes or more get a length field (84 xxxxxxxx) that BER
// allows but ParseTLV rejects; values of 2^32 bytes or more panic.
func AppendTLV(dst []byte, tag Tag, value []byte) []byte {
	dst = slices.Grow(dst, tag.len()+lengthSize(len(value))+len(value))
	dst = appendTag(dst, tag)
	dst = appendLength(dst, len(value))
	return append(dst, value...)
}

// Bytes encodes t; for a constructed tag with Children set, the contents are
// encoded from Children, otherwise from Value.
func (t TLV) Bytes() []byte { return t.appendTo(nil) }

func (t TLV) appendTo(dst []byte) []byte {
	if !t.Tag.Constructed() || t.Children == nil {
		return AppendTLV(dst, t.Tag, t.Value)
	}
	var contents []byte
	for _, c := range t.Children {
		contents = c.appendTo(contents)
	}
	return AppendTLV(dst, t.Tag, contents)
}

// FindTLV returns the first object with the given tag in list (not
// recursive).
func FindTLV(list []TLV, tag Tag) (TLV, bool) {
	for _, t := range list {
		if t.Tag == tag {
			return t, true
		}
	}
	return TLV{}, false
}
