package wallet_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
	"cardlink/internal/wallet"
)

// fuzzSeed is one seed of a command-family fuzz target.
type fuzzSeed struct {
	p1, p2 byte
	data   []byte
}

// fuzzFamily fuzzes P1, P2 and data of one instruction on a fresh fork of a
// prepared card for every input. The card must answer with a status word:
// no transport error, and never 6F00 (the card OS's answer to a panic).
// prepare runs on each fork before the command (nil for none).
func fuzzFamily(f *testing.F, o wallettest.Options, cla, ins byte, setup func(testing.TB, *wallettest.Env), prepare func(*wallettest.Env), seeds ...fuzzSeed) {
	for _, s := range seeds {
		f.Add(s.p1, s.p2, s.data)
	}
	env := wallettest.New(f, o)
	if setup != nil {
		setup(f, env)
	}
	snap := env.Snapshot()
	f.Fuzz(func(t *testing.T, p1, p2 byte, data []byte) {
		e := env.Fork(t, snap)
		if prepare != nil {
			prepare(e)
		}
		c := iso7816.Command{CLA: cla, INS: ins, P1: p1, P2: p2, Data: data, Ne: 256}
		_, err := reader.Exchange(context.Background(), e.Conn, c)
		var se *iso7816.StatusError
		switch {
		case err == nil:
		case errors.As(err, &se):
			if se.SW == iso7816.SWUnknown {
				t.Fatalf("%02X %02X %02X %02X % X = 6F00 (a panic on the card)", cla, ins, p1, p2, data)
			}
		default:
			t.Fatalf("%02X %02X %02X %02X % X: %v", cla, ins, p1, p2, data, err)
		}
	})
}

func mustPINBlock(pin string) []byte {
	b, err := wallet.PINBlock(pin)
	if err != nil {
		panic(err)
	}
	return b
}

func verifyPIN(e *wallettest.Env) { _ = e.Client.VerifyPIN(context.Background(), wallettest.PIN) }

func FuzzVerify(f *testing.F) {
	fuzzFamily(f, wallettest.Options{}, 0x00, 0x20, nil, nil,
		fuzzSeed{0x00, 0x81, mustPINBlock("1234")},
		fuzzSeed{0x00, 0x81, mustPINBlock("9999")},
		fuzzSeed{0x00, 0x81, nil},
		fuzzSeed{0xFF, 0x81, nil},
		fuzzSeed{0x00, 0x91, wallettest.Template()},
		fuzzSeed{0x00, 0x91, wallettest.Sample(wallettest.Template(), 70)},
		fuzzSeed{0x00, 0x82, mustPINBlock("12345678")},
	)
}

func FuzzChangeReference(f *testing.F) {
	fuzzFamily(f, wallettest.Options{}, 0x00, 0x24, nil, nil,
		fuzzSeed{0x00, 0x81, append(mustPINBlock("1234"), mustPINBlock("5678")...)},
		fuzzSeed{0x00, 0x81, append(mustPINBlock("0000"), mustPINBlock("5678")...)},
		fuzzSeed{0x01, 0x81, mustPINBlock("5678")},
	)
}

func FuzzResetRetry(f *testing.F) {
	fuzzFamily(f, wallettest.Options{}, 0x00, 0x2C, nil, nil,
		fuzzSeed{0x00, 0x81, append(mustPINBlock("12345678"), mustPINBlock("5678")...)},
		fuzzSeed{0x00, 0x81, append(mustPINBlock("87654321"), mustPINBlock("5678")...)},
		fuzzSeed{0x03, 0x81, nil},
	)
}

func FuzzInternalAuthenticate(f *testing.F) {
	a, _ := wallet.AuthData(bytes.Repeat([]byte{1}, 32), nil)
	b, _ := wallet.AuthData(bytes.Repeat([]byte{2}, 32), []byte("session"))
	fuzzFamily(f, wallettest.Options{}, 0x00, 0x88, nil, verifyPIN,
		fuzzSeed{0x00, 0x00, a},
		fuzzSeed{0x00, 0x00, b},
		fuzzSeed{0x00, 0x00, []byte{0x80, 0x81, 0x20}},
		fuzzSeed{0x01, 0x00, a},
		fuzzSeed{0x02, 0x00, b}, // online PIN declared while an offline PIN is pending: 6985
	)
}

func FuzzSignTransaction(f *testing.F) {
	env := wallettest.New(f, wallettest.Options{NoBiometric: true})
	tb, err := env.Transaction(1234, 1).Encode()
	if err != nil {
		f.Fatal(err)
	}
	fuzzFamily(f, wallettest.Options{}, 0x80, 0xA0, nil, verifyPIN,
		fuzzSeed{0x00, 0x00, tb},
		fuzzSeed{0x02, 0x00, tb},
		fuzzSeed{0x00, 0x00, tb[:len(tb)-3]},
		fuzzSeed{0x01, 0x00, tb},
		fuzzSeed{0x00, 0x00, []byte{0xE1, 0x00}},
	)
}

func FuzzReadRecord(f *testing.F) {
	setup := func(tb testing.TB, e *wallettest.Env) {
		for i := range 3 {
			b, err := e.Transaction(int64(100+i), byte(i)).Encode()
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := e.Client.SignTransaction(context.Background(), b, true); err != nil {
				tb.Fatal(err)
			}
		}
	}
	fuzzFamily(f, wallettest.Options{}, 0x00, 0xB2, setup, nil,
		fuzzSeed{0x01, 0x0C, nil},
		fuzzSeed{0x03, 0x0C, nil},
		fuzzSeed{0x04, 0x0C, nil},
		fuzzSeed{0x00, 0x0C, nil},
		fuzzSeed{0x01, 0x04, nil},
	)
}

func FuzzGetData(f *testing.F) {
	fuzzFamily(f, wallettest.Options{}, 0x00, 0xCA, nil, nil,
		fuzzSeed{0x00, 0x5A, nil},
		fuzzSeed{0xDF, 0x20, nil},
		fuzzSeed{0x9F, 0x17, nil},
		fuzzSeed{0xDF, 0x30, nil},
		fuzzSeed{0xDF, 0x40, nil},
		fuzzSeed{0xDF, 0x51, []byte{0}},
	)
}

// FuzzPersonalization fuzzes PUT DATA on a blank card that has a key; the
// first data byte picks GENERATE KEY, PUT DATA or END PERSONALIZATION.
func FuzzPersonalization(f *testing.F) {
	setup := func(tb testing.TB, e *wallettest.Env) {
		if _, s := e.Transmit(tb, iso7816.Command{CLA: 0x00, INS: 0x47, Ne: 256}); s != iso7816.SWOK {
			tb.Fatalf("GENERATE KEY = %v", s)
		}
	}
	fuzzFamily(f, wallettest.Options{Blank: true}, 0x00, 0xDA, setup, nil,
		fuzzSeed{0x00, 0x5A, []byte{0x49, 0x99, 0, 0, 0, 0, 0, 0x13}},
		fuzzSeed{0xDF, 0x27, mustPINBlock("1234")},
		fuzzSeed{0xDF, 0x28, mustPINBlock("12345678")},
		fuzzSeed{0xDF, 0x20, []byte{0x30, 0x82, 0x01, 0x00, 0x30, 0x00}},
		fuzzSeed{0xDF, 0x26, append([]byte{4}, make([]byte, 64)...)},
		fuzzSeed{0xDF, 0x2A, []byte{64}},
		fuzzSeed{0xDF, 0x31, []byte("EUR")},
		fuzzSeed{0xDF, 0x33, []byte{0, 0, 0, 0, 0, 1, 0x86, 0xA0}},
	)
}

// FuzzAPDU sends raw command APDUs (any class, instruction and encoding) to
// a personalized, PIN-verified card.
func FuzzAPDU(f *testing.F) {
	for _, s := range [][]byte{
		{0x00, 0x20, 0x00, 0x81, 0x08, 0x24, 0x12, 0x34, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
		{0x00, 0xCA, 0xDF, 0x20, 0x00},
		{0x00, 0xB2, 0x01, 0x0C, 0x00},
		{0x80, 0xA0, 0x02, 0x00, 0x02, 0xE1, 0x00, 0x00},
		{0x90, 0xA0, 0x00, 0x00, 0x01, 0xE1},
		{0x00, 0xA4, 0x04, 0x00, 0x09, 0xF0, 0x63, 0x61, 0x72, 0x64, 0x6C, 0x6E, 0x6B, 0x01, 0x00},
		{0x00, 0x88, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x00, 0x00},
	} {
		f.Add(s)
	}
	env := wallettest.New(f, wallettest.Options{})
	snap := env.Snapshot()
	f.Fuzz(func(t *testing.T, apdu []byte) {
		e := env.Fork(t, snap)
		verifyPIN(e)
		resp, err := e.Conn.Transmit(context.Background(), apdu)
		if err != nil {
			t.Fatalf("Transmit(% X) = %v", apdu, err)
		}
		r, err := iso7816.ParseResponse(resp)
		if err != nil {
			t.Fatalf("Transmit(% X) = % X: %v", apdu, resp, err)
		}
		if r.SW == iso7816.SWUnknown {
			t.Fatalf("Transmit(% X) = 6F00 (a panic on the card)", apdu)
		}
	})
}
