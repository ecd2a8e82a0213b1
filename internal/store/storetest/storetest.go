// Package storetest is the conformance suite every store backend passes:
// each behaviour of the store interfaces, the typed errors, "no damage"
// after a refused change, migrations re-run on an existing database, and
// races between goroutines and between two Stores (two server instances)
// on one database. It also holds the shared benchmarks.
//
// It imports only package store and the standard library (testing).
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cardlink/internal/store"
)

// OpenFunc opens a Store on the test's database. The first call for a
// given t creates a fresh, empty database (or schema) that no other test
// sees; later calls with the same t open another Store (another server
// instance) on that same database, running the migrations again. The
// backend closes the Stores and removes the database when t ends.
type OpenFunc func(t testing.TB) store.Store

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, open OpenFunc) {
	tests := []struct {
		name string
		f    func(*testing.T, OpenFunc)
	}{
		{"Challenges", testChallenges},
		{"ChallengeExpiry", testChallengeExpiry},
		{"DeleteExpiredChallenges", testDeleteExpiredChallenges},
		{"Cards", testCards},
		{"AdvanceCounter", testAdvanceCounter},
		{"Devices", testDevices},
		{"PINs", testPINs},
		{"Biometrics", testBiometrics},
		{"RelyingParties", testRelyingParties},
		{"AuthRequests", testAuthRequests},
		{"ServerKeys", testServerKeys},
		{"ServerKeyHistoryEmpty", testServerKeyHistoryEmpty},
		{"Reopen", testReopen},
		{"RaceTakeChallenge", testRaceTakeChallenge},
		{"RaceAdvanceCounter", testRaceAdvanceCounter},
		{"RaceDecrementPINTries", testRaceDecrementPINTries},
		{"RaceDecrementBiometricTries", testRaceDecrementBiometricTries},
		{"RaceFinishAuthRequest", testRaceFinishAuthRequest},
		{"RaceRetireServerKey", testRaceRetireServerKey},
		{"Ledger", testLedger}, {"RaceLedger", testRaceLedger},
		{"Merchants", testMerchants}, {"RaceIdempotentPurchase", testRaceIdempotentPurchase},
		{"PurchaseReads", testPurchaseReads}, {"BindPurchase", testBindPurchase},
		{"AuthorizePurchase", testAuthorizePurchase}, {"DeclineAndExpire", testDeclineAndExpire},
		{"Refunds", testRefunds}, {"RaceAuthorizePurchase", testRaceAuthorizePurchase},
		{"RaceRefund", testRaceRefund}, {"RaceBindPurchase", testRaceBindPurchase},
		{"Purses", testPurses}, {"RaceRedemption", testRaceRedemption}, {"RaceLoadSeq", testRaceLoadSeq},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.f(t, open)
		})
	}
}

// t0 is the suite's "now": microsecond precision (what both backends
// keep), in UTC.
var t0 = time.Date(2026, 11, 28, 12, 30, 15, 123456000, time.UTC)

// zone is a non-UTC zone: times given in it must come back in UTC.
var zone = time.FixedZone("UTC+3", 3*3600)

const cardA, cardB = "4000001234567899", "4000009876543210"

func value(n int) []byte {
	v := make([]byte, store.ChallengeSize)
	binary.BigEndian.PutUint64(v, uint64(n)+1)
	h := sha256.Sum256(v)
	return h[:]
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s = %v, want %v", what, err, want)
	}
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s = %v, want nil", what, err)
	}
}

func wantTime(t testing.TB, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) || (!got.IsZero() && got.Location() != time.UTC) {
		t.Fatalf("%s = %v, want %v in UTC", what, got, want.UTC())
	}
}

func addCard(t testing.TB, s store.Store, number string) {
	t.Helper()
	c := store.Card{Number: number, Cert: []byte("cert " + number), IssuerKeyID: []byte{1, 2, 3}}
	must(t, "PutCard", s.PutCard(context.Background(), c, t0))
}

func testChallenges(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	c := store.Challenge{Value: value(1), Card: cardA, Session: []byte("session 1"), Purpose: 1, Expires: t0.Add(time.Minute).In(zone)}
	must(t, "PutChallenge", s.PutChallenge(ctx, c))
	wantErr(t, "PutChallenge(same value)", s.PutChallenge(ctx, c), store.ErrConflict)

	refused := []struct {
		name    string
		value   []byte
		card    string
		session []byte
	}{
		{"other card", c.Value, cardB, c.Session},
		{"other session", c.Value, cardA, []byte("session 2")},
		{"no session", c.Value, cardA, nil},
		{"other value", value(2), cardA, c.Session},
		{"truncated value", c.Value[:16], cardA, c.Session},
	}
	for _, tt := range refused {
		_, err := s.TakeChallenge(ctx, tt.value, tt.card, tt.session, t0)
		wantErr(t, "TakeChallenge("+tt.name+")", err, store.ErrNotFound)
	}

	// The refusals left the challenge for its rightful taker.
	got, err := s.TakeChallenge(ctx, c.Value, cardA, c.Session, t0)
	must(t, "TakeChallenge", err)
	if !bytes.Equal(got.Value, c.Value) || got.Card != c.Card || !bytes.Equal(got.Session, c.Session) || got.Purpose != c.Purpose {
		t.Fatalf("TakeChallenge = %+v, want %+v", got, c)
	}
	wantTime(t, "TakeChallenge().Expires", got.Expires, c.Expires)

	_, err = s.TakeChallenge(ctx, c.Value, cardA, c.Session, t0)
	wantErr(t, "TakeChallenge(again)", err, store.ErrNotFound)

	// The value is free again once taken.
	must(t, "PutChallenge(after take)", s.PutChallenge(ctx, c))
}

func testChallengeExpiry(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	tests := []struct {
		name    string
		expires time.Time
		want    error
	}{
		{"a microsecond left", t0.Add(time.Microsecond), nil},
		{"expires now", t0, store.ErrExpired},
		{"expired", t0.Add(-time.Second), store.ErrExpired},
		{"long expired", t0.Add(-24 * time.Hour), store.ErrExpired},
	}
	for i, tt := range tests {
		c := store.Challenge{Value: value(100 + i), Card: cardA, Session: []byte{1}, Purpose: 2, Expires: tt.expires}
		must(t, "PutChallenge("+tt.name+")", s.PutChallenge(ctx, c))
		_, err := s.TakeChallenge(ctx, c.Value, cardA, c.Session, t0)
		wantErr(t, "TakeChallenge("+tt.name+")", err, tt.want)
		// Taken or expired, it is gone either way.
		_, err = s.TakeChallenge(ctx, c.Value, cardA, c.Session, t0.Add(-time.Hour))
		wantErr(t, "TakeChallenge("+tt.name+", again)", err, store.ErrNotFound)
	}
}

func testDeleteExpiredChallenges(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	for i, d := range []time.Duration{-time.Hour, -time.Second, 0, time.Second, time.Hour} {
		must(t, "PutChallenge", s.PutChallenge(ctx, store.Challenge{Value: value(i), Card: cardA, Session: []byte{1}, Expires: t0.Add(d)}))
	}
	n, err := s.DeleteExpiredChallenges(ctx, t0)
	if err != nil || n != 3 {
		t.Fatalf("DeleteExpiredChallenges = %d, %v, want 3, nil", n, err)
	}
	for i, want := range []error{store.ErrNotFound, store.ErrNotFound, store.ErrNotFound, nil, nil} {
		_, err := s.TakeChallenge(ctx, value(i), cardA, []byte{1}, t0.Add(-2*time.Hour))
		wantErr(t, fmt.Sprintf("TakeChallenge(%d)", i), err, want)
	}
}

func testCards(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	_, err := s.Card(ctx, cardA)
	wantErr(t, "Card(unknown)", err, store.ErrNotFound)
	wantErr(t, "RevokeCard(unknown)", s.RevokeCard(ctx, cardA, t0), store.ErrNotFound)

	in := store.Card{Number: cardA, Cert: []byte{0x30, 0x82, 0x01}, IssuerKeyID: []byte{9, 9}, Counter: 77, RevokedAt: t0, ClonedAt: t0}
	must(t, "PutCard", s.PutCard(ctx, in, t0.In(zone)))
	c, err := s.Card(ctx, cardA)
	must(t, "Card", err)
	if c.Number != cardA || !bytes.Equal(c.Cert, in.Cert) || !bytes.Equal(c.IssuerKeyID, in.IssuerKeyID) || c.Counter != 0 || c.Revoked() || c.Cloned() {
		t.Fatalf("Card = %+v, want the certificate, counter 0, not revoked or cloned", c)
	}
	wantTime(t, "Card().Created", c.Created, t0)

	must(t, "AdvanceCounter", s.AdvanceCounter(ctx, cardA, 5, t0))
	must(t, "RevokeCard", s.RevokeCard(ctx, cardA, t0.Add(time.Minute)))
	must(t, "RevokeCard(again)", s.RevokeCard(ctx, cardA, t0.Add(time.Hour)))

	// A new certificate for the number keeps counter and revocation.
	in.Cert, in.IssuerKeyID = []byte{0x30, 0x82, 0x02}, []byte{8}
	must(t, "PutCard(again)", s.PutCard(ctx, in, t0.Add(2*time.Hour)))
	c, err = s.Card(ctx, cardA)
	must(t, "Card", err)
	if !bytes.Equal(c.Cert, in.Cert) || !bytes.Equal(c.IssuerKeyID, in.IssuerKeyID) || c.Counter != 5 {
		t.Fatalf("Card after PutCard(again) = %+v, want new certificate and counter 5", c)
	}
	wantTime(t, "Card().Created", c.Created, t0)
	wantTime(t, "Card().RevokedAt", c.RevokedAt, t0.Add(time.Minute))

	_, err = s.Card(ctx, cardB)
	wantErr(t, "Card(other)", err, store.ErrNotFound)
}

func testAdvanceCounter(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	addCard(t, s, cardA)
	steps := []struct {
		counter uint32
		want    error
		stored  uint32
		cloned  bool
	}{
		{0, store.ErrCounterReplay, 0, true}, // 0 never grows past the initial 0
		{1, nil, 1, true},
		{2, nil, 2, true},
		{10, nil, 10, true},
		{10, store.ErrCounterReplay, 10, true},
		{9, store.ErrCounterReplay, 10, true},
		{11, nil, 11, true},
		{1<<32 - 1, nil, 1<<32 - 1, true},
		{1<<32 - 1, store.ErrCounterReplay, 1<<32 - 1, true},
	}
	for i, st := range steps {
		at := t0.Add(time.Duration(i) * time.Second)
		wantErr(t, fmt.Sprintf("step %d: AdvanceCounter(%d)", i, st.counter), s.AdvanceCounter(ctx, cardA, st.counter, at), st.want)
		c, err := s.Card(ctx, cardA)
		must(t, "Card", err)
		if c.Counter != st.stored || c.Cloned() != st.cloned {
			t.Fatalf("step %d: Card() = counter %d, cloned %v; want %d, %v", i, c.Counter, c.Cloned(), st.stored, st.cloned)
		}
		// The first replay's time is kept.
		wantTime(t, "Card().ClonedAt", c.ClonedAt, t0)
	}

	// A fresh card: growth leaves it unflagged; a revoked card refuses
	// without flagging or advancing.
	addCard(t, s, cardB)
	must(t, "AdvanceCounter(B, 3)", s.AdvanceCounter(ctx, cardB, 3, t0))
	must(t, "RevokeCard(B)", s.RevokeCard(ctx, cardB, t0))
	for _, n := range []uint32{4, 3, 1} {
		wantErr(t, fmt.Sprintf("AdvanceCounter(revoked, %d)", n), s.AdvanceCounter(ctx, cardB, n, t0), store.ErrRevoked)
	}
	c, err := s.Card(ctx, cardB)
	must(t, "Card(B)", err)
	if c.Counter != 3 || c.Cloned() || !c.Revoked() {
		t.Fatalf("Card(revoked) = counter %d, cloned %v, revoked %v; want 3, false, true", c.Counter, c.Cloned(), c.Revoked())
	}
	wantErr(t, "AdvanceCounter(unknown)", s.AdvanceCounter(ctx, "4000000000000002", 1, t0), store.ErrNotFound)
}

func testDevices(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	key := bytes.Repeat([]byte{0xd1}, 32)
	d := store.Device{ID: "dev-1", StaticKey: key, Name: "kitchen", Created: t0.Add(time.Hour), RevokedAt: t0}
	must(t, "AddDevice", s.AddDevice(ctx, d, t0.In(zone)))
	wantErr(t, "AddDevice(same ID)", s.AddDevice(ctx, store.Device{ID: "dev-1", StaticKey: bytes.Repeat([]byte{2}, 32)}, t0), store.ErrConflict)
	wantErr(t, "AddDevice(same key)", s.AddDevice(ctx, store.Device{ID: "dev-2", StaticKey: key}, t0), store.ErrConflict)

	for _, get := range []struct {
		name string
		f    func() (store.Device, error)
	}{
		{"Device", func() (store.Device, error) { return s.Device(ctx, "dev-1") }},
		{"DeviceByKey", func() (store.Device, error) { return s.DeviceByKey(ctx, key) }},
	} {
		got, err := get.f()
		must(t, get.name, err)
		if got.ID != d.ID || !bytes.Equal(got.StaticKey, key) || got.Name != d.Name || got.Revoked() {
			t.Fatalf("%s = %+v, want %+v not revoked", get.name, got, d)
		}
		wantTime(t, get.name+"().Created", got.Created, t0)
	}
	_, err := s.Device(ctx, "dev-2")
	wantErr(t, "Device(unknown)", err, store.ErrNotFound)
	_, err = s.DeviceByKey(ctx, bytes.Repeat([]byte{0xd2}, 32))
	wantErr(t, "DeviceByKey(unknown)", err, store.ErrNotFound)

	wantErr(t, "RevokeDevice(unknown)", s.RevokeDevice(ctx, "dev-2", t0), store.ErrNotFound)
	must(t, "RevokeDevice", s.RevokeDevice(ctx, "dev-1", t0.Add(time.Minute)))
	must(t, "RevokeDevice(again)", s.RevokeDevice(ctx, "dev-1", t0.Add(time.Hour)))
	got, err := s.DeviceByKey(ctx, key)
	must(t, "DeviceByKey(revoked)", err)
	wantTime(t, "DeviceByKey(revoked).RevokedAt", got.RevokedAt, t0.Add(time.Minute))
}

func testPINs(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	p := store.PIN{Card: cardA, Hash: []byte("hash"), Salt: []byte("salt"), Params: "argon2id t=1", Tries: 0, MaxTries: 3}
	wantErr(t, "SetPIN(unknown card)", s.SetPIN(ctx, p), store.ErrNotFound)
	_, err := s.PIN(ctx, cardA)
	wantErr(t, "PIN(none)", err, store.ErrNotFound)
	_, err = s.DecrementPINTries(ctx, cardA)
	wantErr(t, "DecrementPINTries(none)", err, store.ErrNotFound)
	wantErr(t, "ResetPINTries(none)", s.ResetPINTries(ctx, cardA), store.ErrNotFound)

	addCard(t, s, cardA)
	if err := s.SetPIN(ctx, store.PIN{Card: cardA, MaxTries: 0}); err == nil {
		t.Fatalf("SetPIN(MaxTries 0) = nil, want an error")
	}
	must(t, "SetPIN", s.SetPIN(ctx, p))
	got, err := s.PIN(ctx, cardA)
	must(t, "PIN", err)
	if got.Card != cardA || !bytes.Equal(got.Hash, p.Hash) || !bytes.Equal(got.Salt, p.Salt) || got.Params != p.Params || got.Tries != 3 || got.MaxTries != 3 {
		t.Fatalf("PIN = %+v, want %+v with 3 tries", got, p)
	}

	for _, want := range []int{2, 1, 0} {
		got, err := s.DecrementPINTries(ctx, cardA)
		must(t, "DecrementPINTries", err)
		if got.Tries != want || !bytes.Equal(got.Hash, p.Hash) {
			t.Fatalf("DecrementPINTries = %d tries left, want %d", got.Tries, want)
		}
	}
	for range 2 {
		_, err = s.DecrementPINTries(ctx, cardA)
		wantErr(t, "DecrementPINTries(locked)", err, store.ErrLocked)
	}
	if got, _ := s.PIN(ctx, cardA); got.Tries != 0 {
		t.Fatalf("PIN(locked).Tries = %d, want 0", got.Tries)
	}
	must(t, "ResetPINTries", s.ResetPINTries(ctx, cardA))
	if got, _ := s.PIN(ctx, cardA); got.Tries != 3 {
		t.Fatalf("PIN(reset).Tries = %d, want 3", got.Tries)
	}

	// Replacing the PIN replaces the hash and restores the tries.
	_, err = s.DecrementPINTries(ctx, cardA)
	must(t, "DecrementPINTries", err)
	p2 := store.PIN{Card: cardA, Hash: []byte("hash 2"), Salt: []byte("salt 2"), Params: "p2", MaxTries: 5}
	must(t, "SetPIN(replace)", s.SetPIN(ctx, p2))
	got, err = s.PIN(ctx, cardA)
	must(t, "PIN", err)
	if !bytes.Equal(got.Hash, p2.Hash) || got.Tries != 5 || got.MaxTries != 5 {
		t.Fatalf("PIN(replaced) = %+v, want %+v with 5 tries", got, p2)
	}

	// Deleted: gone, and only the card's.
	addCard(t, s, cardB)
	must(t, "SetPIN(B)", s.SetPIN(ctx, store.PIN{Card: cardB, Hash: []byte("b"), Salt: []byte("b"), MaxTries: 3}))
	must(t, "DeletePIN", s.DeletePIN(ctx, cardA))
	wantErr(t, "DeletePIN(again)", s.DeletePIN(ctx, cardA), store.ErrNotFound)
	wantErr(t, "DeletePIN(unknown card)", s.DeletePIN(ctx, "4000000000000002"), store.ErrNotFound)
	_, err = s.PIN(ctx, cardA)
	wantErr(t, "PIN(deleted)", err, store.ErrNotFound)
	_, err = s.DecrementPINTries(ctx, cardA)
	wantErr(t, "DecrementPINTries(deleted)", err, store.ErrNotFound)
	if got, err := s.PIN(ctx, cardB); err != nil || got.Tries != 3 {
		t.Fatalf("PIN(B) after deleting A's = %+v, %v; want it with 3 tries", got, err)
	}
	// And set again.
	must(t, "SetPIN(after delete)", s.SetPIN(ctx, p))
}

func testBiometrics(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	tmpl := bytes.Repeat([]byte{0xb1, 0x0e}, 32)
	b := store.Biometric{Card: cardA, Template: tmpl, Threshold: 64, Tries: 0, MaxTries: 3}
	wantErr(t, "SetBiometric(unknown card)", s.SetBiometric(ctx, b), store.ErrNotFound)
	_, err := s.Biometric(ctx, cardA)
	wantErr(t, "Biometric(none)", err, store.ErrNotFound)
	_, err = s.DecrementBiometricTries(ctx, cardA)
	wantErr(t, "DecrementBiometricTries(none)", err, store.ErrNotFound)
	wantErr(t, "ResetBiometricTries(none)", s.ResetBiometricTries(ctx, cardA), store.ErrNotFound)

	addCard(t, s, cardA)
	for _, bad := range []store.Biometric{
		{Card: cardA, Template: tmpl, Threshold: 64, MaxTries: 0},
		{Card: cardA, Template: tmpl, Threshold: -1, MaxTries: 3},
	} {
		if err := s.SetBiometric(ctx, bad); err == nil {
			t.Fatalf("SetBiometric(MaxTries %d, Threshold %d) = nil, want an error", bad.MaxTries, bad.Threshold)
		}
	}
	if _, err := s.Biometric(ctx, cardA); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Biometric after refused SetBiometric = %v, want %v", err, store.ErrNotFound)
	}
	must(t, "SetBiometric", s.SetBiometric(ctx, b))
	got, err := s.Biometric(ctx, cardA)
	must(t, "Biometric", err)
	if got.Card != cardA || !bytes.Equal(got.Template, tmpl) || got.Threshold != 64 || got.Tries != 3 || got.MaxTries != 3 {
		t.Fatalf("Biometric = %+v, want %+v with 3 tries", got, b)
	}
	// Another card's template is its own.
	_, err = s.Biometric(ctx, cardB)
	wantErr(t, "Biometric(other card)", err, store.ErrNotFound)

	for _, want := range []int{2, 1, 0} {
		got, err := s.DecrementBiometricTries(ctx, cardA)
		must(t, "DecrementBiometricTries", err)
		if got.Tries != want || !bytes.Equal(got.Template, tmpl) || got.Threshold != 64 {
			t.Fatalf("DecrementBiometricTries = %+v, want %d tries left and the template", got, want)
		}
	}
	for range 2 {
		_, err = s.DecrementBiometricTries(ctx, cardA)
		wantErr(t, "DecrementBiometricTries(locked)", err, store.ErrLocked)
	}
	if got, _ := s.Biometric(ctx, cardA); got.Tries != 0 {
		t.Fatalf("Biometric(locked).Tries = %d, want 0", got.Tries)
	}
	must(t, "ResetBiometricTries", s.ResetBiometricTries(ctx, cardA))
	if got, _ := s.Biometric(ctx, cardA); got.Tries != 3 {
		t.Fatalf("Biometric(reset).Tries = %d, want 3", got.Tries)
	}

	// Replacing the template replaces it and its threshold, and restores
	// the tries; the online PIN is kept apart.
	_, err = s.DecrementBiometricTries(ctx, cardA)
	must(t, "DecrementBiometricTries", err)
	b2 := store.Biometric{Card: cardA, Template: []byte{1, 2, 3}, Threshold: 0, MaxTries: 5}
	must(t, "SetBiometric(replace)", s.SetBiometric(ctx, b2))
	got, err = s.Biometric(ctx, cardA)
	must(t, "Biometric", err)
	if !bytes.Equal(got.Template, b2.Template) || got.Threshold != 0 || got.Tries != 5 || got.MaxTries != 5 {
		t.Fatalf("Biometric(replaced) = %+v, want %+v with 5 tries", got, b2)
	}
	_, err = s.PIN(ctx, cardA)
	wantErr(t, "PIN(card with only a biometric)", err, store.ErrNotFound)

	// Deleted: gone, and only the card's.
	addCard(t, s, cardB)
	must(t, "SetBiometric(B)", s.SetBiometric(ctx, store.Biometric{Card: cardB, Template: tmpl, Threshold: 1, MaxTries: 3}))
	must(t, "DeleteBiometric", s.DeleteBiometric(ctx, cardA))
	wantErr(t, "DeleteBiometric(again)", s.DeleteBiometric(ctx, cardA), store.ErrNotFound)
	wantErr(t, "DeleteBiometric(unknown card)", s.DeleteBiometric(ctx, "4000000000000002"), store.ErrNotFound)
	_, err = s.Biometric(ctx, cardA)
	wantErr(t, "Biometric(deleted)", err, store.ErrNotFound)
	_, err = s.DecrementBiometricTries(ctx, cardA)
	wantErr(t, "DecrementBiometricTries(deleted)", err, store.ErrNotFound)
	if got, err := s.Biometric(ctx, cardB); err != nil || got.Tries != 3 || !bytes.Equal(got.Template, tmpl) {
		t.Fatalf("Biometric(B) after deleting A's = %+v, %v; want it with 3 tries", got, err)
	}
	must(t, "SetBiometric(after delete)", s.SetBiometric(ctx, b))
}

func testRelyingParties(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	key := sha256.Sum256([]byte("api key"))
	rp := store.RelyingParty{ID: "shop", Name: "Shop", KeyHash: key[:], WebhookURL: "https://shop.example/hook", WebhookSecret: []byte("secret"), Policy: "offline-pin"}
	must(t, "PutRelyingParty", s.PutRelyingParty(ctx, rp, t0.In(zone)))
	check := func(what string, got store.RelyingParty, err error, want store.RelyingParty) {
		t.Helper()
		must(t, what, err)
		if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.KeyHash, want.KeyHash) || got.WebhookURL != want.WebhookURL ||
			!bytes.Equal(got.WebhookSecret, want.WebhookSecret) || got.Policy != want.Policy {
			t.Fatalf("%s = %+v, want %+v", what, got, want)
		}
		wantTime(t, what+".Created", got.Created, t0)
	}
	got, err := s.RelyingParty(ctx, "shop")
	check("RelyingParty", got, err, rp)
	got, err = s.RelyingPartyByKey(ctx, key[:])
	check("RelyingPartyByKey", got, err, rp)

	other := sha256.Sum256([]byte("other key"))
	_, err = s.RelyingPartyByKey(ctx, other[:])
	wantErr(t, "RelyingPartyByKey(unknown)", err, store.ErrNotFound)
	_, err = s.RelyingParty(ctx, "bank")
	wantErr(t, "RelyingParty(unknown)", err, store.ErrNotFound)
	wantErr(t, "PutRelyingParty(key of another)", s.PutRelyingParty(ctx, store.RelyingParty{ID: "bank", KeyHash: key[:]}, t0), store.ErrConflict)

	// Rotating the key and the webhook keeps Created; the old key is dead.
	rp.KeyHash, rp.WebhookURL, rp.WebhookSecret, rp.Policy = other[:], "", nil, "online-pin,biometric"
	must(t, "PutRelyingParty(update)", s.PutRelyingParty(ctx, rp, t0.Add(time.Hour)))
	got, err = s.RelyingPartyByKey(ctx, other[:])
	check("RelyingPartyByKey(new key)", got, err, rp)
	_, err = s.RelyingPartyByKey(ctx, key[:])
	wantErr(t, "RelyingPartyByKey(old key)", err, store.ErrNotFound)
}

func testAuthRequests(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	r := store.AuthRequest{ID: "req-1", RelyingParty: "shop", Card: cardA, Policy: "offline-pin", Status: store.AuthApproved, Result: []byte("x"), Expires: t0.Add(5 * time.Minute)}
	wantErr(t, "CreateAuthRequest(unknown party)", s.CreateAuthRequest(ctx, r, t0), store.ErrNotFound)
	must(t, "PutRelyingParty", s.PutRelyingParty(ctx, store.RelyingParty{ID: "shop", KeyHash: []byte{1}}, t0))

	// Created out of order, for two cards, one expiring early.
	reqs := []struct {
		id      string
		card    string
		created time.Time
		expires time.Time
	}{
		{"req-1", cardA, t0.Add(2 * time.Second), t0.Add(5 * time.Minute)},
		{"req-0", cardA, t0.Add(1 * time.Second), t0.Add(5 * time.Minute)},
		{"req-b", cardB, t0, t0.Add(5 * time.Minute)},
		{"req-old", cardA, t0, t0.Add(3 * time.Second)},
		{"req-2", cardA, t0.Add(3 * time.Second), t0.Add(5 * time.Minute)},
	}
	for _, q := range reqs {
		r.ID, r.Card, r.Expires = q.id, q.card, q.expires
		must(t, "CreateAuthRequest("+q.id+")", s.CreateAuthRequest(ctx, r, q.created.In(zone)))
	}
	wantErr(t, "CreateAuthRequest(same ID)", s.CreateAuthRequest(ctx, r, t0), store.ErrConflict)

	got, err := s.AuthRequest(ctx, "req-1")
	must(t, "AuthRequest", err)
	if got.ID != "req-1" || got.RelyingParty != "shop" || got.Card != cardA || got.Policy != r.Policy || got.Status != store.AuthPending || got.Result != nil {
		t.Fatalf("AuthRequest = %+v, want it pending without result", got)
	}
	wantTime(t, "AuthRequest().Created", got.Created, t0.Add(2*time.Second))
	wantTime(t, "AuthRequest().Updated", got.Updated, t0.Add(2*time.Second))
	wantTime(t, "AuthRequest().Expires", got.Expires, t0.Add(5*time.Minute))
	_, err = s.AuthRequest(ctx, "req-9")
	wantErr(t, "AuthRequest(unknown)", err, store.ErrNotFound)

	pendingIDs := func(card string, now time.Time) []string {
		t.Helper()
		rs, err := s.PendingAuthRequests(ctx, card, now)
		must(t, "PendingAuthRequests", err)
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
		return ids
	}
	wantIDs := func(what string, got []string, want ...string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
	wantIDs("PendingAuthRequests(A, t0)", pendingIDs(cardA, t0), "req-old", "req-0", "req-1", "req-2")
	wantIDs("PendingAuthRequests(A, t0+3s)", pendingIDs(cardA, t0.Add(3*time.Second)), "req-0", "req-1", "req-2")
	wantIDs("PendingAuthRequests(B)", pendingIDs(cardB, t0), "req-b")
	wantIDs("PendingAuthRequests(unknown card)", pendingIDs("4000000000000002", t0))

	wantErr(t, "FinishAuthRequest(to pending)", s.FinishAuthRequest(ctx, "req-1", store.AuthPending, nil, t0), store.ErrConflict)
	wantErr(t, "FinishAuthRequest(unknown)", s.FinishAuthRequest(ctx, "req-9", store.AuthApproved, nil, t0), store.ErrNotFound)
	must(t, "FinishAuthRequest", s.FinishAuthRequest(ctx, "req-1", store.AuthApproved, []byte("signed result"), t0.Add(time.Minute).In(zone)))
	wantErr(t, "FinishAuthRequest(again)", s.FinishAuthRequest(ctx, "req-1", store.AuthRefused, []byte("no"), t0.Add(2*time.Minute)), store.ErrConflict)
	got, err = s.AuthRequest(ctx, "req-1")
	must(t, "AuthRequest", err)
	if got.Status != store.AuthApproved || string(got.Result) != "signed result" {
		t.Fatalf("AuthRequest(finished) = %v %q, want approved %q", got.Status, got.Result, "signed result")
	}
	wantTime(t, "AuthRequest(finished).Updated", got.Updated, t0.Add(time.Minute))
	wantTime(t, "AuthRequest(finished).Created", got.Created, t0.Add(2*time.Second))
	must(t, "FinishAuthRequest(cancel)", s.FinishAuthRequest(ctx, "req-0", store.AuthCancelled, nil, t0))
	wantIDs("PendingAuthRequests(A) after finishing", pendingIDs(cardA, t0), "req-old", "req-2")
}

func testServerKeys(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	ks, err := s.ServerKeys(ctx)
	if err != nil || len(ks) != 0 {
		t.Fatalf("ServerKeys(empty) = %v, %v, want none", ks, err)
	}
	pub := func(n byte) []byte { return bytes.Repeat([]byte{n}, 32) }
	for i := byte(1); i <= 3; i++ {
		must(t, "AddServerKey", s.AddServerKey(ctx, store.ServerKey{Public: pub(i), Private: pub(0x10 + i), Created: t0.Add(time.Hour)}, t0.Add(time.Duration(i)*time.Hour).In(zone)))
	}
	wantErr(t, "AddServerKey(same public)", s.AddServerKey(ctx, store.ServerKey{Public: pub(2), Private: pub(9)}, t0), store.ErrConflict)
	wantErr(t, "RetireServerKey(unknown)", s.RetireServerKey(ctx, pub(7), t0), store.ErrNotFound)
	must(t, "RetireServerKey", s.RetireServerKey(ctx, pub(2), t0.Add(4*time.Hour)))
	must(t, "RetireServerKey(again)", s.RetireServerKey(ctx, pub(2), t0.Add(5*time.Hour)))

	ks, err = s.ServerKeys(ctx)
	must(t, "ServerKeys", err)
	if len(ks) != 2 || !bytes.Equal(ks[0].Public, pub(3)) || !bytes.Equal(ks[1].Public, pub(1)) {
		t.Fatalf("ServerKeys = %v, want keys 3 then 1", ks)
	}
	if !bytes.Equal(ks[0].Private, pub(0x13)) || !ks[0].RetiredAt.IsZero() {
		t.Fatalf("ServerKeys()[0] = %+v, want private key 0x13…, not retired", ks[0])
	}
	wantTime(t, "ServerKeys()[0].Created", ks[0].Created, t0.Add(3*time.Hour))

	// The history has the retired key too, with when it was retired (the
	// first time).
	wantKeys := func(what string, got []store.ServerKey, err error, want ...store.ServerKey) {
		t.Helper()
		must(t, what, err)
		if len(got) != len(want) {
			t.Fatalf("%s = %d keys %v, want %d", what, len(got), got, len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i].Public, want[i].Public) || !bytes.Equal(got[i].Private, want[i].Private) {
				t.Fatalf("%s[%d] = public %x private %x, want %x %x", what, i, got[i].Public, got[i].Private, want[i].Public, want[i].Private)
			}
			wantTime(t, fmt.Sprintf("%s[%d].Created", what, i), got[i].Created, want[i].Created)
			wantTime(t, fmt.Sprintf("%s[%d].RetiredAt", what, i), got[i].RetiredAt, want[i].RetiredAt)
		}
	}
	key := func(n byte, retired time.Time) store.ServerKey {
		return store.ServerKey{Public: pub(n), Private: pub(0x10 + n), Created: t0.Add(time.Duration(n) * time.Hour), RetiredAt: retired}
	}
	ks, err = s.ServerKeyHistory(ctx)
	wantKeys("ServerKeyHistory", ks, err, key(3, time.Time{}), key(2, t0.Add(4*time.Hour)), key(1, time.Time{}))

	// The last current key cannot be retired; a retired or unknown one
	// answers as before.
	must(t, "RetireServerKey(3)", s.RetireServerKey(ctx, pub(3), t0.Add(6*time.Hour).In(zone)))
	wantErr(t, "RetireServerKey(last key)", s.RetireServerKey(ctx, pub(1), t0.Add(7*time.Hour)), store.ErrLastKey)
	must(t, "RetireServerKey(retired, beside the last key)", s.RetireServerKey(ctx, pub(3), t0.Add(8*time.Hour)))
	wantErr(t, "RetireServerKey(unknown, beside the last key)", s.RetireServerKey(ctx, pub(7), t0), store.ErrNotFound)
	ks, err = s.ServerKeys(ctx)
	wantKeys("ServerKeys after refusing the last key", ks, err, key(1, time.Time{}))
	ks, err = s.ServerKeyHistory(ctx)
	wantKeys("ServerKeyHistory after refusing the last key", ks, err,
		key(3, t0.Add(6*time.Hour)), key(2, t0.Add(4*time.Hour)), key(1, time.Time{}))

	// A new key lets the old last one go.
	must(t, "AddServerKey(4)", s.AddServerKey(ctx, store.ServerKey{Public: pub(4), Private: pub(0x14)}, t0.Add(4*time.Hour)))
	must(t, "RetireServerKey(1)", s.RetireServerKey(ctx, pub(1), t0.Add(9*time.Hour)))
	ks, err = s.ServerKeyHistory(ctx)
	wantKeys("ServerKeyHistory after rotating", ks, err,
		key(4, time.Time{}), key(3, t0.Add(6*time.Hour)), key(2, t0.Add(4*time.Hour)), key(1, t0.Add(9*time.Hour)))
	wantErr(t, "RetireServerKey(new last key)", s.RetireServerKey(ctx, pub(4), t0.Add(10*time.Hour)), store.ErrLastKey)
}

// testServerKeyHistoryEmpty lists the history of a store without keys.
func testServerKeyHistoryEmpty(t *testing.T, open OpenFunc) {
	ks, err := open(t).ServerKeyHistory(context.Background())
	if err != nil || len(ks) != 0 {
		t.Fatalf("ServerKeyHistory(empty) = %v, %v; want none", ks, err)
	}
}

// testRaceRetireServerKey has two goroutines retire the last two current
// server keys at once, each its own: exactly one succeeds, the other gets
// ErrLastKey, and the loser's key stays current.
func testRaceRetireServerKey(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	n := 0
	newKey := func(t *testing.T, s store.Store) []byte {
		n++
		pub := sha256.Sum256(fmt.Appendf(nil, "server key %d", n))
		must(t, "AddServerKey", s.AddServerKey(ctx, store.ServerKey{Public: pub[:], Private: []byte{1}}, t0.Add(time.Duration(n)*time.Second)))
		return pub[:]
	}
	for name, ss := range racers(t, open) {
		t.Run(name, func(t *testing.T) {
			for range raceRounds {
				cur, err := ss[1].ServerKeys(ctx)
				must(t, "ServerKeys", err)
				var keys [2][]byte
				switch len(cur) {
				case 0: // the first round
					keys = [2][]byte{newKey(t, ss[0]), newKey(t, ss[0])}
				case 1: // the last round's survivor
					keys = [2][]byte{cur[0].Public, newKey(t, ss[0])}
				default:
					t.Fatalf("ServerKeys before the race = %d keys, want at most 1", len(cur))
				}
				errs := race(func(i int) error { return ss[i].RetireServerKey(ctx, keys[i], t0.Add(time.Hour)) })
				oneWins(t, "RetireServerKey", errs, store.ErrLastKey)
				loser := 0
				if errs[0] == nil {
					loser = 1
				}
				cur, err = ss[0].ServerKeys(ctx)
				if err != nil || len(cur) != 1 || !bytes.Equal(cur[0].Public, keys[loser]) {
					t.Fatalf("ServerKeys after the race = %d keys, %v; want the refused key %x alone", len(cur), err, keys[loser])
				}
			}
		})
	}
}

// testReopen opens a second Store on a database in use: the migrations
// run again without harm and both see the same data.
func testReopen(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s1 := open(t)
	addCard(t, s1, cardA)
	must(t, "AdvanceCounter", s1.AdvanceCounter(ctx, cardA, 7, t0))
	s2 := open(t)
	s3 := open(t)
	c, err := s3.Card(ctx, cardA)
	if err != nil || c.Counter != 7 {
		t.Fatalf("Card(on reopened store) = counter %d, %v; want 7, nil", c.Counter, err)
	}
	// A challenge issued through one instance is answered at another.
	ch := store.Challenge{Value: value(1), Card: cardA, Session: []byte("s"), Purpose: 1, Expires: t0.Add(time.Minute)}
	must(t, "PutChallenge(first store)", s1.PutChallenge(ctx, ch))
	if _, err := s2.TakeChallenge(ctx, ch.Value, ch.Card, ch.Session, t0); err != nil {
		t.Fatalf("TakeChallenge(second store) = %v, want nil", err)
	}
	must(t, "AdvanceCounter(second store)", s2.AdvanceCounter(ctx, cardA, 8, t0))
	wantErr(t, "AdvanceCounter(first store, stale)", s1.AdvanceCounter(ctx, cardA, 8, t0), store.ErrCounterReplay)

	type versioner interface {
		SchemaVersion(context.Context) (int, error)
	}
	v1, ok1 := s1.(versioner)
	v3, ok3 := s3.(versioner)
	if !ok1 || !ok3 {
		return
	}
	a, err1 := v1.SchemaVersion(ctx)
	b, err3 := v3.SchemaVersion(ctx)
	if err1 != nil || err3 != nil || a < 1 || a != b {
		t.Fatalf("SchemaVersion = %d, %v and %d, %v after reopening; want the same version ≥ 1", a, err1, b, err3)
	}
}

// race runs f(0) and f(1) at once (each on its own goroutine) and returns
// their errors.
func race(f func(i int) error) [2]error {
	var errs [2]error
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range 2 {
		done.Go(func() {
			start.Wait()
			errs[i] = f(i)
		})
	}
	start.Done()
	done.Wait()
	return errs
}

// oneWins checks that exactly one of errs is nil and the other is want.
func oneWins(t testing.TB, what string, errs [2]error, want error) {
	t.Helper()
	if !(errs[0] == nil && errors.Is(errs[1], want)) && !(errs[1] == nil && errors.Is(errs[0], want)) {
		t.Fatalf("%s raced = %v, %v; want one nil and one %v", what, errs[0], errs[1], want)
	}
}

// racers returns the two stores that race: two instances on one database,
// or the same one twice.
func racers(t *testing.T, open OpenFunc) map[string][2]store.Store {
	s1 := open(t)
	s2 := open(t)
	return map[string][2]store.Store{
		"one store":  {s1, s1},
		"two stores": {s1, s2},
	}
}

const raceRounds = 25

func testRaceTakeChallenge(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	n := 0
	for name, ss := range racers(t, open) {
		t.Run(name, func(t *testing.T) {
			for range raceRounds {
				n++
				c := store.Challenge{Value: value(n), Card: cardA, Session: []byte("s"), Purpose: 1, Expires: t0.Add(time.Minute)}
				must(t, "PutChallenge", ss[0].PutChallenge(ctx, c))
				errs := race(func(i int) error {
					_, err := ss[i].TakeChallenge(ctx, c.Value, c.Card, c.Session, t0)
					return err
				})
				oneWins(t, "TakeChallenge", errs, store.ErrNotFound)
			}
		})
	}
}

func testRaceAdvanceCounter(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	n := 0
	for name, ss := range racers(t, open) {
		t.Run(name, func(t *testing.T) {
			for range raceRounds {
				n++
				card := fmt.Sprintf("40000000%08d", n)
				addCard(t, ss[0], card)
				errs := race(func(i int) error { return ss[i].AdvanceCounter(ctx, card, 1, t0) })
				oneWins(t, "AdvanceCounter", errs, store.ErrCounterReplay)
				c, err := ss[1].Card(ctx, card)
				if err != nil || c.Counter != 1 || !c.Cloned() {
					t.Fatalf("Card after race = counter %d, cloned %v, %v; want 1, true, nil", c.Counter, c.Cloned(), err)
				}
			}
		})
	}
}

// testRaceDecrementPINTries has 2 goroutines on two stores take tries: no
// try is lost or taken twice.
func testRaceDecrementPINTries(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s1, s2 := open(t), open(t)
	addCard(t, s1, cardA)
	must(t, "SetPIN", s1.SetPIN(ctx, store.PIN{Card: cardA, Hash: []byte{1}, Salt: []byte{2}, MaxTries: raceMaxTries}))
	raceTakeTries(t, "DecrementPINTries", s1, s2, func(s store.Store) (int, error) {
		p, err := s.DecrementPINTries(ctx, cardA)
		return p.Tries, err
	})
}

// testRaceDecrementBiometricTries has 2 goroutines on two stores take
// biometric tries: no try is lost or taken twice.
func testRaceDecrementBiometricTries(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s1, s2 := open(t), open(t)
	addCard(t, s1, cardA)
	must(t, "SetBiometric", s1.SetBiometric(ctx, store.Biometric{Card: cardA, Template: []byte{1}, Threshold: 1, MaxTries: raceMaxTries}))
	raceTakeTries(t, "DecrementBiometricTries", s1, s2, func(s store.Store) (int, error) {
		b, err := s.DecrementBiometricTries(ctx, cardA)
		return b.Tries, err
	})
}

// raceMaxTries is the try budget the try-counter races start from.
const raceMaxTries = 9

// raceTakeTries has one goroutine on each store call take raceMaxTries
// times on a counter that starts at raceMaxTries tries: exactly
// raceMaxTries calls must take a try, each tries-left value once, and the
// rest must find the counter locked.
func raceTakeTries(t *testing.T, name string, s1, s2 store.Store, take func(store.Store) (int, error)) {
	t.Helper()
	var ok, locked atomic.Int32
	var seen [raceMaxTries]atomic.Int32
	var wg sync.WaitGroup
	for _, s := range []store.Store{s1, s2} {
		wg.Go(func() {
			for range raceMaxTries {
				left, err := take(s)
				switch {
				case err == nil && left >= 0 && left < raceMaxTries:
					ok.Add(1)
					seen[left].Add(1)
				case errors.Is(err, store.ErrLocked):
					locked.Add(1)
				default:
					t.Errorf("%s = %d tries left, %v", name, left, err)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != raceMaxTries || locked.Load() != raceMaxTries {
		t.Fatalf("%s raced: %d took a try, %d locked; want %d and %d", name, ok.Load(), locked.Load(), raceMaxTries, raceMaxTries)
	}
	for i := range seen {
		if seen[i].Load() != 1 {
			t.Fatalf("%s raced: %d tries left seen %d times, want once", name, i, seen[i].Load())
		}
	}
}

func testRaceFinishAuthRequest(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s1, s2 := open(t), open(t)
	must(t, "PutRelyingParty", s1.PutRelyingParty(ctx, store.RelyingParty{ID: "shop", KeyHash: []byte{1}}, t0))
	for i := range raceRounds {
		id := fmt.Sprint("req-", i)
		must(t, "CreateAuthRequest", s1.CreateAuthRequest(ctx, store.AuthRequest{ID: id, RelyingParty: "shop", Card: cardA, Expires: t0.Add(time.Minute)}, t0))
		statuses := [2]store.AuthStatus{store.AuthApproved, store.AuthExpired}
		stores := [2]store.Store{s1, s2}
		errs := race(func(i int) error {
			return stores[i].FinishAuthRequest(ctx, id, statuses[i], []byte{byte(i)}, t0)
		})
		oneWins(t, "FinishAuthRequest", errs, store.ErrConflict)
		r, err := s2.AuthRequest(ctx, id)
		must(t, "AuthRequest", err)
		winner := 0
		if errs[0] != nil {
			winner = 1
		}
		if r.Status != statuses[winner] || !bytes.Equal(r.Result, []byte{byte(winner)}) {
			t.Fatalf("AuthRequest after race = %v %v, want the winner's %v %v", r.Status, r.Result, statuses[winner], []byte{byte(winner)})
		}
	}
}
