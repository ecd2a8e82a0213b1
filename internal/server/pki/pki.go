// Package pki is the card issuer's certificate authority: it creates and
// loads the issuer's CA and operations keys, certifies card keys, keeps an
// index of the certificates it issued, revokes cards in a CRL signed by the
// CA, checks card certificates (with or without that CRL), and signs purse
// loads and e-goods with the operations key (never with the CA key). Card
// numbers for new cards and device identifiers come from here too.
//
// Keys are ECDSA P-256 and certificates X.509 (RFC 5280) made with the
// standard library only. Key identifiers (SubjectKeyId) are the first 20
// bytes of SHA-256 over the uncompressed public key, the subjectPublicKey
// BIT STRING contents (RFC 7093 §2 method 1).
//
// It is server code: it imports txn and the standard library, and must not
// import card, applet, reader or device packages.
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
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"cardlink/internal/txn"
)

// Files of an issuer directory.
const (
	fileCA     = "ca.pem"
	fileCAKey  = "ca-key.pem"
	fileOps    = "ops.pem"
	fileOpsKey = "ops-key.pem"
	fileCRL    = "crl.pem"
	fileIndex  = "issued.txt"
)

// Validity periods.
const (
	caYears   = 10
	cardYears = 5
	// backdate allows for clocks slightly behind the issuer's.
	backdate = 5 * time.Minute
)

// CardCommonNamePrefix starts the subject common name of every card
// certificate; the card number follows.
const CardCommonNamePrefix = "cardlink card "

// Issuer is the card issuer's CA key and certificate together with its
// operations key and certificate (issued by the CA, key usage digital
// signature), which signs purse loads and e-goods.
//
// An Issuer is safe for concurrent use once Rand is no longer changed,
// provided Rand is (crypto/rand is). Its directory must not be changed by
// another process at the same time: the issued-certificates index and the
// CRL are read, changed and replaced as whole files.
type Issuer struct {
	// Rand is the source of certificate serial numbers and of signature
	// randomness; nil means crypto/rand.Reader. Since Go 1.26 the crypto
	// packages ignore it for key generation and signatures and use the
	// system's randomness, so only serial numbers follow it.
	Rand io.Reader

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	ops    *x509.Certificate
	opsKey *ecdsa.PrivateKey

	dir string     // the issuer directory: index and CRL live here
	mu  sync.Mutex // serializes updates of the index and the CRL
}

// Init creates dir (mode 0700, if it does not exist) and a new issuer in it:
// ca.pem and ops.pem (certificates), ca-key.pem and ops-key.pem (PKCS #8
// private keys, mode 0600), and crl.pem, a first, empty CRL (number 1, valid
// for CRLValidity). The CA is valid for 10 years and named name. It
// refuses, with an error wrapping fs.ErrExist, to touch a directory that
// already holds any of these files or an index of issued certificates
// (issued.txt); if it fails half-way it removes what it wrote.
func Init(dir, name string) (*Issuer, error) {
	return create(dir, name, time.Now(), rand.Reader)
}

// create is Init with injected time and randomness.
func create(dir, name string, now time.Time, r io.Reader) (*Issuer, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("creating issuer: empty name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating issuer: %w", err)
	}
	for _, f := range []string{fileCA, fileCAKey, fileOps, fileOpsKey, fileCRL, fileIndex} {
		if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			if err == nil {
				err = fs.ErrExist
			}
			return nil, fmt.Errorf("creating issuer: %s already holds an issuer (%s); refusing to overwrite it: %w", dir, f, err)
		}
	}
	iss, err := newIssuer(name, now, r)
	if err != nil {
		return nil, fmt.Errorf("creating issuer: %w", err)
	}
	caKey, err := x509.MarshalPKCS8PrivateKey(iss.caKey)
	if err != nil {
		return nil, fmt.Errorf("creating issuer: encoding CA key: %w", err)
	}
	opsKey, err := x509.MarshalPKCS8PrivateKey(iss.opsKey)
	if err != nil {
		return nil, fmt.Errorf("creating issuer: encoding ops key: %w", err)
	}
	files := []struct {
		name  string
		block string
		der   []byte
		perm  fs.FileMode
	}{
		{fileCAKey, "PRIVATE KEY", caKey, 0o600},
		{fileCA, "CERTIFICATE", iss.ca.Raw, 0o644},
		{fileOpsKey, "PRIVATE KEY", opsKey, 0o600},
		{fileOps, "CERTIFICATE", iss.ops.Raw, 0o644},
	}
	var written []string
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: f.block, Bytes: f.der}), f.perm); err != nil {
			for _, w := range written {
				os.Remove(w)
			}
			return nil, fmt.Errorf("creating issuer: %w", err)
		}
		written = append(written, path)
	}
	iss.dir = dir
	if _, err := iss.updateCRL(now); err != nil {
		for _, w := range written {
			os.Remove(w)
		}
		return nil, fmt.Errorf("creating issuer: %w", err)
	}
	return iss, nil
}

// writeNew writes data to a file that must not exist yet, and syncs it.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// newIssuer generates the CA and operations keys and certificates.
func newIssuer(name string, now time.Time, r io.Reader) (*Issuer, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), r)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	opsKey, err := ecdsa.GenerateKey(elliptic.P256(), r)
	if err != nil {
		return nil, fmt.Errorf("generating ops key: %w", err)
	}
	start := now.UTC().Truncate(time.Second).Add(-backdate)
	end := start.AddDate(caYears, 0, 0)

	serial, err := newSerial(r)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             start,
		NotAfter:              end,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&caKey.PublicKey),
	}
	ca, err := createCert(r, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}

	if serial, err = newSerial(r); err != nil {
		return nil, err
	}
	opsTmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name + " operations"},
		NotBefore:             start,
		NotAfter:              end,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(&opsKey.PublicKey),
		AuthorityKeyId:        ca.SubjectKeyId,
	}
	ops, err := createCert(r, opsTmpl, ca, &opsKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating ops certificate: %w", err)
	}
	return &Issuer{Rand: r, ca: ca, caKey: caKey, ops: ops, opsKey: opsKey}, nil
}

func createCert(r io.Reader, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(r, tmpl, parent, pub, priv)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// newSerial draws a random positive serial number of at most 128 bits.
func newSerial(r io.Reader) (*big.Int, error) {
	for range 8 {
		n, err := rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("drawing serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, errors.New("drawing serial number: randomness keeps giving zero")
}

// keyID returns the key identifier of pub: the first 20 bytes of SHA-256
// over its uncompressed point (RFC 7093 §2 method 1).
func keyID(pub *ecdsa.PublicKey) []byte {
	b, err := pub.Bytes()
	if err != nil {
		panic("pki: key identifier of an invalid key: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return sum[:20]
}

// Load reads the issuer Init wrote in dir. It checks that each file holds
// exactly one PEM block of the right type, that each private key is ECDSA
// P-256 and matches its certificate, that ca.pem is a CA certificate and
// that ops.pem is issued by it for digital signatures. The index of issued
// certificates and the CRL are read when needed, not here.
func Load(dir string) (*Issuer, error) {
	iss, err := load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading issuer from %s: %w", dir, err)
	}
	return iss, nil
}

func load(dir string) (*Issuer, error) {
	ca, err := readCert(filepath.Join(dir, fileCA))
	if err != nil {
		return nil, err
	}
	caKey, err := readKey(filepath.Join(dir, fileCAKey))
	if err != nil {
		return nil, err
	}
	ops, err := readCert(filepath.Join(dir, fileOps))
	if err != nil {
		return nil, err
	}
	opsKey, err := readKey(filepath.Join(dir, fileOpsKey))
	if err != nil {
		return nil, err
	}
	if !caKey.PublicKey.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("%s does not match the key in %s", fileCAKey, fileCA)
	}
	if !opsKey.PublicKey.Equal(ops.PublicKey) {
		return nil, fmt.Errorf("%s does not match the key in %s", fileOpsKey, fileOps)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s is not a CA certificate", fileCA)
	}
	if len(ca.SubjectKeyId) == 0 || len(ops.SubjectKeyId) == 0 {
		return nil, errors.New("certificates without a subject key identifier")
	}
	if err := ops.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("%s is not issued by the CA in %s: %w", fileOps, fileCA, err)
	}
	if ops.IsCA || ops.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%s is not a digital-signature certificate", fileOps)
	}
	if caKey.Equal(opsKey) {
		return nil, errors.New("the ops key is the CA key")
	}
	return &Issuer{ca: ca, caKey: caKey, ops: ops, opsKey: opsKey, dir: dir}, nil
}

// readPEM reads path, which must hold exactly one PEM block of type typ
// and nothing else but white space.
func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Base(path), err)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("reading %s: no PEM block", filepath.Base(path))
	}
	if block.Type != typ {
		return nil, fmt.Errorf("reading %s: PEM block %q, want %q", filepath.Base(path), block.Type, typ)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("reading %s: data after the PEM block", filepath.Base(path))
	}
	return block.Bytes, nil
}

func readCert(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Base(path), err)
	}
	if !isP256(c.PublicKey) {
		return nil, fmt.Errorf("parsing %s: key is not ECDSA P-256", filepath.Base(path))
	}
	return c, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Base(path), err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("parsing %s: key is not ECDSA P-256", filepath.Base(path))
	}
	return ek, nil
}

func isP256(pub any) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}

func (iss *Issuer) rand() io.Reader {
	if iss.Rand == nil {
		return rand.Reader
	}
	return iss.Rand
}

// IssueCard certifies pub, a card's P-256 key, for the card with the given
// number: a random 128-bit serial, subject CN "cardlink card <number>" and
// serialNumber <number>, valid from now (less five minutes) for five years
// but never beyond the CA, key usage digital signature, extended key usage
// client authentication, authority key identifier the CA's. Before it
// returns the certificate it appends the card number, serial and expiry to
// the issuer's index (issued.txt), from which RevokeCard finds every
// certificate of a card. It fails for a key on another curve, an invalid
// card number, a now outside the CA's validity, or an index it cannot
// update (then the certificate is not returned and must not be used).
func (iss *Issuer) IssueCard(pub *ecdsa.PublicKey, cardNumber string, now time.Time) (*x509.Certificate, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, errors.New("issuing card certificate: key is not ECDSA P-256")
	}
	if err := txn.ValidCardNumber(cardNumber); err != nil {
		return nil, fmt.Errorf("issuing card certificate: %w", err)
	}
	if now.Before(iss.ca.NotBefore) || now.After(iss.ca.NotAfter) {
		return nil, fmt.Errorf("issuing card certificate: %v is outside the CA's validity %v..%v",
			now.UTC(), iss.ca.NotBefore, iss.ca.NotAfter)
	}
	serial, err := newSerial(iss.rand())
	if err != nil {
		return nil, fmt.Errorf("issuing card certificate: %w", err)
	}
	start := now.UTC().Truncate(time.Second).Add(-backdate)
	if start.Before(iss.ca.NotBefore) {
		start = iss.ca.NotBefore
	}
	end := now.UTC().Truncate(time.Second).AddDate(cardYears, 0, 0)
	if end.After(iss.ca.NotAfter) {
		end = iss.ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: CardCommonNamePrefix + cardNumber, SerialNumber: cardNumber},
		NotBefore:             start,
		NotAfter:              end,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(pub),
		AuthorityKeyId:        iss.ca.SubjectKeyId,
	}
	cert, err := createCert(iss.rand(), tmpl, iss.ca, pub, iss.caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing card certificate: %w", err)
	}
	if err := iss.record(IssuedCert{CardNumber: cardNumber, Serial: cert.SerialNumber, NotAfter: cert.NotAfter}); err != nil {
		return nil, fmt.Errorf("issuing card certificate: %w", err)
	}
	return cert, nil
}

// KeyID returns the CA's key identifier (its SubjectKeyId).
func (iss *Issuer) KeyID() []byte { return bytes.Clone(iss.ca.SubjectKeyId) }

// OpsKeyID returns the operations key's identifier (the SubjectKeyId of
// its certificate).
func (iss *Issuer) OpsKeyID() []byte { return bytes.Clone(iss.ops.SubjectKeyId) }

// OpsPublic returns the operations public key, with which cards check
// purse loads and e-goods.
func (iss *Issuer) OpsPublic() *ecdsa.PublicKey { return &iss.opsKey.PublicKey }

// CA returns the CA certificate. The caller must not modify it.
func (iss *Issuer) CA() *x509.Certificate { return iss.ca }

// Ops returns the operations certificate. The caller must not modify it.
func (iss *Issuer) Ops() *x509.Certificate { return iss.ops }

// SignLoad signs a valid purse load with the operations key: ECDSA P-256
// over SHA-256 of l.Bytes(), ASN.1 DER, for txn.VerifyLoad and
// l.EncodeSigned.
func (iss *Issuer) SignLoad(l *txn.Load) ([]byte, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("signing load: %w", err)
	}
	return iss.sign(l.Bytes(), "signing load")
}

// SignItem signs a valid e-good with the operations key: ECDSA P-256 over
// SHA-256 of it.Bytes(), ASN.1 DER, for txn.VerifyItem and
// it.EncodeSigned.
func (iss *Issuer) SignItem(it *txn.Item) ([]byte, error) {
	if err := it.Validate(); err != nil {
		return nil, fmt.Errorf("signing item: %w", err)
	}
	return iss.sign(it.Bytes(), "signing item")
}

func (iss *Issuer) sign(msg []byte, what string) ([]byte, error) {
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(iss.rand(), iss.opsKey, h[:])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return sig, nil
}

// VerifyCard checks that cert is a card certificate issued by ca and valid
// at now, and returns its card number. It checks the signature chain (ca
// must be a CA certificate valid at now), the validity periods, key usage
// digital signature, extended key usage client authentication, an ECDSA
// P-256 key, and a subject whose serialNumber is a valid card number and
// whose common name is "cardlink card " followed by it.
func VerifyCard(cert, ca *x509.Certificate, now time.Time) (cardNumber string, err error) {
	n, err := verifyCard(cert, ca, now)
	if err != nil {
		return "", fmt.Errorf("verifying card certificate: %w", err)
	}
	return n, nil
}

func verifyCard(cert, ca *x509.Certificate, now time.Time) (string, error) {
	if cert == nil || ca == nil {
		return "", errors.New("missing certificate")
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return "", errors.New("issuer certificate is not a CA")
	}
	if cert.IsCA {
		return "", errors.New("certificate is a CA certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", err
	}
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return "", errors.New("key usage lacks digital signature")
	}
	if !hasEKU(cert) {
		return "", errors.New("extended key usage lacks client authentication")
	}
	if !isP256(cert.PublicKey) {
		return "", errors.New("key is not ECDSA P-256")
	}
	n := cert.Subject.SerialNumber
	if err := txn.ValidCardNumber(n); err != nil {
		return "", fmt.Errorf("subject serialNumber: %w", err)
	}
	if cn := cert.Subject.CommonName; cn != CardCommonNamePrefix+n {
		return "", fmt.Errorf("subject common name %q, want %q", cn, CardCommonNamePrefix+n)
	}
	return n, nil
}

// hasEKU reports whether cert explicitly lists client authentication
// (x509.Verify also accepts a certificate without the extension).
func hasEKU(cert *x509.Certificate) bool {
	return slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
}
