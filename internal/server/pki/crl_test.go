package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const otherCard = "5555555555554444"

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// issue certifies a fresh key for number at t0.
func issue(t *testing.T, iss *Issuer, number string) *x509.Certificate {
	t.Helper()
	c, err := iss.IssueCard(&newCardKey(t).PublicKey, number, t0)
	if err != nil {
		t.Fatalf("IssueCard(%s) error: %v", number, err)
	}
	return c
}

func serials(list []*big.Int) []string {
	var s []string
	for _, n := range list {
		s = append(s, n.Text(16))
	}
	return s
}

func crlSerials(crl *x509.RevocationList) []string {
	var s []string
	for _, e := range crl.RevokedCertificateEntries {
		s = append(s, e.SerialNumber.Text(16))
	}
	return s
}

func TestInitWritesCRL(t *testing.T) {
	iss, dir := newTestIssuer(t)
	data := readFile(t, filepath.Join(dir, "crl.pem"))
	if b, _ := pem.Decode(data); b == nil || b.Type != "X509 CRL" {
		t.Fatalf("crl.pem PEM block = %v, want type X509 CRL", b)
	}
	crl, err := iss.CRL()
	if err != nil {
		t.Fatalf("CRL() error: %v", err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"number 1", crl.Number.Cmp(big.NewInt(1)) == 0},
		{"empty", len(crl.RevokedCertificateEntries) == 0},
		{"this update", crl.ThisUpdate.Equal(t0)},
		{"next update", crl.NextUpdate.Equal(t0.Add(CRLValidity))},
		{"signed by CA", crl.CheckSignatureFrom(iss.CA()) == nil},
		{"AKI", bytes.Equal(crl.AuthorityKeyId, iss.KeyID())},
		{"fresh", CheckCRL(crl, iss.CA(), t0) == nil},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: false, want true", c.name)
		}
	}
	if _, err := Init(dir, "again"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Init(existing) error = %v, want fs.ErrExist", err)
	}
	// An index or CRL alone is enough to refuse too.
	for _, f := range []string{"crl.pem", "issued.txt"} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Init(d, "x"); !errors.Is(err, fs.ErrExist) {
			t.Errorf("Init(dir with %s) error = %v, want fs.ErrExist", f, err)
		}
	}
}

func TestRevokeCard(t *testing.T) {
	iss, dir := newTestIssuer(t)
	wallet := issue(t, iss, card)
	pivCert := issue(t, iss, card)
	other := issue(t, iss, otherCard)
	t1 := t0.Add(time.Hour + 300*time.Millisecond)

	rev, err := iss.RevokeCard(card, ReasonKeyCompromise, t1)
	if err != nil {
		t.Fatalf("RevokeCard() error: %v", err)
	}
	want := []string{wallet.SerialNumber.Text(16), pivCert.SerialNumber.Text(16)}
	if got := serials(rev.Revoked); strings.Join(got, ",") != strings.Join(want, ",") || len(rev.Already) != 0 {
		t.Errorf("RevokeCard() revoked %v, already %v, want %v, none", got, serials(rev.Already), want)
	}
	if got := crlSerials(rev.CRL); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("RevokeCard().CRL serials = %v, want %v", got, want)
	}
	crl, err := iss.CRL()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(crl.Raw, rev.CRL.Raw) {
		t.Errorf("CRL() differs from the CRL RevokeCard returned")
	}
	if crl.Number.Cmp(big.NewInt(2)) != 0 || !crl.ThisUpdate.Equal(t1.Truncate(time.Second)) ||
		!crl.NextUpdate.Equal(t1.Truncate(time.Second).Add(CRLValidity)) {
		t.Errorf("CRL number %v, this update %v, next update %v, want 2, %v, +%v", crl.Number, crl.ThisUpdate, crl.NextUpdate, t1, CRLValidity)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.ReasonCode != int(ReasonKeyCompromise) || !e.RevocationTime.Equal(t1.Truncate(time.Second)) {
			t.Errorf("CRL entry %X: reason %d, time %v, want 1, %v", e.SerialNumber, e.ReasonCode, e.RevocationTime, t1)
		}
	}
	for _, c := range []*x509.Certificate{wallet, pivCert} {
		if _, err := VerifyCardWithCRL(c, iss.CA(), crl, t1); !errors.Is(err, ErrRevoked) {
			t.Errorf("VerifyCardWithCRL(revoked %X) error = %v, want ErrRevoked", c.SerialNumber, err)
		}
	}
	if n, err := VerifyCardWithCRL(other, iss.CA(), crl, t1); err != nil || n != otherCard {
		t.Errorf("VerifyCardWithCRL(other card) = %q, %v, want %q", n, err, otherCard)
	}

	// Again: nothing new, nothing written.
	before := readFile(t, filepath.Join(dir, "crl.pem"))
	again, err := iss.RevokeCard(card, ReasonSuperseded, t1.Add(time.Hour))
	if err != nil {
		t.Fatalf("RevokeCard(again) error: %v", err)
	}
	if len(again.Revoked) != 0 || strings.Join(serials(again.Already), ",") != strings.Join(want, ",") {
		t.Errorf("RevokeCard(again) revoked %v, already %v, want none, %v", serials(again.Revoked), serials(again.Already), want)
	}
	if again.CRL.Number.Cmp(big.NewInt(2)) != 0 {
		t.Errorf("RevokeCard(again).CRL number = %v, want 2", again.CRL.Number)
	}
	if after := readFile(t, filepath.Join(dir, "crl.pem")); !bytes.Equal(before, after) {
		t.Errorf("RevokeCard(again) rewrote crl.pem")
	}

	// A certificate issued later for the same number is revoked by the
	// next call; the earlier entries keep their reason and time.
	late := issue(t, iss, card)
	t2 := t1.Add(48 * time.Hour)
	third, err := iss.RevokeCard(card, ReasonCessationOfOperation, t2)
	if err != nil {
		t.Fatal(err)
	}
	if len(third.Revoked) != 1 || third.Revoked[0].Cmp(late.SerialNumber) != 0 || len(third.Already) != 2 {
		t.Errorf("RevokeCard(third) revoked %v, already %v, want [%X], 2 serials", serials(third.Revoked), serials(third.Already), late.SerialNumber)
	}
	if third.CRL.Number.Cmp(big.NewInt(3)) != 0 || len(third.CRL.RevokedCertificateEntries) != 3 {
		t.Fatalf("CRL number %v with %d entries, want 3 with 3", third.CRL.Number, len(third.CRL.RevokedCertificateEntries))
	}
	for i, e := range third.CRL.RevokedCertificateEntries {
		wantReason, wantTime := ReasonKeyCompromise, t1.Truncate(time.Second)
		if i == 2 {
			wantReason, wantTime = ReasonCessationOfOperation, t2.Truncate(time.Second)
		}
		if e.ReasonCode != int(wantReason) || !e.RevocationTime.Equal(wantTime) {
			t.Errorf("entry %d: reason %v at %v, want %v at %v", i, Reason(e.ReasonCode), e.RevocationTime, wantReason, wantTime)
		}
	}
	// Reason unspecified is written without a reason code extension.
	unspec := issue(t, iss, otherCard)
	if _, err := iss.RevokeCard(otherCard, ReasonUnspecified, t2); err != nil {
		t.Fatal(err)
	}
	crl, err = iss.CRL()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCardWithCRL(unspec, iss.CA(), crl, t2); !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "unspecified") {
		t.Errorf("VerifyCardWithCRL(revoked, unspecified) error = %v, want ErrRevoked saying unspecified", err)
	}
	assertNoTemp(t, dir)
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left in the issuer directory", e.Name())
		}
	}
}

func TestRevokeCardRefusals(t *testing.T) {
	iss, dir := newTestIssuer(t)
	issue(t, iss, card)
	tests := []struct {
		name   string
		number string
		reason Reason
		now    time.Time
		is     error
		want   string
	}{
		{"unknown card", otherCard, ReasonKeyCompromise, t0, ErrUnknownCard, "not issued by this issuer"},
		{"bad Luhn", "4111111111111112", ReasonKeyCompromise, t0, nil, "Luhn"},
		{"CA compromise", card, 2, t0, nil, "cACompromise"},
		{"certificate hold", card, 6, t0, nil, "certificateHold"},
		{"code 7", card, 7, t0, nil, "reason(7)"},
		{"negative", card, -1, t0, nil, "reason(-1)"},
		{"after CA", card, ReasonKeyCompromise, t0.AddDate(11, 0, 0), nil, "outside the CA's validity"},
	}
	before := readFile(t, filepath.Join(dir, "crl.pem"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev, err := iss.RevokeCard(tt.number, tt.reason, tt.now)
			t.Logf("RevokeCard() error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("RevokeCard(%s) = %+v, %v, want error containing %q", tt.name, rev, err, tt.want)
			}
		})
	}
	if after := readFile(t, filepath.Join(dir, "crl.pem")); !bytes.Equal(before, after) {
		t.Errorf("refused RevokeCard calls changed crl.pem")
	}
	assertNoTemp(t, dir)
}

// craftCRL signs a CRL as parent with key, changed by change.
func craftCRL(t *testing.T, parent *x509.Certificate, key *ecdsa.PrivateKey, change func(*x509.RevocationList)) *x509.RevocationList {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(7), ThisUpdate: t0, NextUpdate: t0.Add(CRLValidity)}
	change(tmpl)
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, parent, key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestVerifyCardWithCRL(t *testing.T) {
	iss, _ := newTestIssuer(t)
	other, _ := newTestIssuer(t)
	good := issue(t, iss, card)
	revoked := issue(t, iss, otherCard)
	if _, err := iss.RevokeCard(otherCard, ReasonKeyCompromise, t0); err != nil {
		t.Fatal(err)
	}
	crl, err := iss.CRL()
	if err != nil {
		t.Fatal(err)
	}
	// A key that is not the CA's, in a certificate that otherwise looks
	// like it: same subject, same key identifier.
	impostorKey := newCardKey(t)
	impostor := *iss.CA()
	impostor.PublicKey = &impostorKey.PublicKey
	forged := craftCRL(t, &impostor, impostorKey, func(*x509.RevocationList) {})
	fromOther := craftCRL(t, other.CA(), other.caKey, func(*x509.RevocationList) {})
	elsewhere, err := create(filepath.Join(t.TempDir(), "elsewhere"), "elsewhere", t0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fromElsewhere := craftCRL(t, elsewhere.CA(), elsewhere.caKey, func(*x509.RevocationList) {})
	critical := craftCRL(t, iss.ca, iss.caKey, func(l *x509.RevocationList) {
		// Issuing distribution point (RFC 5280 §5.2.5), critical.
		l.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 0x00}}}
	})
	criticalEntry := craftCRL(t, iss.ca, iss.caKey, func(l *x509.RevocationList) {
		l.RevokedCertificateEntries = []x509.RevocationListEntry{{
			SerialNumber: big.NewInt(12345), RevocationTime: t0,
			// Certificate issuer (RFC 5280 §5.3.3), critical.
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 29}, Critical: true, Value: []byte{0x30, 0x00}}},
		}}
	})
	noNext := *crl
	noNext.NextUpdate = time.Time{}
	backwards := *crl
	backwards.NextUpdate = crl.ThisUpdate.Add(-time.Second)

	tests := []struct {
		name string
		cert *x509.Certificate
		crl  *x509.RevocationList
		now  time.Time
		is   error
		want string // "" means valid
	}{
		{"not revoked", good, crl, t0, nil, ""},
		{"not revoked, at next update", good, crl, crl.NextUpdate, nil, ""},
		{"other CA's empty CRL", good, fromOther, t0, nil, "not the CA"},
		{"CRL of a CA named otherwise", good, fromElsewhere, t0, nil, "CRL issuer is not the CA"},
		{"forged CRL", good, forged, t0, nil, "not signed by the CA"},
		{"revoked", revoked, crl, t0, ErrRevoked, "certificate revoked: serial " + strings.ToUpper(revoked.SerialNumber.Text(16))},
		{"revoked, reason", revoked, crl, t0, ErrRevoked, "keyCompromise"},
		{"stale", good, crl, crl.NextUpdate.Add(time.Second), ErrStaleCRL, "CRL out of date"},
		{"stale, revoked", revoked, crl, crl.NextUpdate.Add(time.Second), ErrRevoked, "certificate revoked"},
		{"no next update", good, &noNext, t0, ErrStaleCRL, "no next update"},
		{"next before this", good, &backwards, t0, nil, "before this update"},
		{"critical extension", good, critical, t0, nil, "critical extension"},
		{"critical entry extension", good, criticalEntry, t0, nil, "critical extension"},
		{"nil CRL", good, nil, t0, nil, "missing CRL"},
		{"expired card, fresh CRL", good, craftCRL(t, iss.ca, iss.caKey, func(l *x509.RevocationList) {
			l.ThisUpdate, l.NextUpdate = good.NotAfter, good.NotAfter.Add(CRLValidity)
		}), good.NotAfter.Add(time.Hour), nil, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := VerifyCardWithCRL(tt.cert, iss.CA(), tt.crl, tt.now)
			// VerifyCard followed by Revocations.Check must agree.
			alt := func() error {
				if _, err := VerifyCard(tt.cert, iss.CA(), tt.now); err != nil {
					return err
				}
				r, err := NewRevocations(tt.crl, iss.CA())
				if err != nil {
					return err
				}
				return r.Check(tt.cert, tt.now)
			}()
			if (alt == nil) != (err == nil) || errors.Is(alt, ErrRevoked) != errors.Is(err, ErrRevoked) ||
				errors.Is(alt, ErrStaleCRL) != errors.Is(err, ErrStaleCRL) {
				t.Errorf("VerifyCard + Revocations.Check = %v, want it to agree with VerifyCardWithCRL's %v", alt, err)
			}
			if tt.want == "" {
				if err != nil || n != card {
					t.Errorf("VerifyCardWithCRL() = %q, %v, want %q", n, err, card)
				}
				return
			}
			t.Logf("VerifyCardWithCRL() error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("VerifyCardWithCRL() = %q, %v, want error containing %q", n, err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("VerifyCardWithCRL() error %v, want it to wrap %v", err, tt.is)
			}
			if tt.is == nil && (errors.Is(err, ErrRevoked) || errors.Is(err, ErrStaleCRL)) {
				t.Errorf("VerifyCardWithCRL() error %v wraps ErrRevoked or ErrStaleCRL, want neither", err)
			}
		})
	}
}

func TestUpdateCRL(t *testing.T) {
	iss, dir := newTestIssuer(t)
	c := issue(t, iss, card)
	if _, err := iss.RevokeCard(card, ReasonKeyCompromise, t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(30 * 24 * time.Hour)
	old, err := iss.CRL()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckCRL(old, iss.CA(), later); !errors.Is(err, ErrStaleCRL) {
		t.Fatalf("CheckCRL(old CRL, 30 days later) = %v, want ErrStaleCRL", err)
	}
	crl, err := iss.UpdateCRL(later)
	if err != nil {
		t.Fatalf("UpdateCRL() error: %v", err)
	}
	if crl.Number.Cmp(big.NewInt(3)) != 0 || !crl.ThisUpdate.Equal(later) || len(crl.RevokedCertificateEntries) != 1 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Cmp(c.SerialNumber) != 0 ||
		crl.RevokedCertificateEntries[0].ReasonCode != int(ReasonKeyCompromise) ||
		!crl.RevokedCertificateEntries[0].RevocationTime.Equal(t0) {
		t.Errorf("UpdateCRL() = number %v, this update %v, entries %v, want 3, %v, the revoked card's", crl.Number, crl.ThisUpdate, crlSerials(crl), later)
	}
	if _, err := VerifyCardWithCRL(c, iss.CA(), crl, later); !errors.Is(err, ErrRevoked) {
		t.Errorf("VerifyCardWithCRL(revoked, updated CRL) = %v, want ErrRevoked", err)
	}

	// Next update never goes past the CA's expiry.
	end := iss.CA().NotAfter.Add(-time.Hour)
	if crl, err = iss.UpdateCRL(end); err != nil {
		t.Fatal(err)
	}
	if !crl.NextUpdate.Equal(iss.CA().NotAfter) {
		t.Errorf("UpdateCRL(CA's last hour).NextUpdate = %v, want the CA's expiry %v", crl.NextUpdate, iss.CA().NotAfter)
	}
	if _, err := iss.UpdateCRL(iss.CA().NotAfter.Add(time.Second)); err == nil {
		t.Errorf("UpdateCRL(after the CA) error = nil, want error")
	}

	// An issuer directory without a CRL (made before CRLs) gets one.
	if err := os.Remove(filepath.Join(dir, "crl.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.CRL(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CRL() without crl.pem error = %v, want fs.ErrNotExist", err)
	}
	if crl, err = iss.UpdateCRL(t0); err != nil || crl.Number.Cmp(big.NewInt(1)) != 0 || len(crl.RevokedCertificateEntries) != 0 {
		t.Errorf("UpdateCRL(no crl.pem) = %v, %v, want an empty CRL number 1", crl, err)
	}
	assertNoTemp(t, dir)
}

func TestCRLFileRefusals(t *testing.T) {
	_, otherDir := newTestIssuer(t)
	tests := []struct {
		name string
		data func(dir string) []byte
		want string
	}{
		{"garbage", func(string) []byte { return []byte("garbage") }, "parsing CRL"},
		{"certificate", func(dir string) []byte { return readFile(t, filepath.Join(dir, "ca.pem")) }, `PEM block "CERTIFICATE"`},
		{"other issuer's CRL", func(string) []byte { return readFile(t, filepath.Join(otherDir, "crl.pem")) }, "not the CA"},
		{"two blocks", func(dir string) []byte {
			b := readFile(t, filepath.Join(dir, "crl.pem"))
			return append(b, b...)
		}, "data after the PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, dir := newTestIssuer(t)
			issue(t, iss, card)
			path := filepath.Join(dir, "crl.pem")
			bad := tt.data(dir)
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			if crl, err := iss.CRL(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CRL() = %v, %v, want error containing %q", crl, err, tt.want)
			}
			if rev, err := iss.RevokeCard(card, ReasonKeyCompromise, t0); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RevokeCard() = %+v, %v, want error containing %q", rev, err, tt.want)
			}
			if _, err := iss.UpdateCRL(t0); err == nil {
				t.Errorf("UpdateCRL() error = nil, want error")
			}
			// A CRL the issuer cannot read is never overwritten.
			if got := readFile(t, path); !bytes.Equal(got, bad) {
				t.Errorf("crl.pem changed after refusals")
			}
		})
	}
}

func TestParseCRL(t *testing.T) {
	iss, dir := newTestIssuer(t)
	data := readFile(t, filepath.Join(dir, "crl.pem"))
	crl, err := iss.CRL()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want string // "" means accepted
	}{
		{"PEM", data, ""},
		{"PEM with white space", append(append([]byte("\n\n"), data...), "\n  \n"...), ""},
		{"DER", crl.Raw, ""},
		{"empty", nil, "parsing CRL"},
		{"truncated DER", crl.Raw[:len(crl.Raw)-1], "parsing CRL"},
		{"trailing DER", append(bytes.Clone(crl.Raw), 0), "parsing CRL"},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CRL", Bytes: crl.Raw}), `PEM block "CRL"`},
		{"too big", make([]byte, maxCRLSize+1), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCRL(tt.in)
			if tt.want == "" {
				if err != nil || !bytes.Equal(got.Raw, crl.Raw) {
					t.Errorf("ParseCRL() = %v, %v, want the issuer's CRL", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCRL() = %v, %v, want error containing %q", got, err, tt.want)
			}
		})
	}
}

func TestReason(t *testing.T) {
	for _, r := range CardReasons {
		got, err := ParseReason(strings.ToUpper(r.String()))
		if err != nil || got != r {
			t.Errorf("ParseReason(%q) = %v, %v, want %v", strings.ToUpper(r.String()), got, err, r)
		}
	}
	names := []struct {
		r    Reason
		want string
	}{
		{ReasonKeyCompromise, "keyCompromise"},
		{ReasonCessationOfOperation, "cessationOfOperation"},
		{2, "cACompromise"},
		{7, "reason(7)"},
	}
	for _, n := range names {
		if got := n.r.String(); got != n.want {
			t.Errorf("Reason(%d).String() = %q, want %q", int(n.r), got, n.want)
		}
	}
	for _, s := range []string{"", "bogus", "cACompromise", "certificateHold", "removeFromCRL", "aACompromise", "1"} {
		if r, err := ParseReason(s); err == nil {
			t.Errorf("ParseReason(%q) = %v, want error", s, r)
		}
	}
}

func TestIndexSurvivesLoad(t *testing.T) {
	iss, dir := newTestIssuer(t)
	first := issue(t, iss, card)
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	second := issue(t, loaded, card)
	third := issue(t, loaded, otherCard)

	again, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	list, err := again.Issued()
	if err != nil {
		t.Fatalf("Issued() error: %v", err)
	}
	want := []*x509.Certificate{first, second, third}
	if len(list) != len(want) {
		t.Fatalf("Issued() = %d entries, want %d", len(list), len(want))
	}
	for i, c := range want {
		if list[i].CardNumber != c.Subject.SerialNumber || list[i].Serial.Cmp(c.SerialNumber) != 0 || !list[i].NotAfter.Equal(c.NotAfter) {
			t.Errorf("Issued()[%d] = %+v, want %s %X %v", i, list[i], c.Subject.SerialNumber, c.SerialNumber, c.NotAfter)
		}
	}
	rev, err := again.RevokeCard(card, ReasonSuperseded, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rev.Revoked) != 2 || rev.Revoked[0].Cmp(first.SerialNumber) != 0 || rev.Revoked[1].Cmp(second.SerialNumber) != 0 {
		t.Errorf("RevokeCard() after Load revoked %v, want both of the card's certificates", serials(rev.Revoked))
	}
	if st, err := os.Stat(filepath.Join(dir, "issued.txt")); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("issued.txt: %v, %v, want mode 0644", st, err)
	}
	// A stale temporary file from a crash does not matter.
	if err := os.WriteFile(filepath.Join(dir, ".issued.txt.tmp-1"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	issue(t, again, otherCard)
	if list, err = again.Issued(); err != nil || len(list) != 4 {
		t.Errorf("Issued() after a stale temp file = %d entries, %v, want 4", len(list), err)
	}
}

func TestIssueCardCorruptIndex(t *testing.T) {
	iss, dir := newTestIssuer(t)
	issue(t, iss, card)
	path := filepath.Join(dir, "issued.txt")
	bad := append(readFile(t, path), "garbage\n"...)
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := iss.IssueCard(&newCardKey(t).PublicKey, card, t0); err == nil || !strings.Contains(err.Error(), "issued.txt: line 2") {
		t.Errorf("IssueCard(corrupt index) = %v, %v, want error naming issued.txt line 2", c, err)
	}
	if _, err := iss.RevokeCard(card, ReasonKeyCompromise, t0); err == nil {
		t.Errorf("RevokeCard(corrupt index) error = nil, want error")
	}
	if got := readFile(t, path); !bytes.Equal(got, bad) {
		t.Errorf("issued.txt changed after refusals")
	}
}

func TestIssueCardConcurrent(t *testing.T) {
	iss, _ := newTestIssuer(t)
	key := newCardKey(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := iss.IssueCard(&key.PublicKey, card, t0)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if list, err := iss.Issued(); err != nil || len(list) != n {
		t.Errorf("Issued() after %d concurrent IssueCard = %d entries, %v, want %d", n, len(list), err, n)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, data := range []string{"first, longer content\n", "second\n"} {
		if err := writeAtomic(path, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, path); string(got) != data {
			t.Errorf("after writeAtomic(%q) file = %q", data, got)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", st.Mode().Perm())
	}
	assertNoTemp(t, dir)
	if err := writeAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Errorf("writeAtomic(missing dir) error = nil, want error")
	}
	// Renaming over a directory fails; the temporary file goes away and
	// the target is untouched.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(sub, []byte("x"), 0o600); err == nil {
		t.Errorf("writeAtomic(over a directory) error = nil, want error")
	}
	assertNoTemp(t, dir)
}

func BenchmarkVerifyCard(b *testing.B) {
	iss, c, crl := benchIssuer(b)
	r, err := NewRevocations(crl, iss.CA())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("without CRL", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := VerifyCard(c, iss.CA(), t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Revocations.Check only, CRL of 1000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Check(c, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("with CRL of 1000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := VerifyCardWithCRL(c, iss.CA(), crl, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchIssuer(b *testing.B) (*Issuer, *x509.Certificate, *x509.RevocationList) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "issuer")
	iss, err := create(dir, "bench issuer", t0, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(iss.caKey.Curve, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	c, err := iss.IssueCard(&key.PublicKey, card, t0)
	if err != nil {
		b.Fatal(err)
	}
	entries := make([]x509.RevocationListEntry, 1000)
	for i := range entries {
		entries[i] = x509.RevocationListEntry{SerialNumber: big.NewInt(int64(i + 1)), RevocationTime: t0, ReasonCode: 1}
	}
	crl, err := iss.writeCRL(entries, big.NewInt(2), t0)
	if err != nil {
		b.Fatal(err)
	}
	return iss, c, crl
}

func TestRevocations(t *testing.T) {
	iss, _ := newTestIssuer(t)
	elsewhere, err := create(filepath.Join(t.TempDir(), "elsewhere"), "elsewhere", t0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := issue(t, iss, card)
	revoked := issue(t, iss, otherCard)
	foreign := issue(t, elsewhere, card)
	if _, err := iss.RevokeCard(otherCard, ReasonPrivilegeWithdrawn, t0); err != nil {
		t.Fatal(err)
	}
	crl, err := iss.CRL()
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRevocations(crl, iss.CA())
	if err != nil {
		t.Fatalf("NewRevocations() error: %v", err)
	}
	if r.CRL() != crl {
		t.Errorf("Revocations.CRL() is not the CRL it was made from")
	}
	stale := crl.NextUpdate.Add(time.Nanosecond)
	tests := []struct {
		name string
		cert *x509.Certificate
		now  time.Time
		is   error
		want string
	}{
		{"good", good, t0, nil, ""},
		{"good at next update", good, crl.NextUpdate, nil, ""},
		{"revoked", revoked, t0, ErrRevoked, "privilegeWithdrawn"},
		{"good, stale", good, stale, ErrStaleCRL, "out of date"},
		{"revoked, stale", revoked, stale, ErrRevoked, "certificate revoked"},
		{"other issuer's certificate", foreign, t0, nil, "not issued by the CRL's issuer"},
		{"nil", nil, t0, nil, "missing certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Check(tt.cert, tt.now)
			if tt.want == "" {
				if err != nil {
					t.Errorf("Check() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("Check() = %v, want error containing %q (wrapping %v)", err, tt.want, tt.is)
			}
		})
	}
	for _, bad := range []struct {
		name string
		crl  *x509.RevocationList
	}{
		{"nil", nil},
		{"other CA's", craftCRL(t, elsewhere.CA(), elsewhere.caKey, func(*x509.RevocationList) {})},
	} {
		if r, err := NewRevocations(bad.crl, iss.CA()); err == nil {
			t.Errorf("NewRevocations(%s CRL) = %v, want error", bad.name, r)
		}
	}
}
