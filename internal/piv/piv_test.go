package piv_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	pivapplet "cardlink/internal/applet/piv"
	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/piv"
	"cardlink/internal/reader"
	"cardlink/internal/reader/virtual"
)

const number = "4999000000000013"

// newConn returns a session with a blank card carrying the PIV applet.
func newConn(t testing.TB) reader.Conn {
	t.Helper()
	const capacity = 32 << 10
	mem := nvm.NewMemMedium(nvm.MediumSize(capacity))
	if err := nvm.Format(mem, capacity); err != nil {
		t.Fatal(err)
	}
	m, err := nvm.Open(mem)
	if err != nil {
		t.Fatal(err)
	}
	c, err := card.New(card.Config{NVM: m, Applets: []card.Applet{pivapplet.New()}})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := virtual.New(c, "piv host test").Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// issuer is a test CA whose issue function certifies a key.
type issuer struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newIssuer(t testing.TB) *issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &issuer{key: key, cert: cert}
}

func (is *issuer) issue(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: number},
		NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2031, 3, 15, 12, 0, 0, 0, time.UTC),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, pub, is.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func TestPersonalize(t *testing.T) {
	ctx := context.Background()
	conn := newConn(t)
	is := newIssuer(t)
	if err := piv.Personalize(ctx, conn, number, is.issue); err != nil {
		t.Fatalf("Personalize = %v", err)
	}
	c, err := piv.Select(ctx, conn)
	if err != nil {
		t.Fatalf("Select = %v", err)
	}
	cert, err := c.Certificate(ctx, piv.SlotAuthentication)
	if err != nil {
		t.Fatalf("Certificate(9A) = %v", err)
	}
	if err := cert.CheckSignatureFrom(is.cert); err != nil {
		t.Errorf("certificate not from the CA: %v", err)
	}
	chuid, err := c.CHUID(ctx)
	if err != nil {
		t.Fatalf("CHUID() = %v", err)
	}
	if want := time.Date(2031, 3, 15, 0, 0, 0, 0, time.UTC); !chuid.Expiry.Equal(want) {
		t.Errorf("CHUID expiry = %v, want %v", chuid.Expiry, want)
	}
	fascn, _ := piv.FASCN(number)
	if chuid.FASCN != fascn || chuid.GUID == [16]byte{} {
		t.Errorf("CHUID = %+v, want FASC-N of %s and a GUID", chuid, number)
	}
	ccc, err := c.Object(ctx, piv.ObjectCCC)
	if err != nil || !bytes.HasPrefix(ccc, []byte{0xF0, 0x15, 0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02}) {
		t.Errorf("Object(CCC) = % X, %v, want F0 15 A0 00 00 01 16 FF 02 …", ccc, err)
	}
	if _, err := c.Object(ctx, piv.ObjectKeyHistory); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("Object(key history) = %v, want ErrNotFound", err)
	}
	disc, err := c.Object(ctx, piv.ObjectDiscovery)
	if err != nil || !bytes.Contains(disc, piv.AID) {
		t.Errorf("Object(discovery) = % X, %v, want the AID inside", disc, err)
	}
	if err := c.VerifyPIN(ctx, piv.DefaultPIN); err != nil {
		t.Fatalf("VerifyPIN = %v", err)
	}
	digest := sha256.Sum256([]byte("hello"))
	sig, err := c.Sign(ctx, piv.SlotAuthentication, digest[:])
	if err != nil {
		t.Fatalf("Sign = %v", err)
	}
	if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("Sign(9A) does not verify against the certificate")
	}
}

func TestPersonalizeRefusals(t *testing.T) {
	ctx := context.Background()
	is := newIssuer(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name   string
		number string
		issue  func(*ecdsa.PublicKey) (*x509.Certificate, error)
		want   string
	}{
		{"short number", "4999", is.issue, "not 16 digits"},
		{"letters", "49990000000000AB", is.issue, "not 16 digits"},
		{"issuer fails", number, func(*ecdsa.PublicKey) (*x509.Certificate, error) { return nil, errors.New("CA offline") }, "CA offline"},
		{"certificate for another key", number, func(*ecdsa.PublicKey) (*x509.Certificate, error) { return is.issue(&other.PublicKey) }, "not for the card's key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := piv.Personalize(ctx, newConn(t), tt.number, tt.issue)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Personalize = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestClientRefusals(t *testing.T) {
	ctx := context.Background()
	c, err := piv.Select(ctx, newConn(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyPIN(ctx, "12345"); err == nil {
		t.Errorf("VerifyPIN(5 digits) = nil, want an error before any try")
	}
	if _, left, _ := c.Retries(ctx, false); left != 3 {
		t.Errorf("tries after a refused short PIN = %d, want 3", left)
	}
	if err := c.AuthenticateManagementKey(ctx, make([]byte, 16)); err == nil {
		t.Errorf("AuthenticateManagementKey(16 bytes for 3DES) = nil, want an error")
	}
	if _, err := c.Sign(ctx, piv.SlotAuthentication, make([]byte, 48)); err == nil {
		t.Errorf("Sign(48-byte digest) = nil, want an error")
	}
	if _, err := c.Certificate(ctx, piv.SlotAuthentication); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("Certificate of a blank card = %v, want ErrNotFound", err)
	}
	if _, err := c.GenerateKey(ctx, piv.SlotAuthentication); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("GenerateKey without management key = %v, want ErrSecurityStatus", err)
	}
	var pe *iso7816.PINError
	if err := c.ChangePIN(ctx, "000000", "654321"); !errors.As(err, &pe) || pe.Retries != 2 {
		t.Errorf("ChangePIN(wrong) = %v, want PINError 2", err)
	}
	if ok, err := c.PINVerified(ctx); ok || err != nil {
		t.Errorf("PINVerified() = %v, %v, want false", ok, err)
	}
	if err := c.VerifyPIN(ctx, piv.DefaultPIN); err != nil {
		t.Fatal(err)
	}
	if err := c.ResetPINStatus(ctx); err != nil {
		t.Errorf("ResetPINStatus() = %v", err)
	}
	if ok, _ := c.PINVerified(ctx); ok {
		t.Errorf("PINVerified() after reset = true")
	}
}

// The FASC-N YubiKeys write in their default CHUID (yubico-piv-tool).
// Its parity bits and LRC check, and it reads: agency 9999, system 9999,
// credential 999999, series 0, issue 1, person 0000000000, category 3,
// organization 0000, association 1.
const yubikeyFASCN = "d4e739da739ced39ce739d836858210842108421c84210c3eb"

func TestFASCN(t *testing.T) {
	yk, _ := hex.DecodeString(yubikeyFASCN)
	chars, err := piv.DecodeFASCN([25]byte(yk))
	if err != nil {
		t.Fatalf("decodeFASCN(YubiKey) = %v", err)
	}
	if got, want := piv.FASCNString(chars), "[9999|9999|999999|0|1|0000000000300001]"; got != want {
		t.Errorf("YubiKey FASC-N reads %s, want %s", got, want)
	}
	if got := piv.EncodeFASCNChars(chars); !bytes.Equal(got[:], yk) {
		t.Errorf("re-encoding the YubiKey FASC-N = %x, want %s", got, yubikeyFASCN)
	}
	ours, err := piv.FASCN(number)
	if err != nil {
		t.Fatal(err)
	}
	chars, err = piv.DecodeFASCN(ours)
	if err != nil {
		t.Fatalf("decoding our FASC-N: %v", err)
	}
	if got, want := piv.FASCNString(chars), "[9999|4999|000013|0|1|4999000000399991]"; got != want {
		t.Errorf("FASCN(%s) reads %s, want %s", number, got, want)
	}
	bad := ours
	bad[3] ^= 0x10
	if _, err := piv.DecodeFASCN(bad); err == nil {
		t.Errorf("decoding a FASC-N with a flipped bit succeeded")
	}
	for _, n := range []string{"", "123", "499900000000001X"} {
		if _, err := piv.FASCN(n); err == nil {
			t.Errorf("FASCN(%q) = nil error", n)
		}
	}
}

func TestCHUID(t *testing.T) {
	guid := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	c, err := piv.NewCHUID(number, guid, time.Date(2030, 12, 31, 23, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bytes()
	if !bytes.HasPrefix(b, []byte{0x30, 0x19}) || !bytes.HasSuffix(b, []byte{0x35, 0x08, '2', '0', '3', '0', '1', '2', '3', '1', 0x3E, 0x00, 0xFE, 0x00}) {
		t.Errorf("CHUID bytes = % X", b)
	}
	got, err := piv.ParseCHUID(b)
	if err != nil || got.FASCN != c.FASCN || got.GUID != guid || !got.Expiry.Equal(c.Expiry) {
		t.Errorf("ParseCHUID(Bytes()) = %+v, %v, want %+v", got, err, c)
	}
	bad := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"no GUID", b[:27]},
		{"expiry letters", bytes.Replace(b, []byte("20301231"), []byte("2030123x"), 1)},
		{"month 13", bytes.Replace(b, []byte("20301231"), []byte("20301331"), 1)},
		{"truncated", b[:len(b)-1]},
	}
	for _, tt := range bad {
		if _, err := piv.ParseCHUID(tt.b); err == nil {
			t.Errorf("ParseCHUID(%s) = nil error", tt.name)
		}
	}
}

func TestSlotObject(t *testing.T) {
	tests := []struct {
		slot piv.Slot
		tag  iso7816.Tag
		ok   bool
	}{
		{piv.SlotAuthentication, 0x5FC105, true},
		{piv.SlotSignature, 0x5FC10A, true},
		{piv.SlotKeyManagement, 0x5FC10B, true},
		{piv.SlotCardAuthentication, 0x5FC101, true},
		{0x82, 0x5FC10D, true},
		{0x95, 0x5FC120, true},
		{0x9B, 0, false},
	}
	for _, tt := range tests {
		if tag, ok := tt.slot.Object(); tag != tt.tag || ok != tt.ok {
			t.Errorf("Slot(%s).Object() = %s, %v, want %s, %v", tt.slot, tag, ok, tt.tag, tt.ok)
		}
	}
}

func TestParseCertificateObject(t *testing.T) {
	is := newIssuer(t)
	good := append(iso7816.AppendTLV(nil, 0x70, is.cert.Raw), 0x71, 0x01, 0x00, 0xFE, 0x00)
	if c, err := piv.ParseCertificateObject(good); err != nil || !c.Equal(is.cert) {
		t.Errorf("ParseCertificateObject(good) = %v", err)
	}
	bad := [][]byte{
		nil,
		{0x71, 0x01, 0x00},
		append(iso7816.AppendTLV(nil, 0x70, is.cert.Raw), 0x71, 0x01, 0x01), // gzip
		iso7816.AppendTLV(nil, 0x70, []byte{0x30, 0x00}),
	}
	for i, b := range bad {
		if _, err := piv.ParseCertificateObject(b); err == nil {
			t.Errorf("ParseCertificateObject(bad %d) = nil error", i)
		}
	}
}

func FuzzParseCHUID(f *testing.F) {
	c, _ := piv.NewCHUID(number, [16]byte{9}, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	f.Add(c.Bytes())
	yk, _ := hex.DecodeString("3019" + yubikeyFASCN + "3410000102030405060708090a0b0c0d0e0f350832303330303130313e00fe00")
	f.Add(yk)
	f.Add([]byte{0x30, 0x81, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := piv.ParseCHUID(b)
		if err != nil {
			return
		}
		again, err := piv.ParseCHUID(c.Bytes())
		if err != nil || again.FASCN != c.FASCN || again.GUID != c.GUID || !again.Expiry.Equal(c.Expiry) {
			t.Errorf("ParseCHUID(Bytes()) = %+v, %v, want %+v", again, err, c)
		}
	})
}

func FuzzParseCertificateObject(f *testing.F) {
	f.Add([]byte{0x70, 0x02, 0x30, 0x00, 0x71, 0x01, 0x00, 0xFE, 0x00})
	f.Add([]byte{0x70, 0x82, 0x00, 0x01, 0x30})
	f.Add([]byte{0x5F, 0xC1, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		piv.ParseCertificateObject(b) // must not panic
	})
}
