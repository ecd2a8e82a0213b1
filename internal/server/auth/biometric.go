package auth

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"cardlink/internal/store"
)

// Biometric templates matched on the server are the wallet applet's: a
// 512-bit binary feature vector, matched by Hamming distance (see
// docs/wallet-applet.md). A test keeps these equal to the applet's.
const (
	// BiometricSize is the size in bytes of an enrolled or presented
	// template.
	BiometricSize = 64
	// DefaultBiometricThreshold is the largest Hamming distance, in bits,
	// that matches when the operator names none (12.5 % of the bits).
	DefaultBiometricThreshold = 64
	// MaxBiometricThreshold is the largest threshold accepted (25 %).
	MaxBiometricThreshold = 128
	// DefaultBiometricTries is the try limit when the operator names none,
	// the card's own for its on-card matching.
	DefaultBiometricTries = 5
	// MaxBiometricTries bounds the try limit.
	MaxBiometricTries = 10
)

// Errors of server-side biometric matching; branch with errors.Is. A
// locked template is ErrLocked (store.ErrLocked), as for online PINs.
var (
	// ErrBiometricMismatch: the template did not match; the error is a
	// *BiometricError with the tries left.
	ErrBiometricMismatch = errors.New("biometric not matched")
	// ErrMalformedBiometric: the presented or enrolled template is not
	// BiometricSize bytes, or the threshold or tries are out of range. A
	// presented template of the wrong size takes no try: it cannot match.
	ErrMalformedBiometric = errors.New("biometric template is not 64 bytes")
)

// BiometricError is a template that did not match, and the tries left
// after it (0: now locked). errors.Is(err, ErrBiometricMismatch) matches
// it.
type BiometricError struct {
	TriesLeft int
}

// Error implements error.
func (e *BiometricError) Error() string {
	switch e.TriesLeft {
	case 0:
		return "biometric not matched, now locked"
	case 1:
		return "biometric not matched, 1 try left"
	}
	return fmt.Sprintf("biometric not matched, %d tries left", e.TriesLeft)
}

// Is reports whether target is ErrBiometricMismatch.
func (e *BiometricError) Is(target error) bool { return target == ErrBiometricMismatch }

// NewBiometric makes the store record of a card's enrolled template for
// server-side matching: template is BiometricSize bytes (it is copied),
// threshold 0 to MaxBiometricThreshold bits, maxTries 1 to
// MaxBiometricTries. It returns ErrMalformedBiometric (wrapped) otherwise.
func NewBiometric(card string, template []byte, threshold, maxTries int) (store.Biometric, error) {
	switch {
	case len(template) != BiometricSize:
		return store.Biometric{}, fmt.Errorf("making biometric record: %d bytes: %w", len(template), ErrMalformedBiometric)
	case threshold < 0 || threshold > MaxBiometricThreshold:
		return store.Biometric{}, fmt.Errorf("making biometric record: threshold %d, want 0..%d: %w", threshold, MaxBiometricThreshold, ErrMalformedBiometric)
	case maxTries < 1 || maxTries > MaxBiometricTries:
		return store.Biometric{}, fmt.Errorf("making biometric record: %d tries, want 1..%d: %w", maxTries, MaxBiometricTries, ErrMalformedBiometric)
	}
	return store.Biometric{
		Card:      card,
		Template:  append([]byte(nil), template...),
		Threshold: threshold,
		Tries:     maxTries,
		MaxTries:  maxTries,
	}, nil
}

// MatchBiometric reports whether presented is within threshold bits
// (Hamming distance) of enrolled. Both must be BiometricSize bytes, else
// it is false. Its time depends on neither template nor on the outcome:
// it counts the differing bits of every byte with arithmetic (no table
// lookups, no early exit) and compares without a branch.
func MatchBiometric(enrolled, presented []byte, threshold int) bool {
	if len(enrolled) != BiometricSize || len(presented) != BiometricSize || threshold < 0 {
		return false
	}
	d := 0
	for i := 0; i < BiometricSize; i += 8 {
		d += bits.OnesCount64(binary.LittleEndian.Uint64(enrolled[i:]) ^ binary.LittleEndian.Uint64(presented[i:]))
	}
	return subtle.ConstantTimeLessOrEq(d, min(threshold, 8*BiometricSize)) == 1
}

// VerifyBiometric matches a presented template against the card's
// enrolled one, following the store.Biometrics contract: it takes one try
// first (DecrementBiometricTries, durable before any comparison), then
// compares (MatchBiometric), and on a match restores the tries
// (ResetBiometricTries); the match counts only if that reset succeeds.
//
// It returns the tries left: MaxTries on success; on a mismatch the tries
// left after it, with a *BiometricError (errors.Is ErrBiometricMismatch).
// Other errors come with 0: ErrMalformedBiometric for a presented template
// that is not BiometricSize bytes (nothing taken), ErrLocked when no try
// was left (nothing taken), store.ErrNotFound when the card has no
// enrolled template, or the store's error. A damaged enrolled record
// (wrong size) never matches and spends the try. now is not used yet
// (2026-11-28).
//
// It is safe for concurrent use: concurrent attempts on any number of
// server instances together take at most the tries the record has.
func VerifyBiometric(ctx context.Context, bios store.Biometrics, card string, template []byte, now time.Time) (triesLeft int, err error) {
	if len(template) != BiometricSize {
		return 0, fmt.Errorf("verifying biometric: %d bytes: %w", len(template), ErrMalformedBiometric)
	}
	rec, err := bios.DecrementBiometricTries(ctx, card)
	if err != nil {
		return 0, fmt.Errorf("verifying biometric: %w", err)
	}
	if !MatchBiometric(rec.Template, template, rec.Threshold) {
		return rec.Tries, fmt.Errorf("verifying biometric: %w", &BiometricError{TriesLeft: rec.Tries})
	}
	if err := bios.ResetBiometricTries(ctx, card); err != nil {
		return 0, fmt.Errorf("verifying biometric: %w", err)
	}
	return rec.MaxTries, nil
}
