package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cardlink/internal/pinblock"
	"cardlink/internal/protocol"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// The card checks of Challenge and the signature checks of Verify, for
// other exchanges that name a card and carry its signature (package
// purchase): CheckDevice, CheckCard and VerifySignature.

// DefaultCVMs returns the holder verification methods the service accepts
// when nothing more specific applies (Config.DefaultCVMs).
func (s *Service) DefaultCVMs() protocol.CVMSet { return s.cvms }

// MaskCard shows only the last four digits of a card number, for logs.
func MaskCard(number string) string { return mask(number) }

// CheckDevice reads the session's device again, so that a revocation
// takes effect on open sessions: CodeDeviceRevoked, or CodeOK. Errors are
// internal.
func (s *Service) CheckDevice(ctx context.Context, sess *Session) (protocol.Code, error) {
	return s.checkDevice(ctx, sess)
}

// CheckCard runs the checks of Challenge on the card a device names: the
// session's device is not revoked (CodeDeviceRevoked); the card is known
// with the certificate certID, or registered now from cert when the
// server has none with certID (CodeCertificateNeeded when cert is empty);
// it is not revoked (CodeCardRevoked), nor flagged as cloned
// (CodeCounterNotIncreasing); its certificate is valid now
// (CodeCertificateInvalid; CodeCardRevoked on the CRL). It returns the
// card as stored and CodeOK, or the refusal's code; errors are internal.
// It does not log refusals: the caller does.
func (s *Service) CheckCard(ctx context.Context, sess *Session, number string, certID, cert []byte) (store.Card, protocol.Code, error) {
	return s.checkCard(ctx, sess, number, certID, cert, s.now())
}

func (s *Service) checkCard(ctx context.Context, sess *Session, number string, certID, cert []byte, now time.Time) (store.Card, protocol.Code, error) {
	if code, err := s.checkDevice(ctx, sess); err != nil || code != protocol.CodeOK {
		return store.Card{}, code, err
	}
	card, code, err := s.card(ctx, sess, number, certID, cert, now)
	if err != nil || code != protocol.CodeOK {
		return store.Card{}, code, err
	}
	if _, code, err = s.checkCert(ctx, card, now); err != nil || code != protocol.CodeOK {
		return store.Card{}, code, err
	}
	return card, protocol.CodeOK, nil
}

// Verdict is what VerifySignature concluded.
type Verdict struct {
	Code protocol.Code // CodeOK: the signature and the holder verification are accepted
	// CVM is, with CodeOK, the method accepted: the one the card signed,
	// or biometric for a template the server matched.
	CVM       txn.CVM
	TriesLeft uint8  // with CodePINIncorrect or CodeBiometricMismatch
	MatchedBy string // with CodeOK: "server" for a server-matched biometric, else empty
	Cause     error  // with a refusal, why, for the logs (never for the device); may be nil
	// CounterDeferred, with CodeOK from VerifySignatureDeferred, says the
	// card's counter was not advanced: the caller must advance it (to the
	// envelope's Counter, refusing the signature if it did not grow) in
	// the store transaction that acts on the signature.
	CounterDeferred bool
}

// VerifySignature runs the checks of Verify on a card's signature sig
// over env (its Purpose, CardNumber, Counter, CVM and Payload as the
// server expects them: the payload must be the server's own copy), with
// the holder verification that came with it (pinBlock for online PIN,
// bio for server-side matching) and accepted the methods the exchange
// accepts. In order: the card is known (CodeCardUnknown), not revoked in
// the store or on the CRL (CodeCardRevoked) nor flagged as cloned
// (CodeCounterNotIncreasing), its certificate valid now
// (CodeCertificateInvalid); the signature verifies
// (CodeSignatureInvalid); the counter grows (CodeCounterNotIncreasing,
// and the store flags the card); the CVM is accepted, online PIN and
// server-side biometric as documented on Verify (CodeCVMNotAccepted,
// CodePINIncorrect with TriesLeft, CodePINBlocked, CodeBiometricMismatch,
// CodeMalformed).
//
// The counter is advanced as soon as the signature verifies, whatever the
// holder verification says. It does not check the device (CheckDevice)
// and logs only a counter that did not grow; the caller logs the verdict.
// Errors are internal.
func (s *Service) VerifySignature(ctx context.Context, sess *Session, env *txn.Envelope, sig, pinBlock, bio []byte, accepted protocol.CVMSet) (Verdict, error) {
	return s.verifySignature(ctx, sess, env, sig, pinBlock, bio, accepted, s.now())
}

// VerifySignatureDeferred is VerifySignature for a caller that advances
// the card's counter itself, in the store transaction that acts on the
// signature (store.CountingAuthorizer), saving a durable commit. When the
// holder verification is the card's own (offline PIN, card biometric) and
// the counter read from the store is below the envelope's, a verdict of
// CodeOK comes with CounterDeferred set and the counter not advanced. In
// every other case — an online PIN or a server-matched biometric, whose
// checks count tries in the store, or any refusal after the signature
// verified — the counter is advanced here, as by VerifySignature.
func (s *Service) VerifySignatureDeferred(ctx context.Context, sess *Session, env *txn.Envelope, sig, pinBlock, bio []byte, accepted protocol.CVMSet) (Verdict, error) {
	return s.verifySignatureCounter(ctx, sess, env, sig, pinBlock, bio, accepted, s.now(), true)
}

func (s *Service) verifySignature(ctx context.Context, sess *Session, env *txn.Envelope, sig, pinBlock, bio []byte, accepted protocol.CVMSet, now time.Time) (Verdict, error) {
	return s.verifySignatureCounter(ctx, sess, env, sig, pinBlock, bio, accepted, now, false)
}

func (s *Service) verifySignatureCounter(ctx context.Context, sess *Session, env *txn.Envelope, sig, pinBlock, bio []byte, accepted protocol.CVMSet, now time.Time, deferCounter bool) (Verdict, error) {
	refuse := func(code protocol.Code, cause error) (Verdict, error) {
		return Verdict{Code: code, Cause: cause}, nil
	}
	card, code, cause, err := s.checkSignature(ctx, env, sig, now)
	if err != nil {
		return Verdict{}, err
	}
	if code != protocol.CodeOK {
		return refuse(code, cause)
	}

	// The signature is the card's: its counter is now at least this high,
	// whatever the holder verification below says.
	advance := func() (Verdict, bool, error) {
		err := s.store.AdvanceCounter(ctx, card.Number, env.Counter, now)
		switch {
		case errors.Is(err, store.ErrCounterReplay):
			s.log.LogAttrs(ctx, slog.LevelWarn, "card counter did not grow: possibly cloned",
				slog.String("card", mask(card.Number)), slog.Uint64("counter", uint64(env.Counter)),
				slog.Uint64("stored", uint64(card.Counter)), slog.String("device", sess.Device.ID))
			return Verdict{Code: protocol.CodeCounterNotIncreasing, Cause: fmt.Errorf("counter %d, stored %d", env.Counter, card.Counter)}, false, nil
		case errors.Is(err, store.ErrRevoked):
			return Verdict{Code: protocol.CodeCardRevoked}, false, nil
		case errors.Is(err, store.ErrNotFound):
			return Verdict{Code: protocol.CodeCardUnknown}, false, nil
		case err != nil:
			return Verdict{}, false, err
		}
		return Verdict{}, true, nil
	}
	deferred := deferCounter && env.CVM != txn.CVMOnlinePIN && len(bio) == 0 && env.Counter > card.Counter
	if !deferred {
		if v, ok, err := advance(); !ok {
			return v, err
		}
	} else {
		// A refusal from here on advances the counter first, as
		// VerifySignature would have.
		refuse = func(code protocol.Code, cause error) (Verdict, error) {
			if v, ok, err := advance(); !ok {
				return v, err
			}
			return Verdict{Code: code, Cause: cause}, nil
		}
	}

	// What the holder verification counts as: what the card signed, or a
	// biometric the server matches below.
	cvm, serverBio := env.CVM, len(bio) > 0
	if serverBio {
		switch {
		case !s.bio:
			return refuse(protocol.CodeCVMNotAccepted, errors.New("server-side biometric matching is off"))
		case env.CVM != txn.CVMNone:
			return refuse(protocol.CodeCVMNotAccepted, fmt.Errorf("biometric template with signed %v", env.CVM))
		}
		cvm = txn.CVMBiometric
	}
	if !accepted.Has(cvm) {
		return refuse(protocol.CodeCVMNotAccepted, fmt.Errorf("%v not in %q", cvm, FormatPolicy(accepted)))
	}
	if (env.CVM == txn.CVMOnlinePIN) != (len(pinBlock) > 0) {
		return refuse(protocol.CodeCVMNotAccepted, fmt.Errorf("%v with a PIN block of %d bytes", env.CVM, len(pinBlock)))
	}
	if env.CVM == txn.CVMOnlinePIN {
		if v, err := s.onlinePIN(ctx, sess, card.Number, pinBlock, now); err != nil || v.Code != protocol.CodeOK {
			return v, err
		}
	}
	v := Verdict{Code: protocol.CodeOK, CVM: cvm, CounterDeferred: deferred}
	if serverBio {
		if bv, err := s.serverBiometric(ctx, card.Number, bio, now); err != nil || bv.Code != protocol.CodeOK {
			return bv, err
		}
		v.MatchedBy = "server"
	}
	return v, nil
}

// VerifyCardSignature checks a card signature made away from any
// session — a purse debit receipt a merchant redeems, a load receipt —
// with the card checks of VerifySignature: the card is known
// (CodeCardUnknown), not revoked in the store or on the CRL
// (CodeCardRevoked) nor flagged as cloned (CodeCounterNotIncreasing),
// its certificate valid now (CodeCertificateInvalid), and sig verifies
// over env (CodeSignatureInvalid). Unlike VerifySignature it neither
// requires nor advances the card's counter and checks no holder
// verification: the caller decides what env.Counter and env.CVM mean.
// The cause says why, for the logs. Errors are internal.
func (s *Service) VerifyCardSignature(ctx context.Context, env *txn.Envelope, sig []byte) (code protocol.Code, cause error, err error) {
	_, code, cause, err = s.checkSignature(ctx, env, sig, s.now())
	return code, cause, err
}

// checkSignature runs the card and signature checks shared by
// VerifySignature and VerifyCardSignature.
func (s *Service) checkSignature(ctx context.Context, env *txn.Envelope, sig []byte, now time.Time) (store.Card, protocol.Code, error, error) {
	card, err := s.store.Card(ctx, env.CardNumber)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return card, protocol.CodeCardUnknown, nil, nil
	case err != nil:
		return card, protocol.CodeInternal, nil, err
	case card.Revoked():
		return card, protocol.CodeCardRevoked, nil, nil
	case card.Cloned():
		return card, protocol.CodeCounterNotIncreasing, errors.New("card flagged as possibly cloned"), nil
	}
	cert, code, err := s.checkCert(ctx, card, now)
	if err != nil || code != protocol.CodeOK {
		return card, code, nil, err
	}
	if !txn.VerifyEnvelope(cert.key, env, sig) {
		return card, protocol.CodeSignatureInvalid, nil, nil
	}
	return card, protocol.CodeOK, nil, nil
}

// onlinePIN checks an online PIN block; CodeOK when the PIN matched.
func (s *Service) onlinePIN(ctx context.Context, sess *Session, card string, block []byte, now time.Time) (Verdict, error) {
	var b [pinblock.Size]byte
	if len(block) != len(b) {
		return Verdict{Code: protocol.CodeMalformed, Cause: fmt.Errorf("PIN block of %d bytes", len(block))}, nil
	}
	copy(b[:], block)
	tries, err := VerifyPINBlock(ctx, s.store, card, pinblock.SessionKey(sess.Binding), b, now)
	var pe *PINError
	switch {
	case err == nil:
		return Verdict{Code: protocol.CodeOK}, nil
	case errors.As(err, &pe):
		return Verdict{Code: protocol.CodePINIncorrect, TriesLeft: uint8(min(max(tries, 0), 255))}, nil
	case errors.Is(err, ErrLocked):
		return Verdict{Code: protocol.CodePINBlocked}, nil
	case errors.Is(err, pinblock.ErrInvalid), errors.Is(err, ErrMalformedPIN):
		// Not made under this session's key for this card: no try was
		// taken, and none is reported as lost.
		p, perr := s.store.PIN(ctx, card)
		if perr != nil && !errors.Is(perr, store.ErrNotFound) {
			return Verdict{}, perr
		}
		return Verdict{Code: protocol.CodePINIncorrect, TriesLeft: uint8(min(max(p.Tries, 0), 255)), Cause: errors.New("PIN block does not open")}, nil
	case errors.Is(err, store.ErrNotFound):
		return Verdict{Code: protocol.CodeCVMNotAccepted, Cause: errors.New("card has no online PIN")}, nil
	}
	return Verdict{}, err
}

// serverBiometric matches a template sent for server-side matching;
// CodeOK when it matched.
func (s *Service) serverBiometric(ctx context.Context, card string, template []byte, now time.Time) (Verdict, error) {
	tries, err := VerifyBiometric(ctx, s.store, card, template, now)
	switch {
	case err == nil:
		return Verdict{Code: protocol.CodeOK}, nil
	case errors.Is(err, ErrBiometricMismatch):
		return Verdict{Code: protocol.CodeBiometricMismatch, TriesLeft: uint8(min(max(tries, 0), 255))}, nil
	case errors.Is(err, ErrLocked):
		return Verdict{Code: protocol.CodeBiometricMismatch, Cause: errors.New("biometric locked")}, nil
	case errors.Is(err, ErrMalformedBiometric):
		return Verdict{Code: protocol.CodeMalformed, Cause: fmt.Errorf("biometric template of %d bytes", len(template))}, nil
	case errors.Is(err, store.ErrNotFound):
		return Verdict{Code: protocol.CodeCVMNotAccepted, Cause: errors.New("card has no enrolled biometric")}, nil
	}
	return Verdict{}, err
}
