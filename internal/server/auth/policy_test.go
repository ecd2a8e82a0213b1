package auth

import (
	"strings"
	"testing"

	"cardlink/internal/protocol"
	"cardlink/internal/txn"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   protocol.CVMSet
		format string // FormatPolicy(want)
		ok     bool
	}{
		{"empty is the default", "", 0, "", true},
		{"white space is the default", "  ", 0, "", true},
		{"one", "online-pin", protocol.CVMs(txn.CVMOnlinePIN), "online-pin", true},
		{"all in order", "offline-pin,online-pin,biometric", DefaultCVMs, "offline-pin,online-pin,biometric", true},
		{"any order, spaces", " biometric , offline-pin", protocol.CVMs(txn.CVMOfflinePIN, txn.CVMBiometric), "offline-pin,biometric", true},
		{"none", "none", protocol.CVMs(txn.CVMNone), "none", true},
		{"unknown", "fingerprint", 0, "", false},
		{"wrong case", "Online-PIN", 0, "", false},
		{"empty element", "online-pin,,biometric", 0, "", false},
		{"trailing comma", "online-pin,", 0, "", false},
		{"twice", "biometric,biometric", 0, "", false},
		{"too long", strings.Repeat(" ", 200) + "biometric", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParsePolicy(%q) = %#x, %v; want %#x, ok %v", tt.in, got, err, tt.want, tt.ok)
			}
			if f := FormatPolicy(got); f != tt.format {
				t.Errorf("FormatPolicy(%#x) = %q, want %q", got, f, tt.format)
			}
		})
	}
}

func TestFormatPolicyUnknownBits(t *testing.T) {
	if got := FormatPolicy(0xF0 | protocol.CVMs(txn.CVMBiometric)); got != "biometric" {
		t.Errorf("FormatPolicy(0xF8) = %q, want %q", got, "biometric")
	}
}

// FuzzParsePolicy: ParsePolicy never panics, and what it accepts formats
// to a string that parses to the same set and formats the same again.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"", "offline-pin,online-pin,biometric", " online-pin , biometric ", "none", "biometric,biometric", "fingerprint", "offline-pin,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParsePolicy(s)
		if err != nil {
			if set != 0 {
				t.Fatalf("ParsePolicy(%q) = %#x with error %v, want 0", s, set, err)
			}
			return
		}
		f1 := FormatPolicy(set)
		again, err := ParsePolicy(f1)
		if err != nil || again != set {
			t.Fatalf("ParsePolicy(FormatPolicy(%#x) = %q) = %#x, %v; want %#x", set, f1, again, err, set)
		}
		if f2 := FormatPolicy(again); f2 != f1 {
			t.Fatalf("FormatPolicy not stable: %q then %q", f1, f2)
		}
	})
}
