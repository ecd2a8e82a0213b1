// Package money is an amount of money: integer minor units and an ISO 4217
// currency. Never floats.
//
// It owns the package's ISO 4217 table (code and minor-unit exponent) and the
// text form of amounts. It imports only the standard library, because the card
// uses it.
package money

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Currency is an ISO 4217 alphabetic code such as "EUR".
type Currency string

// exponents maps the ISO 4217 codes this package knows to their minor-unit
// exponent (ISO 4217 list one, "Minor unit" column, as of 2026-11).
var exponents = map[Currency]int{
	// Exponent 0.
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0,
	"KRW": 0, "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0,
	"XOF": 0, "XPF": 0,

	// Exponent 2.
	"AED": 2, "ARS": 2, "AUD": 2, "BDT": 2, "BGN": 2, "BRL": 2, "CAD": 2,
	"CHF": 2, "CNY": 2, "COP": 2, "CZK": 2, "DKK": 2, "DZD": 2, "EGP": 2,
	"EUR": 2, "GBP": 2, "GHS": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2,
	"INR": 2, "KES": 2, "KZT": 2, "LKR": 2, "MAD": 2, "MXN": 2, "MYR": 2,
	"NGN": 2, "NOK": 2, "NZD": 2, "PEN": 2, "PHP": 2, "PKR": 2, "PLN": 2,
	"QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "SAR": 2, "SEK": 2, "SGD": 2,
	"THB": 2, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "ZAR": 2,

	// Exponent 3.
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,

	// Exponent 4 (units of account).
	"CLF": 4, "UYW": 4,
}

// ErrUnknownCurrency is wrapped by errors about a code that is not in the
// package's ISO 4217 table.
var ErrUnknownCurrency = errors.New("unknown currency")

// ParseCurrency checks that s is a known ISO 4217 code (three upper-case
// letters in the package's table) and returns it.
func ParseCurrency(s string) (Currency, error) {
	if len(s) != 3 || !isUpper(s) {
		return "", fmt.Errorf("currency %q: not three upper-case letters", s)
	}
	c := Currency(s)
	if _, ok := exponents[c]; !ok {
		return "", fmt.Errorf("currency %q: %w", s, ErrUnknownCurrency)
	}
	return c, nil
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// Exponent returns the number of minor-unit digits (EUR 2, JPY 0, BHD 3),
// or -1 if c is not in the package's table.
func (c Currency) Exponent() int {
	e, ok := exponents[c]
	if !ok {
		return -1
	}
	return e
}

// Amount is Minor units of Currency (e.g. 1234 EUR is 12.34 EUR).
type Amount struct {
	Minor    int64
	Currency Currency
}

// ParseAmount reads "12.34 EUR" (or "EUR 12.34"); more fraction digits than
// the currency allows is an error.
//
// The number is an optional '-', one or more decimal digits, and optionally
// '.' followed by one to Exponent() digits ("12.3 EUR" is 12.30 EUR). Number
// and code are separated by white space. Amounts whose minor units do not fit
// in an int64 (or are math.MinInt64) are refused.
func ParseAmount(s string) (Amount, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Amount{}, fmt.Errorf("parsing amount %q: want a number and a currency code", s)
	}
	num, code := f[0], f[1]
	if len(num) == 3 && isUpper(num) {
		num, code = code, num
	}
	c, err := ParseCurrency(code)
	if err != nil {
		return Amount{}, fmt.Errorf("parsing amount %q: %w", s, err)
	}
	m, err := parseMinor(num, c.Exponent())
	if err != nil {
		return Amount{}, fmt.Errorf("parsing amount %q: %w", s, err)
	}
	return Amount{Minor: m, Currency: c}, nil
}

// parseMinor converts a decimal number with at most exp fraction digits into
// minor units.
func parseMinor(num string, exp int) (int64, error) {
	neg := strings.HasPrefix(num, "-")
	if neg {
		num = num[1:]
	}
	whole, frac, hasPoint := strings.Cut(num, ".")
	if whole == "" || !isDigits(whole) {
		return 0, fmt.Errorf("number %q: want decimal digits", num)
	}
	if hasPoint && (frac == "" || !isDigits(frac)) {
		return 0, fmt.Errorf("number %q: want digits after the decimal point", num)
	}
	if len(frac) > exp {
		return 0, fmt.Errorf("number %q: more than %d fraction digits", num, exp)
	}
	digits := whole + frac + strings.Repeat("0", exp-len(frac))
	// ParseInt refuses values beyond math.MaxInt64; with the sign handled
	// here, math.MinInt64 is refused too, so every amount can be negated.
	m, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number %q: out of range", num)
	}
	if neg {
		m = -m
	}
	return m, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats a as "12.34 EUR", always with the currency's number of
// fraction digits ("5.00 EUR", "1234 JPY", "-0.050 BHD"). A currency not in
// the table is formatted with no fraction digits: "1234 XYZ".
func (a Amount) String() string {
	exp := max(a.Currency.Exponent(), 0)
	var u uint64
	if a.Minor < 0 {
		u = uint64(-(a.Minor + 1)) + 1 // safe for math.MinInt64
	} else {
		u = uint64(a.Minor)
	}
	d := strconv.FormatUint(u, 10)
	if len(d) <= exp {
		d = strings.Repeat("0", exp-len(d)+1) + d
	}
	var b strings.Builder
	if a.Minor < 0 {
		b.WriteByte('-')
	}
	if exp == 0 {
		b.WriteString(d)
	} else {
		b.WriteString(d[:len(d)-exp])
		b.WriteByte('.')
		b.WriteString(d[len(d)-exp:])
	}
	b.WriteByte(' ')
	b.WriteString(string(a.Currency))
	return b.String()
}
