package piv

import (
	"bytes"
	"testing"

	"cardlink/internal/iso7816"
)

func TestParseFlat(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		ok   bool
		tags []iso7816.Tag
		vals [][]byte
	}{
		{"empty", nil, true, nil, nil},
		{"constructed tag with plain value", []byte{0xAA, 0x01, 0x03, 0xAB, 0x01, 0x01}, true, []iso7816.Tag{0xAA, 0xAB}, [][]byte{{3}, {1}}},
		{"three-byte tag", []byte{0x5C, 0x03, 0x5F, 0xC1, 0x02}, true, []iso7816.Tag{0x5C}, [][]byte{{0x5F, 0xC1, 0x02}}},
		{"tag 5FC102", []byte{0x5F, 0xC1, 0x02, 0x00}, true, []iso7816.Tag{0x5FC102}, [][]byte{{}}},
		{"long form 81", []byte{0x53, 0x81, 0x02, 1, 2}, true, []iso7816.Tag{0x53}, [][]byte{{1, 2}}},
		{"non-minimal 82", []byte{0x53, 0x82, 0x00, 0x01, 9}, true, []iso7816.Tag{0x53}, [][]byte{{9}}},
		{"truncated value", []byte{0x53, 0x03, 1, 2}, false, nil, nil},
		{"truncated 82", []byte{0x53, 0x82, 0x01}, false, nil, nil},
		{"length 83", []byte{0x53, 0x83, 0, 0, 1, 1}, false, nil, nil},
		{"no length", []byte{0x53}, false, nil, nil},
		{"padding 00", []byte{0x00, 0x53, 0x00}, false, nil, nil},
		{"padding FF", []byte{0xFF}, false, nil, nil},
		{"four-byte tag", []byte{0x5F, 0xC1, 0x82, 0x01, 0x00}, false, nil, nil},
		{"tag cut short", []byte{0x5F, 0xC1}, false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseFlat(tt.in)
			if ok != tt.ok {
				t.Fatalf("parseFlat(% X) ok = %v, want %v", tt.in, ok, tt.ok)
			}
			if len(got) != len(tt.tags) {
				t.Fatalf("parseFlat(% X) = %d objects, want %d", tt.in, len(got), len(tt.tags))
			}
			for i := range got {
				if got[i].Tag != tt.tags[i] || !bytes.Equal(got[i].Value, tt.vals[i]) {
					t.Errorf("parseFlat(% X)[%d] = %s % X, want %s % X", tt.in, i, got[i].Tag, got[i].Value, tt.tags[i], tt.vals[i])
				}
			}
		})
	}
}
