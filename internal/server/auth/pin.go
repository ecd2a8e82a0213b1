package auth

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"cardlink/internal/pinblock"
	"cardlink/internal/store"
)

// DefaultPINIterations is the PBKDF2-HMAC-SHA256 iteration count for online
// PINs: about 84 ms per hash on the project's 2-core Xeon build machine
// (BenchmarkHashPIN, 2026-11-28), which is also OWASP's 2023 figure for
// PBKDF2-HMAC-SHA256. A PIN has at most 10^12 values (usually 10^4), so the
// hash only slows an attacker who stole the database; the try counter is
// what protects a PIN online.
const DefaultPINIterations = 600_000

// PINIterations is the iteration count HashPIN and NewPINRecord use for new
// records. Tests may lower it; records keep the count they were made with
// (PINParams), so changing it never breaks a stored PIN. It must not change
// while another goroutine hashes.
var PINIterations = DefaultPINIterations

// Sizes of a PIN record.
const (
	PINSaltSize = 16 // random salt bytes per record
	PINHashSize = 32 // PBKDF2 output bytes
)

// paramsPrefix starts PIN.Params for PBKDF2-HMAC-SHA256 records; the
// iteration count follows in decimal.
const paramsPrefix = "pbkdf2-sha256:i="

// maxPINIterations bounds the count a stored record may ask for, so that a
// damaged row cannot stall a verification for hours.
const maxPINIterations = 100_000_000

// Errors of online PIN verification; branch with errors.Is.
var (
	// ErrWrongPIN: the PIN did not match; the error is a *PINError with
	// the tries left.
	ErrWrongPIN = errors.New("wrong PIN")
	// ErrLocked: the card's online PIN has no tries left. It is
	// store.ErrLocked itself, so either matches.
	ErrLocked = store.ErrLocked
	// ErrMalformedPIN: the presented PIN is not 4 to 12 decimal digits. No
	// try was taken: such a PIN can never match.
	ErrMalformedPIN = errors.New("PIN is not 4 to 12 decimal digits")
)

// PINError is a wrong online PIN and the tries left after it (0: the PIN
// is now locked). errors.Is(err, ErrWrongPIN) matches it.
type PINError struct {
	TriesLeft int
}

// Error implements error.
func (e *PINError) Error() string {
	switch e.TriesLeft {
	case 0:
		return "wrong PIN, now locked"
	case 1:
		return "wrong PIN, 1 try left"
	}
	return fmt.Sprintf("wrong PIN, %d tries left", e.TriesLeft)
}

// Is reports whether target is ErrWrongPIN.
func (e *PINError) Is(target error) bool { return target == ErrWrongPIN }

// HashPIN returns PBKDF2-HMAC-SHA256(pin, salt) with PINIterations
// iterations, PINHashSize bytes. It is slow on purpose (DefaultPINIterations).
// It panics only if crypto/pbkdf2 refuses its parameters, which happens
// only in FIPS 140-3 mode with a salt under 16 bytes (a programmer error;
// NewPINRecord makes 16).
func HashPIN(pin string, salt []byte) []byte {
	h, err := hashPIN(pin, salt, PINIterations)
	if err != nil {
		panic("auth: " + err.Error())
	}
	return h
}

func hashPIN(pin string, salt []byte, iterations int) ([]byte, error) {
	h, err := pbkdf2.Key(sha256.New, pin, salt, iterations, PINHashSize)
	if err != nil {
		return nil, fmt.Errorf("hashing PIN: %w", err)
	}
	return h, nil
}

// PINParams returns what NewPINRecord's hash needs besides the salt, to
// store in store.PIN.Params: "pbkdf2-sha256:i=" and PINIterations.
func PINParams() string { return paramsPrefix + strconv.Itoa(PINIterations) }

// parsePINParams returns the iteration count of a PIN.Params string.
func parsePINParams(s string) (int, error) {
	v, ok := strings.CutPrefix(s, paramsPrefix)
	if !ok {
		return 0, fmt.Errorf("unknown PIN hash parameters %q", s)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPINIterations || strconv.Itoa(n) != v {
		return 0, fmt.Errorf("bad PIN hash iteration count in %q", s)
	}
	return n, nil
}

// validPIN reports whether pin is 4 to 12 ASCII decimal digits, what a
// format 4 PIN block can carry.
func validPIN(pin string) bool {
	if len(pin) < pinblock.MinPINLen || len(pin) > pinblock.MaxPINLen {
		return false
	}
	for i := range len(pin) {
		if pin[i] < '0' || pin[i] > '9' {
			return false
		}
	}
	return true
}

// NewPINRecord makes the hash and a fresh salt (PINSaltSize bytes from
// crypto/rand) of a new online PIN, 4 to 12 decimal digits; store them with
// Params = PINParams(). It returns ErrMalformedPIN (wrapped) for any other
// PIN.
func NewPINRecord(pin string) (hash, salt []byte, err error) {
	if !validPIN(pin) {
		return nil, nil, fmt.Errorf("making PIN record: %w", ErrMalformedPIN)
	}
	salt = make([]byte, PINSaltSize)
	rand.Read(salt) // never fails (crypto/rand, Go 1.24+)
	hash, err = hashPIN(pin, salt, PINIterations)
	if err != nil {
		return nil, nil, fmt.Errorf("making PIN record: %w", err)
	}
	return hash, salt, nil
}

// NewPIN makes the complete store record of a new online PIN for card, with
// maxTries tries (at least 1), ready for store.PINs.SetPIN.
func NewPIN(card, pin string, maxTries int) (store.PIN, error) {
	if maxTries < 1 {
		return store.PIN{}, fmt.Errorf("making PIN record: %d tries, want at least 1", maxTries)
	}
	params := PINParams()
	hash, salt, err := NewPINRecord(pin)
	if err != nil {
		return store.PIN{}, err
	}
	return store.PIN{Card: card, Hash: hash, Salt: salt, Params: params, Tries: maxTries, MaxTries: maxTries}, nil
}

// VerifyOnlinePIN checks pin against the card's online PIN record,
// following the store.PINs contract: it takes one try first
// (DecrementPINTries, durable before any comparison, so that a crash or a
// cancelled request after it never gives the try back), then compares the
// slow hash in constant time, and on a match restores the tries
// (ResetPINTries); the match counts only if that reset succeeds.
//
// It returns the tries left: MaxTries on success; on a mismatch the tries
// left after it, with a *PINError (errors.Is ErrWrongPIN; 0 tries left
// means the PIN is now locked). Other errors come with 0: ErrLocked when no
// try was left (nothing taken), ErrMalformedPIN for a PIN that is not 4 to
// 12 digits (nothing taken: it cannot match), store.ErrNotFound when the
// card has no online PIN, a parameter error when the stored record is
// damaged (the try is spent), or the store's error. now is not used yet
// (2026-11-28); it is there for time-based lock-out policies.
//
// It is safe for concurrent use: concurrent guesses, from any number of
// goroutines or server instances, together take at most the tries the
// record has, because each takes its try from the store before comparing.
func VerifyOnlinePIN(ctx context.Context, pins store.PINs, card string, pin string, now time.Time) (triesLeft int, err error) {
	if !validPIN(pin) {
		return 0, fmt.Errorf("verifying online PIN: %w", ErrMalformedPIN)
	}
	rec, err := pins.DecrementPINTries(ctx, card)
	if err != nil {
		return 0, fmt.Errorf("verifying online PIN: %w", err)
	}
	iterations, err := parsePINParams(rec.Params)
	if err != nil {
		return 0, fmt.Errorf("verifying online PIN: %w", err)
	}
	if len(rec.Hash) != PINHashSize {
		return 0, fmt.Errorf("verifying online PIN: stored hash of %d bytes, want %d", len(rec.Hash), PINHashSize)
	}
	got, err := hashPIN(pin, rec.Salt, iterations)
	if err != nil {
		return 0, fmt.Errorf("verifying online PIN: %w", err)
	}
	if subtle.ConstantTimeCompare(got, rec.Hash) != 1 {
		return rec.Tries, fmt.Errorf("verifying online PIN: %w", &PINError{TriesLeft: rec.Tries})
	}
	if err := pins.ResetPINTries(ctx, card); err != nil {
		return 0, fmt.Errorf("verifying online PIN: %w", err)
	}
	return rec.MaxTries, nil
}

// VerifyPINBlock opens an online PIN block (ISO 9564-1 format 4, made for
// the card number under key, the session's pinblock.SessionKey) and
// verifies its PIN with VerifyOnlinePIN. A block that does not open
// (pinblock.ErrInvalid: another key, another card, damaged) takes no try:
// only the holder's device, which has the key, can make a block that
// opens, so refusing the others early gives nobody a free guess.
func VerifyPINBlock(ctx context.Context, pins store.PINs, card string, key []byte, block [pinblock.Size]byte, now time.Time) (triesLeft int, err error) {
	pin, err := pinblock.Decrypt(key, block, card)
	if err != nil {
		return 0, fmt.Errorf("verifying online PIN: %w", err)
	}
	return VerifyOnlinePIN(ctx, pins, card, pin, now)
}
