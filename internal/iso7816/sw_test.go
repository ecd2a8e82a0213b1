package iso7816

import (
	"errors"
	"testing"
)

func TestSWBytesRemaining(t *testing.T) {
	tests := []struct {
		n    int
		want SW
	}{{1, 0x6101}, {0x10, 0x6110}, {255, 0x61FF}, {256, 0x6100}, {70000, 0x6100}, {0, 0x6101}, {-3, 0x6101}}
	for _, tt := range tests {
		if got := SWBytesRemaining(tt.n); got != tt.want {
			t.Errorf("SWBytesRemaining(%d) = %04X, want %04X", tt.n, uint16(got), uint16(tt.want))
		}
	}
}

func TestSWTriesLeft(t *testing.T) {
	tests := []struct {
		n    int
		want SW
	}{{0, 0x63C0}, {3, 0x63C3}, {15, 0x63CF}, {16, 0x63CF}, {-1, 0x63C0}}
	for _, tt := range tests {
		if got := SWTriesLeft(tt.n); got != tt.want {
			t.Errorf("SWTriesLeft(%d) = %04X, want %04X", tt.n, uint16(got), uint16(tt.want))
		}
	}
}

func TestSWString(t *testing.T) {
	tests := []struct {
		sw   SW
		want string
	}{
		{SWOK, "9000 (success)"},
		{SWSecurityStatus, "6982 (security status not satisfied)"},
		{SWNotFound, "6A82 (file or application not found)"},
		{SWUnknown, "6F00 (no precise diagnosis)"},
		{0x6105, "6105 (5 bytes remaining)"},
		{0x6101, "6101 (1 byte remaining)"},
		{0x6100, "6100 (256 or more bytes remaining)"},
		{0x63C2, "63C2 (verification failed, 2 tries left)"},
		{0x63C1, "63C1 (verification failed, 1 try left)"},
		{0x63C0, "63C0 (verification failed, no tries left)"},
		{0x6C10, "6C10 (wrong Le, exact length 16)"},
		{0x6C00, "6C00 (wrong Le, exact length 256)"},
		{0x6282, "6282 (warning: end of file or record reached before reading Ne bytes)"},
		{0x62F1, "62F1 (warning: non-volatile memory unchanged)"},
		{0x6381, "6381 (warning: file filled up by the last write)"},
		{0x63F1, "63F1 (warning: non-volatile memory changed)"},
		{0x6F12, "6F12 (unknown)"},
		{0x1234, "1234 (unknown)"},
	}
	for _, tt := range tests {
		if got := tt.sw.String(); got != tt.want {
			t.Errorf("SW(%#04x).String() = %q, want %q", uint16(tt.sw), got, tt.want)
		}
	}
}

// TestSWNamedHaveMeanings keeps the meaning table in step with the constants.
func TestSWNamedHaveMeanings(t *testing.T) {
	named := []SW{SWOK, SWMemoryFailure, SWWrongLength, SWChannelNotSupported,
		SWSecureMessaging, SWLastCommandExpected, SWChainingNotSupported, SWSecurityStatus,
		SWAuthBlocked, SWDataInvalid, SWConditionsNotSatisfied, SWCommandNotAllowed,
		SWWrongData, SWFuncNotSupported, SWNotFound, SWRecordNotFound, SWNoSpace,
		SWIncorrectP1P2, SWRefDataNotFound, SWWrongP1P2, SWINSNotSupported,
		SWCLANotSupported, SWUnknown}
	for _, sw := range named {
		if m := sw.meaning(); m == "unknown" {
			t.Errorf("SW(%04X).meaning() = %q, want a meaning", uint16(sw), m)
		}
	}
	if m := SWVerifyFailed.meaning(); m != "verification failed, no tries left" {
		t.Errorf("SWVerifyFailed.meaning() = %q, want %q", m, "verification failed, no tries left")
	}
}

func TestSWParts(t *testing.T) {
	sw := SW(0x6A82)
	if sw.SW1() != 0x6A || sw.SW2() != 0x82 || sw.OK() {
		t.Errorf("SW(6A82): SW1 %02X, SW2 %02X, OK %v, want 6A, 82, false", sw.SW1(), sw.SW2(), sw.OK())
	}
	if !SWOK.OK() {
		t.Errorf("SWOK.OK() = false, want true")
	}
}

func TestSWErr(t *testing.T) {
	if err := SWOK.Err(); err != nil {
		t.Errorf("SWOK.Err() = %v, want nil", err)
	}
	err := SWSecurityStatus.Err()
	var se *StatusError
	if !errors.As(err, &se) || se.SW != SWSecurityStatus {
		t.Errorf("SWSecurityStatus.Err() = %#v, want *StatusError{6982}", err)
	}
	if got := SW(0x6110).Err(); got == nil {
		t.Errorf("SW(6110).Err() = nil, want a *StatusError")
	}
}

func TestStatusErrorUnwrap(t *testing.T) {
	tests := []struct {
		sw   SW
		want error
	}{
		{0x6A82, ErrNotFound}, {0x6A83, ErrNotFound}, {0x6A88, ErrNotFound},
		{0x6983, ErrBlocked},
		{0x6982, ErrSecurityStatus},
		{0x6985, ErrConditions}, {0x6986, ErrConditions},
		{0x6A80, ErrWrongData}, {0x6984, ErrWrongData},
		{0x6A84, ErrNoSpace},
		{0x6D00, ErrUnsupported}, {0x6E00, ErrUnsupported}, {0x6A81, ErrUnsupported},
		{0x6881, ErrUnsupported}, {0x6882, ErrUnsupported}, {0x6884, ErrUnsupported},
		{0x6700, ErrWrongLength}, {0x6C00, ErrWrongLength}, {0x6C12, ErrWrongLength},
		{0x6A86, ErrWrongParams}, {0x6B00, ErrWrongParams},
		{0x6581, ErrCardFailure}, {0x6F00, ErrCardFailure},
		{0x6883, nil}, {0x6282, nil}, {0x6110, nil}, {0x6F01, nil},
	}
	for _, tt := range tests {
		e := &StatusError{SW: tt.sw}
		if got := e.Unwrap(); got != tt.want {
			t.Errorf("(&StatusError{%04X}).Unwrap() = %v, want %v", uint16(tt.sw), got, tt.want)
		}
		if tt.want != nil && !errors.Is(tt.sw.Err(), tt.want) {
			t.Errorf("errors.Is(SW(%04X).Err(), %v) = false, want true", uint16(tt.sw), tt.want)
		}
	}
}

func TestStatusErrorPIN(t *testing.T) {
	for n := 0; n <= 15; n++ {
		err := SWTriesLeft(n).Err()
		var pe *PINError
		if !errors.As(err, &pe) || pe.Retries != n {
			t.Errorf("errors.As(SWTriesLeft(%d).Err(), *PINError) = %v, want Retries %d", n, pe, n)
		}
	}
	if errors.Is(SW(0x63C3).Err(), ErrBlocked) {
		t.Errorf("errors.Is(SW(63C3).Err(), ErrBlocked) = true, want false")
	}
	var pe *PINError
	if errors.As(SW(0x6300).Err(), &pe) {
		t.Errorf("errors.As(SW(6300).Err(), *PINError) = true, want false")
	}
}

func TestErrorStrings(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&StatusError{SW: 0x6982}, "card status 6982: security status not satisfied"},
		{&StatusError{SW: 0x63C2}, "card status 63C2: verification failed, 2 tries left"},
		{&StatusError{SW: 0x6F42}, "card status 6F42: unknown"},
		{&PINError{Retries: 2}, "wrong PIN, 2 tries left"},
		{&PINError{Retries: 1}, "wrong PIN, 1 try left"},
		{&PINError{Retries: 0}, "wrong PIN, now blocked"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.err, got, tt.want)
		}
	}
}
