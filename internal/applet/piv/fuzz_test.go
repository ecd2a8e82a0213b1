package piv_test

import (
	"context"
	"crypto/sha256"
	"testing"

	"cardlink/internal/iso7816"
	"cardlink/internal/reader"
)

// FuzzPIV sends random commands to a personalized PIV applet, after an
// optional PIN verification (setup bit 0) and management key
// authentication (bit 1). Data is a sequence of commands, each
// INS P1 P2 Lc data[Lc]. The applet must never panic (which the card OS
// would answer with 6F00) and never answer 6F00 at all.
func FuzzPIV(f *testing.F) {
	base := newPersonalized(f)
	cmd := func(ins, p1, p2 byte, data ...byte) []byte {
		return append([]byte{ins, p1, p2, byte(len(data))}, data...)
	}
	digest := sha256.Sum256([]byte("fuzz"))
	f.Add(byte(0), cmd(0x20, 0x00, 0x80, pinBlock("123456")...))
	f.Add(byte(0), cmd(0x20, 0x00, 0x80))
	f.Add(byte(1), append(cmd(0x87, 0x11, 0x9A, append([]byte{0x7C, 0x24, 0x82, 0x00, 0x81, 0x20}, digest[:]...)...), cmd(0x20, 0xFF, 0x80)...))
	f.Add(byte(2), cmd(0x47, 0x00, 0x9C, 0xAC, 0x09, 0x80, 0x01, 0x11, 0xAA, 0x01, 0x03, 0xAB, 0x01, 0x01))
	f.Add(byte(2), cmd(0xDB, 0x3F, 0xFF, 0x5C, 0x03, 0x5F, 0xC1, 0x09, 0x53, 0x02, 0x88, 0x00))
	f.Add(byte(0), cmd(0xCB, 0x3F, 0xFF, 0x5C, 0x03, 0x5F, 0xC1, 0x05))
	f.Add(byte(0), cmd(0x87, 0x03, 0x9B, 0x7C, 0x02, 0x80, 0x00))
	f.Add(byte(0), append(cmd(0x87, 0x03, 0x9B, 0x7C, 0x02, 0x81, 0x00), cmd(0x87, 0x03, 0x9B, 0x7C, 0x0A, 0x82, 0x08, 1, 2, 3, 4, 5, 6, 7, 8)...))
	f.Add(byte(3), cmd(0xFE, 0x11, 0x9E, 0x06, 0x01, 0x01))
	f.Add(byte(3), cmd(0xFF, 0xFF, 0xFF, 0x0C, 0x9B, 0x20))
	f.Add(byte(3), append(cmd(0xFA, 0x05, 0x05), cmd(0xFB, 0x00, 0x00)...))
	f.Add(byte(0), cmd(0xF7, 0x00, 0x9A))
	f.Add(byte(0), append(cmd(0x24, 0x00, 0x81, []byte("1234567812345678")...), cmd(0x2C, 0x00, 0x80, []byte("12345678\xff\xff\xff\xff\xff\xff\xff\xff")...)...))
	f.Fuzz(func(t *testing.T, setup byte, script []byte) {
		e := base.fork(t)
		if setup&1 != 0 {
			e.verifyPIN(t)
		}
		if setup&2 != 0 {
			e.mgmtAuth(t)
		}
		for len(script) >= 4 {
			ins, p1, p2, n := script[0], script[1], script[2], int(script[3])
			script = script[4:]
			n = min(n, len(script))
			c := iso7816.Command{INS: ins, P1: p1, P2: p2, Data: script[:n], Ne: 256}
			script = script[n:]
			apdu, err := c.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.card.Transmit(apdu)
			if err != nil {
				t.Fatalf("Transmit(% X) = %v", apdu, err)
			}
			if r, _ := iso7816.ParseResponse(resp); r.SW == iso7816.SWUnknown {
				t.Fatalf("% X answered 6F00", apdu)
			}
		}
	})
}

func BenchmarkGeneralAuthenticate(b *testing.B) {
	e := newPersonalized(b)
	e.verifyPIN(b)
	digest := sha256.Sum256([]byte("bench"))
	apdu := mustBytes(b, signCmd(0x9A, digest[:]))
	b.ReportAllocs()
	for b.Loop() {
		resp, err := e.card.Transmit(apdu)
		if err != nil || resp[len(resp)-2] != 0x90 {
			b.Fatalf("GENERAL AUTHENTICATE = % X, %v", resp, err)
		}
	}
}

func BenchmarkGetDataCert(b *testing.B) {
	e := newPersonalized(b)
	cmd := getDataCmd(0x5F, 0xC1, 0x05)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reader.Exchange(ctx, e.conn, cmd); err != nil {
			b.Fatalf("GET DATA 5FC105 = %v", err)
		}
	}
}
