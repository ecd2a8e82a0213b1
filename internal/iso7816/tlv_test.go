package iso7816

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestTagConstructed(t *testing.T) {
	tests := []struct {
		tag  Tag
		want bool
	}{
		{0x5A, false}, {0x70, true}, {0x9F36, false}, {0xBF0C, true},
		{0x7F4910, true}, {0x5F2D, false}, {0x7F21, true}, {0x5FC102, false},
	}
	for _, tt := range tests {
		if got := tt.tag.Constructed(); got != tt.want {
			t.Errorf("Tag(%v).Constructed() = %v, want %v", tt.tag, got, tt.want)
		}
	}
}

func TestTagString(t *testing.T) {
	tests := []struct {
		tag  Tag
		want string
	}{{0x5A, "5A"}, {0x9F36, "9F36"}, {0x7F4910, "7F4910"}, {0x0A, "0A"}, {0x5F818101, "5F818101"}}
	for _, tt := range tests {
		if got := tt.tag.String(); got != tt.want {
			t.Errorf("Tag(%#x).String() = %q, want %q", uint32(tt.tag), got, tt.want)
		}
	}
}

func TestParseTLV(t *testing.T) {
	v300 := seq(300)
	v70000 := seq(70000)
	tests := []struct {
		name string
		in   []byte
		lim  *Limits
		want []TLV
	}{
		{"empty", nil, nil, nil},
		{"primitive", h("5A 03 112233"), nil, []TLV{{Tag: 0x5A, Value: h("112233")}}},
		{"empty value", h("53 00"), nil, []TLV{{Tag: 0x53, Value: h("")}}},
		{"two objects", h("5A 01 AA 9F36 02 0102"), nil, []TLV{
			{Tag: 0x5A, Value: h("AA")}, {Tag: 0x9F36, Value: h("0102")}}},
		{"three-byte tag", h("5FC102 01 7E"), nil, []TLV{{Tag: 0x5FC102, Value: h("7E")}}},
		{"two-byte tag 1F", h("5F1F 00"), nil, []TLV{{Tag: 0x5F1F, Value: h("")}}},
		{"EMV tags below 31", h("9F17 01 03 9F02 01 00 5F20 00"), nil, []TLV{
			{Tag: 0x9F17, Value: h("03")}, {Tag: 0x9F02, Value: h("00")}, {Tag: 0x5F20, Value: h("")}}},
		{"length 81", append(h("53 81 80"), seq(128)...), nil, []TLV{{Tag: 0x53, Value: seq(128)}}},
		{"length 82", append(h("53 82 012C"), v300...), nil, []TLV{{Tag: 0x53, Value: v300}}},
		{"length 83", append(h("53 83 011170"), v70000...), &Limits{MaxDepth: 1, MaxLength: 1 << 20, MaxObjects: 1}, []TLV{{Tag: 0x53, Value: v70000}}},
		{"constructed", h("7C 06 81 00 82 02 ABCD"), nil, []TLV{{Tag: 0x7C, Value: h("810082 02ABCD"), Children: []TLV{
			{Tag: 0x81, Value: h("")}, {Tag: 0x82, Value: h("ABCD")}}}}},
		{"nested", h("61 07 4F 00 79 03 4F 01 AA"), nil, []TLV{{Tag: 0x61, Value: h("4F00 7903 4F01AA"), Children: []TLV{
			{Tag: 0x4F, Value: h("")},
			{Tag: 0x79, Value: h("4F01AA"), Children: []TLV{{Tag: 0x4F, Value: h("AA")}}}}}}},
		{"empty constructed", h("7F49 00"), nil, []TLV{{Tag: 0x7F49, Value: h("")}}},
		{"depth exactly limit", h("70 02 71 00"), &Limits{MaxDepth: 2, MaxLength: 10, MaxObjects: 2}, []TLV{
			{Tag: 0x70, Value: h("7100"), Children: []TLV{{Tag: 0x71, Value: h("")}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []TLV
			var err error
			if tt.lim != nil {
				got, err = ParseTLVLimits(tt.in, *tt.lim)
			} else {
				got, err = ParseTLV(tt.in)
			}
			if err != nil {
				t.Fatalf("ParseTLV(%X) error %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseTLV(%X) = %+v, want %+v", tt.in, got, tt.want)
			}
			var enc []byte
			for _, o := range got {
				enc = append(enc, o.Bytes()...)
			}
			if !bytes.Equal(enc, tt.in) {
				t.Errorf("ParseTLV(%X) re-encodes to %X, want the input", tt.in, enc)
			}
		})
	}
}

func TestParseTLVMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		lim  *Limits
		msg  string
	}{
		{"padding 00", h("00 5A 01 AA"), nil, "offset 0: invalid first tag byte 00"},
		{"padding FF between", h("5A 01 AA FF"), nil, "offset 3: invalid first tag byte FF"},
		{"tag truncated", h("9F"), nil, "offset 0: tag 9F truncated"},
		{"three-byte tag truncated", h("5A00 5FC1"), nil, "offset 2: tag 5FC1 truncated"},
		{"four-byte tag", h("5F818181 00"), nil, "tag 5F8181… longer than three bytes"},
		{"subsequent byte 80", h("5F80 00"), nil, "non-minimal subsequent byte"},
		{"length missing", h("5A"), nil, "offset 1: length truncated"},
		{"indefinite length", h("70 80 5A01AA 0000"), nil, "offset 1: indefinite length"},
		{"length 84", h("5A 84 00000001 AA"), nil, "longer than four bytes"},
		{"length FF", h("5A FF"), nil, "longer than four bytes"},
		{"length 81 truncated", h("5A 81"), nil, "offset 1: length truncated"},
		{"length 82 truncated", h("5A 82 01"), nil, "length truncated"},
		{"non-minimal 81 05", h("5A 81 05 0102030405"), nil, "offset 1: non-minimal length 8105"},
		{"non-minimal 82 0080", append(h("5A 82 0080"), seq(128)...), nil, "non-minimal length 820080"},
		{"non-minimal 83 00FFFF", h("5A 83 00FFFF"), nil, "non-minimal length 8300FFFF"},
		{"value truncated", h("5A 05 010203"), nil, "offset 2: value of tag 5A truncated: length 5, 3 bytes left"},
		{"nested value truncated", h("70 04 5A 05 0102"), nil, "offset 4: value of tag 5A truncated"},
		{"nested garbage", h("70 02 00 00"), nil, "offset 2: invalid first tag byte 00"},
		{"over length limit", h("53 82 0100"), &Limits{MaxDepth: 8, MaxLength: 255, MaxObjects: 8}, "length 256 over limit 255"},
		{"over default length limit", h("53 83 010000"), nil, "length 65536 over limit 65535"},
		{"too deep", h("70 04 71 02 72 00"), &Limits{MaxDepth: 2, MaxLength: 100, MaxObjects: 100}, "offset 4: nesting deeper than 2"},
		{"no nesting", h("70 02 71 00"), &Limits{MaxDepth: 1, MaxLength: 100, MaxObjects: 100}, "nesting deeper than 1"},
		{"too many objects", h("5A00 5A00 5A00"), &Limits{MaxDepth: 1, MaxLength: 100, MaxObjects: 2}, "offset 4: more than 2 objects"},
		{"too many nested objects", h("70 04 5A00 5A00"), &Limits{MaxDepth: 2, MaxLength: 100, MaxObjects: 2}, "more than 2 objects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []TLV
			var err error
			if tt.lim != nil {
				got, err = ParseTLVLimits(tt.in, *tt.lim)
			} else {
				got, err = ParseTLV(tt.in)
			}
			if err == nil {
				t.Fatalf("ParseTLV(%X) = %+v, want error", tt.in, got)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseTLV(%X) error %q does not wrap ErrMalformed", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParseTLV(%X) error %q, want it to contain %q", tt.in, err, tt.msg)
			}
		})
	}
}

func TestParseTLVDeepDefault(t *testing.T) {
	// Seven constructed objects around a primitive make 8 levels, the
	// DefaultLimits.MaxDepth; one more is too deep.
	in := []byte{0x5A, 0x00}
	for range 7 {
		in = AppendTLV(nil, 0x70, in)
	}
	if _, err := ParseTLV(in); err != nil {
		t.Fatalf("ParseTLV(8 levels) error %v, want nil", err)
	}
	in = AppendTLV(nil, 0x70, in)
	if _, err := ParseTLV(in); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseTLV(9 levels) error %v, want ErrMalformed", err)
	}
}

func TestAppendTLV(t *testing.T) {
	tests := []struct {
		name  string
		dst   []byte
		tag   Tag
		value []byte
		want  []byte
	}{
		{"short", nil, 0x5A, h("AABB"), h("5A02AABB")},
		{"onto prefix", h("0102"), 0x9F36, h("01"), h("0102 9F36 01 01")},
		{"three-byte tag", nil, 0x5FC102, nil, h("5FC102 00")},
		{"length 127", nil, 0x53, seq(127), append(h("537F"), seq(127)...)},
		{"length 128", nil, 0x53, seq(128), append(h("538180"), seq(128)...)},
		{"length 255", nil, 0x53, seq(255), append(h("5381FF"), seq(255)...)},
		{"length 256", nil, 0x53, seq(256), append(h("53820100"), seq(256)...)},
		{"length 65536", nil, 0x53, seq(65536), append(h("5383010000"), seq(65536)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendTLV(tt.dst, tt.tag, tt.value); !bytes.Equal(got, tt.want) {
				t.Errorf("AppendTLV(%X, %v, %d bytes) = %X, want %X", tt.dst, tt.tag, len(tt.value), got, tt.want)
			}
		})
	}
}

func TestTLVBytes(t *testing.T) {
	tests := []struct {
		name string
		tlv  TLV
		want []byte
	}{
		{"primitive", TLV{Tag: 0x5A, Value: h("AA")}, h("5A01AA")},
		{"primitive ignores children", TLV{Tag: 0x5A, Value: h("AA"), Children: []TLV{{Tag: 0x5A}}}, h("5A01AA")},
		{"constructed from children", TLV{Tag: 0x7C, Value: h("FFFF"), Children: []TLV{
			{Tag: 0x81}, {Tag: 0x82, Value: h("0102")}}}, h("7C06 8100 82020102")},
		{"constructed from value", TLV{Tag: 0x7C, Value: h("8100")}, h("7C02 8100")},
		{"constructed nested", TLV{Tag: 0x61, Children: []TLV{
			{Tag: 0x79, Children: []TLV{{Tag: 0x4F, Value: h("A0")}}}}}, h("6105 7903 4F01A0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tlv.Bytes(); !bytes.Equal(got, tt.want) {
				t.Errorf("%+v.Bytes() = %X, want %X", tt.tlv, got, tt.want)
			}
		})
	}
}

func TestFindTLV(t *testing.T) {
	list, err := ParseTLV(h("4F01AA 5002 4142 4F01BB 7003 4F01CC"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tag  Tag
		ok   bool
		want []byte
	}{{0x4F, true, h("AA")}, {0x50, true, h("4142")}, {0x5A, false, nil}}
	for _, tt := range tests {
		got, ok := FindTLV(list, tt.tag)
		if ok != tt.ok || !bytes.Equal(got.Value, tt.want) {
			t.Errorf("FindTLV(list, %v) = %X, %v, want %X, %v", tt.tag, got.Value, ok, tt.want, tt.ok)
		}
	}
}
