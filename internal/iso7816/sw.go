package iso7816

import "fmt"

// SW is a status word, SW1 in the high byte (ISO/IEC 7816-4 §5.6).
type SW uint16

// Named status words (ISO/IEC 7816-4 §5.6, tables 5 and 6).
const (
	SWOK                     SW = 0x9000
	SWVerifyFailed           SW = 0x63C0 // low nibble: tries left; use SWTriesLeft
	SWMemoryFailure          SW = 0x6581
	SWWrongLength            SW = 0x6700
	SWChannelNotSupported    SW = 0x6881
	SWSecureMessaging        SW = 0x6882
	SWLastCommandExpected    SW = 0x6883
	SWChainingNotSupported   SW = 0x6884
	SWSecurityStatus         SW = 0x6982
	SWAuthBlocked            SW = 0x6983
	SWDataInvalid            SW = 0x6984
	SWConditionsNotSatisfied SW = 0x6985
	SWCommandNotAllowed      SW = 0x6986
	SWWrongData              SW = 0x6A80
	SWFuncNotSupported       SW = 0x6A81
	SWNotFound               SW = 0x6A82 // file or application not found
	SWRecordNotFound         SW = 0x6A83
	SWNoSpace                SW = 0x6A84
	SWIncorrectP1P2          SW = 0x6A86
	SWRefDataNotFound        SW = 0x6A88
	SWWrongP1P2              SW = 0x6B00
	SWINSNotSupported        SW = 0x6D00
	SWCLANotSupported        SW = 0x6E00
	SWUnknown                SW = 0x6F00
)

// SWBytesRemaining returns 61xx: n more response bytes are available with GET
// RESPONSE (n ≥ 256 is reported as 6100; n < 1 is treated as 1).
func SWBytesRemaining(n int) SW {
	switch {
	case n >= 256:
		return 0x6100
	case n < 1:
		n = 1
	}
	return 0x6100 | SW(n)
}

// SWTriesLeft returns 63Cx for n tries left (n is clamped to 0..15).
func SWTriesLeft(n int) SW {
	return SWVerifyFailed | SW(min(max(n, 0), 15))
}

// SW1 returns the high byte.
func (sw SW) SW1() byte { return byte(sw >> 8) }

// SW2 returns the low byte.
func (sw SW) SW2() byte { return byte(sw) }

// OK reports whether sw is 9000.
func (sw SW) OK() bool { return sw == SWOK }

// String gives the hex value and its meaning, e.g. "6982 (security status not satisfied)".
// Unknown values read "XXXX (unknown)".
func (sw SW) String() string {
	return fmt.Sprintf("%04X (%s)", uint16(sw), sw.meaning())
}

// Err returns nil for 9000 and a *StatusError otherwise.
func (sw SW) Err() error {
	if sw == SWOK {
		return nil
	}
	return &StatusError{SW: sw}
}

// swMeanings holds the exact status words of ISO/IEC 7816-4 §5.6 tables 5
// and 6 that cardlink sends or meets.
var swMeanings = map[SW]string{
	SWOK: "success",

	0x6200: "warning: no information given, non-volatile memory unchanged",
	0x6281: "warning: part of returned data may be corrupted",
	0x6282: "warning: end of file or record reached before reading Ne bytes",
	0x6283: "warning: selected file deactivated",
	0x6284: "warning: file control information not formatted",
	0x6285: "warning: selected file in termination state",
	0x6286: "warning: no input data available from a sensor",
	0x6300: "warning: no information given, non-volatile memory changed",
	0x6381: "warning: file filled up by the last write",

	0x6400:          "execution error, non-volatile memory unchanged",
	0x6401:          "immediate response required by the card",
	0x6500:          "execution error, non-volatile memory changed",
	SWMemoryFailure: "memory failure",
	0x6600:          "security-related issue",

	SWWrongLength: "wrong length",

	0x6800:                 "functions in CLA not supported",
	SWChannelNotSupported:  "logical channel not supported",
	SWSecureMessaging:      "secure messaging not supported",
	SWLastCommandExpected:  "last command of the chain expected",
	SWChainingNotSupported: "command chaining not supported",

	0x6900:                   "command not allowed",
	0x6981:                   "command incompatible with file structure",
	SWSecurityStatus:         "security status not satisfied",
	SWAuthBlocked:            "authentication method blocked",
	SWDataInvalid:            "reference data not usable",
	SWConditionsNotSatisfied: "conditions of use not satisfied",
	SWCommandNotAllowed:      "command not allowed (no current EF)",
	0x6987:                   "expected secure messaging data objects missing",
	0x6988:                   "incorrect secure messaging data objects",

	0x6A00:             "wrong parameters P1-P2",
	SWWrongData:        "incorrect parameters in the command data field",
	SWFuncNotSupported: "function not supported",
	SWNotFound:         "file or application not found",
	SWRecordNotFound:   "record not found",
	SWNoSpace:          "not enough memory space in the file",
	0x6A85:             "Nc inconsistent with TLV structure",
	SWIncorrectP1P2:    "incorrect parameters P1-P2",
	0x6A87:             "Nc inconsistent with parameters P1-P2",
	SWRefDataNotFound:  "referenced data or reference data not found",
	0x6A89:             "file already exists",
	0x6A8A:             "DF name already exists",

	SWWrongP1P2:       "wrong parameters P1-P2",
	SWINSNotSupported: "instruction code not supported or invalid",
	SWCLANotSupported: "class not supported",
	SWUnknown:         "no precise diagnosis",
}

// meaning describes sw without its hex value.
func (sw SW) meaning() string {
	if m, ok := swMeanings[sw]; ok {
		return m
	}
	x := int(sw.SW2())
	switch sw.SW1() {
	case 0x61:
		if x == 0 {
			return "256 or more bytes remaining"
		}
		if x == 1 {
			return "1 byte remaining"
		}
		return fmt.Sprintf("%d bytes remaining", x)
	case 0x63:
		if x&0xF0 == 0xC0 {
			return "verification failed, " + triesLeft(x&0x0F)
		}
		return "warning: non-volatile memory changed"
	case 0x62:
		return "warning: non-volatile memory unchanged"
	case 0x6C:
		if x == 0 {
			x = 256
		}
		return fmt.Sprintf("wrong Le, exact length %d", x)
	}
	return "unknown"
}

func triesLeft(n int) string {
	switch n {
	case 0:
		return "no tries left"
	case 1:
		return "1 try left"
	}
	return fmt.Sprintf("%d tries left", n)
}
