// Package store owns the repository interfaces the server packages need —
// challenges, cards, devices, online PINs, enrolled biometric templates,
// relying parties, authentication requests, the server's static keys, the
// ledger and merchants (catalogues, purchase requests) — their plain record types, the
// typed errors every backend returns, and a registry that opens a backend by
// URI (sqlite:/path/file.db, postgres://…).
//
// It must not import a backend (backends register themselves) nor any server
// package: it holds no policy. Hashing PINs and API keys, deciding what a
// purpose or a policy means, and checking signatures are the caller's; a
// backend only keeps bytes and makes each state change one atomic database
// transaction, so that several server instances on one database behave as
// one.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors every backend returns, possibly wrapped; branch with errors.Is.
var (
	// ErrNotFound: no such record (or, for a challenge, none for this card
	// and session).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the record already exists, or it is no longer in the
	// state the change requires.
	ErrConflict = errors.New("store: conflict")
	// ErrExpired: the challenge existed but its lifetime had run out; it is
	// consumed all the same.
	ErrExpired = errors.New("store: expired")
	// ErrCounterReplay: the card's counter did not grow. The card is flagged
	// as possibly cloned (Card.ClonedAt).
	ErrCounterReplay = errors.New("store: counter did not grow")
	// ErrLocked: the online PIN, or the enrolled biometric, has no tries
	// left.
	ErrLocked = errors.New("store: PIN locked")
	// ErrRevoked: the card is revoked; its counter was not advanced.
	ErrRevoked = errors.New("store: revoked")
	// ErrLastKey: the server key is the last current one; retiring it
	// would leave the server with none, so it was not retired.
	ErrLastKey = errors.New("store: last current server key")
)

// Store is every repository of one database. Implementations are safe for
// concurrent use, and several Stores (server instances) may share one
// database where the backend allows it (PostgreSQL).
type Store interface {
	Challenges
	Cards
	Devices
	PINs
	Biometrics
	RelyingParties
	AuthRequests
	ServerKeys
	io.Closer
}

// ChallengeSize is the length of a challenge value in bytes.
const ChallengeSize = 32

// Challenge is one issued challenge: single use, short-lived, bound to a
// card and a session.
type Challenge struct {
	Value   []byte    // ChallengeSize random bytes; the key
	Card    string    // card number it was issued for
	Session []byte    // the session it was issued in (opaque to the store)
	Purpose uint8     // the caller's purpose code (a txn.Purpose)
	Expires time.Time // answerable only before this instant
}

// Challenges keeps issued challenges until they are answered or expire.
type Challenges interface {
	// PutChallenge stores c. It returns ErrConflict if c.Value is already
	// stored.
	PutChallenge(ctx context.Context, c Challenge) error
	// TakeChallenge atomically consumes the challenge value issued for card
	// in session and returns it: of any number of concurrent callers, on any
	// number of Stores over one database, exactly one gets it. It returns
	// ErrNotFound if there is no such challenge for this card and session
	// (then a challenge stored for another card or session is left alone),
	// and ErrExpired if it expired at or before now (it is consumed).
	TakeChallenge(ctx context.Context, value []byte, card string, session []byte, now time.Time) (Challenge, error)
	// DeleteExpiredChallenges removes challenges that expired at or before
	// now and reports how many.
	DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error)
}

// Card is the server's record of one card.
type Card struct {
	Number      string    // 16 decimal digits
	Cert        []byte    // X.509 certificate, DER
	IssuerKeyID []byte    // subject key id of the CA that issued Cert
	Counter     uint32    // highest transaction counter accepted; 0 if none
	Created     time.Time // first stored
	RevokedAt   time.Time // zero unless revoked
	ClonedAt    time.Time // zero unless a counter replay flagged it (first time)
}

// Revoked reports whether the card is revoked.
func (c Card) Revoked() bool { return !c.RevokedAt.IsZero() }

// Cloned reports whether a counter replay flagged the card as possibly cloned.
func (c Card) Cloned() bool { return !c.ClonedAt.IsZero() }

// Cards keeps cards, their counters and their status.
type Cards interface {
	// PutCard stores the card number, certificate and issuer key id of c,
	// creating the card with counter 0 at now, or replacing the certificate
	// of an existing card while keeping its counter, revocation and clone
	// flag. Other fields of c are ignored.
	PutCard(ctx context.Context, c Card, now time.Time) error
	// Card returns the card with this number, or ErrNotFound.
	Card(ctx context.Context, number string) (Card, error)
	// AdvanceCounter sets the card's counter to counter if, and only if,
	// counter is greater than the stored one, atomically. Otherwise it
	// flags the card as possibly cloned (ClonedAt = now, kept if already
	// set) and returns ErrCounterReplay. It returns ErrRevoked for a revoked
	// card and ErrNotFound for an unknown one, changing nothing.
	AdvanceCounter(ctx context.Context, number string, counter uint32, now time.Time) error
	// RevokeCard marks the card revoked at now (kept if already revoked).
	// It returns ErrNotFound for an unknown card.
	RevokeCard(ctx context.Context, number string, now time.Time) error
}

// Device is a registered device.
type Device struct {
	ID        string    // the operator's identifier
	StaticKey []byte    // Noise static public key; unique
	Name      string    // free text
	Created   time.Time // registration time
	RevokedAt time.Time // zero unless revoked
}

// Revoked reports whether the device is revoked.
func (d Device) Revoked() bool { return !d.RevokedAt.IsZero() }

// Devices keeps registered devices.
type Devices interface {
	// AddDevice registers d at now (d.Created and d.RevokedAt are
	// ignored). It returns ErrConflict if the ID or the static key is
	// already registered.
	AddDevice(ctx context.Context, d Device, now time.Time) error
	// Device returns the device with this ID, or ErrNotFound.
	Device(ctx context.Context, id string) (Device, error)
	// DeviceByKey returns the device with this static public key, revoked
	// or not, or ErrNotFound.
	DeviceByKey(ctx context.Context, staticKey []byte) (Device, error)
	// RevokeDevice marks the device revoked at now (kept if already
	// revoked). It returns ErrNotFound for an unknown device.
	RevokeDevice(ctx context.Context, id string, now time.Time) error
}

// PIN is a card's online PIN: a slow salted hash made by the caller, and a
// try counter kept by the store.
type PIN struct {
	Card     string // card number
	Hash     []byte // the caller's hash of the PIN
	Salt     []byte
	Params   string // the caller's hash algorithm and parameters, opaque
	Tries    int    // tries left; 0 is locked
	MaxTries int    // what a reset restores; at least 1
}

// PINs keeps online PINs and their try counters. The protocol is: call
// DecrementPINTries before comparing, then ResetPINTries if the PIN
// matched.
type PINs interface {
	// SetPIN stores p for p.Card, replacing any PIN it had, with
	// p.MaxTries tries left (p.Tries is ignored).
	SetPIN(ctx context.Context, p PIN) error
	// PIN returns the card's PIN without changing it, or ErrNotFound.
	PIN(ctx context.Context, card string) (PIN, error)
	// DecrementPINTries takes one try, atomically and durably, and returns
	// the PIN with the tries now left (possibly 0: the caller still
	// compares that last try). It returns ErrLocked, taking nothing, when
	// no try is left, and ErrNotFound when the card has no PIN.
	DecrementPINTries(ctx context.Context, card string) (PIN, error)
	// ResetPINTries restores MaxTries tries. It returns ErrNotFound when
	// the card has no PIN.
	ResetPINTries(ctx context.Context, card string) error
	// DeletePIN removes the card's PIN. It returns ErrNotFound when the
	// card has none.
	DeletePIN(ctx context.Context, card string) error
}

// Biometric is a card's enrolled biometric template for matching on the
// server, and a try counter kept by the store. What a template means and
// how two are compared are the caller's.
type Biometric struct {
	Card      string // card number
	Template  []byte // the enrolled template, opaque to the store
	Threshold int    // the caller's match threshold; at least 0
	Tries     int    // tries left; 0 is locked
	MaxTries  int    // what a reset restores; at least 1
}

// Biometrics keeps enrolled biometric templates and their try counters,
// with the protocol of PINs: call DecrementBiometricTries before
// comparing, then ResetBiometricTries if the template matched.
type Biometrics interface {
	// SetBiometric stores b for b.Card, replacing any template it had,
	// with b.MaxTries tries left (b.Tries is ignored). It returns
	// ErrNotFound for an unknown card, and an error for MaxTries under 1 or
	// a negative Threshold.
	SetBiometric(ctx context.Context, b Biometric) error
	// Biometric returns the card's template without changing it, or
	// ErrNotFound.
	Biometric(ctx context.Context, card string) (Biometric, error)
	// DecrementBiometricTries takes one try, atomically and durably, and
	// returns the record with the tries now left (possibly 0: the caller
	// still compares that last try). It returns ErrLocked, taking nothing,
	// when no try is left, and ErrNotFound when the card has no template.
	DecrementBiometricTries(ctx context.Context, card string) (Biometric, error)
	// ResetBiometricTries restores MaxTries tries. It returns ErrNotFound
	// when the card has no template.
	ResetBiometricTries(ctx context.Context, card string) error
	// DeleteBiometric removes the card's template. It returns ErrNotFound
	// when the card has none.
	DeleteBiometric(ctx context.Context, card string) error
}

// RelyingParty is a service that asks the server to authenticate card
// holders.
type RelyingParty struct {
	ID            string
	Name          string
	KeyHash       []byte // hash of its API key (the caller's hash); unique
	WebhookURL    string // empty: the party polls
	WebhookSecret []byte // key for signing webhook calls
	Policy        string // the caller's encoding of which verification methods suffice
	Created       time.Time
}

// RelyingParties keeps relying parties and the hashes of their API keys.
type RelyingParties interface {
	// PutRelyingParty creates the party, or replaces every field of the
	// one with this ID except Created. It returns ErrConflict if another
	// party has the same KeyHash.
	PutRelyingParty(ctx context.Context, rp RelyingParty, now time.Time) error
	// RelyingParty returns the party with this ID, or ErrNotFound.
	RelyingParty(ctx context.Context, id string) (RelyingParty, error)
	// RelyingPartyByKey returns the party whose API key hashes to keyHash,
	// or ErrNotFound.
	RelyingPartyByKey(ctx context.Context, keyHash []byte) (RelyingParty, error)
}

// AuthStatus is the state of an authentication request. Pending is the only
// state that changes; the others are final.
type AuthStatus uint8

// Authentication request states; stored as these numbers, append only.
const (
	AuthPending   AuthStatus = 1 // waiting for the card holder
	AuthApproved  AuthStatus = 2 // the holder was authenticated
	AuthRefused   AuthStatus = 3 // verification failed or the holder declined
	AuthExpired   AuthStatus = 4 // nobody answered in time
	AuthCancelled AuthStatus = 5 // the relying party withdrew it
)

// String returns the status as a lowercase word.
func (s AuthStatus) String() string {
	switch s {
	case AuthPending:
		return "pending"
	case AuthApproved:
		return "approved"
	case AuthRefused:
		return "refused"
	case AuthExpired:
		return "expired"
	case AuthCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("AuthStatus(%d)", uint8(s))
}

// AuthRequest is a relying party's request to authenticate a card holder.
type AuthRequest struct {
	ID           string
	RelyingParty string // RelyingParty.ID
	Card         string // card number
	Policy       string // the caller's encoding of acceptable methods
	Status       AuthStatus
	Result       []byte // the caller's encoding of the outcome; nil while pending
	Created      time.Time
	Updated      time.Time
	Expires      time.Time
}

// AuthRequests keeps authentication requests.
type AuthRequests interface {
	// CreateAuthRequest stores r as pending, created and updated at now. It
	// returns ErrConflict if the ID exists and ErrNotFound if the relying
	// party does not.
	CreateAuthRequest(ctx context.Context, r AuthRequest, now time.Time) error
	// FinishAuthRequest moves a pending request to status with result,
	// atomically: of concurrent callers exactly one succeeds. It returns
	// ErrConflict if the request is no longer pending (or status is
	// AuthPending) and ErrNotFound if there is no such request.
	FinishAuthRequest(ctx context.Context, id string, status AuthStatus, result []byte, now time.Time) error
	// AuthRequest returns the request with this ID, or ErrNotFound.
	AuthRequest(ctx context.Context, id string) (AuthRequest, error)
	// PendingAuthRequests returns the card's pending requests that expire
	// after now, oldest first.
	PendingAuthRequests(ctx context.Context, card string, now time.Time) ([]AuthRequest, error)
}

// ServerKey is one of the server's Noise static key pairs.
type ServerKey struct {
	Public    []byte    // unique
	Private   []byte    // opaque to the store; encrypt it before if you must
	Created   time.Time // when it was added
	RetiredAt time.Time // zero while current
}

// ServerKeys keeps the server's static keys, so that all instances share
// them and a rotation can overlap the old and the new key.
type ServerKeys interface {
	// AddServerKey stores k as current from now on (k.Created and
	// k.RetiredAt are ignored). It returns ErrConflict if k.Public exists.
	AddServerKey(ctx context.Context, k ServerKey, now time.Time) error
	// ServerKeys returns the keys not retired, newest first.
	ServerKeys(ctx context.Context) ([]ServerKey, error)
	// ServerKeyHistory returns every key, current and retired (with
	// RetiredAt), newest first.
	ServerKeyHistory(ctx context.Context) ([]ServerKey, error)
	// RetireServerKey retires the key at now (kept if already retired),
	// unless it is the last current key: then it returns ErrLastKey and
	// changes nothing. The check and the change are one atomic step: of
	// concurrent callers on any number of Stores over one database
	// retiring the last current keys, at least one is refused, so one key
	// always stays current. It returns ErrNotFound for an unknown key.
	RetireServerKey(ctx context.Context, public []byte, now time.Time) error
}

// OpenFunc opens a backend for a URI of its scheme.
type OpenFunc func(ctx context.Context, uri string) (Store, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a backend available to Open for URIs that start with
// scheme followed by ':' ("sqlite", "postgres"). It panics if scheme is
// empty or already registered.
func Register(scheme string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if scheme == "" || open == nil {
		panic("store: Register with empty scheme or nil function")
	}
	if _, dup := registry[scheme]; dup {
		panic("store: Register called twice for " + scheme)
	}
	registry[scheme] = open
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var s []string
	for k := range registry {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// Open opens the store a URI names, through the backend registered for its
// scheme; the backend package must be imported (for its side effect) by
// the program. It creates the database schema or brings it up to date.
func Open(ctx context.Context, uri string) (Store, error) {
	scheme, _, ok := strings.Cut(uri, ":")
	if !ok || scheme == "" {
		return nil, fmt.Errorf("opening store: URI has no scheme (want one of %s)", strings.Join(Schemes(), ", "))
	}
	registryMu.RLock()
	open := registry[scheme]
	registryMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("opening store: unknown scheme %q (want one of %s)", scheme, strings.Join(Schemes(), ", "))
	}
	return open(ctx, uri)
}
