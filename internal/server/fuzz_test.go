package server_test

import (
	"errors"
	"io"
	"net"
	"testing"

	"cardlink/internal/channel"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/txn"
)

// FuzzListener sends one arbitrary message to the listener over a real
// channel and hangs up: whatever it is, the server answers only with
// messages that decode, then ends the connection, and keeps serving (each
// input starts with a fresh handshake).
func FuzzListener(f *testing.F) {
	b := newBed(f, openSQLite(f), server.Config{})
	cert := b.card.CardCert.Raw
	for _, m := range []protocol.Message{
		&protocol.Hello{Software: "cardlink/0.1", Features: protocol.FeaturePINPad},
		&protocol.ChallengeRequest{CardNumber: protocol.CardNumber(b.card.CardNumber), CertID: protocol.CertID(cert), Purpose: txn.PurposeAuth},
		&protocol.AuthResponse{Challenge: make([]byte, 32), Counter: 1, CVM: txn.CVMOfflinePIN, Signature: make([]byte, 70)},
		&protocol.Error{Code: protocol.CodeHolderDeclined},
		&protocol.Challenge{Challenge: make([]byte, 32), TTL: 60, CVMs: 2},
		&protocol.ServerKeys{Keys: [][]byte{make([]byte, 32)}}, // server → device only
	} {
		f.Add(encode(f, m))
	}
	f.Add([]byte{protocol.Version, byte(protocol.TypeHello), 0xB8, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > channel.MaxMessage {
			msg = msg[:channel.MaxMessage]
		}
		c := b.rawSession(t)
		if err := c.WriteMessage(msg); err != nil {
			t.Fatal(err)
		}
		closeWrite(t, b, c)
		for {
			raw, err := c.ReadMessage()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return
			}
			if err != nil {
				t.Fatalf("ReadMessage() = %v, want a reply or the end", err)
			}
			if _, err := protocol.Decode(raw); err != nil {
				t.Fatalf("the server sent % X, which does not decode: %v", raw, err)
			}
		}
	})
}

// closeWrite half-closes the bed's last dialed connection under c, so the
// server reads the end after the message.
func closeWrite(t *testing.T, b *bed, c *channel.Conn) {
	t.Helper()
	b.mu.Lock()
	nc := b.last
	b.mu.Unlock()
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		t.Fatalf("dialed %T, want *net.TCPConn", nc)
	}
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
}
