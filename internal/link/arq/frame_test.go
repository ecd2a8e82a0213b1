package arq

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

func crcCheck(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func crcBytes(b []byte) []byte { return binary.BigEndian.AppendUint32(nil, crcCheck(b)) }

func decodeAll(p []byte) ([]frame, int) {
	var d decoder
	var out []frame
	d.feed(p, func(f frame) {
		f.payload = bytes.Clone(f.payload)
		out = append(out, f)
	})
	return out, d.badCount
}

func TestFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		f    frame
		want []byte // on the line, both flags; nil: not checked byte for byte
	}{
		{"ack", frame{kind: kindAck, ack: 5}, nil},
		{"ack with sack", frame{kind: kindAck, ack: 15, sack: 0xa5}, nil},
		{"ack over", frame{kind: kindAck, ack: 0, over: true}, nil},
		{"data", frame{kind: kindData, seq: 3, ack: 9, payload: []byte("hello")}, nil},
		{"data needing escapes", frame{kind: kindData, seq: 14, ack: 1, payload: []byte{0x7e, 0x7d, 0x20, 0x5e, 0x5d}}, nil},
		{"fin over", frame{kind: kindFin, seq: 7, ack: 2, over: true}, nil},
		{"largest", frame{kind: kindData, seq: 1, payload: bytes.Repeat([]byte{0x7e}, MaxPayloadLimit)}, nil},
	}
	for _, tc := range tests {
		enc := appendFrame(nil, &tc.f, true)
		got, bad := decodeAll(enc)
		if len(got) != 1 || bad != 0 {
			t.Errorf("%s: decoding %x gave %d frames, %d bad, want 1, 0", tc.name, enc, len(got), bad)
			continue
		}
		g := got[0]
		if g.kind != tc.f.kind || g.over != tc.f.over || g.seq != tc.f.seq || g.ack != tc.f.ack || g.sack != tc.f.sack || !bytes.Equal(g.payload, tc.f.payload) {
			t.Errorf("%s: decoded %+v, want %+v", tc.name, g, tc.f)
		}
		if bytes.Count(enc, []byte{flagByte}) != 2 {
			t.Errorf("%s: %x has flags inside", tc.name, enc)
		}
	}
}

// TestFrameLayout pins the bytes of an acknowledgement and a data frame
// to the layout in the package documentation.
func TestFrameLayout(t *testing.T) {
	f := frame{kind: kindData, seq: 3, ack: 9, over: true, payload: []byte{0xab}}
	body := f.appendBody(nil)
	if body[0] != 0x1<<6|0x20|0x3 || body[1] != 0x90 || body[2] != 0xab || len(body) != 7 {
		t.Errorf("data frame body = %x, want 63 90 ab + CRC", body)
	}
	a := frame{kind: kindAck, ack: 4, sack: 0x21}
	body = a.appendBody(nil)
	if body[0] != 0x01 || body[1] != 0x42 || len(body) != 6 {
		t.Errorf("ack frame body = %x, want 01 42 + CRC", body)
	}
	// CRC-32C of "123456789" is e3069283 (its check value).
	if got := crcCheck([]byte("123456789")); got != 0xe3069283 {
		t.Errorf("CRC-32C check value = %08x, want e3069283", got)
	}
}

func TestDecoderResync(t *testing.T) {
	a := frame{kind: kindData, seq: 1, payload: []byte("one")}
	b := frame{kind: kindData, seq: 2, payload: []byte("two")}
	fa := appendFrame(nil, &a, true)
	fb := appendFrame(nil, &b, true)
	tests := []struct {
		name    string
		in      []byte
		want    []string // payloads
		wantBad int
	}{
		{"garbage before", append([]byte("noise"), append(fa, fb...)...), []string{"one", "two"}, 1},
		{"shared flag", append(fa, fb[1:]...), []string{"one", "two"}, 0},
		{"garbage between, no flag", append(append(fa, 0x11, 0x22), fb[1:]...), []string{"one"}, 1},
		{"bit flip", flip(fa, 3), []string{}, 1},
		{"dropped byte", append(append([]byte{}, fa[:3]...), fa[4:]...), []string{}, 1},
		{"bad escape", append([]byte{flagByte, escapeByte, 0x01}, fb...), []string{"two"}, 1},
		{"escape then flag", append([]byte{flagByte, 0x41, escapeByte}, fb...), []string{"two"}, 1},
		{"too long", append(append([]byte{flagByte}, make([]byte, maxBody+10)...), fb...), []string{"two"}, 1},
		{"empty frames", []byte{flagByte, flagByte, flagByte}, []string{}, 0},
	}
	for _, tc := range tests {
		got, bad := decodeAll(tc.in)
		var payloads []string
		for _, f := range got {
			payloads = append(payloads, string(f.payload))
		}
		if len(payloads) != len(tc.want) || bad != tc.wantBad {
			t.Errorf("%s: decoded %q, %d bad, want %q, %d bad", tc.name, payloads, bad, tc.want, tc.wantBad)
			continue
		}
		for i := range payloads {
			if payloads[i] != tc.want[i] {
				t.Errorf("%s: decoded %q, want %q", tc.name, payloads, tc.want)
			}
		}
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x04
	return b
}

func TestParseFrameRefuses(t *testing.T) {
	withCRC := func(body ...byte) []byte {
		return bytes.Clone(append(body, crcBytes(body)...))
	}
	tests := []struct {
		name string
		body []byte
	}{
		{"short", []byte{0, 0, 0}},
		{"reserved bit", withCRC(0x10, 0x00)},
		{"kind 3", withCRC(0xc0, 0x00)},
		{"ack with payload", withCRC(0x00, 0x00, 0x01)},
		{"empty data", withCRC(0x40, 0x00)},
		{"data low nibble", withCRC(0x40, 0x01, 0x55)},
		{"fin with payload", withCRC(0x80, 0x00, 0x55)},
		{"fin low nibble", withCRC(0x80, 0x03)},
		{"bad CRC", append(withCRC(0x00, 0x00)[:5], 0)},
	}
	for _, tc := range tests {
		if f, err := parseFrame(tc.body); err == nil {
			t.Errorf("parseFrame(%s %x) = %+v, nil, want an error", tc.name, tc.body, f)
		}
	}
}
