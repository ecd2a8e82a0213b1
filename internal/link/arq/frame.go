package arq

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Wire constants (see the package documentation for the layout).
const (
	flagByte   = 0x7e // opens and closes every frame (RFC 1662 §4.1)
	escapeByte = 0x7d // the next byte is XORed with escapeXOR
	escapeXOR  = 0x20

	headerLen = 2
	crcLen    = 4
	// seqMod is the sequence number space: 4 bits on the wire. Selective
	// repeat needs the window to be at most half of it.
	seqMod = 16
	// MaxWindow is the largest Config.Window.
	MaxWindow = seqMod / 2
	// MaxPayloadLimit is the largest Config.MaxPayload; the decoder drops
	// any longer frame.
	MaxPayloadLimit = 1024
	maxBody         = headerLen + MaxPayloadLimit + crcLen

	kindAck  = 0 // acknowledgement only: no sequence number, no payload
	kindData = 1 // carries seq and 1..MaxPayload bytes of the stream
	kindFin  = 2 // carries seq and no payload: the stream ends here
	// kind 3 is reserved: the decoder refuses it.

	ctlKindShift = 6
	ctlOver      = 1 << 5 // the sender passes the turn (half duplex)
	ctlReserved  = 1 << 4 // must be zero
	nibble       = 0x0f
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame-level errors, reported by parseFrame for a candidate frame that
// cannot be a frame (garbage between flags, a corrupted frame).
var (
	errShort     = errors.New("frame too short")
	errLong      = errors.New("frame too long")
	errCRC       = errors.New("frame check sequence mismatch")
	errEscape    = errors.New("invalid escape sequence")
	errMalformed = errors.New("malformed frame header")
)

// frame is one decoded frame.
type frame struct {
	kind    uint8
	over    bool
	seq     uint8 // data and fin frames: sequence number mod seqMod
	ack     uint8 // every frame: the next sequence number the sender expects, mod seqMod
	sack    uint8 // ack frames: bit i set when frame ack+1+i was received out of order
	payload []byte
}

// appendBody appends f's unstuffed body (header, payload, CRC) to b.
func (f *frame) appendBody(b []byte) []byte {
	start := len(b)
	ctl := f.kind << ctlKindShift
	if f.over {
		ctl |= ctlOver
	}
	var second byte
	switch f.kind {
	case kindAck:
		ctl |= f.sack & nibble
		second = f.ack<<4 | f.sack>>4
	default:
		ctl |= f.seq & nibble
		second = f.ack << 4
	}
	b = append(b, ctl, second)
	b = append(b, f.payload...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// appendFrame appends f to b as it goes on the line: stuffed, and closed
// by a flag; opened by a flag too when open is set (a frame that follows
// another at once shares that one's closing flag).
func appendFrame(b []byte, f *frame, open bool) []byte {
	var body [maxBody]byte
	if open {
		b = append(b, flagByte)
	}
	for _, c := range f.appendBody(body[:0]) {
		if c == flagByte || c == escapeByte {
			b = append(b, escapeByte, c^escapeXOR)
		} else {
			b = append(b, c)
		}
	}
	return append(b, flagByte)
}

// parseFrame decodes an unstuffed body. The returned frame's payload
// aliases body.
func parseFrame(body []byte) (frame, error) {
	var f frame
	if len(body) < headerLen+crcLen {
		return f, errShort
	}
	if len(body) > maxBody {
		return f, errLong
	}
	n := len(body) - crcLen
	if crc32.Checksum(body[:n], castagnoli) != binary.BigEndian.Uint32(body[n:]) {
		return f, errCRC
	}
	ctl, second := body[0], body[1]
	f.kind = ctl >> ctlKindShift
	f.over = ctl&ctlOver != 0
	f.ack = second >> 4
	f.payload = body[headerLen:n]
	if ctl&ctlReserved != 0 {
		return f, errMalformed
	}
	switch f.kind {
	case kindAck:
		if len(f.payload) != 0 {
			return f, errMalformed
		}
		f.sack = ctl&nibble | second<<4
	case kindData:
		if len(f.payload) == 0 || second&nibble != 0 {
			return f, errMalformed
		}
		f.seq = ctl & nibble
	case kindFin:
		if len(f.payload) != 0 || second&nibble != 0 {
			return f, errMalformed
		}
		f.seq = ctl & nibble
	default:
		return f, errMalformed
	}
	return f, nil
}

// decoder finds frames in a byte stream that may be damaged: it gathers
// the bytes between two flags, unstuffs them, and hands the result to
// parseFrame. It resynchronises on the next flag after any damage, and
// holds at most maxBody bytes. The zero decoder is ready.
type decoder struct {
	buf      [maxBody]byte
	n        int
	esc      bool // the previous byte was escapeByte
	bad      bool // this candidate is already known to be invalid
	badCount int  // candidates that were not frames (empty ones aside)
}

// feed consumes p and calls emit for every valid frame it completes. The
// frame's payload is valid only during the call.
func (d *decoder) feed(p []byte, emit func(frame)) {
	for _, c := range p {
		switch {
		case c == flagByte:
			if d.n > 0 || d.esc || d.bad {
				if f, err := d.finish(); err == nil {
					emit(f)
				} else {
					d.badCount++
				}
			}
			d.n, d.esc, d.bad = 0, false, false
		case d.bad:
		case d.esc:
			d.esc = false
			c ^= escapeXOR
			if c != flagByte && c != escapeByte {
				d.bad = true // only flag and escape are ever escaped
				continue
			}
			d.put(c)
		case c == escapeByte:
			d.esc = true
		default:
			d.put(c)
		}
	}
}

func (d *decoder) put(c byte) {
	if d.n == len(d.buf) {
		d.bad = true
		return
	}
	d.buf[d.n] = c
	d.n++
}

func (d *decoder) finish() (frame, error) {
	switch {
	case d.esc:
		return frame{}, errEscape
	case d.bad:
		return frame{}, errLong
	}
	return parseFrame(d.buf[:d.n])
}
