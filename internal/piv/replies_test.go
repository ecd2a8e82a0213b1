package piv_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"cardlink/internal/piv"
)

// fakeConn answers every command with the same reply.
type fakeConn struct{ reply []byte }

func (c *fakeConn) ATR() []byte { return nil }
func (c *fakeConn) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	return c.reply, nil
}
func (c *fakeConn) Reset(ctx context.Context) error { return nil }
func (c *fakeConn) Close() error                    { return nil }

// FuzzClientReplies feeds one reply (data and status word) to every client
// method: whatever a card answers, the client returns a value or an error
// and never panics.
func FuzzClientReplies(f *testing.F) {
	f.Add([]byte{0x61, 0x08, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x90, 0x00})
	f.Add([]byte{0x7C, 0x0A, 0x80, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0x90, 0x00})
	f.Add([]byte{0x7F, 0x49, 0x03, 0x86, 0x01, 0x04, 0x90, 0x00})
	f.Add([]byte{0x53, 0x03, 0x70, 0x01, 0x30, 0x90, 0x00})
	f.Add([]byte{0x01, 0x01, 0x03, 0x06, 0x02, 0x03, 0x03, 0x90, 0x00})
	f.Add([]byte{0x63, 0xC2})
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		if len(reply) >= 2 && reply[len(reply)-2] == 0x61 {
			return // 61xx forever: reader.Exchange bounds it, slowly
		}
		ctx := context.Background()
		conn := &fakeConn{reply: reply}
		c, err := piv.Select(ctx, conn)
		if err != nil {
			return
		}
		c.Version(ctx)
		c.Serial(ctx)
		c.PINVerified(ctx)
		c.Retries(ctx, true)
		c.ManagementKeyAlgorithm(ctx)
		c.AuthenticateManagementKey(ctx, piv.DefaultManagementKey)
		c.GenerateKey(ctx, piv.SlotAuthentication)
		c.Certificate(ctx, piv.SlotSignature)
		c.CHUID(ctx)
		c.Object(ctx, piv.ObjectDiscovery)
		c.Sign(ctx, piv.SlotCardAuthentication, make([]byte, 32))
		c.SharedKey(ctx, piv.SlotKeyManagement, peer.PublicKey())
	})
}
