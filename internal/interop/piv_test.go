//go:build pcsc && cgo

package interop

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gopiv "github.com/go-piv/piv-go/v2/piv"

	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
)

// The PIV applet's factory defaults (docs/piv-applet.md).
const (
	pivPIN = "123456"
)

// pivRID is the NIST RID: SELECT by it reaches the PIV applet by partial
// name, as piv-go and yubico-piv-tool send it.
var pivRID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08}

// pkcs11Module is OpenSC's PKCS#11 module (Debian package opensc-pkcs11).
const pkcs11Module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// needPIV skips t unless the attached card answers SELECT PIV.
func needPIV(t *testing.T) {
	t.Helper()
	h.need(t)
	c := connect(t, openReader(t))
	cmd := iso7816.Command{INS: 0xA4, P1: 0x04, Data: pivRID, Ne: 256}
	if _, err := reader.Exchange(t.Context(), c, cmd); err != nil {
		t.Skipf("the card has no PIV applet (SELECT A000000308: %v): waiting for internal/applet/piv in cardfile.Applets", err)
	}
	c.Close()
}

// pivCert is the slot 9A certificate the tests put on the card once, with
// piv-go: a key generated on the card, and a certificate it signs itself.
var pivCert struct {
	once sync.Once
	cert *x509.Certificate
	pem  string // path of the PEM file
	err  error
}

// provision returns the slot 9A certificate, making key and certificate on
// the card with piv-go the first time (GENERATE and PUT DATA after
// authenticating with the default management key; the self-signature is the
// card's first signature).
func provision(t *testing.T) *x509.Certificate {
	t.Helper()
	needPIV(t)
	pivCert.once.Do(func() {
		pivCert.cert, pivCert.err = provisionPIV()
		if pivCert.err != nil {
			return
		}
		pivCert.pem = filepath.Join(h.dir, "piv-9a.pem")
		pivCert.err = os.WriteFile(pivCert.pem, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pivCert.cert.Raw}), 0o644)
	})
	if pivCert.err != nil {
		t.Fatalf("provisioning PIV slot 9A with piv-go: %v", pivCert.err)
	}
	return pivCert.cert
}

func provisionPIV() (*x509.Certificate, error) {
	yk, err := gopiv.Open(readerName)
	if err != nil {
		return nil, fmt.Errorf("piv.Open(%q): %w", readerName, err)
	}
	defer yk.Close()
	pub, err := yk.GenerateKey(gopiv.DefaultManagementKey, gopiv.SlotAuthentication, gopiv.Key{
		Algorithm:   gopiv.AlgorithmEC256,
		PINPolicy:   gopiv.PINPolicyOnce,
		TouchPolicy: gopiv.TouchPolicyNever,
	})
	if err != nil {
		return nil, fmt.Errorf("GenerateKey(9A): %w", err)
	}
	priv, err := yk.PrivateKey(gopiv.SlotAuthentication, pub, gopiv.KeyAuth{PIN: pivPIN})
	if err != nil {
		return nil, fmt.Errorf("PrivateKey(9A): %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "cardlink interop"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv.(crypto.Signer))
	if err != nil {
		return nil, fmt.Errorf("self-signing on the card: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := yk.SetCertificate(gopiv.DefaultManagementKey, gopiv.SlotAuthentication, cert); err != nil {
		return nil, fmt.Errorf("SetCertificate(9A): %w", err)
	}
	return cert, nil
}

// plainSelect reports whether the card answers a SELECT PIV without Le
// with 9000, and the status word it gave. yubico-piv-tool 2.2 takes
// anything but 9000 (61xx too) as "no PIV applet" and sends no GET
// RESPONSE.
func plainSelect(t *testing.T) (bool, string) {
	t.Helper()
	c := connect(t, openReader(t))
	defer c.Close()
	resp, err := c.Transmit(t.Context(), []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08})
	if err != nil || len(resp) < 2 {
		t.Fatalf("SELECT PIV without Le = %X, %v", resp, err)
	}
	sw := fmt.Sprintf("%X", resp[len(resp)-2:])
	return sw == "9000", sw
}

// needPlainSelect skips t unless plainSelect.
func needPlainSelect(t *testing.T) {
	t.Helper()
	needPIV(t)
	if ok, sw := plainSelect(t); !ok {
		t.Skipf("card answers SELECT PIV without Le with %s, not 9000 with the data as a YubiKey does: yubico-piv-tool 2.2 stops there (needs a card OS change)", sw)
	}
}

func TestPIVOpenSCIdentifies(t *testing.T) {
	needPIV(t)
	out := mustTool(t, "opensc-tool", "-r", readerIndex(t, readerName), "-n")
	if !strings.Contains(out, "PIV") && !strings.Contains(out, "Personal Identity Verification") {
		t.Errorf("opensc-tool -n = %q, want a PIV card", out)
	}
}

func TestPIVListCertificates(t *testing.T) {
	cert := provision(t)
	n := readerIndex(t, readerName)
	out := mustTool(t, "pkcs15-tool", "-r", n, "--list-certificates")
	if !strings.Contains(out, "X.509 Certificate") || !strings.Contains(out, "PIV Authentication") {
		t.Errorf("pkcs15-tool --list-certificates:\n%s\nwant the PIV Authentication certificate", out)
	}
	// The certificate OpenSC reads is the one imported.
	pemOut := mustTool(t, "pkcs15-tool", "-r", n, "--read-certificate", "01")
	blk, _ := pem.Decode([]byte(pemOut[strings.Index(pemOut, "-----BEGIN"):]))
	if blk == nil || !bytes.Equal(blk.Bytes, cert.Raw) {
		t.Errorf("pkcs15-tool --read-certificate 01 = %q, want the imported certificate", pemOut)
	}
}

// TestPIVPKCS11Sign signs with OpenSC's PKCS#11 module and checks the
// signature with openssl and with Go.
func TestPIVPKCS11Sign(t *testing.T) {
	cert := provision(t)
	if _, err := os.Stat(pkcs11Module); err != nil {
		t.Skipf("OpenSC PKCS#11 module not installed (%s): run scripts/pcsc-deps.sh", pkcs11Module)
	}
	dir := t.TempDir()
	msg := []byte("cardlink interop: sign me")
	digest := sha256.Sum256(msg)
	hashFile, sigFile, msgFile := filepath.Join(dir, "hash"), filepath.Join(dir, "sig"), filepath.Join(dir, "msg")
	os.WriteFile(hashFile, digest[:], 0o644)
	os.WriteFile(msgFile, msg, 0o644)
	mustTool(t, "pkcs11-tool", "--module", pkcs11Module, "--slot-description", readerName, "--login", "--pin", pivPIN,
		"--sign", "--mechanism", "ECDSA", "--id", "01",
		"--input-file", hashFile, "--output-file", sigFile, "--signature-format", "openssl")
	sig, err := os.ReadFile(sigFile)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("pkcs11-tool signature %X does not verify in Go", sig)
	}
	pub := filepath.Join(dir, "pub.pem")
	mustTool(t, "openssl", "x509", "-in", pivCert.pem, "-pubkey", "-noout", "-out", pub)
	out := mustTool(t, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigFile, msgFile)
	if !strings.Contains(out, "Verified OK") {
		t.Errorf("openssl dgst -verify = %q, want Verified OK", out)
	}
}

var triesRE = regexp.MustCompile(`PIN tries left:\s*(\d+)`)

// pinTries reads the PIV PIN's tries left with an empty VERIFY (63Cx)
// through cardlink's pcsc driver, after a reset: the card stays powered
// between PC/SC sessions, so a PIN another application verified would
// still count.
func pinTries(t *testing.T) int {
	t.Helper()
	c := connect(t, openReader(t))
	defer c.Close()
	ctx := t.Context()
	if err := c.Reset(ctx); err != nil {
		t.Fatalf("Reset() = %v", err)
	}
	if _, err := reader.Exchange(ctx, c, iso7816.Command{INS: 0xA4, P1: 0x04, Data: pivRID, Ne: 256}); err != nil {
		t.Fatalf("SELECT PIV = %v", err)
	}
	_, err := reader.Exchange(ctx, c, iso7816.Command{INS: 0x20, P1: 0x00, P2: 0x80})
	var pe *iso7816.PINError
	if !errors.As(err, &pe) {
		t.Fatalf("empty VERIFY = %v, want a PIN error with the tries left", err)
	}
	return pe.Retries
}

// TestPIVWrongPIN checks that one wrong PIN through OpenSC's PKCS#11 module
// costs exactly one try, seen by an empty VERIFY (and by yubico-piv-tool -a
// status when it can talk to the card), and that the right PIN restores the
// counter.
func TestPIVWrongPIN(t *testing.T) {
	needPIV(t)
	if _, err := os.Stat(pkcs11Module); err != nil {
		t.Skipf("OpenSC PKCS#11 module not installed (%s): run scripts/pcsc-deps.sh", pkcs11Module)
	}
	before := pinTries(t)
	if before < 2 {
		t.Fatalf("PIN tries left = %d before the test, want at least 2", before)
	}
	login := func(pin string) (string, error) {
		return tool(t, "pkcs11-tool", "--module", pkcs11Module, "--slot-description", readerName, "--login", "--pin", pin, "--list-objects")
	}
	if out, err := login("999999"); err == nil {
		t.Fatalf("pkcs11-tool --login with a wrong PIN succeeded:\n%s", out)
	}
	if got := pinTries(t); got != before-1 {
		t.Errorf("PIN tries left after one wrong PIN = %d, want %d", got, before-1)
	}
	if ok, _ := plainSelect(t); ok {
		out := mustTool(t, "yubico-piv-tool", "-r", readerName, "-a", "status")
		if m := triesRE.FindStringSubmatch(out); m == nil || m[1] != strconv.Itoa(before-1) {
			t.Errorf("yubico-piv-tool -a status:\n%s\nwant PIN tries left: %d", out, before-1)
		}
	}
	if out, err := login(pivPIN); err != nil {
		t.Fatalf("pkcs11-tool --login with the right PIN: %v\n%s", err, out)
	}
	if got := pinTries(t); got != before {
		t.Errorf("PIN tries left after the right PIN = %d, want %d", got, before)
	}
}

func TestYubicoPIVTool(t *testing.T) {
	needPlainSelect(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "status", args: []string{"-r", "Virtual PCD", "-a", "status"}, want: "Version:"},
		{name: "verify PIN", args: []string{"-r", "Virtual PCD", "-a", "verify-pin", "-P", pivPIN}, want: "Successfully verified PIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := mustTool(t, "yubico-piv-tool", tt.args...)
			if !strings.Contains(out, tt.want) {
				t.Errorf("yubico-piv-tool %s:\n%s\nwant %q", strings.Join(tt.args, " "), out, tt.want)
			}
		})
	}
}

// TestPivGo reads the certificate and signs with piv-go, a Go PIV client
// that drives PC/SC itself.
func TestPivGo(t *testing.T) {
	cert := provision(t)
	yk, err := gopiv.Open(readerName)
	if err != nil {
		t.Fatalf("piv.Open(%q) = %v", readerName, err)
	}
	defer yk.Close()
	got, err := yk.Certificate(gopiv.SlotAuthentication)
	if err != nil {
		t.Fatalf("Certificate(9A) = %v", err)
	}
	if !bytes.Equal(got.Raw, cert.Raw) {
		t.Errorf("Certificate(9A) is not the imported certificate")
	}
	priv, err := yk.PrivateKey(gopiv.SlotAuthentication, cert.PublicKey, gopiv.KeyAuth{PIN: pivPIN})
	if err != nil {
		t.Fatalf("PrivateKey(9A) = %v", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		t.Fatalf("PrivateKey(9A) is %T, want a crypto.Signer", priv)
	}
	digest := sha256.Sum256([]byte("cardlink interop: piv-go"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign() = %v", err)
	}
	if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("piv-go signature does not verify against the certificate")
	}
}
