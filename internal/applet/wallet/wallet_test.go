package wallet_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	walletapplet "cardlink/internal/applet/wallet"
	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// sw returns the status word carried by err (9000 for nil, 0 for an error
// without one).
func sw(err error) iso7816.SW {
	if err == nil {
		return iso7816.SWOK
	}
	var se *iso7816.StatusError
	if errors.As(err, &se) {
		return se.SW
	}
	return 0
}

func cmd(cla, ins, p1, p2 byte, data []byte, ne int) iso7816.Command {
	return iso7816.Command{CLA: cla, INS: ins, P1: p1, P2: p2, Data: data, Ne: ne}
}

func pinBlock(t testing.TB, pin string) []byte {
	t.Helper()
	b, err := wallet.PINBlock(pin)
	if err != nil {
		t.Fatalf("PINBlock(%q) = %v", pin, err)
	}
	return b
}

func encode(t testing.TB, tx *txn.Transaction) []byte {
	t.Helper()
	b, err := tx.Encode()
	if err != nil {
		t.Fatalf("encoding transaction: %v", err)
	}
	return b
}

func counter(t testing.TB, env *wallettest.Env) uint32 {
	t.Helper()
	n, err := env.Client.Counter(t.Context())
	if err != nil {
		t.Fatalf("Counter() = %v", err)
	}
	return n
}

func info(t testing.TB, env *wallettest.Env) wallet.Info {
	t.Helper()
	in, err := env.Client.Info(t.Context())
	if err != nil {
		t.Fatalf("Info() = %v", err)
	}
	return in
}

func TestSelectFCI(t *testing.T) {
	for _, tc := range []struct {
		name  string
		blank bool
		state byte
	}{
		{"personalizing", true, 0},
		{"operational", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := wallettest.New(t, wallettest.Options{Blank: tc.blank})
			got, s := env.Transmit(t, cmd(0x00, 0xA4, 0x04, 0x00, walletapplet.AID, 256))
			want := []byte{0x6F, 0x22, 0x84, 0x09}
			want = append(want, walletapplet.AID...)
			want = append(want, 0xA5, 0x15, 0x50, 0x0F)
			want = append(want, "cardlink wallet"...)
			want = append(want, 0xDF, 0x25, 0x01, tc.state)
			if s != iso7816.SWOK || !bytes.Equal(got, want) {
				t.Errorf("SELECT = % X %v, want % X 9000", got, s, want)
			}
		})
	}
}

func TestClassAndInstruction(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	for _, tc := range []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"proprietary class for VERIFY", cmd(0x80, 0x20, 0, 0x81, nil, 0), iso7816.SWCLANotSupported},
		{"ISO class for SIGN TRANSACTION", cmd(0x00, 0xA0, 0, 0, []byte{1}, 0), iso7816.SWCLANotSupported},
		{"class 84", cmd(0x84, 0xCA, 0, 0x5A, nil, 0), iso7816.SWSecureMessaging},
		{"class 90 (chained) unknown INS", cmd(0x80, 0x10, 0, 0, nil, 0), iso7816.SWINSNotSupported},
		{"unknown ISO INS", cmd(0x00, 0x84, 0, 0, nil, 8), iso7816.SWINSNotSupported},
		{"unknown proprietary INS", cmd(0x80, 0xF2, 0, 0, nil, 0), iso7816.SWINSNotSupported},
		{"GENERATE KEY when operational", cmd(0x00, 0x47, 0, 0, nil, 256), iso7816.SWConditionsNotSatisfied},
		{"PUT DATA when operational", cmd(0x00, 0xDA, 0, 0x5A, txn.CardNumberBCD(wallettest.CardNumber), 0), iso7816.SWConditionsNotSatisfied},
		{"END PERSONALIZATION when operational", cmd(0x80, 0xF0, 0, 0, nil, 0), iso7816.SWConditionsNotSatisfied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := env.Transmit(t, tc.cmd); got != tc.want {
				t.Errorf("%02X %02X %02X %02X = %v, want %v", tc.cmd.CLA, tc.cmd.INS, tc.cmd.P1, tc.cmd.P2, got, tc.want)
			}
		})
	}
}

func TestPersonalizingRefusesOperations(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{Blank: true})
	data, err := wallet.AuthData(make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cmd  iso7816.Command
	}{
		{"VERIFY", cmd(0x00, 0x20, 0, 0x81, pinBlock(t, "1234"), 0)},
		{"CHANGE REFERENCE DATA", cmd(0x00, 0x24, 0, 0x81, append(pinBlock(t, "1234"), pinBlock(t, "4321")...), 0)},
		{"RESET RETRY COUNTER", cmd(0x00, 0x2C, 0, 0x81, append(pinBlock(t, "12345678"), pinBlock(t, "4321")...), 0)},
		{"INTERNAL AUTHENTICATE", cmd(0x00, 0x88, 0, 0, data, 256)},
		{"READ RECORD", cmd(0x00, 0xB2, 1, 0x0C, nil, 256)},
		{"SIGN TRANSACTION", cmd(0x80, 0xA0, 2, 0, encode(t, env.Transaction(100, 1)), 256)},
		{"PURSE DEBIT", cmd(0x80, 0xA6, 0, 0, encode(t, env.Transaction(100, 1)), 256)},
		{"LIST ITEMS", cmd(0x80, 0xE4, 0, 0, nil, 256)},
		{"END PERSONALIZATION incomplete", cmd(0x80, 0xF0, 0, 0, nil, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := env.Transmit(t, tc.cmd); got != iso7816.SWConditionsNotSatisfied {
				t.Errorf("%s while personalizing = %v, want 6985", tc.name, got)
			}
		})
	}
	if got := info(t, env); got.Lifecycle != wallet.Personalizing || got.CardNumber != "" || got.Counter != 0 {
		t.Errorf("Info() of a blank card = %+v, want personalizing and empty", got)
	}
}

func TestPutData(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{Blank: true})
	put := func(p1, p2 byte, v []byte) iso7816.SW {
		_, s := env.Transmit(t, cmd(0x00, 0xDA, p1, p2, v, 0))
		return s
	}
	// A certificate before any key is refused.
	other, _ := ecdsa.GenerateKey(env.CAKey.Curve, nil)
	otherCert, err := env.IssueCard(&other.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := put(0xDF, 0x20, otherCert.Raw); got != iso7816.SWConditionsNotSatisfied {
		t.Errorf("PUT DATA DF20 before GENERATE KEY = %v, want 6985", got)
	}
	resp, s := env.Transmit(t, cmd(0x00, 0x47, 0, 0, nil, 256))
	if s != iso7816.SWOK || len(resp) != 2+1+2+65 || resp[0] != 0x7F || resp[1] != 0x49 || resp[3] != 0x86 {
		t.Fatalf("GENERATE KEY = % X %v, want 7F49 { 86 point } 9000", resp, s)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(env.CAKey.Curve, resp[5:])
	if err != nil {
		t.Fatalf("GENERATE KEY point: %v", err)
	}
	cert, err := env.IssueCard(pub)
	if err != nil {
		t.Fatal(err)
	}
	ops, _ := env.OpsKey.PublicKey.Bytes()
	badPIN := pinBlock(t, "1234")
	badPIN[7] = 0x0F
	for _, tc := range []struct {
		name   string
		p1, p2 byte
		v      []byte
		want   iso7816.SW
	}{
		{"card number", 0x00, 0x5A, txn.CardNumberBCD(wallettest.CardNumber), iso7816.SWOK},
		{"card number bad Luhn", 0x00, 0x5A, txn.CardNumberBCD("4999000000000014"), iso7816.SWWrongData},
		{"card number short", 0x00, 0x5A, []byte{0x49, 0x99}, iso7816.SWWrongLength},
		{"certificate of another key", 0xDF, 0x20, otherCert.Raw, iso7816.SWWrongData},
		{"certificate garbage", 0xDF, 0x20, []byte{0x30, 0x03, 0x02, 0x01, 0x01}, iso7816.SWWrongData},
		{"certificate with trailing byte", 0xDF, 0x20, append(bytes.Clone(cert.Raw), 0), iso7816.SWWrongData},
		{"certificate", 0xDF, 0x20, cert.Raw, iso7816.SWOK},
		{"CA key id empty", 0xDF, 0x23, nil, iso7816.SWWrongLength},
		{"CA key id long", 0xDF, 0x23, make([]byte, 33), iso7816.SWWrongLength},
		{"CA key id", 0xDF, 0x23, env.CA.SubjectKeyId, iso7816.SWOK},
		{"ops key id", 0xDF, 0x24, env.OpsKeyID, iso7816.SWOK},
		{"ops key off curve", 0xDF, 0x26, append([]byte{4}, make([]byte, 64)...), iso7816.SWWrongData},
		{"ops key short", 0xDF, 0x26, ops[:33], iso7816.SWWrongLength},
		{"ops key", 0xDF, 0x26, ops, iso7816.SWOK},
		{"PIN malformed", 0xDF, 0x27, badPIN, iso7816.SWWrongData},
		{"PIN format 1", 0xDF, 0x27, append([]byte{0x14}, pinBlock(t, "1234")[1:]...), iso7816.SWWrongData},
		{"PIN 9 bytes", 0xDF, 0x27, append(pinBlock(t, "1234"), 0xFF), iso7816.SWWrongLength},
		{"PIN", 0xDF, 0x27, pinBlock(t, "1234"), iso7816.SWOK},
		{"PUK of 6 digits", 0xDF, 0x28, pinBlock(t, "123456"), iso7816.SWWrongData},
		{"PUK", 0xDF, 0x28, pinBlock(t, "12345678"), iso7816.SWOK},
		{"template short", 0xDF, 0x29, make([]byte, 63), iso7816.SWWrongLength},
		{"threshold too high", 0xDF, 0x2A, []byte{129}, iso7816.SWWrongData},
		{"threshold", 0xDF, 0x2A, []byte{40}, iso7816.SWOK},
		{"template", 0xDF, 0x29, wallettest.Template(), iso7816.SWOK},
		{"currency unknown", 0xDF, 0x31, []byte("XXX"), iso7816.SWWrongData},
		{"max balance zero", 0xDF, 0x33, make([]byte, 8), iso7816.SWWrongData},
		{"max balance over int64", 0xDF, 0x33, bytes.Repeat([]byte{0xFF}, 8), iso7816.SWWrongData},
		{"unknown tag", 0xDF, 0x5F, []byte{1}, iso7816.SWRefDataNotFound},
	} {
		if got := put(tc.p1, tc.p2, tc.v); got != tc.want {
			t.Errorf("PUT DATA %02X%02X (%s) = %v, want %v", tc.p1, tc.p2, tc.name, got, tc.want)
		}
	}
	// Everything but the currency: END PERSONALIZATION still refuses.
	if _, got := env.Transmit(t, cmd(0x80, 0xF0, 0, 0, nil, 0)); got != iso7816.SWConditionsNotSatisfied {
		t.Errorf("END PERSONALIZATION without currency = %v, want 6985", got)
	}
	if got := put(0xDF, 0x31, []byte("EUR")); got != iso7816.SWOK {
		t.Fatalf("PUT DATA DF31 = %v, want 9000", got)
	}
	if _, got := env.Transmit(t, cmd(0x80, 0xF0, 1, 0, nil, 0)); got != iso7816.SWIncorrectP1P2 {
		t.Errorf("END PERSONALIZATION P1 01 = %v, want 6A86", got)
	}
	if _, got := env.Transmit(t, cmd(0x80, 0xF0, 0, 0, nil, 0)); got != iso7816.SWOK {
		t.Fatalf("END PERSONALIZATION = %v, want 9000", got)
	}
	in := info(t, env)
	if in.Lifecycle != wallet.Operational || in.BioThreshold != 40 || in.PINTries != 3 || in.PUKTries != 10 || in.BioTries != 5 {
		t.Errorf("Info() after personalization = %+v", in)
	}
	// The purse maximum defaults to 2^63-1.
	if v, err := env.Client.GetData(t.Context(), 0xDF33); err != nil || !bytes.Equal(v, []byte{0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}) {
		t.Errorf("GetData(DF33) = % X, %v, want 7FFFFFFFFFFFFFFF", v, err)
	}
	if err := env.Client.VerifyPIN(t.Context(), "1234"); err != nil {
		t.Errorf("VerifyPIN after manual personalization = %v", err)
	}
}

func TestGenerateKeyDropsCertificate(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{Blank: true})
	resp, _ := env.Transmit(t, cmd(0x00, 0x47, 0, 0, nil, 256))
	pub, err := ecdsa.ParseUncompressedPublicKey(env.CAKey.Curve, resp[5:])
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := env.IssueCard(pub)
	if err := env.Client.Personalize(t.Context(), wallet.Personalization{}, nil); err == nil {
		t.Errorf("Personalize(empty) = nil, want a validation error")
	}
	if _, s := env.Transmit(t, cmd(0x00, 0xDA, 0xDF, 0x20, cert.Raw, 0)); s != iso7816.SWOK {
		t.Fatalf("PUT DATA DF20 = %v", s)
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P1 01", cmd(0x00, 0x47, 1, 0, nil, 256), iso7816.SWIncorrectP1P2},
		{"with data", cmd(0x00, 0x47, 0, 0, []byte{0xAC, 0}, 256), iso7816.SWWrongLength},
		{"regenerate", cmd(0x00, 0x47, 0, 0, nil, 256), iso7816.SWOK},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("GENERATE KEY (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := env.Client.Certificate(t.Context()); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("Certificate() after a new key = %v, want ErrNotFound", err)
	}
}

// TestNewKeyReplacesCachedKey checks the card never uses a parsed private
// key once its NVM bytes changed: the key of the first GENERATE KEY is
// parsed (and cached) to check a certificate, a second GENERATE KEY
// replaces it, and from then on only the new key counts, for certificates
// and for signatures.
func TestNewKeyReplacesCachedKey(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{Blank: true})
	generate := func() *ecdsa.PublicKey {
		t.Helper()
		resp, s := env.Transmit(t, cmd(0x00, 0x47, 0, 0, nil, 256))
		if s != iso7816.SWOK || len(resp) != 70 {
			t.Fatalf("GENERATE KEY = % X %v", resp, s)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(env.CAKey.Curve, resp[5:])
		if err != nil {
			t.Fatal(err)
		}
		return pub
	}
	putCert := func(pub *ecdsa.PublicKey) iso7816.SW {
		t.Helper()
		cert, err := env.IssueCard(pub)
		if err != nil {
			t.Fatal(err)
		}
		_, s := env.Transmit(t, cmd(0x00, 0xDA, 0xDF, 0x20, cert.Raw, 0))
		return s
	}
	first := generate()
	if got := putCert(first); got != iso7816.SWOK {
		t.Fatalf("PUT DATA DF20 for the first key = %v, want 9000", got)
	}
	second := generate()
	if got := putCert(first); got != iso7816.SWWrongData {
		t.Errorf("PUT DATA DF20 for the replaced key = %v, want 6A80", got)
	}
	if got := putCert(second); got != iso7816.SWOK {
		t.Errorf("PUT DATA DF20 for the new key = %v, want 9000", got)
	}
	// Personalize generates a third key; signatures must verify under it.
	if err := env.Client.Personalize(t.Context(), env.Personalization(), env.IssueCard); err != nil {
		t.Fatalf("Personalize = %v", err)
	}
	if k := env.CardKey(); k.Equal(first) || k.Equal(second) {
		t.Fatalf("Personalize kept an earlier key")
	}
	challenge := bytes.Repeat([]byte{0x5A}, 32)
	s, err := env.Client.Authenticate(t.Context(), challenge, nil)
	if err != nil {
		t.Fatalf("Authenticate() = %v", err)
	}
	payload, _ := wallet.AuthData(challenge, nil)
	if !txn.VerifyEnvelope(env.CardKey(), s.Envelope(txn.PurposeAuth, env.CardNumber, payload), s.Sig) {
		t.Errorf("signature after a new key does not verify under the new key")
	}
}

func TestInfoAndGetData(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{})
	in := info(t, env)
	want := wallet.Info{
		CardNumber: wallettest.CardNumber, Lifecycle: wallet.Operational,
		CAKeyID: env.CA.SubjectKeyId, OpsKeyID: env.OpsKeyID,
		PINTries: 3, PUKTries: 10, BioEnrolled: true, BioTries: 5, BioThreshold: 64,
		LogCapacity: 16,
	}
	if in.CardNumber != want.CardNumber || in.Lifecycle != want.Lifecycle || !bytes.Equal(in.CAKeyID, want.CAKeyID) ||
		!bytes.Equal(in.OpsKeyID, want.OpsKeyID) || in.PINTries != 3 || in.PUKTries != 10 || !in.BioEnrolled ||
		in.BioTries != 5 || in.BioThreshold != 64 || in.LogCapacity != 16 || in.LogUsed != 0 || in.Counter != 0 {
		t.Errorf("Info() = %+v, want %+v", in, want)
	}
	if in.OpsKey == nil || !in.OpsKey.Equal(&env.OpsKey.PublicKey) {
		t.Errorf("Info().OpsKey = %v, want the issuer's ops key", in.OpsKey)
	}
	cert, err := env.Client.Certificate(t.Context())
	if err != nil || !cert.Equal(env.CardCert) {
		t.Fatalf("Certificate() = %v, want the issued certificate", err)
	}
	if len(cert.Raw) <= 256 {
		t.Errorf("certificate is %d bytes; the test wants one over 256 to exercise 61xx", len(cert.Raw))
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: rootPool(env.CA), CurrentTime: cert.NotBefore, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("card certificate does not chain to the CA: %v", err)
	}
	// Raw GET DATA: the value alone; a long reply comes with 61xx.
	if got, s := env.Transmit(t, cmd(0x00, 0xCA, 0x00, 0x5A, nil, 256)); s != iso7816.SWOK || !bytes.Equal(got, txn.CardNumberBCD(wallettest.CardNumber)) {
		t.Errorf("GET DATA 5A = % X %v, want the BCD card number", got, s)
	}
	if got, s := env.Transmit(t, cmd(0x00, 0xCA, 0xDF, 0x20, nil, 256)); s.SW1() != 0x61 || len(got) != 256 {
		t.Errorf("GET DATA DF20 = %d bytes %v, want 256 and 61xx", len(got), s)
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"unknown tag", cmd(0x00, 0xCA, 0xDF, 0x7F, nil, 256), iso7816.SWRefDataNotFound},
		{"PIN is secret", cmd(0x00, 0xCA, 0xDF, 0x27, nil, 256), iso7816.SWRefDataNotFound},
		{"template is secret", cmd(0x00, 0xCA, 0xDF, 0x29, nil, 256), iso7816.SWRefDataNotFound},
		{"with data", cmd(0x00, 0xCA, 0x00, 0x5A, []byte{1}, 256), iso7816.SWWrongLength},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("GET DATA (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	noBio := wallettest.New(t, wallettest.Options{NoBiometric: true})
	if in := info(t, noBio); in.BioEnrolled {
		t.Errorf("Info().BioEnrolled without a template = true")
	}
}

func rootPool(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}

func TestVerifyPIN(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	st, err := env.Client.PINStatus(ctx)
	if err != nil || st != (wallet.VerificationStatus{TriesLeft: 3}) {
		t.Errorf("PINStatus() = %+v, %v, want 3 tries, not verified", st, err)
	}
	var pe *iso7816.PINError
	if err := env.Client.VerifyPIN(ctx, "9999"); !errors.As(err, &pe) || pe.Retries != 2 {
		t.Errorf("VerifyPIN(wrong) = %v, want PINError with 2 retries", err)
	}
	if err := env.Client.VerifyPIN(ctx, "12345"); sw(err) != 0x63C1 {
		t.Errorf("VerifyPIN(longer) = %v, want 63C1", err)
	}
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatalf("VerifyPIN(right) = %v", err)
	}
	if st, err := env.Client.PINStatus(ctx); err != nil || !st.Verified {
		t.Errorf("PINStatus() after VERIFY = %+v, %v, want verified", st, err)
	}
	if got := info(t, env).PINTries; got != 3 {
		t.Errorf("PIN tries after a right PIN = %d, want 3", got)
	}
	if err := env.Client.ResetVerification(ctx); err != nil {
		t.Fatalf("ResetVerification() = %v", err)
	}
	if st, _ := env.Client.PINStatus(ctx); st.Verified {
		t.Errorf("PINStatus() after VERIFY P1 FF = verified")
	}
	if _, err := env.Client.SignTransaction(ctx, encode(t, env.Transaction(1, 1)), false); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("SignTransaction after ResetVerification = %v, want ErrSecurityStatus", err)
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P2 80", cmd(0x00, 0x20, 0, 0x80, pinBlock(t, "1234"), 0), iso7816.SWIncorrectP1P2},
		{"P1 01", cmd(0x00, 0x20, 1, 0x81, pinBlock(t, "1234"), 0), iso7816.SWIncorrectP1P2},
		{"short block", cmd(0x00, 0x20, 0, 0x81, pinBlock(t, "1234")[:7], 0), iso7816.SWWrongLength},
		{"malformed block", cmd(0x00, 0x20, 0, 0x81, []byte{0x24, 0x12, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 0), iso7816.SWWrongData},
		{"P1 FF with data", cmd(0x00, 0x20, 0xFF, 0x81, pinBlock(t, "1234"), 0), iso7816.SWWrongLength},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("VERIFY (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := info(t, env).PINTries; got != 3 {
		t.Errorf("PIN tries after refused VERIFYs = %d, want 3 (refusals use no try)", got)
	}
}

// blockPIN presents three wrong PINs and checks the answers.
func blockPIN(t *testing.T, env *wallettest.Env) {
	t.Helper()
	for i, want := range []iso7816.SW{0x63C2, 0x63C1, 0x63C0, iso7816.SWAuthBlocked} {
		if err := env.Client.VerifyPIN(t.Context(), "0000"); sw(err) != want {
			t.Fatalf("VerifyPIN(wrong) #%d = %v, want %v", i+1, err, want)
		}
	}
}

func TestPINBlockSurvivesRestart(t *testing.T) {
	env := wallettest.New(t, wallettest.Options{Path: filepath.Join(t.TempDir(), "card.nvm")})
	blockPIN(t, env)
	check := func(when string) {
		t.Helper()
		if err := env.Client.VerifyPIN(t.Context(), wallettest.PIN); !errors.Is(err, iso7816.ErrBlocked) {
			t.Errorf("VerifyPIN(right) after %s = %v, want ErrBlocked", when, err)
		}
		if _, err := env.Client.PINStatus(t.Context()); !errors.Is(err, iso7816.ErrBlocked) {
			t.Errorf("PINStatus() after %s = %v, want ErrBlocked", when, err)
		}
		if got := info(t, env).PINTries; got != 0 {
			t.Errorf("PIN tries after %s = %d, want 0", when, got)
		}
	}
	check("blocking")
	env.PowerCycle(t)
	check("a power cycle")
	env.Reopen(t)
	check("reopening the NVM file")
	if err := env.Client.UnblockPIN(t.Context(), wallettest.PUK, "2468"); err != nil {
		t.Fatalf("UnblockPIN() = %v", err)
	}
	env.Reopen(t)
	if err := env.Client.VerifyPIN(t.Context(), "2468"); err != nil {
		t.Errorf("VerifyPIN(new) after unblock and reopen = %v", err)
	}
}

func TestUnblockPIN(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	blockPIN(t, env)
	var pe *iso7816.PINError
	if err := env.Client.UnblockPIN(ctx, "87654321", "5555"); !errors.As(err, &pe) || pe.Retries != 9 {
		t.Errorf("UnblockPIN(wrong PUK) = %v, want PINError with 9 retries", err)
	}
	if got := info(t, env).PUKTries; got != 9 {
		t.Errorf("PUK tries after a wrong PUK = %d, want 9", got)
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P1 01", cmd(0x00, 0x2C, 1, 0x81, append(pinBlock(t, wallettest.PUK), pinBlock(t, "5555")...), 0), iso7816.SWIncorrectP1P2},
		{"P2 82", cmd(0x00, 0x2C, 0, 0x82, append(pinBlock(t, wallettest.PUK), pinBlock(t, "5555")...), 0), iso7816.SWIncorrectP1P2},
		{"PUK only", cmd(0x00, 0x2C, 0, 0x81, pinBlock(t, wallettest.PUK), 0), iso7816.SWWrongLength},
		{"bad new PIN", cmd(0x00, 0x2C, 0, 0x81, append(pinBlock(t, wallettest.PUK), 0x23, 0, 0, 0, 0, 0, 0, 0), 0), iso7816.SWWrongData},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("RESET RETRY COUNTER (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := env.Client.UnblockPIN(ctx, wallettest.PUK, "5555"); err != nil {
		t.Fatalf("UnblockPIN() = %v", err)
	}
	if in := info(t, env); in.PINTries != 3 || in.PUKTries != 10 {
		t.Errorf("tries after unblock = PIN %d PUK %d, want 3 and 10", in.PINTries, in.PUKTries)
	}
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); sw(err) != 0x63C2 {
		t.Errorf("VerifyPIN(old) after unblock = %v, want 63C2", err)
	}
	if err := env.Client.VerifyPIN(ctx, "5555"); err != nil {
		t.Errorf("VerifyPIN(new) after unblock = %v", err)
	}
}

func TestPUKBlocked(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	blockPIN(t, env)
	for i := 9; i >= 0; i-- {
		if err := env.Client.UnblockPIN(ctx, "00000000", "5555"); sw(err) != iso7816.SWTriesLeft(i) {
			t.Fatalf("UnblockPIN(wrong) with %d left = %v, want %v", i, err, iso7816.SWTriesLeft(i))
		}
	}
	if err := env.Client.UnblockPIN(ctx, wallettest.PUK, "5555"); !errors.Is(err, iso7816.ErrBlocked) {
		t.Errorf("UnblockPIN(right PUK) when blocked = %v, want ErrBlocked", err)
	}
	env.PowerCycle(t)
	if err := env.Client.UnblockPIN(ctx, wallettest.PUK, "5555"); !errors.Is(err, iso7816.ErrBlocked) {
		t.Errorf("UnblockPIN(right PUK) after power cycle = %v, want ErrBlocked", err)
	}
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); !errors.Is(err, iso7816.ErrBlocked) {
		t.Errorf("VerifyPIN with PIN and PUK blocked = %v, want ErrBlocked", err)
	}
}

func TestChangePIN(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	if err := env.Client.ChangePIN(ctx, "0000", "777777"); sw(err) != 0x63C2 {
		t.Errorf("ChangePIN(wrong old) = %v, want 63C2", err)
	}
	if err := env.Client.ChangePIN(ctx, wallettest.PIN, "777777"); err != nil {
		t.Fatalf("ChangePIN() = %v", err)
	}
	if got := info(t, env).PINTries; got != 3 {
		t.Errorf("PIN tries after change = %d, want 3", got)
	}
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); sw(err) != 0x63C2 {
		t.Errorf("VerifyPIN(old) = %v, want 63C2", err)
	}
	if err := env.Client.VerifyPIN(ctx, "777777"); err != nil {
		t.Errorf("VerifyPIN(new) = %v", err)
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P1 01", cmd(0x00, 0x24, 1, 0x81, append(pinBlock(t, "777777"), pinBlock(t, "1111")...), 0), iso7816.SWIncorrectP1P2},
		{"P2 91", cmd(0x00, 0x24, 0, 0x91, append(pinBlock(t, "777777"), pinBlock(t, "1111")...), 0), iso7816.SWIncorrectP1P2},
		{"one block", cmd(0x00, 0x24, 0, 0x81, pinBlock(t, "777777"), 0), iso7816.SWWrongLength},
		{"new PIN of 3 digits", cmd(0x00, 0x24, 0, 0x81, append(pinBlock(t, "777777"), 0x23, 0x12, 0x3F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), 0), iso7816.SWWrongData},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("CHANGE REFERENCE DATA (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	blockPIN(t, env)
	if err := env.Client.ChangePIN(ctx, "777777", "1111"); !errors.Is(err, iso7816.ErrBlocked) {
		t.Errorf("ChangePIN() when blocked = %v, want ErrBlocked", err)
	}
}

func TestVerifyBiometric(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	for _, tc := range []struct {
		name  string
		flips int
		want  iso7816.SW
	}{
		{"exact", 0, iso7816.SWOK},
		{"at threshold", 64, iso7816.SWOK},
		{"one over threshold", 65, 0x63C4},
		{"unrelated", 256, 0x63C3},
		{"close again", 10, iso7816.SWOK},
	} {
		if err := env.Client.VerifyBiometric(ctx, wallettest.Sample(env.BioTemplate, tc.flips)); sw(err) != tc.want {
			t.Errorf("VerifyBiometric(%s, %d bits off) = %v, want %v", tc.name, tc.flips, err, tc.want)
		}
	}
	s, err := env.Client.Authenticate(ctx, make([]byte, 32), nil)
	if err != nil || s.CVM != txn.CVMBiometric {
		t.Errorf("Authenticate after biometric = CVM %v, %v, want biometric", s.CVM, err)
	}
	if st, err := env.Client.BiometricStatus(ctx); err != nil || !st.Verified {
		t.Errorf("BiometricStatus() = %+v, %v, want verified", st, err)
	}
	for i := 4; i >= 0; i-- {
		if err := env.Client.VerifyBiometric(ctx, wallettest.Sample(env.BioTemplate, 200)); sw(err) != iso7816.SWTriesLeft(i) {
			t.Fatalf("VerifyBiometric(far) with %d left = %v", i, err)
		}
	}
	if err := env.Client.VerifyBiometric(ctx, env.BioTemplate); !errors.Is(err, iso7816.ErrBlocked) {
		t.Errorf("VerifyBiometric(exact) when blocked = %v, want ErrBlocked", err)
	}
	// The PIN is independent of the biometric.
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Errorf("VerifyPIN with biometric blocked = %v", err)
	}
	if _, s := env.Transmit(t, cmd(0x00, 0x20, 0, 0x91, make([]byte, 65), 0)); s != iso7816.SWWrongLength {
		t.Errorf("VERIFY 91 with 65 bytes = %v, want 6700", s)
	}
	noBio := wallettest.New(t, wallettest.Options{NoBiometric: true})
	if err := noBio.Client.VerifyBiometric(ctx, wallettest.Template()); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("VerifyBiometric without a template = %v, want ErrNotFound (6A88)", err)
	}
}

func TestInternalAuthenticate(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	challenge := bytes.Repeat([]byte{0xA5}, 32)
	binding := []byte("session 42")
	s, err := env.Client.Authenticate(ctx, challenge, binding)
	if err != nil {
		t.Fatalf("Authenticate() = %v", err)
	}
	if s.Counter != 1 || s.CVM != txn.CVMNone {
		t.Errorf("Authenticate() = counter %d CVM %v, want 1 and none", s.Counter, s.CVM)
	}
	payload, _ := wallet.AuthData(challenge, binding)
	env1 := s.Envelope(txn.PurposeAuth, env.CardNumber, payload)
	if !txn.VerifyEnvelope(env.CardKey(), env1, s.Sig) {
		t.Errorf("login signature does not verify as PurposeAuth")
	}
	env2 := s.Envelope(txn.PurposeTransaction, env.CardNumber, payload)
	if txn.VerifyEnvelope(env.CardKey(), env2, s.Sig) {
		t.Errorf("login signature verifies as PurposeTransaction")
	}
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatal(err)
	}
	s, err = env.Client.Authenticate(ctx, challenge, nil)
	if err != nil || s.Counter != 2 || s.CVM != txn.CVMOfflinePIN {
		t.Errorf("Authenticate() after VERIFY = counter %d CVM %v, %v, want 2 and offline PIN", s.Counter, s.CVM, err)
	}
	s, err = env.Client.Authenticate(ctx, challenge, nil)
	if err != nil || s.Counter != 3 || s.CVM != txn.CVMNone {
		t.Errorf("second Authenticate() = counter %d CVM %v, %v, want 3 and none (consumed)", s.Counter, s.CVM, err)
	}
	tlv := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	c32 := append([]byte{0x80, 32}, challenge...)
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P1 01", cmd(0x00, 0x88, 1, 0, c32, 256), iso7816.SWIncorrectP1P2},
		{"P2 01", cmd(0x00, 0x88, 0, 1, c32, 256), iso7816.SWIncorrectP1P2},
		{"no data", cmd(0x00, 0x88, 0, 0, nil, 256), iso7816.SWWrongData},
		{"31-byte challenge", cmd(0x00, 0x88, 0, 0, append([]byte{0x80, 31}, challenge[:31]...), 256), iso7816.SWWrongData},
		{"33-byte challenge", cmd(0x00, 0x88, 0, 0, append([]byte{0x80, 33}, append(challenge, 0)...), 256), iso7816.SWWrongData},
		{"context first", cmd(0x00, 0x88, 0, 0, tlv([]byte{0x81, 1, 1}, c32), 256), iso7816.SWWrongData},
		{"65-byte context", cmd(0x00, 0x88, 0, 0, tlv(c32, []byte{0x81, 65}, make([]byte, 65)), 256), iso7816.SWWrongData},
		{"empty context", cmd(0x00, 0x88, 0, 0, tlv(c32, []byte{0x81, 0}), 256), iso7816.SWWrongData},
		{"extra object", cmd(0x00, 0x88, 0, 0, tlv(c32, []byte{0x81, 1, 1, 0x82, 1, 1}), 256), iso7816.SWWrongData},
		{"trailing byte", cmd(0x00, 0x88, 0, 0, tlv(c32, []byte{0}), 256), iso7816.SWWrongData},
		{"64-byte context", cmd(0x00, 0x88, 0, 0, tlv(c32, []byte{0x81, 64}, make([]byte, 64)), 256), iso7816.SWOK},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("INTERNAL AUTHENTICATE (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := counter(t, env); got != 4 {
		t.Errorf("counter after refused INTERNAL AUTHENTICATEs = %d, want 4", got)
	}
	if got := info(t, env).LogUsed; got != 0 {
		t.Errorf("log records after logins = %d, want 0 (logins are not logged)", got)
	}
}

// TestInternalAuthenticateOnlinePIN: P1 02 declares an online PIN (the
// server checks the PIN block); the card signs CVM online PIN, and refuses
// while an on-card verification is pending, leaving it pending.
func TestInternalAuthenticateOnlinePIN(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	challenge := bytes.Repeat([]byte{0x5A}, 32)
	binding := []byte("session 7")
	s, err := env.Client.AuthenticateOnlinePIN(ctx, challenge, binding)
	if err != nil || s.Counter != 1 || s.CVM != txn.CVMOnlinePIN {
		t.Fatalf("AuthenticateOnlinePIN() = counter %d CVM %v, %v, want 1 and online PIN", s.Counter, s.CVM, err)
	}
	payload, _ := wallet.AuthData(challenge, binding)
	if !txn.VerifyEnvelope(env.CardKey(), s.Envelope(txn.PurposeAuth, env.CardNumber, payload), s.Sig) {
		t.Errorf("online PIN login signature does not verify as PurposeAuth with CVM online PIN")
	}
	for _, e := range []*txn.Envelope{
		{Purpose: txn.PurposeAuth, CardNumber: env.CardNumber, Counter: s.Counter, CVM: txn.CVMNone, Payload: payload},
		{Purpose: txn.PurposeAuth, CardNumber: env.CardNumber, Counter: s.Counter, CVM: txn.CVMOfflinePIN, Payload: payload},
		s.Envelope(txn.PurposeTransaction, env.CardNumber, payload),
	} {
		if txn.VerifyEnvelope(env.CardKey(), e, s.Sig) {
			t.Errorf("online PIN login signature verifies as %v with CVM %v", e.Purpose, e.CVM)
		}
	}

	// A pending on-card verification: refused, nothing moves, it stays
	// pending for the next P1 00 signature.
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatal(err)
	}
	if s, err := env.Client.AuthenticateOnlinePIN(ctx, challenge, nil); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("AuthenticateOnlinePIN() with an offline PIN pending = %+v, %v, want ErrConditions (6985)", s, err)
	}
	if got := counter(t, env); got != 1 {
		t.Errorf("counter after a refused AuthenticateOnlinePIN = %d, want 1", got)
	}
	if s, err := env.Client.Authenticate(ctx, challenge, nil); err != nil || s.Counter != 2 || s.CVM != txn.CVMOfflinePIN {
		t.Errorf("Authenticate() after the refusal = counter %d CVM %v, %v, want 2 and offline PIN (still pending)", s.Counter, s.CVM, err)
	}
	if err := env.Client.VerifyBiometric(ctx, env.BioTemplate); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.AuthenticateOnlinePIN(ctx, challenge, nil); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("AuthenticateOnlinePIN() with a biometric pending = %v, want ErrConditions (6985)", err)
	}
	if err := env.Client.ResetVerification(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := env.Client.AuthenticateOnlinePIN(ctx, challenge, nil); err != nil || s.Counter != 3 || s.CVM != txn.CVMOnlinePIN {
		t.Errorf("AuthenticateOnlinePIN() after ResetVerification = counter %d CVM %v, %v, want 3 and online PIN", s.Counter, s.CVM, err)
	}
	// The online PIN declaration is not a pending verification: the next
	// P1 00 login is CVM none.
	if s, err := env.Client.Authenticate(ctx, challenge, nil); err != nil || s.Counter != 4 || s.CVM != txn.CVMNone {
		t.Errorf("Authenticate() after an online PIN login = counter %d CVM %v, %v, want 4 and none", s.Counter, s.CVM, err)
	}

	c32 := append([]byte{0x80, 32}, challenge...)
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P1 01", cmd(0x00, 0x88, 0x01, 0, c32, 256), iso7816.SWIncorrectP1P2},
		{"P1 03", cmd(0x00, 0x88, 0x03, 0, c32, 256), iso7816.SWIncorrectP1P2},
		{"P1 82", cmd(0x00, 0x88, 0x82, 0, c32, 256), iso7816.SWIncorrectP1P2},
		{"P1 FF", cmd(0x00, 0x88, 0xFF, 0, c32, 256), iso7816.SWIncorrectP1P2},
		{"P1 02 P2 01", cmd(0x00, 0x88, 0x02, 1, c32, 256), iso7816.SWIncorrectP1P2},
		{"P1 02 no data", cmd(0x00, 0x88, 0x02, 0, nil, 256), iso7816.SWWrongData},
		{"P1 02 short challenge", cmd(0x00, 0x88, 0x02, 0, append([]byte{0x80, 31}, challenge[:31]...), 256), iso7816.SWWrongData},
		{"P1 02 trailing byte", cmd(0x00, 0x88, 0x02, 0, append(c32, 0), 256), iso7816.SWWrongData},
		{"P1 02", cmd(0x00, 0x88, 0x02, 0, c32, 256), iso7816.SWOK},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("INTERNAL AUTHENTICATE (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := counter(t, env); got != 5 {
		t.Errorf("counter after the table = %d, want 5 (only the valid command signs)", got)
	}
	if got := info(t, env).LogUsed; got != 0 {
		t.Errorf("log records after online PIN logins = %d, want 0 (logins are not logged)", got)
	}
	if _, err := env.Client.AuthenticateOnlinePIN(ctx, challenge[:31], nil); err == nil {
		t.Errorf("AuthenticateOnlinePIN(31-byte challenge) = nil error, want one")
	}
}

func TestSignTransaction(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	tb := encode(t, env.Transaction(1250, 1))
	if _, err := env.Client.SignTransaction(ctx, tb, false); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("SignTransaction without VERIFY = %v, want ErrSecurityStatus", err)
	}
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatal(err)
	}
	s, err := env.Client.SignTransaction(ctx, tb, false)
	if err != nil {
		t.Fatalf("SignTransaction() = %v", err)
	}
	if s.Counter != 1 || s.CVM != txn.CVMOfflinePIN {
		t.Errorf("SignTransaction() = counter %d CVM %v, want 1 offline PIN", s.Counter, s.CVM)
	}
	e := s.Envelope(txn.PurposeTransaction, env.CardNumber, tb)
	if !txn.VerifyEnvelope(env.CardKey(), e, s.Sig) {
		t.Errorf("transaction signature does not verify")
	}
	for _, p := range []txn.Purpose{txn.PurposeAuth, txn.PurposePurseDebit} {
		if txn.VerifyEnvelope(env.CardKey(), s.Envelope(p, env.CardNumber, tb), s.Sig) {
			t.Errorf("transaction signature verifies as %v", p)
		}
	}
	// One verification, one signature.
	if _, err := env.Client.SignTransaction(ctx, tb, false); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("second SignTransaction without VERIFY = %v, want ErrSecurityStatus", err)
	}
	// Holder verified (VERIFY empty says so) but the CVM was used.
	if st, _ := env.Client.PINStatus(ctx); !st.Verified {
		t.Errorf("PINStatus() after signing = not verified, want verified (the session stays verified)")
	}
	s, err = env.Client.SignTransaction(ctx, tb, true)
	if err != nil || s.Counter != 2 || s.CVM != txn.CVMOnlinePIN {
		t.Errorf("SignTransaction(online PIN) = counter %d CVM %v, %v, want 2 online PIN", s.Counter, s.CVM, err)
	}
	if err := env.Client.VerifyBiometric(ctx, env.BioTemplate); err != nil {
		t.Fatal(err)
	}
	s, err = env.Client.SignTransaction(ctx, tb, false)
	if err != nil || s.CVM != txn.CVMBiometric {
		t.Errorf("SignTransaction after biometric = CVM %v, %v, want biometric", s.CVM, err)
	}
	zero := bytes.Clone(tb)
	i := bytes.Index(zero, append([]byte{0x83, 0x08}, binary.BigEndian.AppendUint64(nil, 1250)...))
	if i < 0 {
		t.Fatal("amount field not found in the encoding")
	}
	copy(zero[i+2:], make([]byte, 8))
	if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"P1 01", cmd(0x80, 0xA0, 1, 0, tb, 256), iso7816.SWIncorrectP1P2},
		{"P1 03", cmd(0x80, 0xA0, 3, 0, tb, 256), iso7816.SWIncorrectP1P2},
		{"P2 01", cmd(0x80, 0xA0, 0, 1, tb, 256), iso7816.SWIncorrectP1P2},
		{"zero amount", cmd(0x80, 0xA0, 0, 0, zero, 256), iso7816.SWWrongData},
		{"truncated", cmd(0x80, 0xA0, 0, 0, tb[:len(tb)-1], 256), iso7816.SWWrongData},
		{"no data", cmd(0x80, 0xA0, 0, 0, nil, 256), iso7816.SWWrongData},
		{"trailing byte", cmd(0x80, 0xA0, 0, 0, append(bytes.Clone(tb), 0), 256), iso7816.SWWrongData},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("SIGN TRANSACTION (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := counter(t, env); got != 3 {
		t.Errorf("counter after refusals = %d, want 3", got)
	}
	// The refusals kept the pending CVM.
	if _, err := env.Client.SignTransaction(ctx, tb, false); err != nil {
		t.Errorf("SignTransaction after refusals = %v, want the pending PIN verification to still count", err)
	}
}

func TestCounterPersists(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	var last uint32
	for i := range 5 {
		s, err := env.Client.Authenticate(ctx, make([]byte, 32), nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Counter <= last {
			t.Fatalf("Authenticate #%d counter = %d, want > %d", i, s.Counter, last)
		}
		last = s.Counter
		if i%2 == 0 {
			env.PowerCycle(t)
		} else {
			env.Reopen(t)
		}
		if got := counter(t, env); got != last {
			t.Fatalf("counter after power cycle = %d, want %d", got, last)
		}
	}
}

func TestCounterExhausted(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	// Test-only shortcut: set the counter near its end in NVM directly.
	if err := env.NVM.Update(func(tx *nvm.Tx) error {
		tx.Put("wallet/atc", []byte{0xFF, 0xFF, 0xFF, 0xFE})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if s, err := env.Client.Authenticate(ctx, make([]byte, 32), nil); err != nil || s.Counter != 0xFFFFFFFF {
		t.Fatalf("Authenticate() at FFFFFFFE = %d, %v, want FFFFFFFF", s.Counter, err)
	}
	if _, err := env.Client.Authenticate(ctx, make([]byte, 32), nil); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("Authenticate() at FFFFFFFF = %v, want ErrConditions (6985)", err)
	}
	if _, err := env.Client.AuthenticateOnlinePIN(ctx, make([]byte, 32), nil); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("AuthenticateOnlinePIN() at FFFFFFFF = %v, want ErrConditions (6985)", err)
	}
	if _, err := env.Client.SignTransaction(ctx, encode(t, env.Transaction(5, 1)), true); !errors.Is(err, iso7816.ErrConditions) {
		t.Errorf("SignTransaction() at FFFFFFFF = %v, want ErrConditions (6985)", err)
	}
	if got := info(t, env).LogUsed; got != 0 {
		t.Errorf("log records after refusals = %d, want 0", got)
	}
}

func TestMemoryFull(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	// Fill the NVM so that one more log record cannot fit.
	for i := 0; ; i++ {
		err := env.NVM.Update(func(tx *nvm.Tx) error {
			tx.Put("test/fill"+string(rune('a'+i%26))+string(rune('a'+i/26)), make([]byte, 64))
			return nil
		})
		if errors.Is(err, nvm.ErrFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	before := counter(t, env)
	big := env.Transaction(99, 9)
	big.Nonce = bytes.Repeat([]byte{7}, 32)
	big.Item = string(bytes.Repeat([]byte{'x'}, 64))
	if _, err := env.Client.SignTransaction(ctx, encode(t, big), true); !errors.Is(err, iso7816.ErrNoSpace) {
		t.Errorf("SignTransaction() with NVM full = %v, want ErrNoSpace (6A84)", err)
	}
	if got := counter(t, env); got != before {
		t.Errorf("counter after a refused SIGN = %d, want %d", got, before)
	}
}

func TestLog(t *testing.T) {
	ctx := t.Context()
	env := wallettest.New(t, wallettest.Options{})
	if recs, err := env.Client.Log(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("Log() of a new card = %d records, %v, want none", len(recs), err)
	}
	if _, err := env.Client.ReadRecord(ctx, 1); !errors.Is(err, iso7816.ErrNotFound) {
		t.Errorf("ReadRecord(1) of an empty log = %v, want ErrNotFound", err)
	}
	const n = 20
	for i := 1; i <= n; i++ {
		if _, err := env.Client.Authenticate(ctx, make([]byte, 32), nil); err != nil { // counter moves, no record
			t.Fatal(err)
		}
		if _, err := env.Client.SignTransaction(ctx, encode(t, env.Transaction(int64(i), byte(i))), true); err != nil {
			t.Fatalf("SignTransaction #%d = %v", i, err)
		}
		if i == 16 {
			env.Reopen(t)
		}
	}
	recs, err := env.Client.Log(ctx)
	if err != nil {
		t.Fatalf("Log() = %v", err)
	}
	if len(recs) != 16 {
		t.Fatalf("Log() = %d records, want 16", len(recs))
	}
	for k, r := range recs {
		i := n - k // transaction number
		if r.Number != k+1 || r.Purpose != txn.PurposeTransaction || r.Counter != uint32(2*i) || r.CVM != txn.CVMOnlinePIN ||
			r.Transaction == nil || r.Transaction.Amount.Minor != int64(i) || !bytes.Equal(r.Payload, encode(t, env.Transaction(int64(i), byte(i)))) {
			t.Errorf("Log()[%d] = %+v, want record %d: transaction %d at counter %d", k, r, k+1, i, 2*i)
		}
	}
	for _, tc := range []struct {
		name string
		c    iso7816.Command
		want iso7816.SW
	}{
		{"record 17", cmd(0x00, 0xB2, 17, 0x0C, nil, 256), iso7816.SWRecordNotFound},
		{"record 0", cmd(0x00, 0xB2, 0, 0x0C, nil, 256), iso7816.SWIncorrectP1P2},
		{"SFI 2", cmd(0x00, 0xB2, 1, 0x14, nil, 256), iso7816.SWIncorrectP1P2},
		{"P2 04 (current EF)", cmd(0x00, 0xB2, 1, 0x04, nil, 256), iso7816.SWIncorrectP1P2},
		{"with data", cmd(0x00, 0xB2, 1, 0x0C, []byte{1}, 256), iso7816.SWWrongLength},
		{"record 16", cmd(0x00, 0xB2, 16, 0x0C, nil, 256), iso7816.SWOK},
	} {
		if _, got := env.Transmit(t, tc.c); got != tc.want {
			t.Errorf("READ RECORD (%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseLogRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"valid", []byte{0x70, 0x0F, 0x80, 1, 1, 0x82, 4, 0, 0, 0, 7, 0x83, 1, 0, 0x84, 1, 0xAA}, true},
		{"wrong template", []byte{0x71, 0x0F, 0x80, 1, 1, 0x82, 4, 0, 0, 0, 7, 0x83, 1, 0, 0x84, 1, 0xAA}, false},
		{"short counter", []byte{0x70, 0x0E, 0x80, 1, 1, 0x82, 3, 0, 0, 7, 0x83, 1, 0, 0x84, 1, 0xAA}, false},
		{"missing payload", []byte{0x70, 0x0C, 0x80, 1, 1, 0x82, 4, 0, 0, 0, 7, 0x83, 1, 0}, false},
		{"empty", nil, false},
	} {
		r, err := wallet.ParseLogRecord(tc.b)
		if (err == nil) != tc.ok {
			t.Errorf("ParseLogRecord(%s) = %+v, %v, want ok %v", tc.name, r, err, tc.ok)
		}
	}
}

func TestPINBlock(t *testing.T) {
	for _, tc := range []struct {
		pin  string
		want []byte
	}{
		{"1234", []byte{0x24, 0x12, 0x34, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
		{"12345", []byte{0x25, 0x12, 0x34, 0x5F, 0xFF, 0xFF, 0xFF, 0xFF}},
		{"123456789012", []byte{0x2C, 0x12, 0x34, 0x56, 0x78, 0x90, 0x12, 0xFF}},
		{"123", nil},
		{"1234567890123", nil},
		{"12a4", nil},
	} {
		got, err := wallet.PINBlock(tc.pin)
		if !bytes.Equal(got, tc.want) || (err == nil) != (tc.want != nil) {
			t.Errorf("PINBlock(%q) = % X, %v, want % X", tc.pin, got, err, tc.want)
		}
	}
}

func TestVerificationIsSessionState(t *testing.T) {
	ctx := t.Context()
	tb := func(env *wallettest.Env) []byte { return encode(t, env.Transaction(7, 7)) }
	for _, tc := range []struct {
		name  string
		after func(env *wallettest.Env)
	}{
		{"reselect", func(env *wallettest.Env) {
			if _, err := wallet.Select(ctx, env.Conn); err != nil {
				t.Fatal(err)
			}
		}},
		{"warm reset", func(env *wallettest.Env) {
			if err := env.Conn.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := wallet.Select(ctx, env.Conn); err != nil {
				t.Fatal(err)
			}
		}},
		{"power cycle", func(env *wallettest.Env) { env.PowerCycle(t) }},
		{"wrong PIN", func(env *wallettest.Env) { _ = env.Client.VerifyPIN(ctx, "0000") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := wallettest.New(t, wallettest.Options{})
			if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
				t.Fatal(err)
			}
			tc.after(env)
			if _, err := env.Client.SignTransaction(ctx, tb(env), false); !errors.Is(err, iso7816.ErrSecurityStatus) {
				t.Errorf("SignTransaction after VERIFY and %s = %v, want ErrSecurityStatus", tc.name, err)
			}
			if st, err := env.Client.PINStatus(ctx); err != nil || st.Verified {
				t.Errorf("PINStatus() after %s = %+v, %v, want not verified", tc.name, st, err)
			}
		})
	}
}
