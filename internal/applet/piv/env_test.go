package piv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	pivapplet "cardlink/internal/applet/piv"
	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/card/nvm/nvmtest"
	"cardlink/internal/iso7816"
	"cardlink/internal/piv"
	"cardlink/internal/reader"
	"cardlink/internal/reader/virtual"
)

const (
	testCapacity = 32 << 10
	testNumber   = "4999000000000013"
)

// env is a card with the PIV applet over a tearing in-memory NVM, in a
// virtual reader, selected through the host client.
type env struct {
	mem    *nvm.MemMedium
	medium *nvmtest.Tearing
	nvm    *nvm.Memory
	card   *card.Card
	reader *virtual.Reader
	conn   reader.Conn
	client *piv.Client
	caKey  *ecdsa.PrivateKey
	ca     *x509.Certificate
	cert   *x509.Certificate // slot 9A after personalize
}

// newEnv builds a blank PIV card (factory defaults).
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvCapacity(t, testCapacity)
}

// newEnvCapacity builds a blank PIV card with an NVM of the given capacity.
func newEnvCapacity(t testing.TB, capacity int) *env {
	t.Helper()
	e := &env{mem: nvm.NewMemMedium(nvm.MediumSize(capacity))}
	if err := nvm.Format(e.mem, capacity); err != nil {
		t.Fatalf("formatting NVM: %v", err)
	}
	e.open(t)
	return e
}

// newPersonalized builds a card personalized by piv.Personalize with a test
// CA.
func newPersonalized(t testing.TB) *env {
	t.Helper()
	e := newEnv(t)
	e.newCA(t)
	if err := piv.Personalize(context.Background(), e.conn, testNumber, e.issue); err != nil {
		t.Fatalf("Personalize = %v", err)
	}
	e.reconnect(t) // drop the management key authentication
	return e
}

// open builds a card over a fresh Tearing of e.mem and connects.
func (e *env) open(t testing.TB) {
	t.Helper()
	e.medium = nvmtest.NewTearing(e.mem)
	mem, err := nvm.Open(e.medium)
	if err != nil {
		t.Fatalf("opening NVM: %v", err)
	}
	t.Cleanup(func() { mem.Close() })
	c, err := card.New(card.Config{NVM: mem, Applets: []card.Applet{pivapplet.New()}})
	if err != nil {
		t.Fatalf("building card: %v", err)
	}
	e.nvm, e.card = mem, c
	e.reader = virtual.New(c, "piv test reader")
	e.connect(t)
}

// connect opens a session and selects the PIV applet.
func (e *env) connect(t testing.TB) {
	t.Helper()
	conn, err := e.reader.Connect(context.Background())
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	e.conn = conn
	if e.client, err = piv.Select(context.Background(), conn); err != nil {
		t.Fatalf("selecting PIV: %v", err)
	}
}

// reconnect power-cycles the card (RAM cleared, NVM recovered) and
// reselects; power to the medium comes back first.
func (e *env) reconnect(t testing.TB) {
	t.Helper()
	e.medium.Restore()
	e.conn.Close()
	e.connect(t)
}

// fork returns a new env over a copy of e's medium, with the same CA.
func (e *env) fork(t testing.TB) *env {
	t.Helper()
	f := &env{mem: nvm.NewMemMedium(len(e.mem.Bytes())), caKey: e.caKey, ca: e.ca, cert: e.cert}
	if _, err := f.mem.WriteAt(e.mem.Bytes(), 0); err != nil {
		t.Fatalf("copying medium: %v", err)
	}
	f.open(t)
	return f
}

func (e *env) newCA(t testing.TB) {
	t.Helper()
	var err error
	if e.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "piv test CA"},
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &e.caKey.PublicKey, e.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if e.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
}

// issue certifies pub with the test CA.
func (e *env) issue(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: testNumber},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2031, 6, 30, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, e.ca, pub, e.caKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	e.cert = cert
	return cert, err
}

// tx sends one raw command (no chaining, no GET RESPONSE) and returns the
// data and status word; a transport error fails the test.
func (e *env) tx(t testing.TB, cmd iso7816.Command) ([]byte, iso7816.SW) {
	t.Helper()
	apdu, err := cmd.Bytes()
	if err != nil {
		t.Fatalf("encoding %+v: %v", cmd, err)
	}
	resp, err := e.conn.Transmit(context.Background(), apdu)
	if err != nil {
		t.Fatalf("transmitting % X: %v", apdu, err)
	}
	r, err := iso7816.ParseResponse(resp)
	if err != nil {
		t.Fatalf("parsing response % X: %v", resp, err)
	}
	return r.Data, r.SW
}

// exchange sends cmd with reader.Exchange (chaining, GET RESPONSE) and
// returns data and status word.
func (e *env) exchange(t testing.TB, cmd iso7816.Command) ([]byte, iso7816.SW) {
	t.Helper()
	b, err := reader.Exchange(context.Background(), e.conn, cmd)
	if err == nil {
		return b, iso7816.SWOK
	}
	var se *iso7816.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("exchanging %02X %02X: %v", cmd.INS, cmd.P2, err)
	}
	return b, se.SW
}

// mgmtAuth authenticates the default management key.
func (e *env) mgmtAuth(t testing.TB) {
	t.Helper()
	if err := e.client.AuthenticateManagementKey(context.Background(), piv.DefaultManagementKey); err != nil {
		t.Fatalf("AuthenticateManagementKey(default) = %v", err)
	}
}

// verifyPIN verifies the default PIN.
func (e *env) verifyPIN(t testing.TB) {
	t.Helper()
	if err := e.client.VerifyPIN(context.Background(), piv.DefaultPIN); err != nil {
		t.Fatalf("VerifyPIN(default) = %v", err)
	}
}

// pinTries returns the PIN tries left (GET METADATA 80).
func (e *env) pinTries(t testing.TB) int {
	t.Helper()
	_, left, err := e.client.Retries(context.Background(), false)
	if err != nil {
		t.Fatalf("Retries(PIN) = %v", err)
	}
	return left
}

// Command builders.

func pinBlock(pin string) []byte {
	b := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	copy(b, pin)
	return b
}

func verifyCmd(pin string) iso7816.Command {
	c := iso7816.Command{INS: 0x20, P2: 0x80}
	if pin != "" {
		c.Data = pinBlock(pin)
	}
	return c
}

func tlv(tag iso7816.Tag, parts ...[]byte) []byte {
	var v []byte
	for _, p := range parts {
		v = append(v, p...)
	}
	return iso7816.AppendTLV(nil, tag, v)
}

func signCmd(slot byte, digest []byte) iso7816.Command {
	return iso7816.Command{INS: 0x87, P1: 0x11, P2: slot, Data: tlv(0x7C, tlv(0x82), tlv(0x81, digest)), Ne: 256}
}

func generateCmd(slot byte, extra ...[]byte) iso7816.Command {
	parts := append([][]byte{tlv(0x80, []byte{0x11})}, extra...)
	return iso7816.Command{INS: 0x47, P2: slot, Data: tlv(0xAC, parts...), Ne: 256}
}

func getDataCmd(tag ...byte) iso7816.Command {
	return iso7816.Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: tlv(0x5C, tag), Ne: 256}
}

func putDataCmd(tag []byte, content []byte) iso7816.Command {
	return iso7816.Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: append(tlv(0x5C, tag), tlv(0x53, content)...)}
}

func metadataCmd(ref byte) iso7816.Command {
	return iso7816.Command{INS: 0xF7, P2: ref, Ne: 256}
}
