//go:build pcsc && cgo

package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
	"cardlink/internal/reader/pcsc"
	"cardlink/internal/reader/readertest"
	"cardlink/internal/reader/vpcd"
	"cardlink/internal/server/pki"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// openReader opens the reader holding the attached card through cardlink's
// pcsc driver.
func openReader(t testing.TB) *pcsc.Reader {
	t.Helper()
	h.need(t)
	r, err := pcsc.Open(t.Context(), readerName)
	if err != nil {
		t.Fatalf("pcsc.Open(%q) = %v", readerName, err)
	}
	return r
}

// connect connects to r and closes the connection at the end of the test.
func connect(t testing.TB, r reader.Reader) reader.Conn {
	t.Helper()
	c, err := r.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect(%q) = %v", r.Name(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// walletClient selects the wallet applet on the attached card through
// pcscd.
func walletClient(t testing.TB) *wallet.Client {
	t.Helper()
	c := connect(t, openReader(t))
	cl, err := wallet.Select(t.Context(), c)
	if err != nil {
		t.Fatalf("wallet.Select() = %v", err)
	}
	return cl
}

func TestList(t *testing.T) {
	h.need(t)
	names, err := pcsc.List(t.Context())
	if err != nil {
		t.Fatalf("pcsc.List() = %v", err)
	}
	for _, want := range []string{readerName, spareReader} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("pcsc.List() = %q, want it to include %q", names, want)
		}
	}
}

func TestOpenURI(t *testing.T) {
	h.need(t)
	// "pcsc:" is the first reader with a card: ours, unless pcscd also
	// found a USB reader holding one.
	first := ""
	names, err := pcsc.List(t.Context())
	if err != nil {
		t.Fatalf("pcsc.List() = %v", err)
	}
	for _, n := range names {
		r, err := pcsc.Open(t.Context(), n)
		if err != nil {
			t.Fatalf("pcsc.Open(%q) = %v", n, err)
		}
		if present, err := r.Present(t.Context()); err == nil && present && first == "" {
			first = n
		}
	}
	if first == "" {
		t.Fatalf("no reader holds a card; want %q to", readerName)
	}
	tests := []struct {
		uri     string
		want    string // reader name; "" wants an error
		wantErr error
	}{
		{uri: "pcsc:", want: first},
		{uri: "pcsc:" + readerName, want: readerName},
		{uri: "pcsc:pcd 00 01", want: spareReader},
		{uri: "pcsc:Virtual PCD", wantErr: pcsc.ErrNoReader}, // two match
		{uri: "pcsc:no such reader", wantErr: pcsc.ErrNoReader},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			r, err := reader.Open(t.Context(), tt.uri)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("reader.Open(%q) = %v, want %v", tt.uri, err, tt.wantErr)
				}
				return
			}
			if err != nil || r.Name() != tt.want {
				t.Fatalf("reader.Open(%q) = %v, %v, want reader %q", tt.uri, r, err, tt.want)
			}
		})
	}
}

// TestConformance runs the reader conformance suite on the pcsc driver,
// through pcscd and vpcd to the attached card.
func TestConformance(t *testing.T) {
	cl := walletClient(t)
	cert, err := cl.Certificate(t.Context())
	if err != nil {
		t.Fatalf("Certificate() = %v", err)
	}
	readertest.RunOptions(t, func(t *testing.T) reader.Reader {
		return openReader(t)
	}, readertest.Options{
		AID: wallet.AID,
		// GET DATA DF20, the card certificate: longer than one short reply.
		Long:    iso7816.Command{INS: 0xCA, P1: 0xDF, P2: 0x20, Ne: 256},
		LongLen: len(cert.Raw),
	})
}

// TestWalletAuthenticate is the device's reader code running a card
// authentication through pcscd: the signature must verify against the
// card's certificate, which must chain to the issuer.
func TestWalletAuthenticate(t *testing.T) {
	cl := walletClient(t)
	ctx := t.Context()
	cert, err := cl.Certificate(ctx)
	if err != nil {
		t.Fatalf("Certificate() = %v", err)
	}
	iss, err := pki.Load(h.issuerDir)
	if err != nil {
		t.Fatalf("pki.Load() = %v", err)
	}
	number, err := pki.VerifyCard(cert, iss.CA(), time.Now())
	if err != nil {
		t.Fatalf("pki.VerifyCard() = %v", err)
	}
	challenge := make([]byte, wallet.ChallengeLen)
	rand.Read(challenge)
	binding := []byte("interop session")
	sig, err := cl.Authenticate(ctx, challenge, binding)
	if err != nil {
		t.Fatalf("Authenticate() = %v", err)
	}
	payload, err := wallet.AuthData(challenge, binding)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("card certificate key is %T, want *ecdsa.PublicKey", cert.PublicKey)
	}
	if !txn.VerifyEnvelope(pub, sig.Envelope(txn.PurposeAuth, number, payload), sig.Sig) {
		t.Errorf("Authenticate() signature (counter %d) does not verify against the card certificate", sig.Counter)
	}
	// The same signature must not pass for another challenge.
	challenge[0] ^= 1
	other, _ := wallet.AuthData(challenge, binding)
	if txn.VerifyEnvelope(pub, sig.Envelope(txn.PurposeAuth, number, other), sig.Sig) {
		t.Errorf("signature verifies for a different challenge")
	}
	// PIN verification through pcscd, too.
	if err := cl.VerifyPIN(ctx, walletPIN); err != nil {
		t.Errorf("VerifyPIN(right PIN) = %v", err)
	}
}

// TestWatcher puts an in-process card into the spare slot and takes it out
// again: Present and Wait must follow, through SCardGetStatusChange.
func TestWatcher(t *testing.T) {
	h.need(t)
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	r, err := pcsc.Open(ctx, spareReader)
	if err != nil {
		t.Fatalf("pcsc.Open(%q) = %v", spareReader, err)
	}
	if present, err := r.Present(ctx); err != nil || present {
		t.Fatalf("Present() before insertion = %v, %v, want false", present, err)
	}
	if _, err := r.Connect(ctx); !errors.Is(err, reader.ErrNoCard) {
		t.Errorf("Connect() on an empty reader = %v, want ErrNoCard", err)
	}
	c, err := newMemCard()
	if err != nil {
		t.Fatal(err)
	}
	attachCtx, detach := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- vpcd.NewClient(addr(h.port+1), c, nil).Run(attachCtx) }()
	defer func() { detach(); <-done }()

	if err := r.Wait(ctx, false); err != nil {
		t.Fatalf("Wait(false) while inserting = %v", err)
	}
	if present, err := r.Present(ctx); err != nil || !present {
		t.Errorf("Present() after insertion = %v, %v, want true", present, err)
	}
	conn := connect(t, r)
	if got := conn.ATR(); string(got) != string(c.ATR()) {
		t.Errorf("ATR() = %X, want %X", got, c.ATR())
	}

	detach()
	if err := <-done; err != nil {
		t.Errorf("vpcd client Run() = %v", err)
	}
	done <- nil
	if err := r.Wait(ctx, true); err != nil {
		t.Fatalf("Wait(true) while removing = %v", err)
	}
	if present, err := r.Present(ctx); err != nil || present {
		t.Errorf("Present() after removal = %v, %v, want false", present, err)
	}
	// The connection opened before the removal is dead.
	apdu := []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xF0, 0x11, 0x22, 0x33, 0x44}
	if b, err := conn.Transmit(ctx, apdu); !errors.Is(err, reader.ErrCardRemoved) {
		t.Errorf("Transmit() after removal = %X, %v, want ErrCardRemoved", b, err)
	}
	if err := conn.Close(); err != nil {
		t.Errorf("Close() after removal = %v, want nil", err)
	}
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func TestOpenSCReaderAndATR(t *testing.T) {
	h.need(t)
	out := mustTool(t, "opensc-tool", "--list-readers")
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(l, readerName) {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 2 || f[1] != "Yes" {
		t.Errorf("opensc-tool --list-readers line for %q = %q, want a card (Yes)\n%s", readerName, line, out)
	}
	n := readerIndex(t, readerName)
	atr := strings.TrimSpace(mustTool(t, "opensc-tool", "-r", n, "-a"))
	got := strings.ToUpper(strings.NewReplacer(":", "", " ", "").Replace(lastLine(atr)))
	if want := hex.EncodeToString(h.atr); !strings.EqualFold(got, want) {
		t.Errorf("opensc-tool -a = %q, want ATR %s", atr, strings.ToUpper(want))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestOpenSCSendAPDU sends SELECTs with opensc-tool -s.
func TestOpenSCSendAPDU(t *testing.T) {
	h.need(t)
	n := readerIndex(t, readerName)
	tests := []struct {
		name   string
		apdu   string
		wantSW string
	}{
		{name: "wallet", apdu: "00A40400" + "09" + strings.ToUpper(hex.EncodeToString(wallet.AID)) + "00", wantSW: "SW1=0x90, SW2=0x00"},
		{name: "unknown AID", apdu: "00A4040005F011223344", wantSW: "SW1=0x6A, SW2=0x82"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := mustTool(t, "opensc-tool", "-r", n, "-s", colonHex(tt.apdu))
			if !strings.Contains(out, tt.wantSW) {
				t.Errorf("opensc-tool -s %s:\n%s\nwant %s", tt.apdu, out, tt.wantSW)
			}
		})
	}
}

// colonHex writes hex as opensc-tool likes it: 00:A4:04...
func colonHex(s string) string {
	var parts []string
	for i := 0; i+1 < len(s); i += 2 {
		parts = append(parts, s[i:i+2])
	}
	return strings.Join(parts, ":")
}

// roundTripAPDU is GET DATA 5A (card number) of the wallet: short command,
// short reply, no NVM write.
var roundTripAPDU = []byte{0x00, 0xCA, 0x00, 0x5A, 0x00}

// BenchmarkRoundTripPCSC sends a short APDU through the pcsc driver,
// pcscd, vpcd and the attach process to the card and back.
func BenchmarkRoundTripPCSC(b *testing.B) {
	c := connect(b, openReader(b))
	benchRoundTrip(b, c)
}

// BenchmarkRoundTripInProcess sends the same APDU to the same kind of card
// through the in-process virtual reader, for comparison.
func BenchmarkRoundTripInProcess(b *testing.B) {
	h.need(b)
	env := wallettest.New(b, wallettest.Options{})
	benchRoundTrip(b, env.Conn)
}

func benchRoundTrip(b *testing.B, c reader.Conn) {
	ctx := context.Background()
	if _, err := wallet.Select(ctx, c); err != nil {
		b.Fatalf("wallet.Select() = %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Transmit(ctx, roundTripAPDU)
		if err != nil || len(resp) != 10 {
			b.Fatalf("Transmit(GET DATA 5A) = %X, %v", resp, err)
		}
	}
}

// TestPcscdRestart stops pcscd under the attached card and starts it
// again: "cardlink card attach" must dial again by itself and the card
// must come back, with its memory (the wallet's certificate) intact.
func TestPcscdRestart(t *testing.T) {
	h.need(t)
	before, err := walletClient(t).Certificate(t.Context())
	if err != nil {
		t.Fatalf("Certificate() before the restart = %v", err)
	}
	if err := stop(h.pcscd, h.pcscdDone); err != nil {
		t.Logf("pcscd exit: %v", err)
	}
	h.pcscd = nil
	h.pcscd, h.pcscdDone, err = h.start("pcscd-2.log", "pcscd", h.pcscdArgs...)
	if err != nil {
		t.Fatalf("starting pcscd again: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	if err := waitSocket(ctx, h.pcscdDone); err != nil {
		t.Fatalf("waiting for pcscd: %v", err)
	}
	if err := waitCard(ctx, readerName); err != nil {
		t.Fatalf("waiting for the card to come back: %v", err)
	}
	after, err := walletClient(t).Certificate(t.Context())
	if err != nil {
		t.Fatalf("Certificate() after the restart = %v", err)
	}
	if !after.Equal(before) {
		t.Errorf("certificate changed across the pcscd restart")
	}
	log, err := os.ReadFile(filepath.Join(h.dir, "attach.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "card attached to vpcd"); n < 2 {
		t.Errorf("attach log has %d \"card attached to vpcd\" lines, want 2 or more:\n%s", n, log)
	}
}
