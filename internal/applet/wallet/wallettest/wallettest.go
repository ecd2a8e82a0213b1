// Package wallettest builds personalized wallet cards for tests: a test
// issuer (CA and operations key, made here with crypto/x509), a card with
// the wallet applet over a tearing in-memory NVM, a virtual reader and the
// host client, plus a driver that cuts power at every NVM write of an
// operation (Tear).
//
// It is imported only by tests. It must not import server packages (the
// issuer here is a stand-in for internal/server/pki).
package wallettest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	walletapplet "cardlink/internal/applet/wallet"
	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/reader"
	"cardlink/internal/reader/virtual"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// Defaults used by New when Options leave a field zero.
const (
	CardNumber = "4999000000000013" // Luhn-valid
	PIN        = "1234"
	PUK        = "12345678"
	Currency   = money.Currency("EUR")
	MaxBalance = 100_000 // 1000.00 EUR
	Capacity   = 32 << 10
)

// readerName is the name of the virtual reader holding the card.
const readerName = "wallettest reader"

// Options change the card New builds. The zero value is the default card.
type Options struct {
	Capacity     int    // NVM capacity; 0 means Capacity
	CardNumber   string // "" means CardNumber
	PIN, PUK     string // "" means PIN, PUK
	Currency     money.Currency
	MaxBalance   int64  // minor units; 0 means MaxBalance
	BioTemplate  []byte // nil means Template()
	NoBiometric  bool   // enroll no biometric template
	BioThreshold int    // 0 means the card's default
	// Blank leaves the card unpersonalized (selected, personalizing); the
	// issuer is made all the same.
	Blank bool
	// Path, if set, keeps the NVM in a new file there (nvm.CreateFile), as
	// a card file does: Medium is then nil, Reopen reopens the file, and
	// Snapshot, Fork and Tear are unavailable.
	Path string
}

// Env is one personalized card in a reader, selected, with its issuer.
// Card, NVM, Medium, Reader, Conn and Client change on Reopen; Tear hands
// its check a fresh Env.
type Env struct {
	Card   *card.Card
	NVM    *nvm.Memory
	Medium *nvmtest.Tearing
	Reader *virtual.Reader
	Conn   reader.Conn
	Client *wallet.Client

	CardNumber  string
	PIN, PUK    string
	BioTemplate []byte // enrolled template (nil if none)
	CA          *x509.Certificate
	CAKey       *ecdsa.PrivateKey
	OpsKey      *ecdsa.PrivateKey // issuer operations key: signs loads and items
	OpsKeyID    []byte
	CardCert    *x509.Certificate
	Options     Options

	mem *nvm.MemMedium
}

// Template returns the default enrolled biometric template: 64 fixed
// pseudo-random bytes.
func Template() []byte {
	s := sha512.Sum512([]byte("cardlink wallettest finger"))
	return s[:]
}

// Sample returns template with its first flips bits inverted: a presented
// sample at Hamming distance flips from it.
func Sample(template []byte, flips int) []byte {
	b := append([]byte(nil), template...)
	for i := 0; i < flips && i < 8*len(b); i++ {
		b[i/8] ^= 0x80 >> (i % 8)
	}
	return b
}

// New builds the card and its issuer and personalizes the card through the
// host client. It fails the test on any error.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Capacity == 0 {
		o.Capacity = Capacity
	}
	if o.CardNumber == "" {
		o.CardNumber = CardNumber
	}
	if o.PIN == "" {
		o.PIN = PIN
	}
	if o.PUK == "" {
		o.PUK = PUK
	}
	if o.Currency == "" {
		o.Currency = Currency
	}
	if o.MaxBalance == 0 {
		o.MaxBalance = MaxBalance
	}
	if o.BioTemplate == nil && !o.NoBiometric {
		o.BioTemplate = Template()
	}
	if o.NoBiometric {
		o.BioTemplate = nil
	}
	e := &Env{
		CardNumber:  o.CardNumber,
		PIN:         o.PIN,
		PUK:         o.PUK,
		BioTemplate: o.BioTemplate,
		Options:     o,
	}
	e.newIssuer(t)
	if o.Path != "" {
		mem, err := nvm.CreateFile(o.Path, o.Capacity)
		if err != nil {
			t.Fatalf("creating NVM file: %v", err)
		}
		e.build(t, mem)
	} else {
		e.mem = nvm.NewMemMedium(nvm.MediumSize(o.Capacity))
		if err := nvm.Format(e.mem, o.Capacity); err != nil {
			t.Fatalf("formatting NVM: %v", err)
		}
		e.Medium = nvmtest.NewTearing(e.mem)
		e.open(t)
	}
	if o.Blank {
		return e
	}
	if err := e.Client.Personalize(context.Background(), e.Personalization(), e.IssueCard); err != nil {
		t.Fatalf("personalizing card: %v", err)
	}
	return e
}

// Personalization is what New personalizes the card with: its number,
// PIN, PUK, template and options, and the Env's issuer.
func (e *Env) Personalization() wallet.Personalization {
	return wallet.Personalization{
		CardNumber:   e.CardNumber,
		PIN:          e.PIN,
		PUK:          e.PUK,
		BioTemplate:  e.BioTemplate,
		BioThreshold: e.Options.BioThreshold,
		Currency:     e.Options.Currency,
		MaxBalance:   e.Options.MaxBalance,
		IssuerKeyID:  e.CA.SubjectKeyId,
		IssuerSigner: &e.OpsKey.PublicKey,
		OpsKeyID:     e.OpsKeyID,
	}
}

// newIssuer makes the test CA and operations key.
func (e *Env) newIssuer(t testing.TB) {
	t.Helper()
	var err error
	if e.CAKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatalf("generating CA key: %v", err)
	}
	if e.OpsKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatalf("generating ops key: %v", err)
	}
	ops, err := e.OpsKey.PublicKey.Bytes()
	if err != nil {
		t.Fatalf("encoding ops key: %v", err)
	}
	sum := sha256.Sum256(ops)
	e.OpsKeyID = sum[:8]
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cardlink test issuer"},
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &e.CAKey.PublicKey, e.CAKey)
	if err != nil {
		t.Fatalf("creating CA certificate: %v", err)
	}
	if e.CA, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("parsing CA certificate: %v", err)
	}
}

// IssueCard issues a card certificate for pub (subject CN = the card
// number), signed by the test CA; it is the issue function New passes to
// Personalize, and sets e.CardCert.
func (e *Env) IssueCard(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: e.CardNumber, SerialNumber: e.CardNumber},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, e.CA, pub, e.CAKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	e.CardCert = cert
	return cert, nil
}

// CardKey returns the card's public key from its certificate.
func (e *Env) CardKey() *ecdsa.PublicKey {
	if e.CardCert == nil {
		return nil
	}
	k, _ := e.CardCert.PublicKey.(*ecdsa.PublicKey)
	return k
}

// open builds a card over e.Medium (or the file at Options.Path),
// connects and selects the wallet.
func (e *Env) open(t testing.TB) {
	t.Helper()
	var mem *nvm.Memory
	var err error
	if e.Options.Path != "" {
		mem, err = nvm.OpenFile(e.Options.Path)
	} else {
		mem, err = nvm.Open(e.Medium)
	}
	if err != nil {
		t.Fatalf("opening NVM: %v", err)
	}
	e.build(t, mem)
}

// build makes a card over mem, connects and selects the wallet. The
// memory is closed when the test ends.
func (e *Env) build(t testing.TB, mem *nvm.Memory) {
	t.Helper()
	t.Cleanup(func() { mem.Close() })
	c, err := card.New(card.Config{NVM: mem, Applets: []card.Applet{walletapplet.New()}})
	if err != nil {
		t.Fatalf("building card: %v", err)
	}
	e.NVM, e.Card = mem, c
	e.Reader = virtual.New(c, readerName)
	e.connect(t)
}

// connect opens a session on e.Reader and selects the wallet.
func (e *Env) connect(t testing.TB) {
	t.Helper()
	conn, err := e.Reader.Connect(context.Background())
	if err != nil {
		t.Fatalf("connecting to card: %v", err)
	}
	e.Conn = conn
	if e.Client, err = wallet.Select(context.Background(), conn); err != nil {
		t.Fatalf("selecting wallet: %v", err)
	}
}

// PowerCycle removes and restores the card's power (the same card and NVM
// objects; RAM is cleared, the NVM recovered from the medium) and
// reselects. Power to the medium is restored first.
func (e *Env) PowerCycle(t testing.TB) {
	t.Helper()
	e.restore()
	e.Conn.Close()
	e.connect(t)
}

// Reopen power-cycles the card over the same medium as a restart does: a
// new nvm.Memory opened from the medium, a new card and reader, reselected.
func (e *Env) Reopen(t testing.TB) {
	t.Helper()
	e.restore()
	e.Conn.Close()
	if e.Options.Path != "" {
		if err := e.NVM.Close(); err != nil {
			t.Fatalf("closing NVM file: %v", err)
		}
	}
	e.open(t)
}

// restore brings power back to the medium, if it is a Tearing one.
func (e *Env) restore() {
	if e.Medium != nil {
		e.Medium.Restore()
	}
}

// Snapshot returns a copy of the medium's bytes. No command may be running.
func (e *Env) Snapshot() []byte { return e.mem.Bytes() }

// Fork returns a new Env over a copy of snapshot (from Snapshot), with the
// same issuer and identity, powered and selected.
func (e *Env) Fork(t testing.TB, snapshot []byte) *Env {
	t.Helper()
	f := *e
	f.mem = nvm.NewMemMedium(len(snapshot))
	if _, err := f.mem.WriteAt(snapshot, 0); err != nil {
		t.Fatalf("restoring snapshot: %v", err)
	}
	f.Medium = nvmtest.NewTearing(f.mem)
	f.open(t)
	return &f
}

// SignLoad signs l with the issuer operations key and returns the PURSE
// LOAD command data (l.EncodeSigned).
func (e *Env) SignLoad(l *txn.Load) []byte {
	return l.EncodeSigned(e.sign(l.Bytes()))
}

// SignItem signs it with the issuer operations key and returns the STORE
// ITEM command data (it.EncodeSigned).
func (e *Env) SignItem(it *txn.Item) []byte {
	return it.EncodeSigned(e.sign(it.Bytes()))
}

// sign is ECDSA P-256 over SHA-256 of msg with the ops key, DER.
func (e *Env) sign(msg []byte) []byte {
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, e.OpsKey, h[:])
	if err != nil {
		panic("wallettest: signing: " + err.Error())
	}
	return sig
}

// Transmit sends one raw command APDU (no chaining, no GET RESPONSE) and
// returns the response data and status word. A transport error fails the
// test.
func (e *Env) Transmit(t testing.TB, cmd iso7816.Command) ([]byte, iso7816.SW) {
	t.Helper()
	apdu, err := cmd.Bytes()
	if err != nil {
		t.Fatalf("encoding APDU: %v", err)
	}
	resp, err := e.Conn.Transmit(context.Background(), apdu)
	if err != nil {
		t.Fatalf("transmitting % X: %v", apdu, err)
	}
	r, err := iso7816.ParseResponse(resp)
	if err != nil {
		t.Fatalf("parsing response % X: %v", resp, err)
	}
	return r.Data, r.SW
}

// Transaction returns a valid test transaction of minor units of the
// card's currency, its id and nonce derived from seq.
func (e *Env) Transaction(minor int64, seq byte) *txn.Transaction {
	tx := &txn.Transaction{
		Merchant: "Test Merchant",
		Item:     "Test item",
		Amount:   money.Amount{Minor: minor, Currency: e.Options.Currency},
		Time:     time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
		Nonce:    []byte("0123456789abcdef"),
	}
	tx.ID[0], tx.Nonce[0] = seq, seq
	return tx
}

// Tear runs op under power cuts. It snapshots env's medium, runs op once on
// a fork to count its NVM writes N, then for every cut index 0..N-1 and
// every keep in {0, nvm.PageSize/2, nvm.PageSize} it forks a fresh card
// from the snapshot, cuts power at that write (the torn write keeps its
// first keep bytes; keep = PageSize writes it whole, so a cut at an
// update's last write leaves that update on the medium though op never saw
// it commit), runs op (which must fail with an error wrapping
// reader.ErrCardRemoved), restores power, power-cycles the card (the NVM
// recovers), reselects, and calls check in a subtest with the forked Env,
// op's error and the cut index.
func Tear(t *testing.T, env *Env, op func(*Env) error, check func(t *testing.T, env *Env, opErr error, cutAt int)) {
	t.Helper()
	snap := env.Snapshot()
	probe := env.Fork(t, snap)
	before := probe.Medium.Writes()
	_ = op(probe) // op may fail on purpose (a wrong PIN); only its writes count
	n := probe.Medium.Writes() - before
	if n == 0 {
		t.Fatalf("Tear: op wrote nothing to NVM; nothing to cut")
	}
	for at := range n {
		for _, keep := range []int{0, nvm.PageSize / 2, nvm.PageSize} {
			f := env.Fork(t, snap)
			f.Medium.CutAt(at, keep)
			err := op(f)
			f.Medium.Restore()
			f.PowerCycle(t)
			t.Run(fmt.Sprintf("cut%03d/keep%d", at, keep), func(t *testing.T) {
				if !errors.Is(err, reader.ErrCardRemoved) {
					t.Errorf("op with power cut at write %d = %v, want an error wrapping reader.ErrCardRemoved", at, err)
				}
				check(t, f, err, at)
			})
		}
	}
}
