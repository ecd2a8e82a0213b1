package pcsc

import (
	"errors"
	"strings"
	"testing"

	"cardlink/internal/reader"
)

func TestPick(t *testing.T) {
	two := []string{"Virtual PCD 00 00", "Virtual PCD 00 01"}
	three := []string{"Yubico YubiKey OTP+FIDO+CCID 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"}
	tests := []struct {
		name    string
		names   []string
		want    string
		present map[string]bool
		wantOK  string // expected reader; "" means an error wrapping ErrNoReader
	}{
		{name: "no readers", names: nil, want: ""},
		{name: "only reader", names: []string{"ACS ACR122U 00 00"}, want: "", wantOK: "ACS ACR122U 00 00"},
		{name: "only reader, empty", names: []string{"ACS ACR122U 00 00"}, want: "", present: map[string]bool{}, wantOK: "ACS ACR122U 00 00"},
		{name: "first with a card", names: three, want: "", present: map[string]bool{"Virtual PCD 00 00": true, "Virtual PCD 00 01": true}, wantOK: "Virtual PCD 00 00"},
		{name: "none with a card", names: two, want: "", present: map[string]bool{}},
		{name: "exact", names: two, want: "Virtual PCD 00 01", wantOK: "Virtual PCD 00 01"},
		{name: "exact beats substring", names: []string{"Reader 1 0", "Reader 1"}, want: "Reader 1", wantOK: "Reader 1"},
		{name: "unique substring", names: three, want: "yubikey", wantOK: "Yubico YubiKey OTP+FIDO+CCID 00 00"},
		{name: "ambiguous substring", names: three, want: "Virtual PCD"},
		{name: "no match", names: three, want: "Gemalto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pick(tt.names, tt.want, tt.present)
			if tt.wantOK == "" {
				if !errors.Is(err, ErrNoReader) {
					t.Errorf("pick(%q, %q) = %q, %v, want ErrNoReader", tt.names, tt.want, got, err)
				}
				return
			}
			if err != nil || got != tt.wantOK {
				t.Errorf("pick(%q, %q) = %q, %v, want %q", tt.names, tt.want, got, err, tt.wantOK)
			}
		})
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		name     string
		err      *Error
		wantText string
		wantIs   error // nil: unwraps to nothing
	}{
		{name: "removed", err: &Error{Op: "SCardTransmit", Code: rcRemovedCard}, wantText: "pcsc: SCardTransmit: card removed (0x80100069)", wantIs: reader.ErrCardRemoved},
		{name: "reset", err: &Error{Op: "SCardTransmit", Code: rcResetCard}, wantText: "reset by another application", wantIs: reader.ErrCardRemoved},
		{name: "no card", err: &Error{Op: "SCardConnect", Code: rcNoSmartcard}, wantText: "no card in the reader", wantIs: reader.ErrNoCard},
		{name: "no service", err: &Error{Op: "SCardEstablishContext", Code: rcNoService}, wantText: "pcscd is not running"},
		{name: "unknown code", err: &Error{Op: "SCardConnect", Code: 0x801000FF}, wantText: "pcsc: SCardConnect: error (0x801000ff)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); !strings.Contains(got, tt.wantText) {
				t.Errorf("Error() = %q, want it to contain %q", got, tt.wantText)
			}
			for _, target := range []error{reader.ErrNoCard, reader.ErrCardRemoved} {
				if got, want := errors.Is(tt.err, target), target == tt.wantIs; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", tt.err, target, got, want)
				}
			}
		})
	}
}
