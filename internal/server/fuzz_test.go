package server_test

import (
	"errors"
	"io"
	"net"
	"testing"

	"cardlink/internal/channel"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// FuzzListener sends one arbitrary message to the listener over a real
// channel and hangs up: whatever it is, the server answers only with
// messages that decode, then ends the connection, and keeps serving (each
// input starts with a fresh handshake).
func FuzzListener(f *testing.F) {
	b := newBed(f, servertest.SQLite(f), server.Config{})
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

// FuzzPurchase sends one arbitrary message to a listener serving
// purchases, on a connection with a transaction offered: whatever it is
// (a forged approval, a decline, garbage), the server answers only with
// messages that decode and keeps serving, and no payment is posted
// without the card's signature.
func FuzzPurchase(f *testing.F) {
	m := newMall(f, servertest.SQLite(f))
	cert := m.card.CardCert.Raw
	id := make([]byte, protocol.TransactionIDLen)
	for _, msg := range []protocol.Message{
		&protocol.TransactionApproval{ID: id, Counter: 1, CVM: txn.CVMOfflinePIN, Signature: make([]byte, 70)},
		&protocol.TransactionApproval{ID: id, Counter: 7, CVM: txn.CVMOnlinePIN, Signature: make([]byte, 71), PINBlock: make([]byte, 16)},
		&protocol.Error{Code: protocol.CodeHolderDeclined},
		&protocol.OfferRequest{CardNumber: protocol.CardNumber(m.card.CardNumber), CertID: protocol.CertID(cert)},
		&protocol.OfferRequest{Reference: "12345678", CardNumber: protocol.CardNumber(m.card.CardNumber), CertID: protocol.CertID(cert), Certificate: cert},
		&protocol.TransactionResult{ID: id, Code: protocol.CodeOK}, // server → device only
	} {
		f.Add(encode(f, msg))
	}
	probe := &protocol.ChallengeRequest{CardNumber: protocol.CardNumber(m.card.CardNumber), CertID: protocol.CertID(cert), Purpose: txn.PurposeAuth}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > channel.MaxMessage {
			msg = msg[:channel.MaxMessage]
		}
		p := m.newPurchase(t, 100, "", "")
		d := m.raw(t)
		d.offer(m.card, p.Reference)
		if err := d.c.WriteMessage(msg); err != nil {
			t.Fatal(err)
		}
		// Not every message gets an answer: a ChallengeRequest after it
		// always does (unless the server hung up), so that the test
		// never waits on a silence.
		if err := d.c.WriteMessage(encode(t, probe)); err != nil {
			t.Fatal(err)
		}
		for {
			raw, err := d.c.ReadMessage()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				break
			}
			if err != nil {
				t.Fatalf("ReadMessage() = %v, want a reply or the end", err)
			}
			reply, err := protocol.Decode(raw)
			if err != nil {
				t.Fatalf("the server sent % X, which does not decode: %v", raw, err)
			}
			if _, ok := reply.(*protocol.Challenge); ok {
				break
			}
		}
		if got := m.status(t, p.ID); got.Status == store.PurchaseApproved || got.Transfer != 0 {
			t.Fatalf("purchase %s = %s with transfer %d after % X: paid without a card signature", p.ID, got.Status, got.Transfer, msg)
		}
	})
}
