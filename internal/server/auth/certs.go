package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"cardlink/internal/server/pki"
)

// Errors of the card certificate check; Verify and Challenge turn them into
// protocol codes.
var (
	errCertInvalid = errors.New("card certificate not valid")
	errCertRevoked = errors.New("card certificate revoked")
	errNoCRL       = errors.New("no usable CRL") // the server's problem, not the card's
)

// maxCachedCerts bounds the certificate cache: about 1 KB of DER and 2 KB
// of parsed certificate each.
const maxCachedCerts = 4096

// certEntry is a card certificate whose signature chain to the CA, key
// usages, key type and card number were checked once; only its validity
// period and revocation remain to be checked at each use.
type certEntry struct {
	cert   *x509.Certificate
	key    *ecdsa.PublicKey
	number string // the card number in the subject's serialNumber
}

// certCache keeps checked certificates by their DER, and the serials of
// the last CRL seen.
type certCache struct {
	ca    *x509.Certificate
	roots *x509.CertPool

	mu    sync.RWMutex
	certs map[string]*certEntry

	crlMu   sync.Mutex
	crl     *x509.RevocationList // the CRL serials was built from
	serials map[string]bool      // serial in hexadecimal (big.Int.Text(16)) → revoked
}

func newCertCache(ca *x509.Certificate) *certCache {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &certCache{ca: ca, roots: roots, certs: make(map[string]*certEntry)}
}

// check returns the checked certificate der for card number at now. Its
// errors wrap errCertInvalid (chain, key usage, key type, card number,
// validity period), errCertRevoked (on crl) or errNoCRL (crl is nil, not
// signed by the CA, or out of date). crl is nil when the service has no
// CRL source (useCRL false).
func (c *certCache) check(der []byte, number string, useCRL bool, crl *x509.RevocationList, now time.Time) (*certEntry, error) {
	c.mu.RLock()
	e := c.certs[string(der)]
	c.mu.RUnlock()
	if e == nil {
		var err error
		if e, err = c.load(der, now); err != nil {
			return nil, err
		}
	}
	if e.number != number {
		return nil, fmt.Errorf("%w: issued for card %s, not %s", errCertInvalid, mask(e.number), mask(number))
	}
	if now.Before(e.cert.NotBefore) || now.After(e.cert.NotAfter) {
		return nil, fmt.Errorf("%w: outside its validity period %v..%v", errCertInvalid, e.cert.NotBefore, e.cert.NotAfter)
	}
	if now.Before(c.ca.NotBefore) || now.After(c.ca.NotAfter) {
		return nil, fmt.Errorf("%w: CA outside its validity period %v..%v", errCertInvalid, c.ca.NotBefore, c.ca.NotAfter)
	}
	if useCRL {
		if err := c.checkCRL(e.cert, crl, now); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// load parses and checks der and caches it if it is good.
func (c *certCache) load(der []byte, now time.Time) (*certEntry, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCertInvalid, err)
	}
	if cert.IsCA {
		return nil, fmt.Errorf("%w: a CA certificate", errCertInvalid)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       c.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", errCertInvalid, err)
	}
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: key usage lacks digital signature", errCertInvalid)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, fmt.Errorf("%w: extended key usage lacks client authentication", errCertInvalid)
	}
	key, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key is not ECDSA P-256", errCertInvalid)
	}
	e := &certEntry{cert: cert, key: key, number: cert.Subject.SerialNumber}
	c.mu.Lock()
	if len(c.certs) >= maxCachedCerts {
		for k := range c.certs { // map order: an arbitrary victim
			delete(c.certs, k)
			break
		}
	}
	c.certs[string(der)] = e
	c.mu.Unlock()
	return e, nil
}

// checkCRL looks cert's serial up on crl, which must be the CA's and fresh
// at now. The CRL's signature is checked once per CRL value.
func (c *certCache) checkCRL(cert *x509.Certificate, crl *x509.RevocationList, now time.Time) error {
	if crl == nil {
		return errNoCRL
	}
	c.crlMu.Lock()
	defer c.crlMu.Unlock()
	if c.crl != crl {
		if err := pki.CheckCRL(crl, c.ca, now); err != nil {
			return fmt.Errorf("%w: %v", errNoCRL, err)
		}
		serials := make(map[string]bool, len(crl.RevokedCertificateEntries))
		for _, r := range crl.RevokedCertificateEntries {
			if r.SerialNumber != nil {
				serials[r.SerialNumber.Text(16)] = true
			}
		}
		c.crl, c.serials = crl, serials
	}
	// Revocation first: it is final even on an out-of-date CRL.
	if c.serials[cert.SerialNumber.Text(16)] {
		return fmt.Errorf("%w: serial %X on the CRL", errCertRevoked, cert.SerialNumber)
	}
	if crl.NextUpdate.IsZero() || now.After(crl.NextUpdate) {
		return fmt.Errorf("%w: out of date since %v", errNoCRL, crl.NextUpdate)
	}
	return nil
}

// mask shows only the last four digits of a card number, for logs and
// errors.
func mask(number string) string {
	if len(number) <= 4 {
		return number
	}
	b := make([]byte, len(number))
	for i := range b {
		b[i] = '*'
	}
	copy(b[len(b)-4:], number[len(number)-4:])
	return string(b)
}
