package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cardlink/internal/txn"
)

// CRLValidity is how long a CRL the issuer signs stays fresh: its
// nextUpdate is thisUpdate plus CRLValidity (but never past the CA's
// expiry). A verifier refuses a CRL whose nextUpdate has passed, so the
// issuer must sign a fresh one (UpdateCRL) within this period, revocations
// or not.
const CRLValidity = 7 * 24 * time.Hour

// pemCRL is the PEM block type of a CRL (RFC 7468 §5).
const pemCRL = "X509 CRL"

var (
	// ErrRevoked means the card certificate is on the CA's CRL.
	ErrRevoked = errors.New("certificate revoked")
	// ErrStaleCRL means the CRL's nextUpdate has passed (or it has none):
	// it no longer says whether a card is revoked.
	ErrStaleCRL = errors.New("CRL out of date")
	// ErrUnknownCard means the issuer's index has no certificate for the
	// card number.
	ErrUnknownCard = errors.New("card not issued by this issuer")
)

// Reason is a CRL reason code (RFC 5280 §5.3.1).
type Reason int

// The reason codes a card's revocation may give. The CA-, attribute- and
// hold-related codes of RFC 5280 do not apply to a card certificate.
const (
	ReasonUnspecified          Reason = 0
	ReasonKeyCompromise        Reason = 1
	ReasonAffiliationChanged   Reason = 3
	ReasonSuperseded           Reason = 4
	ReasonCessationOfOperation Reason = 5
	ReasonPrivilegeWithdrawn   Reason = 9
)

// reasonNames are the RFC 5280 names of all reason codes, for String.
var reasonNames = map[Reason]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise",
	3: "affiliationChanged", 4: "superseded", 5: "cessationOfOperation",
	6: "certificateHold", 8: "removeFromCRL", 9: "privilegeWithdrawn",
	10: "aACompromise",
}

// CardReasons lists the reasons RevokeCard accepts, in code order.
var CardReasons = []Reason{
	ReasonUnspecified, ReasonKeyCompromise, ReasonAffiliationChanged,
	ReasonSuperseded, ReasonCessationOfOperation, ReasonPrivilegeWithdrawn,
}

// String returns the RFC 5280 name of r, such as "keyCompromise".
func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

func (r Reason) valid() bool {
	for _, c := range CardReasons {
		if r == c {
			return true
		}
	}
	return false
}

// ParseReason returns the card revocation reason named s (an RFC 5280
// name, case-insensitive, such as "keyCompromise").
func ParseReason(s string) (Reason, error) {
	for _, r := range CardReasons {
		if strings.EqualFold(s, r.String()) {
			return r, nil
		}
	}
	names := make([]string, len(CardReasons))
	for i, r := range CardReasons {
		names[i] = r.String()
	}
	return 0, fmt.Errorf("revocation reason %q: want one of %s", s, strings.Join(names, ", "))
}

// Revocation is what RevokeCard did.
type Revocation struct {
	CardNumber string
	// Revoked holds the serials this call added to the CRL; Already those
	// that were on it before (with their first reason and time).
	Revoked, Already []*big.Int
	// CRL is the CRL now in force: a new one if Revoked is not empty, else
	// the unchanged one.
	CRL *x509.RevocationList
}

// RevokeCard revokes every certificate the index lists for cardNumber (the
// wallet certificate and the PIV one) with reason, at now: it signs a new
// CRL with the next CRL number, this update now and next update now plus
// CRLValidity, and replaces crl.pem atomically. Certificates already on the
// CRL stay as they are; if all are, nothing is written (revoking twice is
// harmless). It returns an error wrapping ErrUnknownCard if the index has no
// certificate for cardNumber, and fails for a reason not in CardReasons or
// a now outside the CA's validity.
func (iss *Issuer) RevokeCard(cardNumber string, reason Reason, now time.Time) (*Revocation, error) {
	rev, err := iss.revokeCard(cardNumber, reason, now)
	if err != nil {
		return nil, fmt.Errorf("revoking card %s: %w", cardNumber, err)
	}
	return rev, nil
}

func (iss *Issuer) revokeCard(cardNumber string, reason Reason, now time.Time) (*Revocation, error) {
	if err := txn.ValidCardNumber(cardNumber); err != nil {
		return nil, err
	}
	if !reason.valid() {
		return nil, fmt.Errorf("reason %v does not apply to a card", reason)
	}
	iss.mu.Lock()
	defer iss.mu.Unlock()
	index, _, err := iss.readIndex()
	if err != nil {
		return nil, err
	}
	crl, err := iss.readCRL()
	if err != nil {
		return nil, err
	}
	entries := templateEntries(crl.RevokedCertificateEntries)
	on := make(map[string]bool, len(entries))
	for _, e := range entries {
		on[string(e.SerialNumber.Bytes())] = true
	}
	rev := &Revocation{CardNumber: cardNumber, CRL: crl}
	found := false
	at := now.UTC().Truncate(time.Second)
	for _, c := range index {
		if c.CardNumber != cardNumber {
			continue
		}
		found = true
		key := string(c.Serial.Bytes())
		if on[key] {
			rev.Already = append(rev.Already, c.Serial)
			continue
		}
		on[key] = true
		rev.Revoked = append(rev.Revoked, c.Serial)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.Serial, RevocationTime: at, ReasonCode: int(reason)})
	}
	if !found {
		return nil, ErrUnknownCard
	}
	if len(rev.Revoked) == 0 {
		return rev, nil
	}
	if rev.CRL, err = iss.writeCRL(entries, new(big.Int).Add(crl.Number, big.NewInt(1)), now); err != nil {
		return nil, err
	}
	return rev, nil
}

// templateEntries copies parsed CRL entries into template entries, with room
// for more.
func templateEntries(e []x509.RevocationListEntry) []x509.RevocationListEntry {
	out := make([]x509.RevocationListEntry, 0, len(e)+2)
	for _, x := range e {
		// Keep what the template needs; the parsed Raw and Extensions
		// would otherwise be copied along.
		out = append(out, x509.RevocationListEntry{SerialNumber: x.SerialNumber, RevocationTime: x.RevocationTime, ReasonCode: x.ReasonCode})
	}
	return out
}

// UpdateCRL signs the current revocations again with the next CRL number,
// this update now and next update now plus CRLValidity, replaces crl.pem
// atomically and returns the new CRL. Run it before the CRL goes stale; it
// also creates crl.pem for an issuer made before CRLs existed.
func (iss *Issuer) UpdateCRL(now time.Time) (*x509.RevocationList, error) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	crl, err := iss.updateCRL(now)
	if err != nil {
		return nil, fmt.Errorf("updating CRL: %w", err)
	}
	return crl, nil
}

func (iss *Issuer) updateCRL(now time.Time) (*x509.RevocationList, error) {
	crl, err := iss.readCRL()
	if err != nil {
		return nil, err
	}
	return iss.writeCRL(templateEntries(crl.RevokedCertificateEntries), new(big.Int).Add(crl.Number, big.NewInt(1)), now)
}

// CRL returns the issuer's current CRL from crl.pem, after checking that
// the CA signed it. It does not check freshness (CheckCRL does). If the
// directory has no CRL the error wraps fs.ErrNotExist; UpdateCRL makes one.
func (iss *Issuer) CRL() (*x509.RevocationList, error) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	crl, err := iss.loadCRL()
	if err != nil {
		return nil, fmt.Errorf("reading CRL: %w", err)
	}
	return crl, nil
}

// loadCRL reads crl.pem and checks the CA's signature.
func (iss *Issuer) loadCRL() (*x509.RevocationList, error) {
	data, err := os.ReadFile(filepath.Join(iss.dir, fileCRL))
	if err != nil {
		return nil, err
	}
	crl, err := ParseCRL(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fileCRL, err)
	}
	if err := checkCRLIssuer(crl, iss.ca); err != nil {
		return nil, fmt.Errorf("%s: %w", fileCRL, err)
	}
	return crl, nil
}

// readCRL is loadCRL, except that a missing file is an empty CRL with
// number 0, from which the first real CRL (number 1) follows.
func (iss *Issuer) readCRL() (*x509.RevocationList, error) {
	crl, err := iss.loadCRL()
	if errors.Is(err, fs.ErrNotExist) {
		return &x509.RevocationList{Number: new(big.Int)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading CRL: %w", err)
	}
	return crl, nil
}

// writeCRL signs a CRL of entries with number at now and replaces crl.pem.
func (iss *Issuer) writeCRL(entries []x509.RevocationListEntry, number *big.Int, now time.Time) (*x509.RevocationList, error) {
	if iss.dir == "" {
		return nil, errors.New("signing CRL: issuer has no directory")
	}
	if now.Before(iss.ca.NotBefore) || now.After(iss.ca.NotAfter) {
		return nil, fmt.Errorf("signing CRL: %v is outside the CA's validity %v..%v", now.UTC(), iss.ca.NotBefore, iss.ca.NotAfter)
	}
	this := now.UTC().Truncate(time.Second)
	next := this.Add(CRLValidity)
	if next.After(iss.ca.NotAfter) {
		next = iss.ca.NotAfter
	}
	der, err := x509.CreateRevocationList(iss.rand(), &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                this,
		NextUpdate:                next,
		RevokedCertificateEntries: entries,
	}, iss.ca, iss.caKey)
	if err != nil {
		return nil, fmt.Errorf("signing CRL: %w", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("signing CRL: parsing it back: %w", err)
	}
	if err := writeAtomic(filepath.Join(iss.dir, fileCRL), pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return crl, nil
}

// maxCRLSize bounds the input ParseCRL accepts.
const maxCRLSize = 4 << 20

// ParseCRL parses a CRL: one PEM block of type "X509 CRL" with nothing but
// white space around it, or DER. It checks the encoding only; CheckCRL
// checks the signature and freshness.
func ParseCRL(data []byte) (*x509.RevocationList, error) {
	if len(data) > maxCRLSize {
		return nil, fmt.Errorf("parsing CRL: %d bytes, more than %d", len(data), maxCRLSize)
	}
	der := data
	if block, rest := pem.Decode(data); block != nil {
		if block.Type != pemCRL {
			return nil, fmt.Errorf("parsing CRL: PEM block %q, want %q", block.Type, pemCRL)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("parsing CRL: data after the PEM block")
		}
		der = block.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CRL: %w", err)
	}
	if len(crl.Raw) != len(der) {
		return nil, errors.New("parsing CRL: data after the CRL")
	}
	if crl.Number == nil {
		return nil, errors.New("parsing CRL: no CRL number")
	}
	return crl, nil
}

// CheckCRL checks that crl was issued and signed by ca and is fresh at
// now: its nextUpdate has not passed (else an error wrapping ErrStaleCRL).
// It refuses CRLs it cannot fully understand: any critical extension, on
// the list or on an entry (RFC 5280 §5.2, §5.3).
func CheckCRL(crl *x509.RevocationList, ca *x509.Certificate, now time.Time) error {
	if err := checkCRL(crl, ca, now); err != nil {
		return fmt.Errorf("checking CRL: %w", err)
	}
	return nil
}

func checkCRL(crl *x509.RevocationList, ca *x509.Certificate, now time.Time) error {
	if crl == nil || ca == nil {
		return errors.New("missing CRL or CA certificate")
	}
	if err := checkCRLIssuer(crl, ca); err != nil {
		return err
	}
	return checkFresh(crl, now)
}

// checkFresh checks the CRL's update times against now.
func checkFresh(crl *x509.RevocationList, now time.Time) error {
	if crl.NextUpdate.IsZero() {
		return fmt.Errorf("%w: no next update", ErrStaleCRL)
	}
	if crl.NextUpdate.Before(crl.ThisUpdate) {
		return fmt.Errorf("next update %v before this update %v", crl.NextUpdate, crl.ThisUpdate)
	}
	if now.After(crl.NextUpdate) {
		return fmt.Errorf("%w: next update was due %s", ErrStaleCRL, crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkCRLIssuer checks the CRL's issuer name, authority key identifier,
// signature and extensions against ca.
func checkCRLIssuer(crl *x509.RevocationList, ca *x509.Certificate) error {
	if !bytes.Equal(crl.RawIssuer, ca.RawSubject) {
		return errors.New("CRL issuer is not the CA")
	}
	if len(crl.AuthorityKeyId) != 0 && !bytes.Equal(crl.AuthorityKeyId, ca.SubjectKeyId) {
		return errors.New("CRL authority key identifier is not the CA's")
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("CRL not signed by the CA: %w", err)
	}
	for _, e := range crl.Extensions {
		if e.Critical {
			return fmt.Errorf("CRL has an unsupported critical extension %v", e.Id)
		}
	}
	for _, rc := range crl.RevokedCertificateEntries {
		for _, e := range rc.Extensions {
			if e.Critical {
				return fmt.Errorf("CRL entry %X has an unsupported critical extension %v", rc.SerialNumber, e.Id)
			}
		}
	}
	return nil
}

// VerifyCardWithCRL is VerifyCard followed by a revocation check against
// crl, which CheckCRL must accept for ca at now. It returns an error
// wrapping ErrRevoked if cert's serial is on the CRL (even an out-of-date
// one: revocation is final), else one wrapping ErrStaleCRL if the CRL is out
// of date: a card is never accepted on an old CRL.
func VerifyCardWithCRL(cert, ca *x509.Certificate, crl *x509.RevocationList, now time.Time) (cardNumber string, err error) {
	n, err := verifyCard(cert, ca, now)
	if err == nil && crl == nil {
		err = errors.New("missing CRL")
	}
	if err == nil {
		err = checkCRLIssuer(crl, ca)
	}
	if err == nil {
		err = checkRevoked(cert, crl)
	}
	if err == nil {
		err = checkFresh(crl, now)
	}
	if err != nil {
		return "", fmt.Errorf("verifying card certificate: %w", err)
	}
	return n, nil
}

// checkRevoked looks for cert's serial on crl.
func checkRevoked(cert *x509.Certificate, crl *x509.RevocationList) error {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return revokedError(e)
		}
	}
	return nil
}

// Revocations is a CRL whose issuer and signature were checked once, with
// its serials in a map, for servers that check many cards against the same
// CRL: Check costs a map lookup instead of a signature verification and a
// scan. It is safe for concurrent use.
type Revocations struct {
	crl     *x509.RevocationList
	ca      *x509.Certificate
	revoked map[string]x509.RevocationListEntry // by serial, big-endian bytes
}

// NewRevocations checks that ca issued and signed crl (as CheckCRL does,
// but not its freshness, which Check tests each time) and indexes it.
func NewRevocations(crl *x509.RevocationList, ca *x509.Certificate) (*Revocations, error) {
	if crl == nil || ca == nil {
		return nil, errors.New("checking CRL: missing CRL or CA certificate")
	}
	if err := checkCRLIssuer(crl, ca); err != nil {
		return nil, fmt.Errorf("checking CRL: %w", err)
	}
	r := &Revocations{crl: crl, ca: ca, revoked: make(map[string]x509.RevocationListEntry, len(crl.RevokedCertificateEntries))}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Sign() <= 0 {
			// Never the serial of a certificate this package issued, and
			// Bytes would drop the sign.
			continue
		}
		k := string(e.SerialNumber.Bytes())
		if _, dup := r.revoked[k]; !dup {
			r.revoked[k] = e
		}
	}
	return r, nil
}

// CRL returns the CRL r was made from. The caller must not modify it.
func (r *Revocations) CRL() *x509.RevocationList { return r.crl }

// Check reports whether cert, a certificate of r's CA that the caller has
// verified (VerifyCard), may be used at now: an error wrapping ErrRevoked
// if its serial is on the CRL, else one wrapping ErrStaleCRL if the CRL is
// out of date at now. A certificate from another issuer is an error too.
func (r *Revocations) Check(cert *x509.Certificate, now time.Time) error {
	if err := r.check(cert, now); err != nil {
		return fmt.Errorf("checking revocation: %w", err)
	}
	return nil
}

func (r *Revocations) check(cert *x509.Certificate, now time.Time) error {
	if cert == nil {
		return errors.New("missing certificate")
	}
	if !bytes.Equal(cert.RawIssuer, r.ca.RawSubject) {
		return errors.New("certificate not issued by the CRL's issuer")
	}
	if cert.SerialNumber.Sign() > 0 {
		if e, ok := r.revoked[string(cert.SerialNumber.Bytes())]; ok {
			return revokedError(e)
		}
	}
	return checkFresh(r.crl, now)
}

func revokedError(e x509.RevocationListEntry) error {
	return fmt.Errorf("%w: serial %X on %s (%v)", ErrRevoked, e.SerialNumber,
		e.RevocationTime.UTC().Format(time.RFC3339), Reason(e.ReasonCode))
}
