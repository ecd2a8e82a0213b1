package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"cardlink/internal/cardfile"
)

// TestCardAttach runs "card attach" against a loopback listener playing
// pcscd's vpcd: the card must answer GET ATR and a SELECT, and the command
// must end cleanly (nil error, exit 0) when its context ends, as on SIGINT.
func TestCardAttach(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blank.card")
	f, err := cardfile.Create(path)
	if err != nil {
		t.Fatalf("cardfile.Create() = %v", err)
	}
	atr := f.Card.ATR()
	f.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr lockedBuffer
	e := &env{ctx: ctx, stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr}
	done := make(chan error, 1)
	go func() {
		done <- dispatch(e, root(), nil, []string{"card", "attach", "--card", path, "--vpcd", ln.Addr().String()})
	}()

	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	defer conn.Close()
	ask := func(p []byte) []byte {
		t.Helper()
		msg := binary.BigEndian.AppendUint16(nil, uint16(len(p)))
		if _, err := conn.Write(append(msg, p...)); err != nil {
			t.Fatalf("writing to the card: %v", err)
		}
		var hdr [2]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			t.Fatalf("reading from the card: %v", err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(conn, resp); err != nil {
			t.Fatalf("reading from the card: %v", err)
		}
		return resp
	}
	conn.Write([]byte{0, 1, 1}) // power on
	if got := ask([]byte{4}); !bytes.Equal(got, atr) {
		t.Errorf("GET ATR = %X, want %X", got, atr)
	}
	// SELECT the wallet by its AID: a blank card still selects it.
	sel := []byte{0x00, 0xA4, 0x04, 0x00, 0x09, 0xF0, 0x63, 0x61, 0x72, 0x64, 0x6C, 0x6E, 0x6B, 0x01, 0x00}
	if got := ask(sel); len(got) < 2 || got[len(got)-2] != 0x90 {
		t.Errorf("SELECT wallet = %X, want 9000", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("card attach after cancel = %v, want nil", err)
	}
	for _, want := range []string{"card attached to vpcd", "power on", "stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("card attach log lacks %q:\n%s", want, stderr.String())
		}
	}
}

func TestCardAttachUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "no card", args: []string{"card", "attach"}, want: 2},
		{name: "extra argument", args: []string{"card", "attach", "--card", "x.card", "extra"}, want: 2},
		{name: "missing file", args: []string{"card", "attach", "--card", filepath.Join(t.TempDir(), "none.card")}, want: 1},
		{name: "help", args: []string{"card", "attach", "-h"}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := Main(tt.args, strings.NewReader(""), io.Discard, &stderr); got != tt.want {
				t.Errorf("Main(%q) = %d, want %d; stderr:\n%s", tt.args, got, tt.want, stderr.String())
			}
		})
	}
}
