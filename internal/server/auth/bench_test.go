package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/protocol"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// benchRig is what the Verify benchmarks share: a card, a Service over st
// and one session.
type benchRig struct {
	env  *wallettest.Env
	svc  *Service
	sess *Session
}

func newBenchRig(b *testing.B, st store.Store) *benchRig {
	b.Helper()
	ctx := context.Background()
	env := wallettest.New(b, wallettest.Options{})
	dev := store.Device{ID: "dev-1", StaticKey: randBytes(b, 32)}
	if err := st.AddDevice(ctx, dev, testStart); err != nil {
		b.Fatalf("AddDevice = %v", err)
	}
	svc, err := New(Config{Store: st, CA: env.CA, Now: func() time.Time { return testStart }})
	if err != nil {
		b.Fatalf("New = %v", err)
	}
	sess, err := svc.NewSession(dev, randBytes(b, 32))
	if err != nil {
		b.Fatalf("NewSession = %v", err)
	}
	if _, err := svc.Challenge(ctx, sess, challengeRequest(env, true)); err != nil {
		b.Fatalf("Challenge = %v", err)
	}
	return &benchRig{env: env, svc: svc, sess: sess}
}

// responses issues n challenges and has the card answer each (offline
// PIN), in order: the work before the timer starts.
func (br *benchRig) responses(b *testing.B, n int) []*protocol.AuthResponse {
	b.Helper()
	ctx := context.Background()
	out := make([]*protocol.AuthResponse, n)
	for i := range out {
		ch, err := br.svc.Challenge(ctx, br.sess, challengeRequest(br.env, false))
		if err != nil {
			b.Fatalf("Challenge = %v", err)
		}
		if err := br.env.Client.VerifyPIN(ctx, br.env.PIN); err != nil {
			b.Fatalf("VerifyPIN = %v", err)
		}
		sig, err := br.env.Client.Authenticate(ctx, ch.Challenge, ch.Context)
		if err != nil {
			b.Fatalf("Authenticate = %v", err)
		}
		out[i] = &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig}
	}
	return out
}

// run times Verify over resps and reports verifications per second.
func (br *benchRig) run(b *testing.B, resps []*protocol.AuthResponse) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		res, err := br.svc.Verify(ctx, br.sess, resps[i])
		if err != nil || res.Code != protocol.CodeOK {
			b.Fatalf("Verify = %v, %v; want ok", res, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}

// BenchmarkVerify is one authentication check through the whole
// verification path on a real SQLite store in a temporary directory: the
// device re-read, taking the challenge, the card record and its
// (cached) certificate check, the signature verification, advancing the
// counter and looking for pending relying-party requests. Issuing the
// challenges and the card's signing happen before the timer starts.
func BenchmarkVerify(b *testing.B) {
	st := servertest.OpenSQLite(b, filepath.Join(b.TempDir(), "auth.db"))
	br := newBenchRig(b, st)
	br.run(b, br.responses(b, b.N))
}

// BenchmarkVerifyPostgres is BenchmarkVerify on PostgreSQL, in a fresh
// schema of the database CARDLINK_TEST_POSTGRES names; skipped when it is
// not set.
func BenchmarkVerifyPostgres(b *testing.B) {
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		b.Skipf("%s is not set: no PostgreSQL to measure", envPostgres)
	}
	br := newBenchRig(b, openURI(b, postgresSchema(b, dsn)))
	br.run(b, br.responses(b, b.N))
}

// BenchmarkVerifyNoStore is BenchmarkVerify over an in-memory fake store
// (memStore, which exists only for this benchmark and is no backend): the
// CPU cost of the verification path alone, to compare with
// BenchmarkRawECDSAVerify.
func BenchmarkVerifyNoStore(b *testing.B) {
	br := newBenchRig(b, newMemStore())
	br.run(b, br.responses(b, b.N))
}

// BenchmarkRawECDSAVerify is the floor of BenchmarkVerify: one ECDSA P-256
// verification of a card's authentication signature, over a precomputed
// SHA-256 digest.
func BenchmarkRawECDSAVerify(b *testing.B) {
	ctx := context.Background()
	env := wallettest.New(b, wallettest.Options{})
	challenge := randBytes(b, protocol.ChallengeLen)
	binding := randBytes(b, 32)
	if err := env.Client.VerifyPIN(ctx, env.PIN); err != nil {
		b.Fatalf("VerifyPIN = %v", err)
	}
	sig, err := env.Client.Authenticate(ctx, challenge, binding)
	if err != nil {
		b.Fatalf("Authenticate = %v", err)
	}
	payload, err := wallet.AuthData(challenge, binding)
	if err != nil {
		b.Fatalf("AuthData = %v", err)
	}
	digest := sha256.Sum256(sig.Envelope(txn.PurposeAuth, env.CardNumber, payload).Bytes())
	pub := env.CardKey()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !ecdsa.VerifyASN1(pub, digest[:], sig.Sig) {
			b.Fatal("VerifyASN1 = false, want true")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}

// memStore is an in-memory store.Store for BenchmarkVerifyNoStore only: it
// keeps just what the verification path touches, under one mutex, and
// implements the rest as not found. It is not a backend and is not tested
// against the store suite.
type memStore struct {
	mu         sync.Mutex
	challenges map[string]store.Challenge
	cards      map[string]store.Card
	devices    map[string]store.Device
}

var _ store.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{
		challenges: make(map[string]store.Challenge),
		cards:      make(map[string]store.Card),
		devices:    make(map[string]store.Device),
	}
}

func (m *memStore) PutChallenge(_ context.Context, c store.Challenge) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.challenges[string(c.Value)]; ok {
		return store.ErrConflict
	}
	m.challenges[string(c.Value)] = c
	return nil
}

func (m *memStore) TakeChallenge(_ context.Context, value []byte, card string, session []byte, now time.Time) (store.Challenge, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.challenges[string(value)]
	if !ok || c.Card != card || !bytes.Equal(c.Session, session) {
		return store.Challenge{}, store.ErrNotFound
	}
	delete(m.challenges, string(value))
	if !now.Before(c.Expires) {
		return store.Challenge{}, store.ErrExpired
	}
	return c, nil
}

func (m *memStore) DeleteExpiredChallenges(context.Context, time.Time) (int, error) { return 0, nil }

func (m *memStore) PutCard(_ context.Context, c store.Card, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.cards[c.Number]
	if !ok {
		old = store.Card{Number: c.Number, Created: now}
	}
	old.Cert, old.IssuerKeyID = c.Cert, c.IssuerKeyID
	m.cards[c.Number] = old
	return nil
}

func (m *memStore) Card(_ context.Context, number string) (store.Card, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cards[number]
	if !ok {
		return store.Card{}, store.ErrNotFound
	}
	return c, nil
}

func (m *memStore) AdvanceCounter(_ context.Context, number string, counter uint32, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cards[number]
	switch {
	case !ok:
		return store.ErrNotFound
	case c.Revoked():
		return store.ErrRevoked
	case counter <= c.Counter:
		if c.ClonedAt.IsZero() {
			c.ClonedAt = now
			m.cards[number] = c
		}
		return store.ErrCounterReplay
	}
	c.Counter = counter
	m.cards[number] = c
	return nil
}

func (m *memStore) RevokeCard(context.Context, string, time.Time) error { return store.ErrNotFound }

func (m *memStore) AddDevice(_ context.Context, d store.Device, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d.Created, d.RevokedAt = now, time.Time{}
	m.devices[d.ID] = d
	return nil
}

func (m *memStore) Device(_ context.Context, id string) (store.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[id]
	if !ok {
		return store.Device{}, store.ErrNotFound
	}
	return d, nil
}

func (m *memStore) DeviceByKey(context.Context, []byte) (store.Device, error) {
	return store.Device{}, store.ErrNotFound
}
func (m *memStore) RevokeDevice(context.Context, string, time.Time) error { return store.ErrNotFound }
func (m *memStore) SetPIN(context.Context, store.PIN) error               { return store.ErrNotFound }
func (m *memStore) PIN(context.Context, string) (store.PIN, error) {
	return store.PIN{}, store.ErrNotFound
}
func (m *memStore) DecrementPINTries(context.Context, string) (store.PIN, error) {
	return store.PIN{}, store.ErrNotFound
}
func (m *memStore) ResetPINTries(context.Context, string) error { return store.ErrNotFound }
func (m *memStore) SetBiometric(context.Context, store.Biometric) error {
	return store.ErrNotFound
}
func (m *memStore) Biometric(context.Context, string) (store.Biometric, error) {
	return store.Biometric{}, store.ErrNotFound
}
func (m *memStore) DecrementBiometricTries(context.Context, string) (store.Biometric, error) {
	return store.Biometric{}, store.ErrNotFound
}
func (m *memStore) ResetBiometricTries(context.Context, string) error { return store.ErrNotFound }
func (m *memStore) DeleteBiometric(context.Context, string) error     { return store.ErrNotFound }
func (m *memStore) DeletePIN(context.Context, string) error           { return store.ErrNotFound }
func (m *memStore) PutRelyingParty(context.Context, store.RelyingParty, time.Time) error {
	return store.ErrNotFound
}
func (m *memStore) RelyingParty(context.Context, string) (store.RelyingParty, error) {
	return store.RelyingParty{}, store.ErrNotFound
}
func (m *memStore) RelyingPartyByKey(context.Context, []byte) (store.RelyingParty, error) {
	return store.RelyingParty{}, store.ErrNotFound
}
func (m *memStore) CreateAuthRequest(context.Context, store.AuthRequest, time.Time) error {
	return store.ErrNotFound
}
func (m *memStore) FinishAuthRequest(context.Context, string, store.AuthStatus, []byte, time.Time) error {
	return store.ErrNotFound
}
func (m *memStore) AuthRequest(context.Context, string) (store.AuthRequest, error) {
	return store.AuthRequest{}, store.ErrNotFound
}
func (m *memStore) PendingAuthRequests(context.Context, string, time.Time) ([]store.AuthRequest, error) {
	return nil, nil
}
func (m *memStore) AddServerKey(context.Context, store.ServerKey, time.Time) error {
	return store.ErrConflict
}
func (m *memStore) ServerKeys(context.Context) ([]store.ServerKey, error) { return nil, nil }
func (m *memStore) ServerKeyHistory(context.Context) ([]store.ServerKey, error) {
	return nil, nil
}
func (m *memStore) RetireServerKey(context.Context, []byte, time.Time) error {
	return store.ErrNotFound
}
func (m *memStore) Close() error { return nil }
