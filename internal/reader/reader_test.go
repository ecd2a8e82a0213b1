package reader

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"cardlink/internal/iso7816"
)

// exchange is one scripted Transmit: the APDU expected and the answer.
type exchange struct {
	want string // hex; spaces ignored
	resp string // hex
	err  error
}

// scriptConn is a Conn that checks each APDU against a script and answers
// from it.
type scriptConn struct {
	t      *testing.T
	script []exchange
	sent   int
}

func (c *scriptConn) ATR() []byte { return nil }

func (c *scriptConn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	c.t.Helper()
	if c.sent == len(c.script) {
		c.t.Fatalf("Transmit(%X) after the end of the script", apdu)
	}
	e := c.script[c.sent]
	c.sent++
	if want := mustHex(e.want); !bytes.Equal(apdu, want) {
		c.t.Fatalf("Transmit #%d got APDU %X, want %X", c.sent, apdu, want)
	}
	if e.err != nil {
		return nil, e.err
	}
	return mustHex(e.resp), nil
}

func (c *scriptConn) Reset(ctx context.Context) error { return nil }

func (c *scriptConn) Close() error { return nil }

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// seq returns n bytes 00 01 02 ... starting at from, in hex.
func seq(from, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(from + i)
	}
	return fmt.Sprintf("%X", b)
}

func TestExchange(t *testing.T) {
	aid := mustHex("A0000005270101")
	errGone := fmt.Errorf("test transport: %w", ErrCardRemoved)
	tests := []struct {
		name     string
		cmd      iso7816.Command
		script   []exchange
		wantData string
		wantSW   iso7816.SW // 0: no status error wanted
		wantErr  error      // checked with errors.Is when set
	}{
		{
			name:     "9000",
			cmd:      iso7816.Command{INS: 0xA4, P1: 4, Data: aid, Ne: 256},
			script:   []exchange{{want: "00A4040007A0000005270101 00", resp: "6F00 9000"}},
			wantData: "6F00",
		},
		{
			name:   "no data",
			cmd:    iso7816.Command{CLA: 0x80, INS: 0x20},
			script: []exchange{{want: "80200000", resp: "9000"}},
		},
		{
			name: "61xx chain of 1000 bytes",
			cmd:  iso7816.Command{CLA: 0x80, INS: 0x02, P1: 0x03, P2: 0xE8, Ne: 256},
			script: []exchange{
				{want: "800203E8 00", resp: seq(0, 256) + "6100"},
				{want: "00C0000000", resp: seq(256, 256) + "6100"},
				{want: "00C0000000", resp: seq(512, 256) + "61E8"},
				{want: "00C00000E8", resp: seq(768, 232) + "9000"},
			},
			wantData: seq(0, 1000),
		},
		{
			name: "GET RESPONSE on the command's channel",
			cmd:  iso7816.Command{CLA: 0x83, INS: 0x02},
			script: []exchange{
				{want: "83020000", resp: "6102"},
				{want: "03C0000002", resp: "0102 9000"},
			},
			wantData: "0102",
		},
		{
			name: "GET RESPONSE on a further interindustry channel",
			cmd:  iso7816.Command{CLA: 0x75, INS: 0x02},
			script: []exchange{
				{want: "75020000", resp: "AA 6101"},
				{want: "45C0000001", resp: "BB 9000"},
			},
			wantData: "AABB",
		},
		{
			name: "6Cxx resends once",
			cmd:  iso7816.Command{INS: 0xCA, P1: 0x9F, P2: 0x7F, Ne: 256},
			script: []exchange{
				{want: "00CA9F7F00", resp: "6C03"},
				{want: "00CA9F7F03", resp: "010203 9000"},
			},
			wantData: "010203",
		},
		{
			name: "6C00 means 256",
			cmd:  iso7816.Command{INS: 0xCA, Ne: 1},
			script: []exchange{
				{want: "00CA000001", resp: "6C00"},
				{want: "00CA000000", resp: "AA 9000"},
			},
			wantData: "AA",
		},
		{
			name: "6Cxx only once",
			cmd:  iso7816.Command{INS: 0xCA, Ne: 256},
			script: []exchange{
				{want: "00CA000000", resp: "6C03"},
				{want: "00CA000003", resp: "6C02"},
			},
			wantSW: 0x6C02,
		},
		{
			name: "6Cxx during GET RESPONSE",
			cmd:  iso7816.Command{INS: 0xCA, Ne: 256},
			script: []exchange{
				{want: "00CA000000", resp: "01 6110"},
				{want: "00C0000010", resp: "6C02"},
				{want: "00C0000002", resp: "0203 9000"},
			},
			wantData: "010203",
		},
		{
			name: "chain of 600 bytes",
			cmd:  iso7816.Command{CLA: 0x80, INS: 0x01, Data: mustHex(seq(0, 600)), Ne: 256},
			script: []exchange{
				{want: "90010000FF" + seq(0, 255), resp: "9000"},
				{want: "90010000FF" + seq(255, 255), resp: "9000"},
				{want: "800100005A" + seq(510, 90) + "00", resp: "CAFE 9000"},
			},
			wantData: "CAFE",
		},
		{
			name: "chain on a channel",
			cmd:  iso7816.Command{CLA: 0x01, INS: 0x01, Data: mustHex(seq(0, 256))},
			script: []exchange{
				{want: "11010000FF" + seq(0, 255), resp: "9000"},
				{want: "0101000001" + seq(255, 1), resp: "9000"},
			},
		},
		{
			name: "chain of exactly 255 bytes is one command",
			cmd:  iso7816.Command{CLA: 0x80, INS: 0x01, Data: mustHex(seq(0, 255))},
			script: []exchange{
				{want: "80010000FF" + seq(0, 255), resp: "9000"},
			},
		},
		{
			name: "chain part refused",
			cmd:  iso7816.Command{CLA: 0x80, INS: 0x01, Data: mustHex(seq(0, 600))},
			script: []exchange{
				{want: "90010000FF" + seq(0, 255), resp: "6884"},
			},
			wantSW: 0x6884,
		},
		{
			name: "extended is not chained",
			cmd:  iso7816.Command{CLA: 0x80, INS: 0x01, Data: mustHex(seq(0, 300)), Ne: 65536, Extended: true},
			script: []exchange{
				{want: "8001000000012C" + seq(0, 300) + "0000", resp: seq(0, 1000) + "9000"},
			},
			wantData: seq(0, 1000),
		},
		{
			name:     "status error with data",
			cmd:      iso7816.Command{INS: 0xB0, Ne: 256},
			script:   []exchange{{want: "00B0000000", resp: "0102 6282"}},
			wantData: "0102",
			wantSW:   0x6282,
		},
		{
			name:    "not found",
			cmd:     iso7816.Command{INS: 0xA4, P1: 4, Data: aid},
			script:  []exchange{{want: "00A4040007A0000005270101", resp: "6A82"}},
			wantSW:  0x6A82,
			wantErr: iso7816.ErrNotFound,
		},
		{
			name: "error after 61xx keeps data",
			cmd:  iso7816.Command{INS: 0xB0, Ne: 256},
			script: []exchange{
				{want: "00B0000000", resp: "0102 6102"},
				{want: "00C0000002", resp: "6F00"},
			},
			wantData: "0102",
			wantSW:   0x6F00,
		},
		{
			name:    "transport error",
			cmd:     iso7816.Command{INS: 0xB0, Ne: 256},
			script:  []exchange{{want: "00B0000000", err: errGone}},
			wantErr: ErrCardRemoved,
		},
		{
			name: "transport error in GET RESPONSE",
			cmd:  iso7816.Command{INS: 0xB0, Ne: 256},
			script: []exchange{
				{want: "00B0000000", resp: "01 6101"},
				{want: "00C0000001", err: errGone},
			},
			wantErr: ErrCardRemoved,
		},
		{
			name:    "response shorter than SW",
			cmd:     iso7816.Command{INS: 0xB0, Ne: 256},
			script:  []exchange{{want: "00B0000000", resp: "90"}},
			wantErr: iso7816.ErrMalformed,
		},
		{
			name:    "command too long",
			cmd:     iso7816.Command{INS: 0xB0, Data: make([]byte, 65536), Extended: true},
			wantErr: errAny,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &scriptConn{t: t, script: tt.script}
			got, err := Exchange(t.Context(), c, tt.cmd)
			if c.sent != len(tt.script) {
				t.Errorf("Exchange() sent %d APDUs, want %d", c.sent, len(tt.script))
			}
			if want := mustHex(tt.wantData); !bytes.Equal(got, want) {
				t.Errorf("Exchange() data = %X, want %X", got, want)
			}
			var se *iso7816.StatusError
			switch {
			case tt.wantSW != 0:
				if !errors.As(err, &se) || se.SW != tt.wantSW {
					t.Errorf("Exchange() error = %v, want status error %04X", err, uint16(tt.wantSW))
				}
			case errors.As(err, &se):
				t.Errorf("Exchange() error = %v, want no status error", err)
			}
			switch {
			case tt.wantErr == errAny:
				if err == nil {
					t.Errorf("Exchange() error = nil, want an error")
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Exchange() error = %v, want %v", err, tt.wantErr)
				}
			case tt.wantSW == 0 && err != nil:
				t.Errorf("Exchange() error = %v, want nil", err)
			}
		})
	}
}

// errAny stands for "some error" in test tables.
var errAny = errors.New("any error")

// endlessConn answers every command with one byte and 6101.
type endlessConn struct{ sent int }

func (c *endlessConn) ATR() []byte { return nil }
func (c *endlessConn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	c.sent++
	return []byte{0xAA, 0x61, 0x01}, nil
}
func (c *endlessConn) Reset(ctx context.Context) error { return nil }
func (c *endlessConn) Close() error                    { return nil }

func TestExchangeEndless61xx(t *testing.T) {
	c := &endlessConn{}
	got, err := Exchange(t.Context(), c, iso7816.Command{INS: 0xB0, Ne: 256})
	if err == nil {
		t.Errorf("Exchange() = %d bytes, nil, want error", len(got))
	}
	if want := 1 + maxGetResponse; c.sent != want {
		t.Errorf("Exchange() sent %d APDUs, want %d", c.sent, want)
	}
}

// fakeReader is a Reader for registry tests.
type fakeReader struct{ name string }

func (r fakeReader) Name() string                              { return r.name }
func (r fakeReader) Connect(ctx context.Context) (Conn, error) { return nil, ErrNoCard }

// registerTest registers the test schemes once per process (tests may run
// with -count > 1).
func registerTest() {
	if slices.Contains(Schemes(), "test-ok") {
		return
	}
	Register("test-ok", func(ctx context.Context, rest string) (Reader, error) {
		return fakeReader{name: rest}, nil
	})
	Register("test-fail", func(ctx context.Context, rest string) (Reader, error) {
		return nil, ErrNoCard
	})
}

func TestOpen(t *testing.T) {
	registerTest()
	tests := []struct {
		name     string
		uri      string
		wantName string
		wantErr  error  // errors.Is, when set
		wantText string // substring of the error, when set
	}{
		{name: "known scheme", uri: "test-ok:/some/card.nvm", wantName: "/some/card.nvm"},
		{name: "colon in rest", uri: "test-ok:Yubico: YubiKey 00 00", wantName: "Yubico: YubiKey 00 00"},
		{name: "empty rest", uri: "test-ok:", wantName: ""},
		{name: "driver error", uri: "test-fail:x", wantErr: ErrNoCard, wantText: `"test-fail:x"`},
		{name: "unknown scheme", uri: "nope:x", wantText: "test-fail, test-ok"},
		{name: "no scheme", uri: "card.nvm", wantText: "test-ok"},
		{name: "empty scheme", uri: ":x", wantText: "test-ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(t.Context(), tt.uri)
			if tt.wantErr == nil && tt.wantText == "" {
				if err != nil || r.Name() != tt.wantName {
					t.Fatalf("Open(%q) = %v, %v, want reader %q", tt.uri, r, err, tt.wantName)
				}
				return
			}
			if err == nil {
				t.Fatalf("Open(%q) = %v, nil, want error", tt.uri, r)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Open(%q) error = %v, want %v", tt.uri, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Open(%q) error = %q, want it to contain %q", tt.uri, err, tt.wantText)
			}
		})
	}
}

func TestRegisterPanics(t *testing.T) {
	open := func(ctx context.Context, rest string) (Reader, error) { return nil, nil }
	func() {
		defer func() { _ = recover() }() // registered by an earlier -count run
		Register("test-dup", open)
	}()
	tests := []struct {
		name   string
		scheme string
		open   func(ctx context.Context, rest string) (Reader, error)
	}{
		{"twice", "test-dup", open},
		{"empty scheme", "", open},
		{"colon in scheme", "a:b", open},
		{"nil open", "test-nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tt.scheme)
				}
			}()
			Register(tt.scheme, tt.open)
		})
	}
}
