package piv_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/des"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"cardlink/internal/iso7816"
	"cardlink/internal/piv"
	"cardlink/internal/reader"
)

func TestSelectAPT(t *testing.T) {
	e := newEnv(t)
	want := []byte{
		0x61, 0x32,
		0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
		0x79, 0x07, 0x4F, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08,
		0x50, 0x0C, 'c', 'a', 'r', 'd', 'l', 'i', 'n', 'k', ' ', 'P', 'I', 'V',
		0xAC, 0x11, 0x80, 0x01, 0x03, 0x80, 0x01, 0x08, 0x80, 0x01, 0x0A, 0x80, 0x01, 0x0C, 0x80, 0x01, 0x11, 0x06, 0x00,
	}
	tests := []struct {
		name string
		aid  []byte
	}{
		{"full AID", piv.AID},
		{"RID only (partial, as piv-go and yubico-piv-tool)", piv.AID[:5]},
		{"AID without version", piv.AID[:9]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sw := e.tx(t, iso7816.Command{INS: 0xA4, P1: 0x04, Data: tt.aid, Ne: 256})
			if sw != iso7816.SWOK || !bytes.Equal(got, want) {
				t.Errorf("SELECT % X = % X %v, want % X 9000", tt.aid, got, sw, want)
			}
		})
	}
}

func TestClassAndInstruction(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"proprietary class", iso7816.Command{CLA: 0x80, INS: 0xFD, Ne: 256}, iso7816.SWCLANotSupported},
		{"unknown instruction", iso7816.Command{INS: 0x88}, iso7816.SWINSNotSupported},
		{"attest is not offered", iso7816.Command{INS: 0xF9, P1: 0x9A}, iso7816.SWINSNotSupported},
		{"version P1", iso7816.Command{INS: 0xFD, P1: 1, Ne: 256}, iso7816.SWIncorrectP1P2},
		{"serial P2", iso7816.Command{INS: 0xF8, P2: 1, Ne: 256}, iso7816.SWIncorrectP1P2},
		{"metadata of 9F", metadataCmd(0x9F), iso7816.SWIncorrectP1P2},
		{"metadata of empty slot", metadataCmd(0x9A), iso7816.SWNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, sw := e.tx(t, tt.cmd); sw != tt.want {
				t.Errorf("%02X %02X %02X %02X = %v, want %v", tt.cmd.CLA, tt.cmd.INS, tt.cmd.P1, tt.cmd.P2, sw, tt.want)
			}
		})
	}
}

func TestVersionAndSerial(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v, err := e.client.Version(ctx)
	if err != nil || v != [3]byte{5, 4, 3} {
		t.Errorf("Version() = %v, %v, want [5 4 3]", v, err)
	}
	s1, err := e.client.Serial(ctx)
	if err != nil || s1 == 0 || s1 > 1<<31-1 {
		t.Fatalf("Serial() = %d, %v, want 1..2^31-1", s1, err)
	}
	e.reconnect(t)
	if s2, err := e.client.Serial(ctx); err != nil || s2 != s1 {
		t.Errorf("Serial() after power cycle = %d, %v, want %d", s2, err, s1)
	}
}

func TestVerify(t *testing.T) {
	type step struct {
		cmd  iso7816.Command
		want iso7816.SW
	}
	wrong := verifyCmd("000000")
	right := verifyCmd(piv.DefaultPIN)
	status := verifyCmd("")
	tests := []struct {
		name  string
		steps []step
	}{
		{"status of a new card", []step{{status, 0x63C3}}},
		{"right PIN", []step{{right, 0x9000}, {status, 0x9000}}},
		{"wrong PIN counts", []step{{wrong, 0x63C2}, {status, 0x63C2}, {wrong, 0x63C1}}},
		{"right PIN restores the counter", []step{{wrong, 0x63C2}, {right, 0x9000}, {wrong, 0x63C2}}},
		{"wrong PIN ends verification", []step{{right, 0x9000}, {wrong, 0x63C2}, {status, 0x63C2}}},
		{"reset status", []step{{right, 0x9000}, {iso7816.Command{INS: 0x20, P1: 0xFF, P2: 0x80}, 0x9000}, {status, 0x63C3}}},
		{"reset status with data", []step{{iso7816.Command{INS: 0x20, P1: 0xFF, P2: 0x80, Data: pinBlock("123456")}, 0x6A80}}},
		{"blocked", []step{{wrong, 0x63C2}, {wrong, 0x63C1}, {wrong, 0x63C0}, {right, 0x6983}, {status, 0x6983}}},
		{"short block, no try used", []step{{iso7816.Command{INS: 0x20, P2: 0x80, Data: []byte("123456")}, 0x6A80}, {status, 0x63C3}}},
		{"PUK reference", []step{{iso7816.Command{INS: 0x20, P2: 0x81, Data: pinBlock("12345678")}, 0x6A88}}},
		{"global PIN reference", []step{{iso7816.Command{INS: 0x20, P2: 0x00, Data: pinBlock("123456")}, 0x6A88}}},
		{"bad P1", []step{{iso7816.Command{INS: 0x20, P1: 0x01, P2: 0x80, Data: pinBlock("123456")}, 0x6A86}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for i, s := range tt.steps {
				if _, sw := e.tx(t, s.cmd); sw != s.want {
					t.Fatalf("step %d: % X = %v, want %v", i, s.cmd.Data, sw, s.want)
				}
			}
		})
	}
}

func TestSelectEndsVerification(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.verifyPIN(t)
	e.mgmtAuth(t)
	if ok, err := e.client.PINVerified(ctx); !ok || err != nil {
		t.Fatalf("PINVerified() = %v, %v, want true", ok, err)
	}
	if _, sw := e.tx(t, iso7816.Command{INS: 0xA4, P1: 0x04, Data: piv.AID[:5], Ne: 256}); sw != iso7816.SWOK {
		t.Fatalf("SELECT = %v", sw)
	}
	if ok, err := e.client.PINVerified(ctx); ok || err != nil {
		t.Errorf("PINVerified() after reselect = %v, %v, want false", ok, err)
	}
	if _, sw := e.tx(t, generateCmd(0x9A)); sw != iso7816.SWSecurityStatus {
		t.Errorf("GENERATE after reselect = %v, want 6982", sw)
	}
	e.verifyPIN(t)
	e.reconnect(t)
	if ok, err := e.client.PINVerified(ctx); ok || err != nil {
		t.Errorf("PINVerified() after power cycle = %v, %v, want false", ok, err)
	}
}

func TestChangeReference(t *testing.T) {
	two := func(a, b string) []byte { return append(pinBlock(a), pinBlock(b)...) }
	tests := []struct {
		name     string
		p2       byte
		data     []byte
		want     iso7816.SW
		newPIN   string // verifies afterwards, if set
		pinTries int
	}{
		{"change PIN", 0x80, two("123456", "87654321"), 0x9000, "87654321", 3},
		{"wrong old PIN", 0x80, two("000000", "87654321"), 0x63C2, "123456", 3},
		{"new PIN too short", 0x80, two("123456", "12345"), 0x6A80, "123456", 3},
		{"new PIN not digits", 0x80, two("123456", "12345a"), 0x6A80, "123456", 3},
		{"new PIN padding broken", 0x80, append(pinBlock("123456"), '1', '2', '3', '4', '5', '6', 0xFF, '7'), 0x6A80, "123456", 3},
		{"change PUK", 0x81, two("12345678", "abcdefgh"), 0x9000, "", 3},
		{"wrong old PUK", 0x81, two("00000000", "abcdefgh"), 0x63C2, "", 3},
		{"short data", 0x80, pinBlock("123456"), 0x6A80, "", 3},
		{"unknown reference", 0x82, two("123456", "654321"), 0x6A88, "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if _, sw := e.tx(t, iso7816.Command{INS: 0x24, P2: tt.p2, Data: tt.data}); sw != tt.want {
				t.Fatalf("CHANGE REFERENCE DATA %02X = %v, want %v", tt.p2, sw, tt.want)
			}
			if tt.newPIN != "" {
				if _, sw := e.tx(t, verifyCmd(tt.newPIN)); sw != iso7816.SWOK {
					t.Errorf("VERIFY %s afterwards = %v, want 9000", tt.newPIN, sw)
				}
			}
		})
	}
}

func TestChangePINSurvivesPowerCycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.client.ChangePIN(ctx, piv.DefaultPIN, "24681357"); err != nil {
		t.Fatalf("ChangePIN = %v", err)
	}
	if err := e.client.ChangePUK(ctx, piv.DefaultPUK, "87654321"); err != nil {
		t.Fatalf("ChangePUK = %v", err)
	}
	e.reconnect(t)
	var pe *iso7816.PINError
	if err := e.client.VerifyPIN(ctx, piv.DefaultPIN); !errors.As(err, &pe) || pe.Retries != 2 {
		t.Errorf("VerifyPIN(default) after change = %v, want PINError 2 tries", err)
	}
	if err := e.client.VerifyPIN(ctx, "24681357"); err != nil {
		t.Errorf("VerifyPIN(new) = %v", err)
	}
	for _, ref := range []byte{0x80, 0x81, 0x9B} {
		b, sw := e.tx(t, metadataCmd(ref))
		list, _ := iso7816.ParseTLV(b)
		d, _ := iso7816.FindTLV(list, 0x05)
		wantDefault := byte(0)
		if ref == 0x9B {
			wantDefault = 1
		}
		if sw != iso7816.SWOK || len(d.Value) != 1 || d.Value[0] != wantDefault {
			t.Errorf("GET METADATA %02X default flag = % X %v, want %02X", ref, d.Value, sw, wantDefault)
		}
	}
}

func TestResetRetryCounter(t *testing.T) {
	ctx := context.Background()
	block := func(e *env) {
		for range 3 {
			e.tx(t, verifyCmd("000000"))
		}
	}
	t.Run("unblocks", func(t *testing.T) {
		e := newEnv(t)
		block(e)
		if err := e.client.UnblockPIN(ctx, piv.DefaultPUK, "13572468"); err != nil {
			t.Fatalf("UnblockPIN = %v", err)
		}
		if got := e.pinTries(t); got != 3 {
			t.Errorf("PIN tries after unblock = %d, want 3", got)
		}
		if err := e.client.VerifyPIN(ctx, "13572468"); err != nil {
			t.Errorf("VerifyPIN(new) = %v", err)
		}
	})
	t.Run("wrong PUK counts", func(t *testing.T) {
		e := newEnv(t)
		block(e)
		var pe *iso7816.PINError
		if err := e.client.UnblockPIN(ctx, "87654321", "13572468"); !errors.As(err, &pe) || pe.Retries != 2 {
			t.Errorf("UnblockPIN(wrong PUK) = %v, want PINError 2 tries", err)
		}
		if _, sw := e.tx(t, verifyCmd(piv.DefaultPIN)); sw != iso7816.SWAuthBlocked {
			t.Errorf("VERIFY after failed unblock = %v, want 6983", sw)
		}
	})
	t.Run("blocked PUK", func(t *testing.T) {
		e := newEnv(t)
		for range 3 {
			e.client.UnblockPIN(ctx, "87654321", "13572468")
		}
		if err := e.client.UnblockPIN(ctx, piv.DefaultPUK, "13572468"); !errors.Is(err, iso7816.ErrBlocked) {
			t.Errorf("UnblockPIN with blocked PUK = %v, want ErrBlocked", err)
		}
	})
	t.Run("bad new PIN", func(t *testing.T) {
		e := newEnv(t)
		data := append(pinBlock(piv.DefaultPUK), pinBlock("12a456")...)
		if _, sw := e.tx(t, iso7816.Command{INS: 0x2C, P2: 0x80, Data: data}); sw != iso7816.SWWrongData {
			t.Errorf("RESET RETRY COUNTER with bad PIN = %v, want 6A80", sw)
		}
		if _, sw := e.tx(t, iso7816.Command{INS: 0x2C, P2: 0x81, Data: data}); sw != iso7816.SWRefDataNotFound {
			t.Errorf("RESET RETRY COUNTER P2 81 = %v, want 6A88", sw)
		}
	})
}

// TestTryCounterBeforeCompare shows the PIN try counter is written before
// the comparison: a right PIN writes too (the decrement, then the
// restore), and a cut after the decrement committed leaves the try spent.
func TestTryCounterBeforeCompare(t *testing.T) {
	e := newEnv(t)
	before := e.medium.Writes()
	e.verifyPIN(t)
	perUpdate := e.medium.Writes() - before
	if perUpdate == 0 {
		t.Fatalf("right PIN wrote nothing to NVM, want a decrement and a restore")
	}
	before = e.medium.Writes()
	if _, sw := e.tx(t, verifyCmd("000000")); sw != 0x63C2 {
		t.Fatalf("wrong VERIFY = %v, want 63C2", sw)
	}
	wrongWrites := e.medium.Writes() - before
	if 2*wrongWrites != perUpdate {
		t.Errorf("writes of a wrong PIN = %d, want half the right PIN's %d (one update, the decrement)", wrongWrites, perUpdate)
	}
	// A right PIN whose second update (the restore) is cut: the try stays spent.
	f := newEnv(t)
	f.medium.CutAt(wrongWrites, 0)
	if _, err := f.conn.Transmit(context.Background(), mustBytes(t, verifyCmd(piv.DefaultPIN))); !errors.Is(err, reader.ErrCardRemoved) {
		t.Fatalf("VERIFY with cut = %v, want ErrCardRemoved", err)
	}
	f.reconnect(t)
	if got := f.pinTries(t); got != 2 {
		t.Errorf("tries after a right PIN cut before the restore = %d, want 2", got)
	}
}

// TestVerifyTearing cuts power at every write of a wrong-PIN VERIFY (and
// at its sync): after recovery the counter is either untouched (no
// comparison happened, no answer went out) or decremented — never given
// back — and the PIN is not verified.
func TestVerifyTearing(t *testing.T) {
	for _, tries := range []int{3, 1} {
		base := newEnv(t)
		for range 3 - tries {
			base.tx(t, verifyCmd("000000"))
		}
		probe := base.fork(t)
		n0 := probe.medium.Writes()
		probe.tx(t, verifyCmd("000000"))
		n := probe.medium.Writes() - n0
		for at := 0; at <= n; at++ {
			for _, keep := range []int{0, 32} {
				if at == n && keep > 0 {
					continue
				}
				t.Run(fmt.Sprintf("tries%d/cut%02d/keep%d", tries, at, keep), func(t *testing.T) {
					f := base.fork(t)
					if at == n {
						f.medium.CutAtSync()
					} else {
						f.medium.CutAt(at, keep)
					}
					_, err := f.conn.Transmit(context.Background(), mustBytes(t, verifyCmd("000000")))
					if !errors.Is(err, reader.ErrCardRemoved) {
						t.Fatalf("VERIFY with power cut at write %d = %v, want ErrCardRemoved", at, err)
					}
					f.reconnect(t)
					got := f.pinTries(t)
					if got != tries && got != tries-1 {
						t.Errorf("tries after cut at write %d = %d, want %d or %d", at, got, tries, tries-1)
					}
					if _, sw := f.tx(t, verifyCmd("")); sw == iso7816.SWOK {
						t.Errorf("PIN verified after a torn wrong VERIFY")
					}
					// The next wrong try goes on from there: nothing given back.
					want := iso7816.SWTriesLeft(got - 1)
					if got == 0 {
						want = iso7816.SWAuthBlocked
					}
					if _, sw := f.tx(t, verifyCmd("000000")); sw != want {
						t.Errorf("next wrong VERIFY = %v, want %v", sw, want)
					}
				})
			}
		}
	}
}

func mustBytes(t testing.TB, c iso7816.Command) []byte {
	t.Helper()
	b, err := c.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cardAuth runs the management key's mutual authentication by hand and
// returns the status of the second step.
func cardAuth(t *testing.T, e *env, alg byte, key []byte, tamper bool) iso7816.SW {
	t.Helper()
	var block interface {
		Encrypt(dst, src []byte)
		Decrypt(dst, src []byte)
		BlockSize() int
	}
	var err error
	if alg == 0x03 {
		block, err = des.NewTripleDESCipher(key)
	} else {
		block, err = aes.NewCipher(key)
	}
	if err != nil {
		t.Fatal(err)
	}
	bs := block.BlockSize()
	resp, sw := e.tx(t, iso7816.Command{INS: 0x87, P1: alg, P2: 0x9B, Data: tlv(0x7C, tlv(0x80)), Ne: 256})
	if sw != iso7816.SWOK || len(resp) != 4+bs {
		t.Fatalf("witness request = % X %v", resp, sw)
	}
	w := make([]byte, bs)
	block.Decrypt(w, resp[4:])
	if tamper {
		w[0] ^= 1
	}
	chal := bytes.Repeat([]byte{0x5A}, bs)
	resp, sw = e.tx(t, iso7816.Command{INS: 0x87, P1: alg, P2: 0x9B, Data: tlv(0x7C, tlv(0x80, w), tlv(0x81, chal)), Ne: 256})
	if sw == iso7816.SWOK {
		want := make([]byte, bs)
		block.Encrypt(want, chal)
		if !bytes.Equal(resp, tlv(0x7C, tlv(0x82, want))) {
			t.Errorf("card response = % X, want 7C { 82 % X }", resp, want)
		}
	}
	return sw
}

func TestManagementKeyAuthentication(t *testing.T) {
	genOK := func(e *env) iso7816.SW { _, sw := e.tx(t, generateCmd(0x9A)); return sw }
	t.Run("default key", func(t *testing.T) {
		e := newEnv(t)
		if sw := genOK(e); sw != iso7816.SWSecurityStatus {
			t.Errorf("GENERATE before authentication = %v, want 6982", sw)
		}
		if sw := cardAuth(t, e, 0x03, piv.DefaultManagementKey, false); sw != iso7816.SWOK {
			t.Fatalf("mutual authentication = %v, want 9000", sw)
		}
		if sw := genOK(e); sw != iso7816.SWOK {
			t.Errorf("GENERATE after authentication = %v, want 9000", sw)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		e := newEnv(t)
		wrong := bytes.Repeat([]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}, 3)
		err := e.client.AuthenticateManagementKey(context.Background(), wrong)
		if !errors.Is(err, iso7816.ErrSecurityStatus) {
			t.Errorf("AuthenticateManagementKey(wrong) = %v, want ErrSecurityStatus", err)
		}
		if sw := genOK(e); sw != iso7816.SWSecurityStatus {
			t.Errorf("GENERATE after a wrong key = %v, want 6982", sw)
		}
		if _, sw := e.tx(t, putDataCmd([]byte{0x5F, 0xC1, 0x02}, []byte{1})); sw != iso7816.SWSecurityStatus {
			t.Errorf("PUT DATA after a wrong key = %v, want 6982", sw)
		}
	})
	t.Run("tampered witness drops an earlier authentication", func(t *testing.T) {
		e := newEnv(t)
		e.mgmtAuth(t)
		if sw := cardAuth(t, e, 0x03, piv.DefaultManagementKey, true); sw != iso7816.SWSecurityStatus {
			t.Errorf("tampered witness = %v, want 6982", sw)
		}
		if sw := genOK(e); sw != iso7816.SWSecurityStatus {
			t.Errorf("GENERATE after a failed authentication = %v, want 6982", sw)
		}
	})
	t.Run("witness is single use", func(t *testing.T) {
		e := newEnv(t)
		block, _ := des.NewTripleDESCipher(piv.DefaultManagementKey)
		resp, _ := e.tx(t, iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x80)), Ne: 256})
		w := make([]byte, 8)
		block.Decrypt(w, resp[4:])
		second := iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x80, w), tlv(0x81, make([]byte, 8)), tlv(0x82)), Ne: 256}
		if _, sw := e.tx(t, second); sw != iso7816.SWOK {
			t.Fatalf("answer with 82 00 = %v, want 9000", sw)
		}
		if _, sw := e.tx(t, second); sw != iso7816.SWConditionsNotSatisfied {
			t.Errorf("replayed answer = %v, want 6985", sw)
		}
	})
	t.Run("external authentication", func(t *testing.T) {
		e := newEnv(t)
		block, _ := des.NewTripleDESCipher(piv.DefaultManagementKey)
		for _, right := range []bool{false, true} {
			resp, sw := e.tx(t, iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x81)), Ne: 256})
			if sw != iso7816.SWOK || len(resp) != 12 {
				t.Fatalf("challenge request = % X %v", resp, sw)
			}
			enc := make([]byte, 8)
			block.Encrypt(enc, resp[4:])
			want := iso7816.SW(0x9000)
			if !right {
				enc[7] ^= 0x80
				want = iso7816.SWSecurityStatus
			}
			if _, sw := e.tx(t, iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x82, enc))}); sw != want {
				t.Errorf("response (right=%v) = %v, want %v", right, sw, want)
			}
		}
		if sw := genOK(e); sw != iso7816.SWOK {
			t.Errorf("GENERATE after external authentication = %v, want 9000", sw)
		}
	})
	t.Run("random bytes for OpenSC", func(t *testing.T) {
		e := newEnv(t)
		e.mgmtAuth(t)
		b, sw := e.tx(t, iso7816.Command{INS: 0x87, P1: 0x00, P2: 0x9B, Data: tlv(0x7C, tlv(0x81)), Ne: 256})
		if sw != iso7816.SWOK || len(b) != 4+24 || !bytes.Equal(b[:4], []byte{0x7C, 0x1A, 0x81, 0x18}) {
			t.Errorf("GENERAL AUTHENTICATE 00 9B 7C{81 00} = % X %v, want 7C 1A 81 18 <24 bytes>", b, sw)
		}
		if sw := genOK(e); sw != iso7816.SWOK {
			t.Errorf("GENERATE after the random request = %v, want 9000 (authentication kept)", sw)
		}
		if _, sw := e.tx(t, iso7816.Command{INS: 0x87, P1: 0x00, P2: 0x9B, Data: tlv(0x7C, tlv(0x80))}); sw != iso7816.SWIncorrectP1P2 {
			t.Errorf("witness request with P1 00 = %v, want 6A86", sw)
		}
	})
	refusals := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"AES algorithm for a 3DES key", iso7816.Command{INS: 0x87, P1: 0x0A, P2: 0x9B, Data: tlv(0x7C, tlv(0x80))}, iso7816.SWIncorrectP1P2},
		{"answer without witness", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x80, make([]byte, 8)), tlv(0x81, make([]byte, 8)))}, iso7816.SWConditionsNotSatisfied},
		{"response without challenge", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x82, make([]byte, 8)))}, iso7816.SWConditionsNotSatisfied},
		{"witness of wrong size", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x80, make([]byte, 7)), tlv(0x81, make([]byte, 8)))}, iso7816.SWWrongData},
		{"no template", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x80)}, iso7816.SWWrongData},
		{"unknown inner tag", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x83))}, iso7816.SWWrongData},
		{"repeated tag", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9B, Data: tlv(0x7C, tlv(0x80), tlv(0x80))}, iso7816.SWWrongData},
		{"unknown key reference", iso7816.Command{INS: 0x87, P1: 3, P2: 0x9F, Data: tlv(0x7C, tlv(0x80))}, iso7816.SWIncorrectP1P2},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if _, sw := e.tx(t, tt.cmd); sw != tt.want {
				t.Errorf("% X = %v, want %v", tt.cmd.Data, sw, tt.want)
			}
		})
	}
}

func TestSetManagementKey(t *testing.T) {
	ctx := context.Background()
	aesKey := bytes.Repeat([]byte{0xA5}, 24)
	e := newEnv(t)
	set := iso7816.Command{INS: 0xFF, P1: 0xFF, P2: 0xFF, Data: append([]byte{0x0A, 0x9B, 24}, aesKey...)}
	if _, sw := e.tx(t, set); sw != iso7816.SWSecurityStatus {
		t.Errorf("SET MANAGEMENT KEY unauthenticated = %v, want 6982", sw)
	}
	e.mgmtAuth(t)
	bad := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"touch", iso7816.Command{INS: 0xFF, P1: 0xFF, P2: 0xFE, Data: set.Data}, iso7816.SWIncorrectP1P2},
		{"length byte", iso7816.Command{INS: 0xFF, P1: 0xFF, P2: 0xFF, Data: append([]byte{0x0A, 0x9B, 23}, aesKey...)}, iso7816.SWWrongData},
		{"AES-128 with 24 bytes", iso7816.Command{INS: 0xFF, P1: 0xFF, P2: 0xFF, Data: append([]byte{0x08, 0x9B, 24}, aesKey...)}, iso7816.SWWrongData},
		{"not 9B", iso7816.Command{INS: 0xFF, P1: 0xFF, P2: 0xFF, Data: append([]byte{0x0A, 0x9A, 24}, aesKey...)}, iso7816.SWWrongData},
		{"RSA", iso7816.Command{INS: 0xFF, P1: 0xFF, P2: 0xFF, Data: append([]byte{0x07, 0x9B, 24}, aesKey...)}, iso7816.SWWrongData},
	}
	for _, tt := range bad {
		if _, sw := e.tx(t, tt.cmd); sw != tt.want {
			t.Errorf("SET MANAGEMENT KEY %s = %v, want %v", tt.name, sw, tt.want)
		}
	}
	if err := e.client.SetManagementKey(ctx, piv.AlgAES192, aesKey); err != nil {
		t.Fatalf("SetManagementKey(AES192) = %v", err)
	}
	e.reconnect(t)
	if alg, err := e.client.ManagementKeyAlgorithm(ctx); alg != piv.AlgAES192 || err != nil {
		t.Errorf("ManagementKeyAlgorithm() = %v, %v, want AES192", alg, err)
	}
	if err := e.client.AuthenticateManagementKey(ctx, piv.DefaultManagementKey); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("AuthenticateManagementKey(old default) = %v, want ErrSecurityStatus", err)
	}
	if sw := cardAuth(t, e, 0x0A, aesKey, false); sw != iso7816.SWOK {
		t.Errorf("AES-192 mutual authentication = %v, want 9000", sw)
	}
	if err := e.client.AuthenticateManagementKey(ctx, aesKey); err != nil {
		t.Errorf("AuthenticateManagementKey(AES key) = %v", err)
	}
	if err := e.client.SetManagementKey(ctx, piv.Alg3DES, piv.DefaultManagementKey); err != nil {
		t.Fatalf("SetManagementKey(default) = %v", err)
	}
	b, _ := e.tx(t, metadataCmd(0x9B))
	if want := []byte{1, 1, 3, 2, 2, 0, 1, 5, 1, 1}; !bytes.Equal(b, want) {
		t.Errorf("GET METADATA 9B after restoring the default = % X, want % X", b, want)
	}
}

func TestGenerate(t *testing.T) {
	tests := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"9A", generateCmd(0x9A), iso7816.SWOK},
		{"retired 82", generateCmd(0x82), iso7816.SWOK},
		{"PIN policy never, touch never", generateCmd(0x9D, tlv(0xAA, []byte{1}), tlv(0xAB, []byte{1})), iso7816.SWOK},
		{"touch always", generateCmd(0x9A, tlv(0xAB, []byte{2})), iso7816.SWWrongData},
		{"PIN policy 4", generateCmd(0x9A, tlv(0xAA, []byte{4})), iso7816.SWWrongData},
		{"RSA 2048", iso7816.Command{INS: 0x47, P2: 0x9A, Data: tlv(0xAC, tlv(0x80, []byte{0x07})), Ne: 256}, iso7816.SWWrongData},
		{"no template", iso7816.Command{INS: 0x47, P2: 0x9A, Data: tlv(0x80, []byte{0x11}), Ne: 256}, iso7816.SWWrongData},
		{"management slot", generateCmd(0x9B), iso7816.SWIncorrectP1P2},
		{"P1", iso7816.Command{INS: 0x47, P1: 1, P2: 0x9A, Data: tlv(0xAC, tlv(0x80, []byte{0x11})), Ne: 256}, iso7816.SWIncorrectP1P2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.mgmtAuth(t)
			b, sw := e.tx(t, tt.cmd)
			if sw != tt.want {
				t.Fatalf("GENERATE = %v, want %v", sw, tt.want)
			}
			if sw != iso7816.SWOK {
				return
			}
			if len(b) != 5+65 || !bytes.Equal(b[:5], []byte{0x7F, 0x49, 0x43, 0x86, 0x41}) {
				t.Fatalf("GENERATE reply = % X, want 7F49 43 86 41 point", b)
			}
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b[5:])
			if err != nil {
				t.Fatalf("parsing point: %v", err)
			}
			meta, sw := e.tx(t, metadataCmd(tt.cmd.P2))
			list, err := iso7816.ParseTLV(meta)
			if sw != iso7816.SWOK || err != nil {
				t.Fatalf("GET METADATA = % X %v %v", meta, sw, err)
			}
			alg, _ := iso7816.FindTLV(list, 0x01)
			origin, _ := iso7816.FindTLV(list, 0x03)
			point, _ := iso7816.FindTLV(list, 0x04)
			if !bytes.Equal(alg.Value, []byte{0x11}) || !bytes.Equal(origin.Value, []byte{1}) || !bytes.Equal(point.Value, b[3:]) {
				t.Errorf("GET METADATA = % X, want algorithm 11, origin 1, point %x", meta, b[3:])
			}
			if !pub.Equal(pubFromMeta(t, point.Value)) {
				t.Errorf("GET METADATA public key differs from GENERATE's")
			}
		})
	}
}

func TestMetadataPolicies(t *testing.T) {
	e := newEnv(t)
	e.mgmtAuth(t)
	tests := []struct {
		slot  byte
		extra [][]byte
		want  []byte
	}{
		{0x9A, nil, []byte{2, 1}},
		{0x9C, nil, []byte{3, 1}},
		{0x9D, nil, []byte{2, 1}},
		{0x9E, nil, []byte{1, 1}},
		{0x95, nil, []byte{2, 1}},
		{0x9E, [][]byte{tlv(0xAA, []byte{3})}, []byte{3, 1}},
	}
	for _, tt := range tests {
		if _, sw := e.tx(t, generateCmd(tt.slot, tt.extra...)); sw != iso7816.SWOK {
			t.Fatalf("GENERATE %02X = %v", tt.slot, sw)
		}
		meta, _ := e.tx(t, metadataCmd(tt.slot))
		list, _ := iso7816.ParseTLV(meta)
		p, _ := iso7816.FindTLV(list, 0x02)
		if !bytes.Equal(p.Value, tt.want) {
			t.Errorf("policy of %02X = % X, want % X", tt.slot, p.Value, tt.want)
		}
	}
	b, _ := e.tx(t, metadataCmd(0x80))
	if want := []byte{1, 1, 0xFF, 5, 1, 1, 6, 2, 3, 3}; !bytes.Equal(b, want) {
		t.Errorf("GET METADATA 80 = % X, want % X", b, want)
	}
}

func TestSign(t *testing.T) {
	digest := sha256.Sum256([]byte("message"))
	e := newEnv(t)
	e.mgmtAuth(t)
	pubs := map[byte]*ecdsa.PublicKey{}
	for _, slot := range []byte{0x9A, 0x9C, 0x9D, 0x9E} {
		b, sw := e.tx(t, generateCmd(slot))
		if sw != iso7816.SWOK {
			t.Fatalf("GENERATE %02X = %v", slot, sw)
		}
		pubs[slot], _ = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b[5:])
	}
	e.reconnect(t)
	type step struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}
	steps := []step{
		{"9E without PIN", signCmd(0x9E, digest[:]), 0x9000},
		{"9A without PIN", signCmd(0x9A, digest[:]), 0x6982},
		{"9C without PIN", signCmd(0x9C, digest[:]), 0x6982},
		{"verify", verifyCmd(piv.DefaultPIN), 0x9000},
		{"9A after PIN", signCmd(0x9A, digest[:]), 0x9000},
		{"9A again", signCmd(0x9A, digest[:]), 0x9000},
		{"9D after PIN", signCmd(0x9D, digest[:]), 0x9000},
		{"9C after PIN", signCmd(0x9C, digest[:]), 0x9000},
		{"9C again needs a fresh PIN", signCmd(0x9C, digest[:]), 0x6982},
		{"verify again", verifyCmd(piv.DefaultPIN), 0x9000},
		{"9C after fresh PIN", signCmd(0x9C, digest[:]), 0x9000},
		{"SHA-1 size digest", signCmd(0x9A, digest[:20]), 0x9000},
		{"digest too long", signCmd(0x9A, make([]byte, 33)), 0x6A80},
		{"empty digest", signCmd(0x9A, nil), 0x6A80},
		{"wrong algorithm", iso7816.Command{INS: 0x87, P1: 0x14, P2: 0x9A, Data: tlv(0x7C, tlv(0x82), tlv(0x81, digest[:]))}, 0x6A86},
		{"not a key slot", signCmd(0x9F, digest[:]), 0x6A86},
		{"empty retired slot", signCmd(0x82, digest[:]), 0x6A88},
		{"82 not empty", iso7816.Command{INS: 0x87, P1: 0x11, P2: 0x9A, Data: tlv(0x7C, tlv(0x82, []byte{1}), tlv(0x81, digest[:]))}, 0x6A80},
		{"no 82", iso7816.Command{INS: 0x87, P1: 0x11, P2: 0x9A, Data: tlv(0x7C, tlv(0x81, digest[:]))}, 0x6A80},
		{"PIN reset", iso7816.Command{INS: 0x20, P1: 0xFF, P2: 0x80}, 0x9000},
		{"9A after reset", signCmd(0x9A, digest[:]), 0x6982},
	}
	for _, s := range steps {
		b, sw := e.tx(t, s.cmd)
		if sw != s.want {
			t.Fatalf("%s: = %v, want %v", s.name, sw, s.want)
		}
		if s.cmd.INS != 0x87 || sw != iso7816.SWOK {
			continue
		}
		list, err := iso7816.ParseTLV(b)
		if err != nil || len(list) != 1 || list[0].Tag != 0x7C || len(list[0].Children) != 1 || list[0].Children[0].Tag != 0x82 {
			t.Fatalf("%s: reply % X, want 7C { 82 signature }", s.name, b)
		}
		signed := digest[:]
		if s.name == "SHA-1 size digest" {
			signed = digest[:20]
		}
		if !ecdsa.VerifyASN1(pubs[s.cmd.P2], signed, list[0].Children[0].Value) {
			t.Errorf("%s: signature does not verify with the slot's key", s.name)
		}
	}
}

func TestSignVerifiesAgainstCertificate(t *testing.T) {
	e := newPersonalized(t)
	ctx := context.Background()
	cert, err := e.client.Certificate(ctx, piv.SlotAuthentication)
	if err != nil {
		t.Fatalf("Certificate(9A) = %v", err)
	}
	digest := sha256.Sum256([]byte("log me in"))
	if _, err := e.client.Sign(ctx, piv.SlotAuthentication, digest[:]); !errors.Is(err, iso7816.ErrSecurityStatus) {
		t.Errorf("Sign(9A) without PIN = %v, want ErrSecurityStatus", err)
	}
	e.verifyPIN(t)
	sig, err := e.client.Sign(ctx, piv.SlotAuthentication, digest[:])
	if err != nil {
		t.Fatalf("Sign(9A) = %v", err)
	}
	if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("signature does not verify against the slot 9A certificate")
	}
	if err := cert.CheckSignatureFrom(e.ca); err != nil {
		t.Errorf("slot certificate not from the CA: %v", err)
	}
}

func TestECDH(t *testing.T) {
	e := newPersonalized(t)
	ctx := context.Background()
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e.verifyPIN(t)
	got, err := e.client.SharedKey(ctx, piv.SlotAuthentication, peer.PublicKey())
	if err != nil {
		t.Fatalf("SharedKey = %v", err)
	}
	cardPub, err := e.cert.PublicKey.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.ECDH(cardPub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SharedKey = %x, want %x", got, want)
	}
	bad := make([]byte, 65)
	bad[0] = 4
	if _, sw := e.tx(t, iso7816.Command{INS: 0x87, P1: 0x11, P2: 0x9A, Data: tlv(0x7C, tlv(0x82), tlv(0x85, bad))}); sw != iso7816.SWWrongData {
		t.Errorf("ECDH with a point off the curve = %v, want 6A80", sw)
	}
}

func TestImportKey(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	scalar, _ := priv.Bytes()
	e := newEnv(t)
	imp := iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9E, Data: append(tlv(0x06, scalar), tlv(0xAA, []byte{1})...)}
	if _, sw := e.tx(t, imp); sw != iso7816.SWSecurityStatus {
		t.Errorf("IMPORT unauthenticated = %v, want 6982", sw)
	}
	e.mgmtAuth(t)
	bad := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"RSA", iso7816.Command{INS: 0xFE, P1: 0x07, P2: 0x9E, Data: imp.Data}, iso7816.SWWrongData},
		{"short scalar", iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9E, Data: tlv(0x06, scalar[1:])}, iso7816.SWWrongData},
		{"zero scalar", iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9E, Data: tlv(0x06, make([]byte, 32))}, iso7816.SWWrongData},
		{"no scalar", iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9E, Data: tlv(0xAA, []byte{1})}, iso7816.SWWrongData},
		{"extra tag", iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9E, Data: append(tlv(0x06, scalar), tlv(0x07, nil)...)}, iso7816.SWWrongData},
		{"slot 9B", iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9B, Data: imp.Data}, iso7816.SWIncorrectP1P2},
	}
	for _, tt := range bad {
		if _, sw := e.tx(t, tt.cmd); sw != tt.want {
			t.Errorf("IMPORT %s = %v, want %v", tt.name, sw, tt.want)
		}
	}
	if _, sw := e.tx(t, imp); sw != iso7816.SWOK {
		t.Fatalf("IMPORT = %v", sw)
	}
	digest := sha256.Sum256([]byte("imported"))
	sig, err := e.client.Sign(context.Background(), piv.SlotCardAuthentication, digest[:])
	if err != nil || !ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig) {
		t.Errorf("Sign(9E) with the imported key = %v (verifies: %v)", err, err == nil && ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig))
	}
	meta, _ := e.tx(t, metadataCmd(0x9E))
	list, _ := iso7816.ParseTLV(meta)
	origin, _ := iso7816.FindTLV(list, 0x03)
	if !bytes.Equal(origin.Value, []byte{2}) {
		t.Errorf("origin of an imported key = % X, want 02", origin.Value)
	}
}

// TestReplacedKeyIsNotUsed checks a slot's key and policies, once parsed
// (and cached) to sign, are never used after the slot is written again:
// by GENERATE with another PIN policy, then by IMPORT.
func TestReplacedKeyIsNotUsed(t *testing.T) {
	digest := sha256.Sum256([]byte("replaced"))
	e := newEnv(t)
	e.mgmtAuth(t)
	sign := func() ([]byte, iso7816.SW) {
		t.Helper()
		b, sw := e.tx(t, signCmd(0x9E, digest[:]))
		if sw != iso7816.SWOK {
			return nil, sw
		}
		list, err := iso7816.ParseTLV(b)
		if err != nil || len(list) != 1 || len(list[0].Children) != 1 {
			t.Fatalf("sign reply % X", b)
		}
		return list[0].Children[0].Value, sw
	}
	b, sw := e.tx(t, generateCmd(0x9E))
	if sw != iso7816.SWOK {
		t.Fatalf("GENERATE = %v", sw)
	}
	first, _ := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b[5:])
	if sig, sw := sign(); sw != iso7816.SWOK || !ecdsa.VerifyASN1(first, digest[:], sig) {
		t.Fatalf("sign with the first key = %v, or does not verify", sw)
	}
	// PIN policy once: the slot's cached policy (never) must not apply.
	if _, sw := e.tx(t, generateCmd(0x9E, tlv(0xAA, []byte{2}))); sw != iso7816.SWOK {
		t.Fatalf("GENERATE again = %v", sw)
	}
	if _, sw := sign(); sw != iso7816.SWSecurityStatus {
		t.Errorf("sign without PIN after the policy became once = %v, want 6982", sw)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	scalar, _ := priv.Bytes()
	imp := iso7816.Command{INS: 0xFE, P1: 0x11, P2: 0x9E, Data: append(tlv(0x06, scalar), tlv(0xAA, []byte{1})...)}
	if _, sw := e.tx(t, imp); sw != iso7816.SWOK {
		t.Fatalf("IMPORT = %v", sw)
	}
	sig, sw := sign()
	if sw != iso7816.SWOK || !ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig) || ecdsa.VerifyASN1(first, digest[:], sig) {
		t.Errorf("sign after IMPORT = %v: want a signature by the imported key only", sw)
	}
}

func TestGetPutData(t *testing.T) {
	chuid := []byte{0x5F, 0xC1, 0x02}
	e := newEnv(t)
	long := bytes.Repeat([]byte{0xC3}, 1000)
	steps := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
		data []byte
	}{
		{"absent CHUID", getDataCmd(chuid...), 0x6A82, nil},
		{"PUT without management key", putDataCmd(chuid, []byte{1}), 0x6982, nil},
		{"discovery", getDataCmd(0x7E), 0x9000, []byte{0x7E, 0x12, 0x4F, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x5F, 0x2F, 0x02, 0x40, 0x00}},
		{"BIT group template absent", getDataCmd(0x7F, 0x61), 0x6A82, nil},
		{"unknown object", getDataCmd(0x5F, 0xC2, 0x01), 0x6A82, nil},
		{"tag of 4 bytes", getDataCmd(0x5F, 0xC1, 0x02, 0x00), 0x6A80, nil},
		{"no tag list", iso7816.Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: tlv(0x5D, chuid), Ne: 256}, 0x6A80, nil},
		{"wrong P1-P2", iso7816.Command{INS: 0xCB, P1: 0x00, P2: 0x00, Data: tlv(0x5C, chuid), Ne: 256}, 0x6A86, nil},
	}
	for _, s := range steps {
		got, sw := e.exchange(t, s.cmd)
		if sw != s.want || s.data != nil && !bytes.Equal(got, s.data) {
			t.Errorf("%s: = % X %v, want % X %v", s.name, got, sw, s.data, s.want)
		}
	}
	e.mgmtAuth(t)
	puts := []struct {
		name string
		cmd  iso7816.Command
		want iso7816.SW
	}{
		{"CHUID", putDataCmd(chuid, []byte{0x30, 0x01, 0x00}), 0x9000},
		{"long object", putDataCmd([]byte{0x5F, 0xC1, 0x05}, long), 0x9000},
		{"printed information", putDataCmd([]byte{0x5F, 0xC1, 0x09}, []byte{0x88, 0x00}), 0x9000},
		{"YubiKey admin data", putDataCmd([]byte{0x5F, 0xFF, 0x00}, []byte{0x80, 0x00}), 0x9000},
		{"discovery", putDataCmd([]byte{0x7E}, []byte{0x4F, 0x00}), 0x6A80},
		{"outside the ranges", putDataCmd([]byte{0x5F, 0xC1, 0x24}, []byte{1}), 0x6A80},
		{"too large", putDataCmd([]byte{0x5F, 0xC1, 0x0A}, make([]byte, 3100)), 0x6A84},
		{"53 missing", iso7816.Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: tlv(0x5C, chuid)}, 0x6A80},
		{"trailing object", iso7816.Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: append(putDataCmd(chuid, nil).Data, 0x01, 0x00)}, 0x6A80},
		{"wrong P1-P2", iso7816.Command{INS: 0xDB, P1: 0x3F, P2: 0x00, Data: putDataCmd(chuid, nil).Data}, 0x6A86},
	}
	for _, p := range puts {
		if _, sw := e.exchange(t, p.cmd); sw != p.want {
			t.Errorf("PUT DATA %s = %v, want %v", p.name, sw, p.want)
		}
	}
	e.reconnect(t)
	got, sw := e.exchange(t, getDataCmd(0x5F, 0xC1, 0x05))
	if want := tlv(0x53, long); sw != iso7816.SWOK || !bytes.Equal(got, want) {
		t.Errorf("GET DATA of the long object = %d bytes %v, want %d bytes", len(got), sw, len(want))
	}
	if _, sw := e.tx(t, getDataCmd(0x5F, 0xC1, 0x05)); sw != 0x6100 {
		t.Errorf("raw GET DATA of the long object = %v, want 6100 (748 bytes remain)", sw)
	}
	if _, sw := e.tx(t, getDataCmd(0x5F, 0xC1, 0x09)); sw != iso7816.SWSecurityStatus {
		t.Errorf("GET DATA printed information without PIN = %v, want 6982", sw)
	}
	e.verifyPIN(t)
	if got, sw := e.tx(t, getDataCmd(0x5F, 0xC1, 0x09)); sw != iso7816.SWOK || !bytes.Equal(got, []byte{0x53, 0x02, 0x88, 0x00}) {
		t.Errorf("GET DATA printed information with PIN = % X %v, want 53 02 88 00", got, sw)
	}
	e.mgmtAuth(t)
	if _, sw := e.tx(t, putDataCmd(chuid, nil)); sw != iso7816.SWOK {
		t.Errorf("PUT DATA 53 00 = %v, want 9000", sw)
	}
	if _, sw := e.tx(t, getDataCmd(chuid...)); sw != iso7816.SWNotFound {
		t.Errorf("GET DATA of a deleted object = %v, want 6A82", sw)
	}
}

func TestSetPINRetriesAndReset(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if err := e.client.ChangePIN(ctx, piv.DefaultPIN, "11223344"); err != nil {
		t.Fatal(err)
	}
	retries := iso7816.Command{INS: 0xFA, P1: 5, P2: 4}
	if _, sw := e.tx(t, retries); sw != iso7816.SWSecurityStatus {
		t.Errorf("SET PIN RETRIES unauthenticated = %v, want 6982", sw)
	}
	e.mgmtAuth(t)
	if _, sw := e.tx(t, retries); sw != iso7816.SWSecurityStatus {
		t.Errorf("SET PIN RETRIES without PIN = %v, want 6982", sw)
	}
	if err := e.client.VerifyPIN(ctx, "11223344"); err != nil {
		t.Fatal(err)
	}
	if _, sw := e.tx(t, iso7816.Command{INS: 0xFA, P1: 0, P2: 4}); sw != iso7816.SWIncorrectP1P2 {
		t.Errorf("SET PIN RETRIES 0 = %v, want 6A86", sw)
	}
	if _, sw := e.tx(t, retries); sw != iso7816.SWOK {
		t.Fatalf("SET PIN RETRIES = %v", sw)
	}
	if limit, left, err := e.client.Retries(ctx, false); limit != 5 || left != 5 || err != nil {
		t.Errorf("PIN retries = %d/%d, %v, want 5/5", left, limit, err)
	}
	if _, sw := e.tx(t, verifyCmd(piv.DefaultPIN)); sw != iso7816.SWOK {
		t.Errorf("VERIFY default PIN after SET PIN RETRIES = %v, want 9000 (PIN reset)", sw)
	}

	// RESET needs both PIN and PUK blocked.
	e.mgmtAuth(t)
	if _, sw := e.tx(t, generateCmd(0x9A)); sw != iso7816.SWOK {
		t.Fatal("GENERATE failed")
	}
	reset := iso7816.Command{INS: 0xFB}
	if _, sw := e.tx(t, reset); sw != iso7816.SWConditionsNotSatisfied {
		t.Errorf("RESET with live PIN = %v, want 6985", sw)
	}
	serial, _ := e.client.Serial(ctx)
	for range 5 {
		e.tx(t, verifyCmd("000000"))
	}
	if _, sw := e.tx(t, reset); sw != iso7816.SWConditionsNotSatisfied {
		t.Errorf("RESET with live PUK = %v, want 6985", sw)
	}
	for range 4 {
		e.client.ChangePUK(ctx, "00000000", "00000000")
	}
	if _, sw := e.tx(t, reset); sw != iso7816.SWOK {
		t.Fatalf("RESET = %v, want 9000", sw)
	}
	if got := e.pinTries(t); got != 3 {
		t.Errorf("PIN tries after RESET = %d, want 3", got)
	}
	if _, sw := e.tx(t, metadataCmd(0x9A)); sw != iso7816.SWNotFound {
		t.Errorf("slot 9A after RESET = %v, want 6A82", sw)
	}
	if s, _ := e.client.Serial(ctx); s != serial {
		t.Errorf("serial after RESET = %d, want %d", s, serial)
	}
	if _, sw := e.tx(t, generateCmd(0x9A)); sw != iso7816.SWSecurityStatus {
		t.Errorf("GENERATE after RESET = %v, want 6982 (authentication dropped)", sw)
	}
}

// pubFromMeta parses 86 point from GET METADATA's tag 04.
func pubFromMeta(t *testing.T, v []byte) *ecdsa.PublicKey {
	t.Helper()
	list, err := iso7816.ParseTLV(v)
	if err != nil || len(list) != 1 || list[0].Tag != 0x86 {
		t.Fatalf("metadata public key % X", v)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), list[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestNVMFull(t *testing.T) {
	e := newEnvCapacity(t, 1024)
	e.mgmtAuth(t)
	if _, sw := e.exchange(t, putDataCmd([]byte{0x5F, 0xC1, 0x05}, make([]byte, 2000))); sw != iso7816.SWNoSpace {
		t.Errorf("PUT DATA beyond the NVM = %v, want 6A84", sw)
	}
	if _, sw := e.tx(t, getDataCmd(0x5F, 0xC1, 0x05)); sw != iso7816.SWNotFound {
		t.Errorf("GET DATA after a refused PUT = %v, want 6A82", sw)
	}
	if _, sw := e.tx(t, generateCmd(0x9A)); sw != iso7816.SWOK {
		t.Errorf("GENERATE on a small NVM = %v, want 9000", sw)
	}
}

// TestPutDataAndGenerateTearing cuts power at every write of PUT DATA and
// of GENERATE: after recovery the object (or key) is the old one or the
// new one, never a mix.
func TestPutDataAndGenerateTearing(t *testing.T) {
	tag := []byte{0x5F, 0xC1, 0x05}
	oldObj, newObj := bytes.Repeat([]byte{0x11}, 700), bytes.Repeat([]byte{0x22}, 900)
	base := newEnv(t)
	base.mgmtAuth(t)
	if _, sw := base.exchange(t, putDataCmd(tag, oldObj)); sw != iso7816.SWOK {
		t.Fatalf("PUT DATA = %v", sw)
	}
	oldKey, sw := base.tx(t, generateCmd(0x9A))
	if sw != iso7816.SWOK {
		t.Fatalf("GENERATE = %v", sw)
	}
	ops := []struct {
		name  string
		cmd   iso7816.Command
		check func(t *testing.T, f *env)
	}{
		{"PUT DATA", putDataCmd(tag, newObj), func(t *testing.T, f *env) {
			got, sw := f.exchange(t, getDataCmd(tag...))
			if sw != iso7816.SWOK || !bytes.Equal(got, tlv(0x53, oldObj)) && !bytes.Equal(got, tlv(0x53, newObj)) {
				t.Errorf("object after cut = %d bytes %v, want the old or the new one", len(got), sw)
			}
		}},
		{"GENERATE", generateCmd(0x9A), func(t *testing.T, f *env) {
			meta, sw := f.tx(t, metadataCmd(0x9A))
			list, _ := iso7816.ParseTLV(meta)
			pub, _ := iso7816.FindTLV(list, 0x04)
			if sw != iso7816.SWOK || len(pub.Value) != 67 {
				t.Fatalf("GET METADATA 9A after cut = % X %v, want a key", meta, sw)
			}
			if bytes.Equal(pub.Value, oldKey[3:]) {
				return // the old key survived
			}
			// Otherwise a complete new key: it signs and verifies.
			digest := sha256.Sum256([]byte("torn"))
			f.verifyPIN(t)
			sig, err := f.client.Sign(context.Background(), piv.SlotAuthentication, digest[:])
			if err != nil || !ecdsa.VerifyASN1(pubFromMeta(t, pub.Value), digest[:], sig) {
				t.Errorf("new key after cut does not sign: %v", err)
			}
		}},
	}
	for _, op := range ops {
		probe := base.fork(t)
		probe.mgmtAuth(t)
		n0 := probe.medium.Writes()
		if _, sw := probe.exchange(t, op.cmd); sw != iso7816.SWOK {
			t.Fatalf("%s = %v", op.name, sw)
		}
		n := probe.medium.Writes() - n0
		for at := 0; at <= n; at += max(1, n/8) {
			t.Run(fmt.Sprintf("%s/cut%02d", op.name, at), func(t *testing.T) {
				f := base.fork(t)
				f.mgmtAuth(t)
				if at == n {
					f.medium.CutAtSync()
				} else {
					f.medium.CutAt(at, 7)
				}
				if _, err := reader.Exchange(context.Background(), f.conn, op.cmd); !errors.Is(err, reader.ErrCardRemoved) {
					t.Fatalf("%s with power cut at write %d = %v, want ErrCardRemoved", op.name, at, err)
				}
				f.reconnect(t)
				op.check(t, f)
			})
		}
	}
}
