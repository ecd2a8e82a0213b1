package iso7816

import (
	"errors"
	"fmt"
)

// Sentinels that StatusError unwraps to; callers branch on these with errors.Is.
var (
	ErrNotFound       = errors.New("not found")                       // 6A82, 6A83, 6A88
	ErrBlocked        = errors.New("authentication method blocked")   // 6983
	ErrSecurityStatus = errors.New("security status not satisfied")   // 6982
	ErrConditions     = errors.New("conditions of use not satisfied") // 6985, 6986
	ErrWrongData      = errors.New("incorrect data")                  // 6A80, 6984
	ErrNoSpace        = errors.New("not enough memory space")         // 6A84
	ErrUnsupported    = errors.New("not supported")                   // 6D00, 6E00, 6A81, 6881, 6882, 6884
	ErrWrongLength    = errors.New("wrong length")                    // 6700, 6Cxx
	ErrWrongParams    = errors.New("incorrect parameters")            // 6A86, 6B00
	ErrCardFailure    = errors.New("card failure")                    // 6581, 6F00
)

// StatusError is a status word other than 9000 returned by a card. Unwrap
// yields one of the sentinels above, or a *PINError for 63Cx.
type StatusError struct {
	SW SW
}

// Error reads e.g. "card status 6982: security status not satisfied".
func (e *StatusError) Error() string {
	return fmt.Sprintf("card status %04X: %s", uint16(e.SW), e.SW.meaning())
}

// Unwrap returns what callers branch on (see the sentinels), or nil.
func (e *StatusError) Unwrap() error {
	switch e.SW {
	case SWNotFound, SWRecordNotFound, SWRefDataNotFound:
		return ErrNotFound
	case SWAuthBlocked:
		return ErrBlocked
	case SWSecurityStatus:
		return ErrSecurityStatus
	case SWConditionsNotSatisfied, SWCommandNotAllowed:
		return ErrConditions
	case SWWrongData, SWDataInvalid:
		return ErrWrongData
	case SWNoSpace:
		return ErrNoSpace
	case SWINSNotSupported, SWCLANotSupported, SWFuncNotSupported,
		SWChannelNotSupported, SWSecureMessaging, SWChainingNotSupported:
		return ErrUnsupported
	case SWWrongLength:
		return ErrWrongLength
	case SWIncorrectP1P2, SWWrongP1P2:
		return ErrWrongParams
	case SWMemoryFailure, SWUnknown:
		return ErrCardFailure
	}
	switch {
	case e.SW.SW1() == 0x6C:
		return ErrWrongLength
	case e.SW&0xFFF0 == SWVerifyFailed:
		return &PINError{Retries: int(e.SW & 0x0F)}
	}
	return nil
}

// PINError reports a failed verification with Retries tries left (63Cx).
// Retries == 0 means the reference data is now blocked.
type PINError struct {
	Retries int
}

// Error reads "wrong PIN, 2 tries left", or "wrong PIN, now blocked" when
// Retries is 0.
func (e *PINError) Error() string {
	if e.Retries <= 0 {
		return "wrong PIN, now blocked"
	}
	return "wrong PIN, " + triesLeft(e.Retries)
}
