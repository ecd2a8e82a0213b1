package iso7816

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// h decodes hex with optional spaces; it panics on bad test input.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestParseCommand(t *testing.T) {
	long := seq(300)
	tests := []struct {
		name string
		in   []byte
		want Command
	}{
		{"case 1", h("00A40400"), Command{CLA: 0x00, INS: 0xA4, P1: 0x04, P2: 0x00}},
		{"case 2S", h("00CA006E 10"), Command{INS: 0xCA, P2: 0x6E, Ne: 16}},
		{"case 2S Le 00 is 256", h("00B00000 00"), Command{INS: 0xB0, Ne: 256}},
		{"case 3S", h("00200080 04 31323334"), Command{INS: 0x20, P2: 0x80, Data: h("31323334")}},
		{"case 4S", h("00A40400 05 A000000308 00"), Command{INS: 0xA4, P1: 4, Data: h("A000000308"), Ne: 256}},
		{"case 4S Le 01", h("80CA0000 01 AA 01"), Command{CLA: 0x80, INS: 0xCA, Data: h("AA"), Ne: 1}},
		{"case 3S 255 bytes", append(h("00DA0000 FF"), seq(255)...), Command{INS: 0xDA, Data: seq(255)}},
		{"case 2E", h("00B00000 00 0100"), Command{INS: 0xB0, Ne: 256, Extended: true}},
		{"case 2E Le 0000 is 65536", h("00B00000 000000"), Command{INS: 0xB0, Ne: 65536, Extended: true}},
		{"case 2E Le 0001", h("00B00000 000001"), Command{INS: 0xB0, Ne: 1, Extended: true}},
		{"case 3E small", h("00DA0000 000002 AABB"), Command{INS: 0xDA, Data: h("AABB"), Extended: true}},
		{"case 3E 300 bytes", append(h("00DA0000 00012C"), long...), Command{INS: 0xDA, Data: long, Extended: true}},
		{"case 4E", append(append(h("00870000 00012C"), long...), 0x00, 0x00), Command{INS: 0x87, Data: long, Ne: 65536, Extended: true}},
		{"case 4E Le 0102", h("00870000 000001 AA 0102"), Command{INS: 0x87, Data: h("AA"), Ne: 0x102, Extended: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand(tt.in)
			if err != nil {
				t.Fatalf("ParseCommand(%X) error %v, want %+v", tt.in, err, tt.want)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCommand(%X) = %+v, want %+v", tt.in, got, tt.want)
			}
			enc, err := got.Bytes()
			if err != nil || !bytes.Equal(enc, tt.in) {
				t.Errorf("ParseCommand(%X).Bytes() = %X, %v, want the input", tt.in, enc, err)
			}
		})
	}
}

func TestParseCommandCopies(t *testing.T) {
	in := h("00200080 04 31323334")
	c, err := ParseCommand(in)
	if err != nil {
		t.Fatal(err)
	}
	in[5] = 0xFF
	if c.Data[0] != 0x31 {
		t.Errorf("ParseCommand Data aliases its input: Data[0] = %02X after changing the input, want 31", c.Data[0])
	}
}

func TestParseCommandMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		msg  string // substring of the error
	}{
		{"empty", nil, "shorter than the 4-byte header"},
		{"3 bytes", h("00A404"), "shorter than the 4-byte header"},
		{"short Lc 0", h("00A40400 00 00"), "Lc is 0"},
		{"short Lc 0 then one byte", h("00A40400 00 AA"), "Lc is 0"},
		{"short Lc too big", h("00A40400 05 A0000003"), "short Lc is 5 but 4 bytes follow"},
		{"short trailing bytes", h("00A40400 02 A000 00 00"), "short Lc is 2 but 4 bytes follow"},
		{"2S with trailing", h("00A40400 01 02 03 04"), "short Lc is 1 but 3 bytes follow"},
		{"extended Lc 0000", h("00A40400 000000 AA"), "extended Lc is 0000"},
		{"extended Lc 0000 with Le", h("00A40400 000000 0100"), "extended Lc is 0000"},
		{"extended truncated", h("00A40400 000003 AABB"), "extended Lc is 3 but 2 bytes follow"},
		{"extended one trailing", h("00A40400 000001 AA 01"), "extended Lc is 1 but 2 bytes follow"},
		{"extended three trailing", h("00A40400 000001 AA 010203"), "extended Lc is 1 but 4 bytes follow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand(tt.in)
			if err == nil {
				t.Fatalf("ParseCommand(%X) = %+v, want error", tt.in, got)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseCommand(%X) error %q does not wrap ErrMalformed", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParseCommand(%X) error %q, want it to contain %q", tt.in, err, tt.msg)
			}
		})
	}
}

func TestCommandBytes(t *testing.T) {
	tests := []struct {
		name string
		c    Command
		want []byte
	}{
		{"case 1", Command{CLA: 0x80, INS: 0x10, P1: 1, P2: 2}, h("80100102")},
		{"case 2S", Command{INS: 0xC0, Ne: 9}, h("00C00000 09")},
		{"case 2S 256", Command{INS: 0xC0, Ne: 256}, h("00C00000 00")},
		{"case 2E 257", Command{INS: 0xC0, Ne: 257}, h("00C00000 000101")},
		{"case 2E 65536", Command{INS: 0xC0, Ne: 65536}, h("00C00000 000000")},
		{"case 2E forced", Command{INS: 0xC0, Ne: 5, Extended: true}, h("00C00000 000005")},
		{"case 3S", Command{INS: 0x20, P2: 0x80, Data: h("3132")}, h("00200080 02 3132")},
		{"case 3E forced", Command{INS: 0x20, P2: 0x80, Data: h("3132"), Extended: true}, h("00200080 000002 3132")},
		{"case 3E 256", Command{INS: 0xDA, Data: seq(256)}, append(h("00DA0000 000100"), seq(256)...)},
		{"case 4S", Command{INS: 0xA4, P1: 4, Data: h("A0"), Ne: 256}, h("00A40400 01 A0 00")},
		{"case 4E by Ne", Command{INS: 0xA4, P1: 4, Data: h("A0"), Ne: 257}, h("00A40400 000001 A0 0101")},
		{"case 4E by data", Command{INS: 0x87, Data: seq(256), Ne: 1}, append(append(h("00870000 000100"), seq(256)...), 0x00, 0x01)},
		{"case 4E Ne 65536", Command{INS: 0x87, Data: h("AA"), Ne: 65536}, h("00870000 000001 AA 0000")},
		{"case 4E forced", Command{INS: 0x87, Data: h("AA"), Ne: 2, Extended: true}, h("00870000 000001 AA 0002")},
		{"case 1 extended has no length", Command{INS: 0x87, Extended: true}, h("00870000")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.Bytes()
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("%+v.Bytes() = %X, %v, want %X", tt.c, got, err, tt.want)
			}
		})
	}
}

func TestCommandBytesErrors(t *testing.T) {
	tests := []struct {
		name string
		c    Command
	}{
		{"data too long", Command{Data: make([]byte, 65536)}},
		{"Ne negative", Command{Ne: -1}},
		{"Ne too big", Command{Ne: 65537}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tt.c.Bytes(); err == nil {
				t.Errorf("Command{Nc %d, Ne %d}.Bytes() = %X, want error", len(tt.c.Data), tt.c.Ne, got)
			}
		})
	}
	if _, err := (Command{Data: make([]byte, 65535), Ne: 65536}).Bytes(); err != nil {
		t.Errorf("Command{Nc 65535, Ne 65536}.Bytes() error %v, want nil", err)
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Response
	}{
		{"SW only", h("9000"), Response{SW: SWOK}},
		{"data and SW", h("AABBCC 6282"), Response{Data: h("AABBCC"), SW: 0x6282}},
		{"61xx", h("6110"), Response{SW: 0x6110}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResponse(tt.in)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseResponse(%X) = %+v, %v, want %+v", tt.in, got, err, tt.want)
			}
			if enc := got.Bytes(); !bytes.Equal(enc, tt.in) {
				t.Errorf("ParseResponse(%X).Bytes() = %X, want the input", tt.in, enc)
			}
		})
	}
	for _, in := range [][]byte{nil, {0x90}} {
		if got, err := ParseResponse(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseResponse(%X) = %+v, %v, want error wrapping ErrMalformed", in, got, err)
		}
	}
}
