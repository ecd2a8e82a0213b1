package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/pinblock"
	"cardlink/internal/protocol"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// testStart is the test clock's first reading: within the validity of
// wallettest's CA (2026..2036) and card certificates (2026..2031).
var testStart = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// testPINIterations makes online PIN records cheap to check in tests.
const testPINIterations = 1000

// rig is one card, one store, one device and one Service over them.
type rig struct {
	t      *testing.T
	ctx    context.Context
	env    *wallettest.Env
	st     store.Store
	path   string // of the SQLite database
	clock  *servertest.Clock
	svc    *Service
	dev    store.Device
	cfg    Config
	notify chan store.AuthRequest
}

// newRig opens a real SQLite store in t.TempDir(), personalizes a
// wallettest card and registers a device; change makes the Service's
// Config differ.
func newRig(t *testing.T, change func(*Config)) *rig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth.db")
	r := newRigOn(t, servertest.OpenSQLite(t, path), change)
	r.path = path
	return r
}

// newRigOn is newRig over the store st.
func newRigOn(t *testing.T, st store.Store, change func(*Config)) *rig {
	t.Helper()
	r := &rig{t: t, ctx: context.Background(), st: st, clock: servertest.NewClock(testStart), notify: make(chan store.AuthRequest, 16)}
	r.env = wallettest.New(t, wallettest.Options{})
	r.dev = store.Device{ID: "dev-1", StaticKey: randBytes(t, 32), Name: "test device"}
	if err := st.AddDevice(r.ctx, r.dev, testStart); err != nil {
		t.Fatalf("AddDevice = %v", err)
	}
	r.cfg = Config{
		Store:  st,
		CA:     r.env.CA,
		Now:    r.clock.Now,
		Notify: func(_ context.Context, req store.AuthRequest) { r.notify <- req },
	}
	if change != nil {
		change(&r.cfg)
	}
	var err error
	r.svc, err = New(r.cfg)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return r
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// session starts a session for the rig's device with a random binding, as
// a channel handshake hash would be.
func (r *rig) session() *Session {
	r.t.Helper()
	sess, err := r.svc.NewSession(r.dev, randBytes(r.t, 32))
	if err != nil {
		r.t.Fatalf("NewSession = %v", err)
	}
	return sess
}

// wire sends m through Encode and Decode, as the channel would.
func wire[M protocol.Message](t testing.TB, m M) M {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatalf("Encode(%v) = %v", m.Type(), err)
	}
	d, err := protocol.Decode(b)
	if err != nil {
		t.Fatalf("Decode(%v) = %v", m.Type(), err)
	}
	return d.(M)
}

// challengeRequest is the card's ChallengeRequest, with the certificate
// when withCert.
func challengeRequest(env *wallettest.Env, withCert bool) *protocol.ChallengeRequest {
	req := &protocol.ChallengeRequest{
		CardNumber: protocol.CardNumber(env.CardNumber),
		CertID:     protocol.CertID(env.CardCert.Raw),
		Purpose:    txn.PurposeAuth,
	}
	if withCert {
		req.Certificate = env.CardCert.Raw
	}
	return req
}

// challenge asks a challenge for env's card in sess, sending the
// certificate along; it fails the test on any error.
func (r *rig) challenge(svc *Service, sess *Session, env *wallettest.Env) *protocol.Challenge {
	r.t.Helper()
	ch, err := svc.Challenge(r.ctx, sess, wire(r.t, challengeRequest(env, true)))
	if err != nil {
		r.t.Fatalf("Challenge = %v", err)
	}
	return wire(r.t, ch)
}

// How the holder is verified before the card signs.
type holder int

const (
	holderNone holder = iota
	holderOfflinePIN
	holderBiometric
	holderOnlinePIN
)

// answer has env's card answer ch, verifying the holder as h (online PIN:
// pin, encrypted under sess's binding).
func (r *rig) answer(env *wallettest.Env, ch *protocol.Challenge, h holder, pin string) *protocol.AuthResponse {
	r.t.Helper()
	var sig wallet.Signature
	var err error
	switch h {
	case holderOfflinePIN:
		if err := env.Client.VerifyPIN(r.ctx, env.PIN); err != nil {
			r.t.Fatalf("VerifyPIN = %v", err)
		}
	case holderBiometric:
		if err := env.Client.VerifyBiometric(r.ctx, env.BioTemplate); err != nil {
			r.t.Fatalf("VerifyBiometric = %v", err)
		}
	}
	if h == holderOnlinePIN {
		sig, err = env.Client.AuthenticateOnlinePIN(r.ctx, ch.Challenge, ch.Context)
	} else {
		sig, err = env.Client.Authenticate(r.ctx, ch.Challenge, ch.Context)
	}
	if err != nil {
		r.t.Fatalf("Authenticate = %v", err)
	}
	resp := &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig}
	if h == holderOnlinePIN {
		block, err := pinblock.Encrypt(pinblock.SessionKey(ch.Context), pin, env.CardNumber, nil)
		if err != nil {
			r.t.Fatalf("pinblock.Encrypt = %v", err)
		}
		resp.PINBlock = block[:]
	}
	return wire(r.t, resp)
}

// verify calls Verify and fails the test on an internal error.
func (r *rig) verify(svc *Service, sess *Session, resp *protocol.AuthResponse) *protocol.AuthResult {
	r.t.Helper()
	res, err := svc.Verify(r.ctx, sess, resp)
	if err != nil {
		r.t.Fatalf("Verify = %v", err)
	}
	return wire(r.t, res)
}

// setPIN registers env's card and gives it an online PIN with maxTries
// tries.
func (r *rig) setPIN(env *wallettest.Env, pin string, maxTries int) {
	r.t.Helper()
	c := store.Card{Number: env.CardNumber, Cert: env.CardCert.Raw, IssuerKeyID: env.CA.SubjectKeyId}
	if err := r.st.PutCard(r.ctx, c, r.clock.Now()); err != nil {
		r.t.Fatalf("PutCard = %v", err)
	}
	salt := randBytes(r.t, PINSaltSize)
	hash, err := hashPIN(pin, salt, testPINIterations)
	if err != nil {
		r.t.Fatalf("hashPIN = %v", err)
	}
	p := store.PIN{Card: env.CardNumber, Hash: hash, Salt: salt, Params: paramsPrefix + "1000", MaxTries: maxTries}
	if err := r.st.SetPIN(r.ctx, p); err != nil {
		r.t.Fatalf("SetPIN = %v", err)
	}
}

// secondCard personalizes another card, numbered number, whose certificate
// r's CA issues.
func (r *rig) secondCard(number string) *wallettest.Env {
	r.t.Helper()
	env := wallettest.New(r.t, wallettest.Options{Blank: true, CardNumber: number})
	ca := r.env
	env.CA, env.CAKey, env.OpsKey, env.OpsKeyID = ca.CA, ca.CAKey, ca.OpsKey, ca.OpsKeyID
	issue := func(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
		cert := issueCert(r.t, ca, pub, number, ca.CardCert.NotAfter)
		env.CardCert = cert
		return cert, nil
	}
	p := wallet.Personalization{
		CardNumber:   number,
		PIN:          env.PIN,
		PUK:          env.PUK,
		BioTemplate:  env.BioTemplate,
		Currency:     env.Options.Currency,
		MaxBalance:   env.Options.MaxBalance,
		IssuerKeyID:  ca.CA.SubjectKeyId,
		IssuerSigner: &ca.OpsKey.PublicKey,
		OpsKeyID:     ca.OpsKeyID,
	}
	if err := env.Client.Personalize(r.ctx, p, issue); err != nil {
		r.t.Fatalf("Personalize = %v", err)
	}
	return env
}

// issueCert makes a card certificate for pub and number, signed by env's
// CA, valid until notAfter.
func issueCert(t testing.TB, env *wallettest.Env, pub *ecdsa.PublicKey, number string, notAfter time.Time) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: number, SerialNumber: number},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, env.CA, pub, env.CAKey)
	if err != nil {
		t.Fatalf("CreateCertificate = %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate = %v", err)
	}
	return cert
}

func checkResult(t *testing.T, what string, got *protocol.AuthResult, want protocol.Code) {
	t.Helper()
	if got.Code != want {
		t.Errorf("%s: Verify().Code = %v, want %v", what, got.Code, want)
	}
}

func protocolCode(err error) protocol.Code {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return protocol.Code(65535)
}

func TestNew(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	st := servertest.OpenSQLite(t, filepath.Join(t.TempDir(), "auth.db"))
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Store: st, CA: env.CA}, true},
		{"no store", Config{CA: env.CA}, false},
		{"no CA", Config{Store: st}, false},
		{"CA not a CA", Config{Store: st, CA: env.CardCert}, false},
		{"TTL under a second", Config{Store: st, CA: env.CA, ChallengeTTL: time.Millisecond}, false},
		{"unknown default method", Config{Store: st, CA: env.CA, DefaultCVMs: 1 << 6}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Errorf("New(%s) = %v, want ok %v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestNewSession(t *testing.T) {
	r := newRig(t, nil)
	revoked := r.dev
	revoked.RevokedAt = testStart
	tests := []struct {
		name string
		dev  store.Device
		hash []byte
		code protocol.Code // 0: no error wanted; 65535: a plain error
	}{
		{"ok", r.dev, make([]byte, 32), 0},
		{"empty hash", r.dev, nil, 65535},
		{"long hash", r.dev, make([]byte, protocol.MaxContext+1), 65535},
		{"revoked device", revoked, make([]byte, 32), protocol.CodeDeviceRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sess, err := r.svc.NewSession(tt.dev, tt.hash)
			if tt.code == 0 {
				if err != nil || len(sess.ID) != SessionIDLen || !bytes.Equal(sess.Binding, tt.hash) {
					t.Fatalf("NewSession = %+v, %v; want a session with a %d-byte ID", sess, err, SessionIDLen)
				}
				return
			}
			if got := protocolCode(err); got != tt.code {
				t.Errorf("NewSession error = %v (code %v), want code %v", err, got, tt.code)
			}
		})
	}
}

// TestAuthenticate runs a whole authentication for each way of verifying
// the holder, and checks what the store keeps.
func TestAuthenticate(t *testing.T) {
	tests := []struct {
		name   string
		holder holder
		want   txn.CVM
	}{
		{"offline PIN", holderOfflinePIN, txn.CVMOfflinePIN},
		{"biometric", holderBiometric, txn.CVMBiometric},
		{"online PIN", holderOnlinePIN, txn.CVMOnlinePIN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil)
			sess := r.session()
			// The first request names the card only: the server asks for
			// the certificate.
			_, err := r.svc.Challenge(r.ctx, sess, challengeRequest(r.env, false))
			if got := protocolCode(err); got != protocol.CodeCertificateNeeded {
				t.Fatalf("Challenge(no certificate) error = %v, want code %v", err, protocol.CodeCertificateNeeded)
			}
			ch := r.challenge(r.svc, sess, r.env)
			r.setPIN(r.env, "246810", 3)
			if !bytes.Equal(ch.Context, sess.Binding) || ch.TTL != 60 || ch.CVMs != DefaultCVMs {
				t.Errorf("Challenge = {Context %x, TTL %d, CVMs %#x}, want {%x, 60, %#x}", ch.Context, ch.TTL, ch.CVMs, sess.Binding, DefaultCVMs)
			}
			resp := r.answer(r.env, ch, tt.holder, "246810")
			res := r.verify(r.svc, sess, resp)
			if res.Code != protocol.CodeOK || res.CVM != tt.want {
				t.Fatalf("Verify = {%v, %v}, want {ok, %v}", res.Code, res.CVM, tt.want)
			}
			card, err := r.st.Card(r.ctx, r.env.CardNumber)
			if err != nil || card.Counter != resp.Counter || !bytes.Equal(card.Cert, r.env.CardCert.Raw) {
				t.Errorf("Card() = {Counter %d, cert stored %v}, %v; want {%d, true}", card.Counter, bytes.Equal(card.Cert, r.env.CardCert.Raw), err, resp.Counter)
			}
			// Once known, the certificate is not needed again.
			if _, err := r.svc.Challenge(r.ctx, sess, challengeRequest(r.env, false)); err != nil {
				t.Errorf("Challenge(known card, no certificate) = %v, want a challenge", err)
			}
		})
	}
}

// TestCertificates checks what Challenge makes of the certificate a
// device sends.
func TestCertificates(t *testing.T) {
	r := newRig(t, nil)
	other := wallettest.New(t, wallettest.Options{}) // same number, another CA
	expired := issueCert(t, r.env, r.env.CardKey(), r.env.CardNumber, testStart.Add(-time.Hour))
	wrongNumber := issueCert(t, r.env, r.env.CardKey(), "4999000000000021", r.env.CardCert.NotAfter)
	tests := []struct {
		name string
		cert []byte
		want protocol.Code
	}{
		{"issued by the CA", r.env.CardCert.Raw, protocol.CodeOK},
		{"another CA", other.CardCert.Raw, protocol.CodeCertificateInvalid},
		{"expired", expired.Raw, protocol.CodeCertificateInvalid},
		{"another card number", wrongNumber.Raw, protocol.CodeCertificateInvalid},
		{"the CA itself", r.env.CA.Raw, protocol.CodeCertificateInvalid},
		{"not a certificate", []byte("not DER"), protocol.CodeCertificateInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &protocol.ChallengeRequest{
				CardNumber:  protocol.CardNumber(r.env.CardNumber),
				CertID:      protocol.CertID(tt.cert),
				Purpose:     txn.PurposeAuth,
				Certificate: tt.cert,
			}
			_, err := r.svc.Challenge(r.ctx, r.session(), req)
			got := protocol.CodeOK
			if err != nil {
				got = protocolCode(err)
			}
			if got != tt.want {
				t.Errorf("Challenge(%s) error = %v, want code %v", tt.name, err, tt.want)
			}
		})
	}
	// Only the good certificate was stored.
	card, err := r.st.Card(r.ctx, r.env.CardNumber)
	if err != nil || !bytes.Equal(card.Cert, r.env.CardCert.Raw) {
		t.Errorf("Card() = %v; stored certificate is the good one: %v", err, bytes.Equal(card.Cert, r.env.CardCert.Raw))
	}
}

// TestAttacks plays every attack of issue 3 against the service: each
// case builds a response the way an attacker could and checks the code.
func TestAttacks(t *testing.T) {
	tests := []struct {
		name string
		// run plays the attack on a fresh rig and returns the result.
		run  func(r *rig) *protocol.AuthResult
		want protocol.Code
	}{
		{"honest", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			return r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, ""))
		}, protocol.CodeOK},
		{"replayed response", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			checkResult(r.t, "first answer", r.verify(r.svc, sess, resp), protocol.CodeOK)
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeChallengeUnknown},
		{"replayed response in a new session", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			checkResult(r.t, "first answer", r.verify(r.svc, sess, resp), protocol.CodeOK)
			sess2 := r.session()
			r.challenge(r.svc, sess2, r.env)
			return r.verify(r.svc, sess2, resp)
		}, protocol.CodeChallengeUnknown},
		{"expired challenge", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			r.clock.Add(DefaultChallengeTTL)
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeChallengeExpired},
		{"challenge just before expiry", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			r.clock.Add(DefaultChallengeTTL - time.Microsecond)
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeOK},
		{"expired challenge is consumed", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			r.clock.Add(time.Hour)
			checkResult(r.t, "late answer", r.verify(r.svc, sess, resp), protocol.CodeChallengeExpired)
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeChallengeUnknown},
		{"challenge from another session", func(r *rig) *protocol.AuthResult {
			a, b := r.session(), r.session()
			ch := r.challenge(r.svc, a, r.env)
			r.challenge(r.svc, b, r.env) // b asked about the card too
			ch.Context = b.Binding       // and the card signs b's binding
			return r.verify(r.svc, b, r.answer(r.env, ch, holderOfflinePIN, ""))
		}, protocol.CodeChallengeUnknown},
		{"challenge from another session that never asked", func(r *rig) *protocol.AuthResult {
			a, b := r.session(), r.session()
			resp := r.answer(r.env, r.challenge(r.svc, a, r.env), holderOfflinePIN, "")
			return r.verify(r.svc, b, resp)
		}, protocol.CodeChallengeUnknown},
		{"challenge of another card", func(r *rig) *protocol.AuthResult {
			card2 := r.secondCard("4999000000000021")
			sess := r.session()
			ch1 := r.challenge(r.svc, sess, r.env)
			r.challenge(r.svc, sess, card2)
			// card 2 answers the challenge issued for card 1.
			return r.verify(r.svc, sess, r.answer(card2, ch1, holderOfflinePIN, ""))
		}, protocol.CodeSignatureInvalid},
		{"signature bound to another channel", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			ch := r.challenge(r.svc, sess, r.env)
			ch.Context = randBytes(r.t, 32) // a relay: the card signs another channel's binding
			return r.verify(r.svc, sess, r.answer(r.env, ch, holderOfflinePIN, ""))
		}, protocol.CodeSignatureInvalid},
		{"transaction signature as authentication", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			ch := r.challenge(r.svc, sess, r.env)
			canonical, err := r.env.Transaction(1234, 1).Encode()
			if err != nil {
				r.t.Fatalf("Encode = %v", err)
			}
			if err := r.env.Client.VerifyPIN(r.ctx, r.env.PIN); err != nil {
				r.t.Fatalf("VerifyPIN = %v", err)
			}
			sig, err := r.env.Client.SignTransaction(r.ctx, canonical, false)
			if err != nil {
				r.t.Fatalf("SignTransaction = %v", err)
			}
			return r.verify(r.svc, sess, &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig})
		}, protocol.CodeSignatureInvalid},
		{"raised counter", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			resp.Counter += 100
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeSignatureInvalid},
		{"claimed PIN the card did not check", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderNone, "")
			resp.CVM = txn.CVMOfflinePIN
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeSignatureInvalid},
		{"no holder verification", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			return r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderNone, ""))
		}, protocol.CodeCVMNotAccepted},
		{"wrong offline PIN", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			ch := r.challenge(r.svc, sess, r.env)
			if err := r.env.Client.VerifyPIN(r.ctx, "9999"); err == nil {
				r.t.Fatalf("VerifyPIN(wrong) = nil, want the card's refusal")
			}
			// The device has the card sign anyway: CVM none.
			return r.verify(r.svc, sess, r.answer(r.env, ch, holderNone, ""))
		}, protocol.CodeCVMNotAccepted},
		{"card revoked in the store", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			if err := r.st.RevokeCard(r.ctx, r.env.CardNumber, testStart); err != nil {
				r.t.Fatalf("RevokeCard = %v", err)
			}
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeCardRevoked},
		{"device revoked", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
			if err := r.st.RevokeDevice(r.ctx, r.dev.ID, testStart); err != nil {
				r.t.Fatalf("RevokeDevice = %v", err)
			}
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeDeviceRevoked},
		{"cloned card", func(r *rig) *protocol.AuthResult {
			clone := r.env.Fork(r.t, r.env.Snapshot())
			sess := r.session()
			checkResult(r.t, "original", r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")), protocol.CodeOK)
			res := r.verify(r.svc, sess, r.answer(clone, r.challenge(r.svc, sess, clone), holderOfflinePIN, ""))
			card, err := r.st.Card(r.ctx, r.env.CardNumber)
			if err != nil || !card.Cloned() {
				r.t.Errorf("after the clone: Card().Cloned() = %v, %v; want true", card.Cloned(), err)
			}
			// A flagged card stays refused, even the original with a
			// higher counter, until the operator acts.
			sess2 := r.session()
			if _, err := r.svc.Challenge(r.ctx, sess2, wire(r.t, challengeRequest(r.env, true))); err == nil {
				r.t.Errorf("Challenge for a flagged card = nil error, want %v", protocol.CodeCounterNotIncreasing)
			}
			return res
		}, protocol.CodeCounterNotIncreasing},
		{"PIN block without online PIN", func(r *rig) *protocol.AuthResult {
			r.setPIN(r.env, "246810", 3)
			sess := r.session()
			ch := r.challenge(r.svc, sess, r.env)
			resp := r.answer(r.env, ch, holderOfflinePIN, "")
			block, _ := pinblock.Encrypt(pinblock.SessionKey(sess.Binding), "246810", r.env.CardNumber, nil)
			resp.PINBlock = block[:]
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeCVMNotAccepted},
		{"online PIN without PIN block", func(r *rig) *protocol.AuthResult {
			r.setPIN(r.env, "246810", 3)
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOnlinePIN, "246810")
			resp.PINBlock = nil
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeCVMNotAccepted},
		{"online PIN for a card without one", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			return r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOnlinePIN, "246810"))
		}, protocol.CodeCVMNotAccepted},
		{"server-side biometric", func(r *rig) *protocol.AuthResult {
			sess := r.session()
			resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderBiometric, "")
			resp.Biometric = r.env.BioTemplate
			return r.verify(r.svc, sess, resp)
		}, protocol.CodeCVMNotAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil)
			if got := tt.run(r); got.Code != tt.want {
				t.Errorf("Verify(%s).Code = %v, want %v", tt.name, got.Code, tt.want)
			}
		})
	}
}

// TestChallengeRefusals checks Challenge's refusals.
func TestChallengeRefusals(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *rig, req *protocol.ChallengeRequest)
		want  protocol.Code
	}{
		{"card revoked", func(r *rig, _ *protocol.ChallengeRequest) {
			if err := r.st.RevokeCard(r.ctx, r.env.CardNumber, testStart); err != nil {
				r.t.Fatalf("RevokeCard = %v", err)
			}
		}, protocol.CodeCardRevoked},
		{"device revoked", func(r *rig, _ *protocol.ChallengeRequest) {
			if err := r.st.RevokeDevice(r.ctx, r.dev.ID, testStart); err != nil {
				r.t.Fatalf("RevokeDevice = %v", err)
			}
		}, protocol.CodeDeviceRevoked},
		{"transaction purpose", func(_ *rig, req *protocol.ChallengeRequest) {
			req.Purpose = txn.PurposeTransaction
		}, protocol.CodeUnexpectedMessage},
		{"unknown certificate id", func(_ *rig, req *protocol.ChallengeRequest) {
			req.CertID = make([]byte, protocol.CertIDLen)
		}, protocol.CodeCertificateNeeded},
		{"certificate expired since", func(r *rig, _ *protocol.ChallengeRequest) {
			r.clock.Add(6 * 365 * 24 * time.Hour)
		}, protocol.CodeCertificateInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil)
			sess := r.session()
			r.challenge(r.svc, sess, r.env) // registers the card
			req := challengeRequest(r.env, false)
			tt.setup(r, req)
			_, err := r.svc.Challenge(r.ctx, sess, req)
			if got := protocolCode(err); got != tt.want {
				t.Errorf("Challenge(%s) error = %v, want code %v", tt.name, err, tt.want)
			}
		})
	}
}

// TestCRL checks revocation by the issuer's CRL, and that the service
// fails closed without a fresh one.
func TestCRL(t *testing.T) {
	makeCRL := func(r *rig, next time.Time, serials ...*big.Int) *x509.RevocationList {
		tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: testStart.Add(-time.Hour), NextUpdate: next}
		for _, s := range serials {
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: testStart.Add(-time.Hour)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, r.env.CA, r.env.CAKey)
		if err != nil {
			r.t.Fatalf("CreateRevocationList = %v", err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			r.t.Fatalf("ParseRevocationList = %v", err)
		}
		return crl
	}
	tests := []struct {
		name string
		crl  func(r *rig) *x509.RevocationList
		want protocol.Code // 65535: an internal error
	}{
		{"fresh, card not on it", func(r *rig) *x509.RevocationList {
			return makeCRL(r, testStart.Add(time.Hour), big.NewInt(99))
		}, protocol.CodeOK},
		{"card on it", func(r *rig) *x509.RevocationList {
			return makeCRL(r, testStart.Add(time.Hour), big.NewInt(99), r.env.CardCert.SerialNumber)
		}, protocol.CodeCardRevoked},
		{"card on an out-of-date one", func(r *rig) *x509.RevocationList {
			return makeCRL(r, testStart.Add(-time.Minute), r.env.CardCert.SerialNumber)
		}, 65535},
		{"out of date", func(r *rig) *x509.RevocationList {
			return makeCRL(r, testStart.Add(-time.Minute))
		}, 65535},
		{"none", func(r *rig) *x509.RevocationList { return nil }, 65535},
		{"another CA's", func(r *rig) *x509.RevocationList {
			other := &rig{t: r.t, env: wallettest.New(r.t, wallettest.Options{})}
			return makeCRL(other, testStart.Add(time.Hour))
		}, 65535},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var crl *x509.RevocationList
			r := newRig(t, func(c *Config) {
				c.CRL = func() *x509.RevocationList { return crl }
			})
			crl = tt.crl(r)
			_, err := r.svc.Challenge(r.ctx, r.session(), challengeRequest(r.env, true))
			switch {
			case tt.want == protocol.CodeOK && err != nil:
				t.Errorf("Challenge = %v, want a challenge", err)
			case tt.want == 65535 && (err == nil || protocolCode(err) != 65535):
				t.Errorf("Challenge = %v, want an internal error", err)
			case tt.want != protocol.CodeOK && tt.want != 65535 && protocolCode(err) != tt.want:
				t.Errorf("Challenge error = %v, want code %v", err, tt.want)
			}
		})
	}
	// A card revoked after its challenge is refused at Verify too.
	t.Run("revoked between challenge and answer", func(t *testing.T) {
		var crl *x509.RevocationList
		r := newRig(t, func(c *Config) { c.CRL = func() *x509.RevocationList { return crl } })
		crl = makeCRL(r, testStart.Add(time.Hour))
		sess := r.session()
		resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
		crl = makeCRL(r, testStart.Add(time.Hour), r.env.CardCert.SerialNumber)
		checkResult(t, "after revocation", r.verify(r.svc, sess, resp), protocol.CodeCardRevoked)
	})
}

// TestOnlinePINLockout guesses wrong online PINs until the PIN locks, then
// offers the right one.
func TestOnlinePINLockout(t *testing.T) {
	r := newRig(t, nil)
	r.setPIN(r.env, "246810", 3)
	steps := []struct {
		pin       string
		want      protocol.Code
		triesLeft uint8
	}{
		{"135790", protocol.CodePINIncorrect, 2},
		{"246810", protocol.CodeOK, 0}, // a match restores the tries
		{"135790", protocol.CodePINIncorrect, 2},
		{"135790", protocol.CodePINIncorrect, 1},
		{"1111", protocol.CodePINIncorrect, 0},
		{"246810", protocol.CodePINBlocked, 0},
		{"135790", protocol.CodePINBlocked, 0},
	}
	sess := r.session()
	for i, s := range steps {
		res := r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOnlinePIN, s.pin))
		if res.Code != s.want || res.TriesLeft != s.triesLeft {
			t.Errorf("step %d: Verify(PIN %s) = {%v, tries %d}, want {%v, %d}", i, s.pin, res.Code, res.TriesLeft, s.want, s.triesLeft)
		}
	}
}

// TestOnlinePINOtherSession sends a PIN block made under another
// session's key: refused, and no try is taken.
func TestOnlinePINOtherSession(t *testing.T) {
	r := newRig(t, nil)
	r.setPIN(r.env, "246810", 3)
	sess := r.session()
	resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOnlinePIN, "246810")
	block, err := pinblock.Encrypt(pinblock.SessionKey(randBytes(t, 32)), "246810", r.env.CardNumber, nil)
	if err != nil {
		t.Fatalf("Encrypt = %v", err)
	}
	resp.PINBlock = block[:]
	res := r.verify(r.svc, sess, resp)
	if res.Code != protocol.CodePINIncorrect || res.TriesLeft != 3 {
		t.Errorf("Verify(block of another session) = {%v, tries %d}, want {%v, 3}", res.Code, res.TriesLeft, protocol.CodePINIncorrect)
	}
	if p, err := r.st.PIN(r.ctx, r.env.CardNumber); err != nil || p.Tries != 3 {
		t.Errorf("PIN().Tries = %d, %v; want 3", p.Tries, err)
	}
}

// addRequest creates a relying party (policy rpPolicy) and a pending
// request of it for the card (policy reqPolicy).
func (r *rig) addRequest(id, rpPolicy, reqPolicy string) {
	r.t.Helper()
	rp := store.RelyingParty{ID: "rp-" + id, Name: "shop", KeyHash: randBytes(r.t, 32), Policy: rpPolicy}
	if err := r.st.PutRelyingParty(r.ctx, rp, r.clock.Now()); err != nil {
		r.t.Fatalf("PutRelyingParty = %v", err)
	}
	req := store.AuthRequest{ID: id, RelyingParty: rp.ID, Card: r.env.CardNumber, Policy: reqPolicy, Expires: r.clock.Now().Add(5 * time.Minute)}
	if err := r.st.CreateAuthRequest(r.ctx, req, r.clock.Now()); err != nil {
		r.t.Fatalf("CreateAuthRequest = %v", err)
	}
	r.clock.Add(time.Second) // so that requests have an order
}

// TestRelyingParty checks that the pending request's policy governs, and
// that a success finishes the oldest request and notifies its party.
func TestRelyingParty(t *testing.T) {
	tests := []struct {
		name      string
		rpPolicy  string
		reqPolicy string
		holder    holder
		wantCVMs  protocol.CVMSet
		want      protocol.Code
	}{
		{"request policy met", "", "biometric", holderBiometric, protocol.CVMs(txn.CVMBiometric), protocol.CodeOK},
		{"request policy not met", "", "online-pin", holderOfflinePIN, protocol.CVMs(txn.CVMOnlinePIN), protocol.CodeCVMNotAccepted},
		{"party policy met", "offline-pin", "", holderOfflinePIN, protocol.CVMs(txn.CVMOfflinePIN), protocol.CodeOK},
		{"party policy not met", "biometric", "", holderOfflinePIN, protocol.CVMs(txn.CVMBiometric), protocol.CodeCVMNotAccepted},
		{"request policy wins", "biometric", "offline-pin", holderOfflinePIN, protocol.CVMs(txn.CVMOfflinePIN), protocol.CodeOK},
		{"no policy: server default", "", "", holderOfflinePIN, DefaultCVMs, protocol.CodeOK},
		{"possession only", "", "none", holderNone, protocol.CVMs(txn.CVMNone), protocol.CodeOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.addRequest("req-1", tt.rpPolicy, tt.reqPolicy)
			r.addRequest("req-2", "", "")
			sess := r.session()
			ch := r.challenge(r.svc, sess, r.env)
			if ch.CVMs != tt.wantCVMs {
				t.Errorf("Challenge().CVMs = %q, want %q", FormatPolicy(ch.CVMs), FormatPolicy(tt.wantCVMs))
			}
			resp := r.answer(r.env, ch, tt.holder, "")
			res := r.verify(r.svc, sess, resp)
			if res.Code != tt.want {
				t.Fatalf("Verify().Code = %v, want %v", res.Code, tt.want)
			}
			req1, err := r.st.AuthRequest(r.ctx, "req-1")
			if err != nil {
				t.Fatalf("AuthRequest = %v", err)
			}
			req2, err := r.st.AuthRequest(r.ctx, "req-2")
			if err != nil {
				t.Fatalf("AuthRequest = %v", err)
			}
			if req2.Status != store.AuthPending {
				t.Errorf("younger request status = %v, want pending", req2.Status)
			}
			if tt.want != protocol.CodeOK {
				if req1.Status != store.AuthPending || len(r.notify) != 0 {
					t.Errorf("after a refusal: request status = %v, notifications %d; want pending, 0", req1.Status, len(r.notify))
				}
				return
			}
			if req1.Status != store.AuthApproved {
				t.Fatalf("request status = %v, want approved", req1.Status)
			}
			var a Approval
			if err := json.Unmarshal(req1.Result, &a); err != nil {
				t.Fatalf("Result %s: %v", req1.Result, err)
			}
			want := Approval{Card: r.env.CardNumber, CVM: cvmName(resp.CVM), Counter: resp.Counter, Device: r.dev.ID, At: r.clock.Now()}
			if a != want {
				t.Errorf("Result = %+v, want %+v", a, want)
			}
			select {
			case n := <-r.notify:
				if n.ID != "req-1" || n.Status != store.AuthApproved || !bytes.Equal(n.Result, req1.Result) {
					t.Errorf("Notify(%s, %v, %s), want (req-1, approved, %s)", n.ID, n.Status, n.Result, req1.Result)
				}
			default:
				t.Errorf("Notify was not called")
			}
		})
	}
}

// TestConcurrentAnswers sends one response to Verify from several
// goroutines, over two Stores of one SQLite file: exactly one succeeds.
func TestConcurrentAnswers(t *testing.T) {
	r := newRig(t, nil)
	st2 := servertest.OpenSQLite(t, r.path)
	cfg := r.cfg
	cfg.Store = st2
	svc2, err := New(cfg)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	sess := r.session()
	resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
	const n = 4
	codes := make([]protocol.Code, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			svc := r.svc
			if i%2 == 1 {
				svc = svc2
			}
			res, err := svc.Verify(r.ctx, sess, resp)
			if err != nil {
				t.Errorf("Verify = %v", err)
				return
			}
			codes[i] = res.Code
		})
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		switch c {
		case protocol.CodeOK:
			ok++
		case protocol.CodeChallengeUnknown:
		default:
			t.Errorf("Verify().Code = %v, want ok or %v", c, protocol.CodeChallengeUnknown)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent answers succeeded (%v), want 1", ok, n, codes)
	}
}

// TestLogs checks that the service's logs name cards by their last four
// digits only and never carry a PIN.
func TestLogs(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	r := newRig(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	r.setPIN(r.env, "246810", 3)
	sess := r.session()
	checkResult(t, "wrong online PIN", r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOnlinePIN, "135790")), protocol.CodePINIncorrect)
	checkResult(t, "right online PIN", r.verify(r.svc, sess, r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOnlinePIN, "246810")), protocol.CodeOK)
	mu.Lock()
	logs := buf.String()
	mu.Unlock()
	for _, secret := range []string{r.env.CardNumber, "135790", "246810"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "0013") || !strings.Contains(logs, "authentication refused") {
		t.Errorf("logs lack the refusal of card ...0013:\n%s", logs)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestReissuedCertificate: a card whose certificate was re-issued sends
// the new one; the server replaces the old and keeps the counter.
func TestReissuedCertificate(t *testing.T) {
	r := newRig(t, nil)
	sess := r.session()
	resp := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
	checkResult(t, "with the first certificate", r.verify(r.svc, sess, resp), protocol.CodeOK)

	r.env.CardCert = issueCert(t, r.env, r.env.CardKey(), r.env.CardNumber, r.env.CardCert.NotAfter)
	_, err := r.svc.Challenge(r.ctx, sess, challengeRequest(r.env, false))
	if got := protocolCode(err); got != protocol.CodeCertificateNeeded {
		t.Fatalf("Challenge(new cert id, no certificate) error = %v, want code %v", err, protocol.CodeCertificateNeeded)
	}
	resp2 := r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
	checkResult(t, "with the new certificate", r.verify(r.svc, sess, resp2), protocol.CodeOK)
	card, err := r.st.Card(r.ctx, r.env.CardNumber)
	if err != nil || !bytes.Equal(card.Cert, r.env.CardCert.Raw) || card.Counter != resp2.Counter {
		t.Errorf("Card() = {new cert %v, Counter %d}, %v; want {true, %d}", bytes.Equal(card.Cert, r.env.CardCert.Raw), card.Counter, err, resp2.Counter)
	}
}

// TestChallengeTTL checks the lifetime a Challenge announces and enforces.
func TestChallengeTTL(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ChallengeTTL = 90 * time.Second })
	sess := r.session()
	ch := r.challenge(r.svc, sess, r.env)
	if ch.TTL != 90 {
		t.Errorf("Challenge().TTL = %d, want 90", ch.TTL)
	}
	resp := r.answer(r.env, ch, holderOfflinePIN, "")
	r.clock.Add(89 * time.Second)
	checkResult(t, "after 89 s", r.verify(r.svc, sess, resp), protocol.CodeOK)
	resp = r.answer(r.env, r.challenge(r.svc, sess, r.env), holderOfflinePIN, "")
	r.clock.Add(90 * time.Second)
	checkResult(t, "after 90 s", r.verify(r.svc, sess, resp), protocol.CodeChallengeExpired)
}

func TestSessionRemember(t *testing.T) {
	tests := []struct {
		name  string
		cards []string
		want  []string
	}{
		{"one", []string{"a"}, []string{"a"}},
		{"most recent first", []string{"a", "b", "c"}, []string{"c", "b", "a"}},
		{"again moves to front", []string{"a", "b", "c", "a"}, []string{"a", "c", "b"}},
		{"bounded", []string{"a", "b", "c", "d", "e"}, []string{"e", "d", "c", "b"}},
		{"same card", []string{"a", "a", "a"}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Session
			for _, c := range tt.cards {
				s.remember(c)
			}
			if got := s.challenged(); !slices.Equal(got, tt.want) {
				t.Errorf("remember(%q...) then challenged() = %q, want %q", tt.cards, got, tt.want)
			}
		})
	}
}
