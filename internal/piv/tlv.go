package piv

import (
	"fmt"

	"cardlink/internal/iso7816"
)

// parseFlat splits b into BER-TLV objects without looking inside them.
// PIV objects use tags with the "constructed" bit set for plain values
// (30 FASC-N, 70 certificate, 71 CertInfo, F0 card identifier…), so their
// contents must not be parsed as TLVs, as iso7816.ParseTLV would. Tags are
// 1 to 3 bytes; lengths are definite, up to 82 xx xx, and need not be
// minimal (yubico-piv-tool writes 255 as 82 00 FF). Errors wrap
// iso7816.ErrMalformed.
func parseFlat(b []byte) ([]iso7816.TLV, error) {
	var out []iso7816.TLV
	for off := 0; off < len(b); {
		start := off
		if b[off] == 0x00 || b[off] == 0xFF {
			return nil, fmt.Errorf("%w: tag byte %02X at offset %d", iso7816.ErrMalformed, b[off], off)
		}
		n := 1
		if b[off]&0x1F == 0x1F {
			for n < 3 && off+n < len(b) && b[off+n]&0x80 != 0 {
				n++
			}
			n++
		}
		if off+n > len(b) || n > 3 || n > 1 && b[off+n-1]&0x80 != 0 {
			return nil, fmt.Errorf("%w: bad tag at offset %d", iso7816.ErrMalformed, off)
		}
		var tag iso7816.Tag
		for _, c := range b[off : off+n] {
			tag = tag<<8 | iso7816.Tag(c)
		}
		off += n
		if off >= len(b) {
			return nil, fmt.Errorf("%w: no length at offset %d", iso7816.ErrMalformed, off)
		}
		l, m := int(b[off]), 1
		switch {
		case b[off] == 0x81 && off+2 <= len(b):
			l, m = int(b[off+1]), 2
		case b[off] == 0x82 && off+3 <= len(b):
			l, m = int(b[off+1])<<8|int(b[off+2]), 3
		case b[off] > 0x7F:
			return nil, fmt.Errorf("%w: bad length at offset %d", iso7816.ErrMalformed, off)
		}
		off += m
		if len(b)-off < l {
			return nil, fmt.Errorf("%w: value of %s at offset %d truncated", iso7816.ErrMalformed, tag, start)
		}
		out = append(out, iso7816.TLV{Tag: tag, Value: b[off : off+l]})
		off += l
	}
	return out, nil
}

// parseFlatOne parses b as exactly one object with the given tag and
// returns its value.
func parseFlatOne(b []byte, tag iso7816.Tag) ([]byte, error) {
	list, err := parseFlat(b)
	if err != nil {
		return nil, err
	}
	if len(list) != 1 || list[0].Tag != tag {
		return nil, fmt.Errorf("%w: want one %s object", iso7816.ErrMalformed, tag)
	}
	return list[0].Value, nil
}
