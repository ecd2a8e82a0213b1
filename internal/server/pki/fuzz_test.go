package pki

import (
	"bytes"
	"encoding/pem"
	"testing"
)

// FuzzParseCRL checks that ParseCRL never panics on untrusted bytes and
// that what it accepts parses the same again from its own DER and PEM.
func FuzzParseCRL(f *testing.F) {
	dir := f.TempDir()
	iss, err := create(dir, "fuzz issuer", t0, constReader(7))
	if err != nil {
		f.Fatal(err)
	}
	crl, err := iss.CRL()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(crl.Raw)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}))
	f.Add([]byte("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCRL(data)
		if err != nil {
			return
		}
		for _, in := range [][]byte{c.Raw, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.Raw})} {
			again, err := ParseCRL(in)
			if err != nil || !bytes.Equal(again.Raw, c.Raw) || again.Number.Cmp(c.Number) != 0 ||
				len(again.RevokedCertificateEntries) != len(c.RevokedCertificateEntries) {
				t.Errorf("ParseCRL(own encoding) = %v, %v, want the same CRL", again, err)
			}
		}
		// Checking it against an unrelated CA must fail, never panic.
		if CheckCRL(c, iss.CA(), t0) == nil && !bytes.Equal(c.Raw, crl.Raw) && !bytes.Equal(c.RawTBSRevocationList, crl.RawTBSRevocationList) {
			t.Errorf("CheckCRL(fuzzed CRL) = nil for a CRL the issuer did not sign")
		}
	})
}
