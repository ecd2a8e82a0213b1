package money

import (
	"errors"
	"math"
	"testing"
)

func TestParseCurrency(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Currency
		wantErr bool
		unknown bool
	}{
		{name: "euro", in: "EUR", want: "EUR"},
		{name: "yen", in: "JPY", want: "JPY"},
		{name: "dinar", in: "KWD", want: "KWD"},
		{name: "lower case", in: "eur", wantErr: true},
		{name: "two letters", in: "EU", wantErr: true},
		{name: "four letters", in: "EURO", wantErr: true},
		{name: "digits", in: "978", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "unknown", in: "XYZ", wantErr: true, unknown: true},
		{name: "non-ASCII", in: "EÜR", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCurrency(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseCurrency(%q) = %q, want error", tt.in, got)
				}
				if errors.Is(err, ErrUnknownCurrency) != tt.unknown {
					t.Errorf("ParseCurrency(%q) error %v: errors.Is(ErrUnknownCurrency) = %v, want %v", tt.in, err, !tt.unknown, tt.unknown)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseCurrency(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestExponent(t *testing.T) {
	tests := []struct {
		c    Currency
		want int
	}{
		{"EUR", 2}, {"USD", 2}, {"GBP", 2}, {"JPY", 0}, {"KRW", 0}, {"ISK", 0},
		{"BHD", 3}, {"KWD", 3}, {"JOD", 3}, {"OMR", 3}, {"TND", 3},
		{"CLF", 4}, {"XYZ", -1}, {"", -1},
	}
	for _, tt := range tests {
		if got := tt.c.Exponent(); got != tt.want {
			t.Errorf("Currency(%q).Exponent() = %d, want %d", tt.c, got, tt.want)
		}
	}
}

// TestTable checks that every code in the table parses as itself and has a
// plausible exponent.
func TestTable(t *testing.T) {
	if len(exponents) < 30 {
		t.Errorf("len(exponents) = %d, want at least 30", len(exponents))
	}
	for c, e := range exponents {
		if got, err := ParseCurrency(string(c)); err != nil || got != c {
			t.Errorf("ParseCurrency(%q) = %q, %v, want %q", c, got, err, c)
		}
		if e < 0 || e > 4 {
			t.Errorf("Currency(%q).Exponent() = %d, want 0..4", c, e)
		}
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Amount
		wantErr bool
	}{
		{name: "number first", in: "12.34 EUR", want: Amount{1234, "EUR"}},
		{name: "code first", in: "EUR 12.34", want: Amount{1234, "EUR"}},
		{name: "whole", in: "12 EUR", want: Amount{1200, "EUR"}},
		{name: "one fraction digit", in: "12.3 EUR", want: Amount{1230, "EUR"}},
		{name: "yen", in: "1234 JPY", want: Amount{1234, "JPY"}},
		{name: "dinar", in: "1.234 BHD", want: Amount{1234, "BHD"}},
		{name: "unidad de fomento", in: "CLF 0.0001", want: Amount{1, "CLF"}},
		{name: "negative", in: "-5.00 EUR", want: Amount{-500, "EUR"}},
		{name: "negative code first", in: "EUR -5", want: Amount{-500, "EUR"}},
		{name: "zero", in: "0.00 EUR", want: Amount{0, "EUR"}},
		{name: "leading zeros", in: "007.10 USD", want: Amount{710, "USD"}},
		{name: "extra spaces", in: "  12.34\tEUR ", want: Amount{1234, "EUR"}},
		{name: "largest", in: "92233720368547758.07 EUR", want: Amount{math.MaxInt64, "EUR"}},
		{name: "most negative allowed", in: "-92233720368547758.07 EUR", want: Amount{-math.MaxInt64, "EUR"}},

		{name: "overflow", in: "92233720368547758.08 EUR", wantErr: true},
		{name: "min int64", in: "-92233720368547758.08 EUR", wantErr: true},
		{name: "huge", in: "99999999999999999999999 JPY", wantErr: true},
		{name: "too many fraction digits", in: "12.345 EUR", wantErr: true},
		{name: "fraction for yen", in: "12.0 JPY", wantErr: true},
		{name: "trailing point", in: "12. EUR", wantErr: true},
		{name: "leading point", in: ".5 EUR", wantErr: true},
		{name: "plus sign", in: "+5 EUR", wantErr: true},
		{name: "double minus", in: "--5 EUR", wantErr: true},
		{name: "lone minus", in: "- EUR", wantErr: true},
		{name: "comma", in: "12,34 EUR", wantErr: true},
		{name: "two points", in: "1.2.3 EUR", wantErr: true},
		{name: "exponent", in: "1e3 EUR", wantErr: true},
		{name: "unknown currency", in: "12.34 XYZ", wantErr: true},
		{name: "lower-case code", in: "12.34 eur", wantErr: true},
		{name: "no currency", in: "12.34", wantErr: true},
		{name: "two currencies", in: "EUR USD", wantErr: true},
		{name: "three fields", in: "12.34 EUR x", wantErr: true},
		{name: "no space", in: "12.34EUR", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAmount(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParseAmount(%q) = %+v, want error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseAmount(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   Amount
		want string
	}{
		{Amount{1234, "EUR"}, "12.34 EUR"},
		{Amount{500, "EUR"}, "5.00 EUR"},
		{Amount{5, "EUR"}, "0.05 EUR"},
		{Amount{0, "EUR"}, "0.00 EUR"},
		{Amount{-500, "EUR"}, "-5.00 EUR"},
		{Amount{-5, "EUR"}, "-0.05 EUR"},
		{Amount{1234, "JPY"}, "1234 JPY"},
		{Amount{-7, "JPY"}, "-7 JPY"},
		{Amount{50, "BHD"}, "0.050 BHD"},
		{Amount{1, "CLF"}, "0.0001 CLF"},
		{Amount{math.MaxInt64, "EUR"}, "92233720368547758.07 EUR"},
		{Amount{math.MinInt64, "EUR"}, "-92233720368547758.08 EUR"},
		{Amount{1234, "XYZ"}, "1234 XYZ"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"12.34 EUR", "EUR 12.34", "1234 JPY", "-5.00 EUR", "0.001 BHD", "92233720368547758.07 EUR", "1.2.3 EUR"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAmount(s)
		if err != nil {
			return
		}
		str := a.String()
		b, err := ParseAmount(str)
		if err != nil || b != a {
			t.Fatalf("ParseAmount(%q) = %+v, %v, want %+v (from %q)", str, b, err, a, s)
		}
		if again := b.String(); again != str {
			t.Fatalf("%#v.String() = %q, want %q", b, again, str)
		}
	})
}
