package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/txn"
)

const card = "4111111111111111"

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func newTestIssuer(t *testing.T) (*Issuer, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "issuer")
	iss, err := create(dir, "test issuer", t0, rand.Reader)
	if err != nil {
		t.Fatalf("create(%q) error: %v", dir, err)
	}
	return iss, dir
}

func newCardKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wantKeyID(t *testing.T, pub any) []byte {
	t.Helper()
	b, err := pub.(*ecdsa.PublicKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return sum[:20]
}

func TestInit(t *testing.T) {
	iss, dir := newTestIssuer(t)

	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("mode of %s = %v, want 0700", dir, got)
	}
	for _, f := range []struct {
		name, block string
		perm        fs.FileMode
	}{
		{"ca.pem", "CERTIFICATE", 0o644},
		{"ca-key.pem", "PRIVATE KEY", 0o600},
		{"ops.pem", "CERTIFICATE", 0o644},
		{"ops-key.pem", "PRIVATE KEY", 0o600},
	} {
		path := filepath.Join(dir, f.name)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != f.perm {
			t.Errorf("mode of %s = %v, want %v", f.name, got, f.perm)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(data); b == nil || b.Type != f.block {
			t.Errorf("PEM block of %s = %v, want type %q", f.name, b, f.block)
		}
	}

	ca := iss.CA()
	checks := []struct {
		name string
		ok   bool
	}{
		{"CA is CA", ca.IsCA && ca.BasicConstraintsValid},
		{"CA MaxPathLenZero", ca.MaxPathLen == 0 && ca.MaxPathLenZero},
		{"CA key usage", ca.KeyUsage == x509.KeyUsageCertSign|x509.KeyUsageCRLSign},
		{"CA subject", ca.Subject.CommonName == "test issuer"},
		{"CA self-signed", ca.CheckSignatureFrom(ca) == nil},
		{"CA P-256", isP256(ca.PublicKey)},
		{"CA 10 years", ca.NotAfter.Equal(ca.NotBefore.AddDate(10, 0, 0))},
		{"CA valid now", !t0.Before(ca.NotBefore) && t0.Before(ca.NotAfter)},
		{"CA SKI", bytes.Equal(ca.SubjectKeyId, wantKeyID(t, ca.PublicKey))},
		{"KeyID", bytes.Equal(iss.KeyID(), ca.SubjectKeyId)},
		{"ops issued by CA", iss.Ops().CheckSignatureFrom(ca) == nil},
		{"ops key usage", iss.Ops().KeyUsage == x509.KeyUsageDigitalSignature},
		{"ops not CA", !iss.Ops().IsCA},
		{"ops AKI", bytes.Equal(iss.Ops().AuthorityKeyId, ca.SubjectKeyId)},
		{"ops SKI", bytes.Equal(iss.Ops().SubjectKeyId, wantKeyID(t, iss.Ops().PublicKey))},
		{"OpsKeyID", bytes.Equal(iss.OpsKeyID(), iss.Ops().SubjectKeyId)},
		{"OpsPublic", iss.OpsPublic().Equal(iss.Ops().PublicKey)},
		{"ops key is not CA key", !iss.OpsPublic().Equal(ca.PublicKey)},
		{"serials differ", ca.SerialNumber.Cmp(iss.Ops().SerialNumber) != 0},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: false, want true", c.name)
		}
	}

	// Key IDs are copies.
	iss.KeyID()[0] ^= 0xFF
	if !bytes.Equal(iss.KeyID(), ca.SubjectKeyId) {
		t.Errorf("KeyID() returned the certificate's own slice")
	}
}

func TestInitRefusesExisting(t *testing.T) {
	_, dir := newTestIssuer(t)
	before, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := Init(dir, "another")
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Init(existing) = %v, %v, want error wrapping fs.ErrExist", iss, err)
	}
	if !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("Init(existing) error %q, want it to say it refuses to overwrite", err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("ca-key.pem changed by a refused Init")
	}

	// Any one of the files is enough to refuse.
	for _, f := range []string{"ca.pem", "ca-key.pem", "ops.pem", "ops-key.pem"} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Init(d, "x"); !errors.Is(err, fs.ErrExist) {
			t.Errorf("Init(dir with %s) error = %v, want fs.ErrExist", f, err)
		}
		if ents, _ := os.ReadDir(d); len(ents) != 1 {
			t.Errorf("Init(dir with %s) left %d files, want 1", f, len(ents))
		}
	}
}

func TestInitExistingEmptyDir(t *testing.T) {
	dir := t.TempDir()
	iss, err := Init(dir, "cardlink issuer")
	if err != nil {
		t.Fatalf("Init(empty dir) error: %v", err)
	}
	if got := iss.CA().Subject.CommonName; got != "cardlink issuer" {
		t.Errorf("CA common name = %q, want %q", got, "cardlink issuer")
	}
	if _, err := Init(t.TempDir(), " "); err == nil {
		t.Errorf("Init(name \" \") error = nil, want error")
	}
}

func TestLoad(t *testing.T) {
	iss, dir := newTestIssuer(t)
	got, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(%q) error: %v", dir, err)
	}
	if !bytes.Equal(got.CA().Raw, iss.CA().Raw) || !bytes.Equal(got.Ops().Raw, iss.Ops().Raw) ||
		!bytes.Equal(got.KeyID(), iss.KeyID()) || !bytes.Equal(got.OpsKeyID(), iss.OpsKeyID()) ||
		!got.OpsPublic().Equal(iss.OpsPublic()) || !got.caKey.Equal(iss.caKey) || !got.opsKey.Equal(iss.opsKey) {
		t.Errorf("Load(%q) differs from the issuer Init made", dir)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"ca.pem", "ca-key.pem", "ops.pem", "ops-key.pem"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestLoadRefusals(t *testing.T) {
	_, dir := newTestIssuer(t)
	_, other := newTestIssuer(t)
	read := func(d, f string) []byte {
		b, err := os.ReadFile(filepath.Join(d, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384DER, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files map[string][]byte // replaced files; nil value removes the file
		want  string
	}{
		{"missing ca.pem", map[string][]byte{"ca.pem": nil}, "ca.pem"},
		{"missing ca-key.pem", map[string][]byte{"ca-key.pem": nil}, "ca-key.pem"},
		{"missing ops.pem", map[string][]byte{"ops.pem": nil}, "ops.pem"},
		{"missing ops-key.pem", map[string][]byte{"ops-key.pem": nil}, "ops-key.pem"},
		{"garbled ca.pem", map[string][]byte{"ca.pem": []byte("garbage")}, "no PEM block"},
		{"truncated ca.pem", map[string][]byte{"ca.pem": read(dir, "ca.pem")[:200]}, "ca.pem"},
		{"corrupt certificate", map[string][]byte{"ca.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})}, "parsing ca.pem"},
		{"key in ca.pem", map[string][]byte{"ca.pem": read(dir, "ca-key.pem")}, `"PRIVATE KEY", want "CERTIFICATE"`},
		{"two blocks", map[string][]byte{"ops.pem": append(read(dir, "ops.pem"), read(dir, "ca.pem")...)}, "data after the PEM block"},
		{"corrupt key", map[string][]byte{"ops-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})}, "parsing ops-key.pem"},
		{"P-384 key", map[string][]byte{"ops-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER})}, "not ECDSA P-256"},
		{"CA key swapped with ops key", map[string][]byte{"ca-key.pem": read(dir, "ops-key.pem"), "ops-key.pem": read(dir, "ca-key.pem")}, "does not match"},
		{"ops from another CA", map[string][]byte{"ops.pem": read(other, "ops.pem"), "ops-key.pem": read(other, "ops-key.pem")}, "not issued by the CA"},
		{"CA from another issuer", map[string][]byte{"ca.pem": read(other, "ca.pem"), "ca-key.pem": read(other, "ca-key.pem")}, "not issued by the CA"},
		{"ops cert as CA", map[string][]byte{"ca.pem": read(dir, "ops.pem"), "ca-key.pem": read(dir, "ops-key.pem")}, "not a CA certificate"},
		{"CA cert as ops", map[string][]byte{"ops.pem": read(dir, "ca.pem"), "ops-key.pem": read(dir, "ca-key.pem")}, "not a digital-signature certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := copyDir(t, dir)
			for f, data := range tt.files {
				path := filepath.Join(d, f)
				if data == nil {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.WriteFile(path, data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			iss, err := Load(d)
			t.Logf("Load() error: %v", err)
			if err == nil {
				t.Fatalf("Load(%s) = %v, want error", tt.name, iss)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "loading issuer from ") {
				t.Errorf("Load(%s) error %q, want it to contain %q", tt.name, err, tt.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nonexistent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(nonexistent) error = %v, want fs.ErrNotExist", err)
	}
}

// constReader yields the same byte forever.
type constReader byte

func (r constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestIssueCard(t *testing.T) {
	iss, _ := newTestIssuer(t)
	key := newCardKey(t)
	now := t0.Add(24*time.Hour + 500*time.Millisecond)
	cert, err := iss.IssueCard(&key.PublicKey, card, now)
	if err != nil {
		t.Fatalf("IssueCard() error: %v", err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"signed by CA", cert.CheckSignatureFrom(iss.CA()) == nil},
		{"common name", cert.Subject.CommonName == "cardlink card "+card},
		{"serialNumber attribute", cert.Subject.SerialNumber == card},
		{"issuer", cert.Issuer.CommonName == "test issuer"},
		{"not before", cert.NotBefore.Equal(t0.Add(24*time.Hour - 5*time.Minute))},
		{"5 years", cert.NotAfter.Equal(t0.Add(24*time.Hour).AddDate(5, 0, 0))},
		{"key usage", cert.KeyUsage == x509.KeyUsageDigitalSignature},
		{"ext key usage", len(cert.ExtKeyUsage) == 1 && cert.ExtKeyUsage[0] == x509.ExtKeyUsageClientAuth},
		{"not CA", !cert.IsCA},
		{"AKI", bytes.Equal(cert.AuthorityKeyId, iss.KeyID())},
		{"SKI", bytes.Equal(cert.SubjectKeyId, wantKeyID(t, &key.PublicKey))},
		{"public key", key.PublicKey.Equal(cert.PublicKey)},
		{"serial positive", cert.SerialNumber.Sign() > 0},
		{"serial 128 bits", cert.SerialNumber.BitLen() <= 128},
		{"serial at least 64 bits", cert.SerialNumber.BitLen() > 64}, // fails with probability 2^-64
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: false, want true", c.name)
		}
	}
	again, err := iss.IssueCard(&key.PublicKey, card, now)
	if err != nil {
		t.Fatal(err)
	}
	if again.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Errorf("two certificates have serial %X", cert.SerialNumber)
	}

	// Serial numbers come from Rand.
	iss.Rand = constReader(0x01)
	fixed, err := iss.IssueCard(&key.PublicKey, card, now)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := new(big.Int).SetString(strings.Repeat("01", 16), 16)
	if fixed.SerialNumber.Cmp(want) != 0 {
		t.Errorf("serial with Rand = constReader(1) = %X, want %X", fixed.SerialNumber, want)
	}
}

func TestIssueCardCappedByCA(t *testing.T) {
	iss, _ := newTestIssuer(t)
	key := newCardKey(t)
	late := iss.CA().NotAfter.AddDate(-1, 0, 0)
	cert, err := iss.IssueCard(&key.PublicKey, card, late)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(iss.CA().NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", cert.NotAfter, iss.CA().NotAfter)
	}
	if _, err := VerifyCard(cert, iss.CA(), late); err != nil {
		t.Errorf("VerifyCard(late card) error: %v", err)
	}
}

func TestIssueCardRefusals(t *testing.T) {
	iss, _ := newTestIssuer(t)
	key := newCardKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  *ecdsa.PublicKey
		card string
		now  time.Time
	}{
		{"P-384 key", &p384.PublicKey, card, t0},
		{"nil key", nil, card, t0},
		{"bad Luhn", &key.PublicKey, "4111111111111112", t0},
		{"short number", &key.PublicKey, "411111111111111", t0},
		{"letters", &key.PublicKey, "411111111111111a", t0},
		{"before CA", &key.PublicKey, card, t0.Add(-time.Hour)},
		{"after CA", &key.PublicKey, card, t0.AddDate(11, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if cert, err := iss.IssueCard(tt.pub, tt.card, tt.now); err == nil {
				t.Errorf("IssueCard(%s) = %v, want error", tt.name, cert.Subject)
			}
		})
	}
}

// craft issues a card certificate from iss's CA with the template changed
// by change, for the refusal cases VerifyCard must catch.
func craft(t *testing.T, iss *Issuer, pub any, signer *ecdsa.PrivateKey, parent *x509.Certificate, change func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(99),
		Subject:               pkix.Name{CommonName: "cardlink card " + card, SerialNumber: card},
		NotBefore:             t0,
		NotAfter:              t0.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	change(tmpl)
	if signer == nil {
		signer, parent = iss.caKey, iss.ca
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyCard(t *testing.T) {
	iss, _ := newTestIssuer(t)
	other, _ := newTestIssuer(t)
	key := newCardKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good, err := iss.IssueCard(&key.PublicKey, card, t0)
	if err != nil {
		t.Fatal(err)
	}
	fromOther, err := other.IssueCard(&key.PublicKey, card, t0)
	if err != nil {
		t.Fatal(err)
	}
	same := func(*x509.Certificate) {}
	tests := []struct {
		name string
		cert *x509.Certificate
		ca   *x509.Certificate
		now  time.Time
		want string // "" means valid
	}{
		{"valid", good, iss.CA(), t0.AddDate(1, 0, 0), ""},
		{"valid at start", good, iss.CA(), good.NotBefore, ""},
		{"valid at end", good, iss.CA(), good.NotAfter, ""},
		{"crafted valid", craft(t, iss, &key.PublicKey, nil, nil, same), iss.CA(), t0, ""},
		{"expired", good, iss.CA(), good.NotAfter.Add(time.Second), "expired"},
		{"not yet valid", good, iss.CA(), good.NotBefore.Add(-time.Second), "expired or is not yet valid"},
		{"wrong CA", fromOther, iss.CA(), t0, "unknown authority"},
		{"ops cert as CA", good, iss.Ops(), t0, "not a CA"},
		// The ops certificate is not a CA: a card certificate it signs must
		// not chain.
		{"signed by ops key", craft(t, iss, &key.PublicKey, iss.opsKey, iss.ops, same), iss.CA(), t0, "unknown authority"},
		{"key usage key agreement", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), iss.CA(), t0, "digital signature"},
		{"no key usage", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.KeyUsage = 0 }), iss.CA(), t0, "digital signature"},
		{"server auth only", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), iss.CA(), t0, "incompatible key usage"},
		{"no ext key usage", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.ExtKeyUsage = nil }), iss.CA(), t0, "client authentication"},
		{"P-384 key", craft(t, iss, &p384.PublicKey, nil, nil, same), iss.CA(), t0, "P-256"},
		{"bad card number", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) {
			c.Subject = pkix.Name{CommonName: "cardlink card 4111111111111112", SerialNumber: "4111111111111112"}
		}), iss.CA(), t0, "Luhn"},
		{"no serialNumber", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: card} }), iss.CA(), t0, "serialNumber"},
		{"common name mismatch", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.Subject.CommonName = "cardlink card 5555555555554444" }), iss.CA(), t0, "common name"},
		{"CA certificate", craft(t, iss, &key.PublicKey, nil, nil, func(c *x509.Certificate) { c.IsCA = true }), iss.CA(), t0, "CA certificate"},
		{"nil certificate", nil, iss.CA(), t0, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyCard(tt.cert, tt.ca, tt.now)
			if tt.want == "" {
				if err != nil || got != card {
					t.Errorf("VerifyCard() = %q, %v, want %q", got, err, card)
				}
				return
			}
			t.Logf("VerifyCard() error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("VerifyCard() = %q, %v, want error containing %q", got, err, tt.want)
			}
		})
	}
}

func TestSign(t *testing.T) {
	iss, dir := newTestIssuer(t)
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := txn.Load{CardNumber: card, Seq: 1, Amount: money.Amount{Minor: 1000, Currency: "EUR"}}
	it := txn.Item{CardNumber: card, Kind: txn.ItemVoucher, Title: "Voucher", Content: []byte("CODE")}
	caPub := iss.CA().PublicKey.(*ecdsa.PublicKey)
	for _, s := range []*Issuer{iss, loaded} {
		lsig, err := s.SignLoad(&l)
		if err != nil {
			t.Fatalf("SignLoad() error: %v", err)
		}
		isig, err := s.SignItem(&it)
		if err != nil {
			t.Fatalf("SignItem() error: %v", err)
		}
		checks := []struct {
			name      string
			got, want bool
		}{
			{"load by ops key", txn.VerifyLoad(iss.OpsPublic(), &l, lsig), true},
			{"item by ops key", txn.VerifyItem(iss.OpsPublic(), &it, isig), true},
			{"load by CA key", txn.VerifyLoad(caPub, &l, lsig), false},
			{"item by CA key", txn.VerifyItem(caPub, &it, isig), false},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("Verify %s = %v, want %v", c.name, c.got, c.want)
			}
		}
		parsed, sig, err := txn.ParseSignedLoad(l.EncodeSigned(lsig))
		if err != nil || parsed != l || !bytes.Equal(sig, lsig) {
			t.Errorf("ParseSignedLoad(EncodeSigned(SignLoad())) = %+v, %X, %v", parsed, sig, err)
		}
	}
	bad := l
	bad.Amount.Minor = 0
	if sig, err := iss.SignLoad(&bad); err == nil {
		t.Errorf("SignLoad(zero amount) = %X, want error", sig)
	}
	badItem := it
	badItem.Title = ""
	if sig, err := iss.SignItem(&badItem); err == nil {
		t.Errorf("SignItem(empty title) = %X, want error", sig)
	}
}

func TestNewCardNumber(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		n, err := NewCardNumber(nil)
		if err != nil {
			t.Fatalf("NewCardNumber(nil) error: %v", err)
		}
		if err := txn.ValidCardNumber(n); err != nil || !strings.HasPrefix(n, cardIIN) {
			t.Errorf("NewCardNumber(nil) = %q (%v), want a valid number starting %s", n, err, cardIIN)
		}
		seen[n] = true
	}
	if len(seen) < 45 {
		t.Errorf("NewCardNumber gave %d distinct numbers in 50 draws", len(seen))
	}
	for b := range 10 {
		n, err := NewCardNumber(constReader(b))
		if err != nil || txn.ValidCardNumber(n) != nil {
			t.Errorf("NewCardNumber(constReader(%d)) = %q, %v, want a valid number", b, n, err)
		}
	}
}
