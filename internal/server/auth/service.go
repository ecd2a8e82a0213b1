package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"cardlink/internal/protocol"
	"cardlink/internal/store"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// Defaults for Config fields left zero.
const (
	DefaultChallengeTTL = 60 * time.Second
	// DefaultCVMs: any holder verification, but some.
	DefaultCVMs = protocol.CVMSet(1<<txn.CVMOfflinePIN | 1<<txn.CVMOnlinePIN | 1<<txn.CVMBiometric)
)

// SessionIDLen is the length of Session.ID.
const SessionIDLen = 16

// maxSessionCards bounds how many card numbers a Session remembers asking
// challenges for.
const maxSessionCards = 4

// Config configures a Service. Store and CA are required.
type Config struct {
	Store store.Store
	// CA is the issuer CA every card certificate must chain to, directly.
	CA *x509.Certificate
	// CRL, if set, returns the issuer's current CRL, which must be signed
	// by CA and fresh: a card on it is refused as revoked, and while it
	// returns nil or a CRL out of date every certificate check fails as an
	// internal error (fail closed). It is called once per check and must
	// be cheap (return a cached value); a CRL's signature is checked once
	// per returned value. Nil: rely on the store's revocation only.
	CRL func() *x509.RevocationList
	// ChallengeTTL is a challenge's lifetime, at least one second;
	// 0 means DefaultChallengeTTL.
	ChallengeTTL time.Duration
	// DefaultCVMs are the holder verification methods accepted when no
	// pending relying-party request says otherwise; 0 means DefaultCVMs.
	DefaultCVMs protocol.CVMSet
	Now         func() time.Time // nil: time.Now
	Rand        io.Reader        // nil: crypto/rand.Reader
	Logger      *slog.Logger     // nil: discard
	// ServerBiometric enables server-side biometric matching: an
	// AuthResponse whose card signed CVM none and that carries a template
	// is matched against the card's enrolled template (store.Biometrics,
	// VerifyBiometric), and on a match counts as CVM biometric. Off (the
	// default), such a response is refused with CodeCVMNotAccepted. The
	// server then sees the holder's templates: see docs/api.md.
	ServerBiometric bool
	// Notify, if set, is called after Verify approved a relying party's
	// request, with the request as finished. It runs in Verify's goroutine
	// and should hand the work off rather than block.
	Notify func(ctx context.Context, req store.AuthRequest)
}

// Service authenticates cards for device sessions: it issues challenges,
// checks card certificates and revocation, verifies the card's signed
// answer, its counter and how the holder was verified, and finishes the
// relying party's request the answer satisfies. All its state is in the
// store, except a cache of checked certificates, so several Services (server
// instances) on one database behave as one. A Service is safe for
// concurrent use.
type Service struct {
	store   store.Store
	certs   *certCache
	crl     func() *x509.RevocationList
	ttl     time.Duration
	cvms    protocol.CVMSet
	now     func() time.Time
	rand    io.Reader
	log     *slog.Logger
	notify  func(context.Context, store.AuthRequest)
	ttlSecs uint32
	bio     bool // Config.ServerBiometric
}

// New returns a Service for cfg. It fails if Store or CA is missing, CA is
// not a CA certificate, ChallengeTTL is under a second or DefaultCVMs holds
// unknown methods.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("creating auth service: no store")
	case cfg.CA == nil:
		return nil, errors.New("creating auth service: no CA certificate")
	case !cfg.CA.IsCA || cfg.CA.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, errors.New("creating auth service: the CA certificate is not a CA")
	}
	s := &Service{
		store:  cfg.Store,
		certs:  newCertCache(cfg.CA),
		crl:    cfg.CRL,
		ttl:    cfg.ChallengeTTL,
		cvms:   cfg.DefaultCVMs,
		now:    cfg.Now,
		rand:   cfg.Rand,
		log:    cfg.Logger,
		notify: cfg.Notify,
		bio:    cfg.ServerBiometric,
	}
	if s.ttl == 0 {
		s.ttl = DefaultChallengeTTL
	}
	if s.ttl < time.Second || s.ttl > 24*time.Hour {
		return nil, fmt.Errorf("creating auth service: challenge lifetime %v, want 1s..24h", s.ttl)
	}
	s.ttlSecs = uint32(s.ttl / time.Second)
	if s.cvms == 0 {
		s.cvms = DefaultCVMs
	}
	if s.cvms >= 1<<(txn.CVMBiometric+1) {
		return nil, fmt.Errorf("creating auth service: default methods %#x hold unknown ones", uint8(s.cvms))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Session is one device connection, created by the listener after the
// Noise handshake with NewSession. The challenges of a session are kept in
// the store; the Session itself remembers only which cards it asked
// challenges for (an AuthResponse does not name its card). A Session is
// safe for concurrent use.
type Session struct {
	ID      []byte       // SessionIDLen random bytes, server-chosen
	Binding []byte       // channel.Conn.HandshakeHash(): sent as Challenge.Context, so that the card's signature is bound to this channel
	Device  store.Device // the authenticated device

	mu    sync.Mutex
	cards []string // card numbers challenged, most recent first
}

// remember records that a challenge was issued for card.
func (sess *Session) remember(card string) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	for i, c := range sess.cards {
		if c == card {
			copy(sess.cards[1:i+1], sess.cards[:i])
			sess.cards[0] = card
			return
		}
	}
	if len(sess.cards) < maxSessionCards {
		sess.cards = append(sess.cards, "")
	}
	copy(sess.cards[1:], sess.cards)
	sess.cards[0] = card
}

// challenged returns the cards challenged in the session, most recent first.
func (sess *Session) challenged() []string {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return append([]string(nil), sess.cards...)
}

// NewSession starts a session for device over a channel whose handshake
// hash is handshakeHash (1 to protocol.MaxContext bytes; it is copied). It
// returns a *protocol.Error with CodeDeviceRevoked for a revoked device.
func (s *Service) NewSession(device store.Device, handshakeHash []byte) (*Session, error) {
	if n := len(handshakeHash); n < 1 || n > protocol.MaxContext {
		return nil, fmt.Errorf("starting session: handshake hash of %d bytes, want 1..%d", n, protocol.MaxContext)
	}
	if device.Revoked() {
		return nil, &protocol.Error{Code: protocol.CodeDeviceRevoked}
	}
	id := make([]byte, SessionIDLen)
	if _, err := io.ReadFull(s.rand, id); err != nil {
		return nil, fmt.Errorf("starting session: %w", err)
	}
	return &Session{ID: id, Binding: bytes.Clone(handshakeHash), Device: device}, nil
}

// refuse makes the *protocol.Error Challenge returns, and logs it.
func (s *Service) refuse(ctx context.Context, sess *Session, card string, code protocol.Code, cause error) *protocol.Error {
	s.log.LogAttrs(ctx, slog.LevelInfo, "challenge refused", refusal(sess, card, code, cause)...)
	return &protocol.Error{Code: code}
}

// Challenge answers a ChallengeRequest: it checks the device and the card
// (known or registered now from req.Certificate, not revoked, certificate
// valid) and stores a fresh challenge bound to the card and the session.
// A refusal is a *protocol.Error: CodeDeviceRevoked; CodeUnexpectedMessage
// for a purpose other than txn.PurposeAuth (the only one served,
// 2026-11-28); CodeCertificateNeeded when the server has no certificate
// with req.CertID for the card and req.Certificate is empty;
// CodeCertificateInvalid; CodeCardRevoked. Other errors are internal.
func (s *Service) Challenge(ctx context.Context, sess *Session, req *protocol.ChallengeRequest) (*protocol.Challenge, error) {
	number := string(req.CardNumber)
	if req.Purpose != txn.PurposeAuth {
		return nil, s.refuse(ctx, sess, number, protocol.CodeUnexpectedMessage, fmt.Errorf("purpose %v", req.Purpose))
	}
	now := s.now()
	if _, code, err := s.checkCard(ctx, sess, number, req.CertID, req.Certificate, now); err != nil {
		return nil, fmt.Errorf("issuing challenge: %w", err)
	} else if code != protocol.CodeOK {
		return nil, s.refuse(ctx, sess, number, code, nil)
	}
	pending, err := s.store.PendingAuthRequests(ctx, number, now)
	if err != nil {
		return nil, fmt.Errorf("issuing challenge: %w", err)
	}
	cvms := s.cvms
	if len(pending) > 0 {
		if cvms, err = s.requestCVMs(ctx, pending[0]); err != nil {
			return nil, fmt.Errorf("issuing challenge: %w", err)
		}
	}
	value := make([]byte, protocol.ChallengeLen)
	if _, err := io.ReadFull(s.rand, value); err != nil {
		return nil, fmt.Errorf("issuing challenge: %w", err)
	}
	err = s.store.PutChallenge(ctx, store.Challenge{
		Value:   value,
		Card:    number,
		Session: sess.ID,
		Purpose: uint8(req.Purpose),
		Expires: now.Add(s.ttl),
	})
	if err != nil {
		return nil, fmt.Errorf("issuing challenge: %w", err)
	}
	sess.remember(number)
	return &protocol.Challenge{Challenge: value, TTL: s.ttlSecs, Context: sess.Binding, CVMs: cvms}, nil
}

// checkDevice reads the session's device again, so that a revocation takes
// effect on open sessions.
func (s *Service) checkDevice(ctx context.Context, sess *Session) (protocol.Code, error) {
	d, err := s.store.Device(ctx, sess.Device.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return protocol.CodeDeviceRevoked, nil
	case err != nil:
		return 0, fmt.Errorf("checking device: %w", err)
	case d.Revoked() || !bytes.Equal(d.StaticKey, sess.Device.StaticKey):
		return protocol.CodeDeviceRevoked, nil
	}
	return protocol.CodeOK, nil
}

// card returns the card a device names by number and certID,
// registering the certificate cert it brings when the server has none
// with certID.
func (s *Service) card(ctx context.Context, sess *Session, number string, certID, cert []byte, now time.Time) (store.Card, protocol.Code, error) {
	c, err := s.store.Card(ctx, number)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return store.Card{}, 0, err
	case c.Revoked():
		return store.Card{}, protocol.CodeCardRevoked, nil
	case c.Cloned():
		// A card whose counter once went backwards stays refused until
		// the operator revokes or reissues it: which of the two copies is
		// the holder's cannot be told from here.
		return store.Card{}, protocol.CodeCounterNotIncreasing, nil
	case bytes.Equal(protocol.CertID(c.Cert), certID):
		return c, protocol.CodeOK, nil
	}
	if len(cert) == 0 {
		return store.Card{}, protocol.CodeCertificateNeeded, nil
	}
	// Check the new certificate before storing it.
	if _, code, err := s.checkCert(ctx, store.Card{Number: number, Cert: cert}, now); err != nil || code != protocol.CodeOK {
		return store.Card{}, code, err
	}
	c = store.Card{Number: number, Cert: cert, IssuerKeyID: s.certs.ca.SubjectKeyId}
	if err := s.store.PutCard(ctx, c, now); err != nil {
		return store.Card{}, 0, err
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "card certificate registered",
		slog.String("card", mask(number)), slog.String("device", sess.Device.ID))
	return c, protocol.CodeOK, nil
}

// checkCert checks card.Cert for card.Number now: CodeCertificateInvalid,
// CodeCardRevoked (on the CRL) or an internal error (no usable CRL).
func (s *Service) checkCert(ctx context.Context, card store.Card, now time.Time) (*certEntry, protocol.Code, error) {
	var crl *x509.RevocationList
	if s.crl != nil {
		crl = s.crl()
	}
	e, err := s.certs.check(card.Cert, card.Number, s.crl != nil, crl, now)
	switch {
	case err == nil:
		return e, protocol.CodeOK, nil
	case errors.Is(err, errCertRevoked):
		s.log.LogAttrs(ctx, slog.LevelInfo, "card on the CRL", slog.String("card", mask(card.Number)), slog.Any("cause", err))
		return nil, protocol.CodeCardRevoked, nil
	case errors.Is(err, errCertInvalid):
		s.log.LogAttrs(ctx, slog.LevelInfo, "card certificate refused", slog.String("card", mask(card.Number)), slog.Any("cause", err))
		return nil, protocol.CodeCertificateInvalid, nil
	}
	return nil, 0, fmt.Errorf("checking card certificate: %w", err)
}

// requestCVMs returns the methods a pending request accepts: its policy,
// else its relying party's, else the server default.
func (s *Service) requestCVMs(ctx context.Context, r store.AuthRequest) (protocol.CVMSet, error) {
	p := r.Policy
	if p == "" {
		rp, err := s.store.RelyingParty(ctx, r.RelyingParty)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, fmt.Errorf("reading policy of request %s: %w", r.ID, err)
		}
		p = rp.Policy
	}
	set, err := ParsePolicy(p)
	if err != nil {
		return 0, fmt.Errorf("reading policy of request %s: %w", r.ID, err)
	}
	if set == 0 {
		set = s.cvms
	}
	return set, nil
}

// Approval is the Result Verify stores, as JSON, in the relying-party
// request it approves.
type Approval struct {
	Card    string    `json:"card"`    // the card number
	CVM     string    `json:"cvm"`     // how the holder was verified: a ParsePolicy word
	Counter uint32    `json:"counter"` // the card's counter in the signature
	Device  string    `json:"device"`  // store.Device.ID of the device that relayed it
	At      time.Time `json:"at"`      // when the server verified it (UTC)
	// MatchedBy is "server" for a biometric the server matched
	// (Config.ServerBiometric), empty when the card verified the holder.
	MatchedBy string `json:"matched_by,omitempty"`
}

// result makes a refusal AuthResult and logs it.
func (s *Service) result(ctx context.Context, sess *Session, card string, code protocol.Code, cause error) *protocol.AuthResult {
	s.log.LogAttrs(ctx, slog.LevelInfo, "authentication refused", refusal(sess, card, code, cause)...)
	return &protocol.AuthResult{Code: code}
}

// refusal returns the log attributes of a refusal; the card number is
// masked.
func refusal(sess *Session, card string, code protocol.Code, cause error) []slog.Attr {
	a := []slog.Attr{slog.String("code", code.String()), slog.String("device", sess.Device.ID)}
	if card != "" {
		a = append(a, slog.String("card", mask(card)))
	}
	if cause != nil {
		a = append(a, slog.String("cause", cause.Error()))
	}
	return a
}

// Verify answers an AuthResponse. It always returns an AuthResult, whose
// Code says the outcome, unless the failure is internal (then an error).
// The checks, in order: the device is not revoked (CodeDeviceRevoked); the
// challenge is taken from the store, single use, issued in this session
// for a card it asked about (CodeChallengeUnknown), not expired
// (CodeChallengeExpired); the card is known (CodeCardUnknown) and not
// revoked in the store or on the CRL (CodeCardRevoked); its certificate is
// valid now (CodeCertificateInvalid); the signature is the card's over
// txn.Envelope{PurposeAuth, card, counter, CVM, wallet.AuthData(challenge,
// Binding)} (CodeSignatureInvalid); the counter grows
// (CodeCounterNotIncreasing; the store flags the card as possibly cloned);
// the signed CVM is accepted by the policy of the card's oldest pending
// relying-party request, else DefaultCVMs (CodeCVMNotAccepted, also for a
// PIN block under another CVM); for online PIN, the PIN block opens under
// pinblock.SessionKey(Binding) and its PIN matches (CodePINIncorrect with
// TriesLeft, CodePINBlocked).
//
// A biometric template in the response asks for server-side matching. With
// Config.ServerBiometric off it is refused (CodeCVMNotAccepted); on, the
// card must have signed CVM none (else CodeCVMNotAccepted), the policy must
// accept biometric, the card must have an enrolled template
// (CodeCVMNotAccepted) and the template must be BiometricSize bytes
// (CodeMalformed, no try taken); then a try is taken before the comparison
// and a mismatch is CodeBiometricMismatch with TriesLeft (0 also when
// locked). The method accepted is then CVM biometric: the policy's
// biometric method accepts a template the card matched and one the server
// matched alike, and the Approval says which (MatchedBy).
//
// On success it finishes the oldest pending request of the card that
// accepts the CVM (status approved, Result an Approval in JSON), calls
// Notify with it, and returns CodeOK with the CVM accepted.
func (s *Service) Verify(ctx context.Context, sess *Session, resp *protocol.AuthResponse) (*protocol.AuthResult, error) {
	now := s.now()
	if code, err := s.checkDevice(ctx, sess); err != nil {
		return nil, fmt.Errorf("verifying authentication: %w", err)
	} else if code != protocol.CodeOK {
		return s.result(ctx, sess, "", code, nil), nil
	}

	ch, err := s.take(ctx, sess, resp.Challenge, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.result(ctx, sess, "", protocol.CodeChallengeUnknown, nil), nil
	case errors.Is(err, store.ErrExpired):
		return s.result(ctx, sess, ch.Card, protocol.CodeChallengeExpired, nil), nil
	case err != nil:
		return nil, fmt.Errorf("verifying authentication: %w", err)
	case ch.Purpose != uint8(txn.PurposeAuth):
		return s.result(ctx, sess, ch.Card, protocol.CodeChallengeUnknown, fmt.Errorf("challenge for purpose %v", txn.Purpose(ch.Purpose))), nil
	}

	pending, err := s.store.PendingAuthRequests(ctx, ch.Card, now)
	if err != nil {
		return nil, fmt.Errorf("verifying authentication: %w", err)
	}
	cvms := s.cvms
	if len(pending) > 0 {
		if cvms, err = s.requestCVMs(ctx, pending[0]); err != nil {
			return nil, fmt.Errorf("verifying authentication: %w", err)
		}
	}
	payload, err := wallet.AuthData(ch.Value, sess.Binding)
	if err != nil {
		return nil, fmt.Errorf("verifying authentication: %w", err)
	}
	env := txn.Envelope{Purpose: txn.PurposeAuth, CardNumber: ch.Card, Counter: resp.Counter, CVM: resp.CVM, Payload: payload}
	v, err := s.verifySignature(ctx, sess, &env, resp.Signature, resp.PINBlock, resp.Biometric, cvms, now)
	if err != nil {
		return nil, fmt.Errorf("verifying authentication: %w", err)
	}
	if v.Code != protocol.CodeOK {
		r := s.result(ctx, sess, ch.Card, v.Code, v.Cause)
		r.TriesLeft = v.TriesLeft
		return r, nil
	}
	cvm, matchedBy := v.CVM, v.MatchedBy

	if err := s.finish(ctx, sess, ch.Card, cvm, matchedBy, resp.Counter, pending, now); err != nil {
		return nil, fmt.Errorf("verifying authentication: %w", err)
	}
	attrs := []slog.Attr{slog.String("card", mask(ch.Card)), slog.String("cvm", cvm.String()),
		slog.Uint64("counter", uint64(resp.Counter)), slog.String("device", sess.Device.ID)}
	if matchedBy != "" {
		attrs = append(attrs, slog.String("matched_by", matchedBy))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "card authenticated", attrs...)
	return &protocol.AuthResult{Code: protocol.CodeOK, CVM: cvm}, nil
}

// take consumes the challenge value for one of the cards the session asked
// about.
func (s *Service) take(ctx context.Context, sess *Session, value []byte, now time.Time) (store.Challenge, error) {
	for _, card := range sess.challenged() {
		ch, err := s.store.TakeChallenge(ctx, value, card, sess.ID, now)
		if !errors.Is(err, store.ErrNotFound) {
			if errors.Is(err, store.ErrExpired) {
				ch.Card = card
			}
			return ch, err
		}
	}
	return store.Challenge{}, store.ErrNotFound
}

// finish approves the oldest pending request that accepts cvm and
// notifies its party. Requests finished meanwhile by another instance are
// skipped.
func (s *Service) finish(ctx context.Context, sess *Session, card string, cvm txn.CVM, matchedBy string, counter uint32, pending []store.AuthRequest, now time.Time) error {
	if len(pending) == 0 {
		return nil
	}
	result, err := json.Marshal(Approval{
		Card:      card,
		CVM:       cvmName(cvm),
		Counter:   counter,
		Device:    sess.Device.ID,
		At:        now.UTC(),
		MatchedBy: matchedBy,
	})
	if err != nil {
		return fmt.Errorf("encoding approval: %w", err)
	}
	for i, r := range pending {
		if i > 0 {
			cvms, err := s.requestCVMs(ctx, r)
			if err != nil {
				return err
			}
			if !cvms.Has(cvm) {
				continue
			}
		}
		err := s.store.FinishAuthRequest(ctx, r.ID, store.AuthApproved, result, now)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("finishing request %s: %w", r.ID, err)
		}
		r.Status, r.Result, r.Updated = store.AuthApproved, result, now
		if s.notify != nil {
			s.notify(ctx, r)
		}
		return nil
	}
	return nil
}
