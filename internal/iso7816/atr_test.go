package iso7816

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestNewATR(t *testing.T) {
	tests := []struct {
		name string
		hist []byte
		want []byte
	}{
		{"no historical bytes", nil, h("3B 80 81 31 FE 45 8B")},
		{"cardlink", []byte("cardlink"), h("3B 88 81 31 FE 45 636172646C696E6B 97")},
		{"15 bytes", seq(15), h("3B 8F 81 31 FE 45 000102030405060708090A0B0C0D0E 8B")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewATR(tt.hist)
			got, err := a.Bytes()
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("NewATR(%X).Bytes() = %X, %v, want %X", tt.hist, got, err, tt.want)
			}
			back, err := ParseATR(got)
			if err != nil || !reflect.DeepEqual(back, a) {
				t.Errorf("ParseATR(%X) = %+v, %v, want %+v", got, back, err, a)
			}
		})
	}
	if b, err := NewATR(seq(16)).Bytes(); err == nil {
		t.Errorf("NewATR(16 bytes).Bytes() = %X, want error", b)
	}
}

func TestNewATRCopies(t *testing.T) {
	hist := []byte{1, 2, 3}
	a := NewATR(hist)
	hist[0] = 9
	if a.Historical[0] != 1 {
		t.Errorf("NewATR keeps its argument: Historical[0] = %d after changing it, want 1", a.Historical[0])
	}
}

// Real ATRs, as PC/SC readers report them.
var realATRs = []struct {
	name string
	in   []byte
	want ATR
	// canonical: Bytes gives the input back (no interface bytes the ATR
	// type does not keep).
	canonical bool
}{
	{
		name: "YubiKey 5",
		in:   h("3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40"),
		want: ATR{Protocols: []int{1}, Fi: 1, Di: 3, IFSC: 254, BWI: 1, CWI: 5,
			Historical: h("80 73 C0 21 C0 57 59 75 62 69 4B 65 79")},
	},
	{
		name: "NXP J2A080",
		in:   h("3B F8 18 00 00 81 31 FE 45 4A 43 4F 50 76 32 34 31 BC"),
		want: ATR{Protocols: []int{1}, Fi: 1, Di: 8, IFSC: 254, BWI: 4, CWI: 5,
			Historical: []byte("JCOPv241")},
	},
	{
		name: "JavaCardOS JC10M24, T=0 and T=1",
		in:   h("3B 85 80 01 05 78 F7 B1 02 3D"),
		want: ATR{Protocols: []int{0, 1}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13,
			Historical: h("05 78 F7 B1 02")},
		canonical: true,
	},
	{
		name:      "JavaCardOS JC30M48CR, TA1 and IFSC",
		in:        h("3B 90 95 80 11 FE 6A"),
		want:      ATR{Protocols: []int{0, 1}, Fi: 9, Di: 5, IFSC: 254, BWI: 4, CWI: 13},
		canonical: true,
	},
	{
		name: "Athena IDProtect, T=15 global bytes",
		in:   h("3B D5 18 FF 81 91 FE 1F C3 80 73 C8 21 13 09"),
		want: ATR{Protocols: []int{1}, Fi: 1, Di: 8, IFSC: 254, BWI: 4, CWI: 13,
			Historical: h("80 73 C8 21 13")},
	},
	{
		name: "Gemalto, T=0 only without TCK",
		in:   h("3B 7D 95 00 00 80 31 80 65 B0 83 02 04 7E 83 00 90 00"),
		want: ATR{Protocols: []int{0}, Fi: 9, Di: 5, IFSC: 32, BWI: 4, CWI: 13,
			Historical: h("80 31 80 65 B0 83 02 04 7E 83 00 90 00")},
	},
	{
		name: "TD1 announcing T=0 explicitly, TC2",
		in:   h("3B A7 00 40 18 80 65 A2 08 01 01 52"),
		want: ATR{Protocols: []int{0}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13,
			Historical: h("80 65 A2 08 01 01 52")},
	},
	{
		name: "Feitian fingerprint card, TB1 TC1",
		in:   h("3B 61 00 00 80"),
		want: ATR{Protocols: []int{0}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13, Historical: h("80")},
	},
	{
		name:      "minimal T=0",
		in:        h("3B 00"),
		want:      ATR{Protocols: []int{0}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13},
		canonical: true,
	},
	{
		name: "inverse convention",
		in:   h("3F 65 25 08 33 04 20 90 00"),
		want: ATR{Inverse: true, Protocols: []int{0}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13,
			Historical: h("33 04 20 90 00")},
	},
	{
		name: "T=1 announced at TD1 only: group 2 is not T=1 specific",
		in:   h("3B 80 31 FE 45 0A"),
		want: ATR{Protocols: []int{1}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13},
	},
}

func TestParseATR(t *testing.T) {
	for _, tt := range realATRs {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseATR(tt.in)
			if err != nil {
				t.Fatalf("ParseATR(%X) error %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseATR(%X) = %+v, want %+v", tt.in, got, tt.want)
			}
			enc, err := got.Bytes()
			if err != nil {
				t.Fatalf("ParseATR(%X).Bytes() error %v", tt.in, err)
			}
			if tt.canonical && !bytes.Equal(enc, tt.in) {
				t.Errorf("ParseATR(%X).Bytes() = %X, want the input", tt.in, enc)
			}
			back, err := ParseATR(enc)
			if err != nil || !reflect.DeepEqual(back, got) {
				t.Errorf("ParseATR(%X) = %+v, %v, want %+v", enc, back, err, got)
			}
		})
	}
}

func TestParseATRMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"empty", nil, "shorter than TS and T0"},
		{"TS only", h("3B"), "shorter than TS and T0"},
		{"bad TS", h("3C 00"), "TS 3C is neither 3B nor 3F"},
		{"too long", append(h("3B 0F"), seq(32)...), "34 bytes, over 33"},
		{"TA1 missing", h("3B 10"), "TA1 missing at offset 2"},
		{"TD1 missing", h("3B 80"), "TD1 missing"},
		{"TB3 missing", h("3B 80 81 31 FE"), "TB3 missing at offset 5"},
		{"TC1 missing", h("3B 40"), "TC1 missing at offset 2"},
		{"TD1 T=15", h("3B 80 0F 8F"), "TD1 announces T=15"},
		{"historical truncated", h("3B 05 01 02 03"), "T0 announces 5 historical bytes, 3 left at offset 2"},
		{"TCK missing", h("3B 81 01 AA"), "TCK missing at offset 4"},
		{"TCK wrong", h("3B 81 01 AA 00"), "TCK 00 does not check: want 2A"},
		{"TCK when T=0 only", h("3B 00 00"), "1 bytes after the end"},
		{"trailing byte", h("3B 81 01 AA 2A 00"), "1 bytes after the end at offset 5"},
		{"IFSC 00", h("3B 80 81 11 00 10"), "TA3 (IFSC) 00 is reserved"},
		{"IFSC FF", h("3B 80 81 11 FF EF"), "TA3 (IFSC) FF is reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseATR(tt.in)
			if err == nil {
				t.Fatalf("ParseATR(%X) = %+v, want error", tt.in, got)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseATR(%X) error %q does not wrap ErrMalformed", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParseATR(%X) error %q, want it to contain %q", tt.in, err, tt.msg)
			}
		})
	}
}

func TestATRBytes(t *testing.T) {
	tests := []struct {
		name string
		a    ATR
		want []byte
	}{
		{"T=0 defaults", ATR{Protocols: []int{0}, Fi: 1, Di: 1}, h("3B 00")},
		{"no protocols is T=0", ATR{Fi: 1, Di: 1, Historical: h("AA")}, h("3B 01 AA")},
		{"inverse", ATR{Inverse: true, Fi: 1, Di: 1}, h("3F 00")},
		{"TA1", ATR{Fi: 9, Di: 6, Protocols: []int{0}}, h("3B 10 96")},
		{"T=1 defaults", ATR{Protocols: []int{1}, Fi: 1, Di: 1, IFSC: 32, BWI: 4, CWI: 13}, h("3B 80 01 81")},
		{"T=1 IFSC only", ATR{Protocols: []int{1}, Fi: 1, Di: 1, IFSC: 254, BWI: 4, CWI: 13}, h("3B 80 81 11 FE EE")},
		{"T=0 then T=1 with BWI", ATR{Protocols: []int{0, 1}, Fi: 1, Di: 1, IFSC: 32, BWI: 1, CWI: 5}, h("3B 80 80 21 15 34")},
		{"T=1 then T=0 with IFSC", ATR{Protocols: []int{1, 0}, Fi: 1, Di: 1, IFSC: 254, BWI: 4, CWI: 13}, h("3B 80 81 91 FE 00 6E")},
		{"T=1 parameters ignored without T=1", ATR{Protocols: []int{0}, Fi: 1, Di: 1, IFSC: 0, BWI: 99}, h("3B 00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.Bytes()
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("%+v.Bytes() = %X, %v, want %X", tt.a, got, err, tt.want)
			}
		})
	}
}

func TestATRBytesErrors(t *testing.T) {
	base := func(f func(*ATR)) ATR {
		a := NewATR(nil)
		f(&a)
		return a
	}
	tests := []struct {
		name string
		a    ATR
		msg  string
	}{
		{"16 historical", base(func(a *ATR) { a.Historical = seq(16) }), "16 historical bytes"},
		{"Fi 16", base(func(a *ATR) { a.Fi = 16 }), "Fi 16"},
		{"T=15", base(func(a *ATR) { a.Protocols = []int{15} }), "T=15 out of range"},
		{"T=-1", base(func(a *ATR) { a.Protocols = []int{-1} }), "T=-1 out of range"},
		{"T=1 twice", base(func(a *ATR) { a.Protocols = []int{1, 1} }), "T=1 listed twice"},
		{"IFSC 0", base(func(a *ATR) { a.IFSC = 0 }), "IFSC 0 out of range"},
		{"IFSC 255", base(func(a *ATR) { a.IFSC = 255 }), "IFSC 255 out of range"},
		{"BWI 16", base(func(a *ATR) { a.BWI = 16 }), "BWI 16"},
		{"too long", base(func(a *ATR) {
			a.Historical = seq(15)
			a.Fi = 9
			a.Protocols = []int{1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
		}), "over 33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.Bytes()
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("%+v.Bytes() = %X, %v, want error containing %q", tt.a, got, err, tt.msg)
			}
		})
	}
}
