// Package servertest builds the test environment the server packages'
// tests share: a settable clock, the stores to run on (a SQLite file, and
// PostgreSQL via pgtest when CARDLINK_TEST_POSTGRES is set), cards of one
// issuer (a wallettest card and its siblings) registered in a store,
// devices registered with their keys, and merchants with a ledger account.
//
// It is for tests only: no non-test code may import it. It must not import
// the packages whose own (internal) tests use it — auth, purchase, purse,
// api and server — or those tests would form an import cycle; callers
// wire those services themselves.
package servertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/channel"
	"cardlink/internal/device"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/ledger"
	"cardlink/internal/server/pki"
	"cardlink/internal/store"
	"cardlink/internal/store/postgres"
	"cardlink/internal/store/postgres/pgtest"
	"cardlink/internal/store/sqlite"
	"cardlink/internal/wallet"
)

// EUR is the currency of the accounts servertest opens.
const EUR = money.Currency("EUR")

// Clock is a settable time source, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock that reads start until moved with Add.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's current reading.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d (which may be negative).
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Backend is a store a test can run on.
type Backend struct {
	Name string                         // "sqlite" or "postgres"
	Open func(t testing.TB) store.Store // a fresh, empty store closed when t ends
}

// Backends returns the stores to run a test on: SQLite always, and
// PostgreSQL in a schema of its own named with prefix (its Open skips t
// unless CARDLINK_TEST_POSTGRES names a server).
func Backends(prefix string) []Backend {
	return []Backend{
		{"sqlite", SQLite},
		{"postgres", func(t testing.TB) store.Store { return Postgres(t, prefix) }},
	}
}

// SQLite opens a fresh SQLite store in a file under t.TempDir(), closed
// when t ends; it fails t if it cannot.
func SQLite(t testing.TB) store.Store {
	t.Helper()
	return OpenSQLite(t, filepath.Join(t.TempDir(), "cardlink.db"))
}

// OpenSQLite opens the SQLite store at path, closed when t ends; it fails
// t if it cannot.
func OpenSQLite(t testing.TB, path string) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("sqlite.Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Postgres opens a fresh PostgreSQL store in a new schema named with
// prefix (see pgtest.Schema), closed when t ends. It skips t unless
// CARDLINK_TEST_POSTGRES is set, and fails t if it cannot open the store.
func Postgres(t testing.TB, prefix string) store.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), pgtest.Schema(t, pgtest.DSN(t), prefix, 8))
	if err != nil {
		t.Fatalf("postgres.Open = %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// CA returns a new self-signed P-256 CA certificate valid 2026..2036, for
// an auth service in tests where no card signs anything.
func CA(t testing.TB) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatalf("creating test CA: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing test CA: %v", err)
	}
	return c
}

// CardNumber returns a new random valid card number.
func CardNumber(t testing.TB) string {
	t.Helper()
	n, err := pki.NewCardNumber(nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Card personalizes a wallettest card with a new card number and a new
// issuer (a CA and an operations key).
func Card(t testing.TB) *wallettest.Env {
	t.Helper()
	return wallettest.New(t, wallettest.Options{CardNumber: CardNumber(t)})
}

// Sibling personalizes another card with the issuer of base (its CA and
// operations key), so that an auth service trusting base's CA accepts it.
func Sibling(t testing.TB, base *wallettest.Env) *wallettest.Env {
	t.Helper()
	c := wallettest.New(t, wallettest.Options{CardNumber: CardNumber(t), Blank: true})
	issuer := *base
	issuer.CardNumber = c.CardNumber
	p := wallet.Personalization{
		CardNumber: c.CardNumber, PIN: c.PIN, PUK: c.PUK, BioTemplate: c.BioTemplate,
		Currency: c.Options.Currency, MaxBalance: c.Options.MaxBalance,
		IssuerKeyID: base.CA.SubjectKeyId, IssuerSigner: &base.OpsKey.PublicKey, OpsKeyID: base.OpsKeyID,
	}
	if err := c.Client.Personalize(context.Background(), p, issuer.IssueCard); err != nil {
		t.Fatalf("personalizing sibling card: %v", err)
	}
	c.CA, c.CAKey, c.OpsKey, c.OpsKeyID, c.CardCert = base.CA, base.CAKey, base.OpsKey, base.OpsKeyID, issuer.CardCert
	return c
}

// Approval has card sign transaction bytes after an offline PIN check
// and returns the approval of the transaction id.
func Approval(t testing.TB, card *wallettest.Env, id [16]byte, transaction []byte) *protocol.TransactionApproval {
	t.Helper()
	ctx := context.Background()
	if err := card.Client.VerifyPIN(ctx, card.PIN); err != nil {
		t.Fatal(err)
	}
	sig, err := card.Client.SignTransaction(ctx, transaction, false)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.TransactionApproval{ID: id[:], Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig}
}

// PutCard makes card known to st (as its first exchange with the server
// would) at now.
func PutCard(t testing.TB, st store.Store, card *wallettest.Env, now time.Time) {
	t.Helper()
	c := store.Card{Number: card.CardNumber, Cert: card.CardCert.Raw, IssuerKeyID: card.CA.SubjectKeyId}
	if err := st.PutCard(context.Background(), c, now); err != nil {
		t.Fatalf("PutCard(%s) = %v", card.CardNumber, err)
	}
}

// Device registers a new device named name with st at now, with a fresh
// channel key, and returns its identity pinning serverKeys (from
// server.EnsureKey) and dialling addr (may be empty).
func Device(t testing.TB, st store.Store, name string, serverKeys [][]byte, addr string, now time.Time) device.Identity {
	t.Helper()
	k, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	id := device.Identity{ID: "dev-" + rand.Text(), Static: k, ServerKeys: serverKeys, Server: addr}
	if err := st.AddDevice(context.Background(), store.Device{ID: id.ID, StaticKey: k.Public, Name: name}, now); err != nil {
		t.Fatalf("AddDevice(%s) = %v", id.ID, err)
	}
	return id
}

// Merchant creates m in ms with a merchant account in EUR in l; an empty
// m.Account becomes "acct_" + m.ID. It returns m as created.
func Merchant(t testing.TB, l *ledger.Ledger, ms store.Merchants, m store.Merchant) store.Merchant {
	t.Helper()
	ctx := context.Background()
	if m.Account == "" {
		m.Account = "acct_" + m.ID
	}
	if err := l.CreateAccount(ctx, store.Account{ID: m.Account, Kind: store.KindMerchant, Currency: EUR}); err != nil {
		t.Fatalf("CreateAccount(%s) = %v", m.Account, err)
	}
	if err := ms.CreateMerchant(ctx, m); err != nil {
		t.Fatalf("CreateMerchant(%s) = %v", m.ID, err)
	}
	return m
}

// Balance returns account's balance in l in minor units; an account that
// does not exist has 0.
func Balance(t testing.TB, l *ledger.Ledger, account string) int64 {
	t.Helper()
	b, err := l.Balance(context.Background(), account)
	if errors.Is(err, store.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("Balance(%s) = %v", account, err)
	}
	return b.Minor
}
