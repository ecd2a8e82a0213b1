package pki

import (
	"bytes"
	"math/big"
	"strings"
	"testing"
	"time"
)

var indexSeed = []byte("4111111111111111 1A2B3C 2031-11-28T12:00:00Z\n" +
	"5555555555554444 FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF 2036-11-28T11:55:00Z\n")

func TestParseIndex(t *testing.T) {
	list, err := parseIndex(indexSeed)
	if err != nil {
		t.Fatalf("parseIndex(seed) error: %v", err)
	}
	if len(list) != 2 || list[0].CardNumber != card || list[0].Serial.Cmp(big.NewInt(0x1A2B3C)) != 0 ||
		!list[0].NotAfter.Equal(time.Date(2031, 11, 28, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("parseIndex(seed) = %+v", list)
	}
	if got := formatIndex(list); !bytes.Equal(got, indexSeed) {
		t.Errorf("formatIndex(parseIndex(seed)) = %q, want %q", got, indexSeed)
	}
	if list, err := parseIndex(nil); err != nil || len(list) != 0 {
		t.Errorf("parseIndex(empty) = %v, %v, want no entries", list, err)
	}
	bad := []struct {
		name, in, want string
	}{
		{"no newline", "4111111111111111 1A 2031-11-28T12:00:00Z", "no newline"},
		{"empty line", "\n", "1 fields"},
		{"two spaces", "4111111111111111  1A 2031-11-28T12:00:00Z\n", "4 fields"},
		{"tab", "4111111111111111\t1A 2031-11-28T12:00:00Z\n", "2 fields"},
		{"CR", "4111111111111111 1A 2031-11-28T12:00:00Z\r\n", "expiry"},
		{"bad Luhn", "4111111111111112 1A 2031-11-28T12:00:00Z\n", "Luhn"},
		{"lower-case serial", "4111111111111111 1a 2031-11-28T12:00:00Z\n", "serial"},
		{"leading zero", "4111111111111111 01A 2031-11-28T12:00:00Z\n", "serial"},
		{"zero serial", "4111111111111111 0 2031-11-28T12:00:00Z\n", "serial"},
		{"signed serial", "4111111111111111 +1A 2031-11-28T12:00:00Z\n", "serial"},
		{"serial too long", "4111111111111111 " + strings.Repeat("F", 41) + " 2031-11-28T12:00:00Z\n", "serial"},
		{"offset time", "4111111111111111 1A 2031-11-28T13:00:00+01:00\n", "expiry"},
		{"fractional time", "4111111111111111 1A 2031-11-28T12:00:00.5Z\n", "expiry"},
		{"second line bad", string(indexSeed) + "x\n", "line 3"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			list, err := parseIndex([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseIndex(%q) = %+v, %v, want error containing %q", tt.in, list, err, tt.want)
			}
		})
	}
}

// FuzzParseIndex checks that the index parser never panics and that
// whatever it accepts formats back to the same bytes.
func FuzzParseIndex(f *testing.F) {
	f.Add(indexSeed)
	f.Add([]byte("4111111111111111 1 2031-11-28T12:00:00Z\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := parseIndex(data)
		if err != nil {
			return
		}
		if got := formatIndex(list); !bytes.Equal(got, data) {
			t.Errorf("formatIndex(parseIndex(%q)) = %q", data, got)
		}
	})
}
