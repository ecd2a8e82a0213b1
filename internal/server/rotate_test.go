package server_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/channel"
	"cardlink/internal/device"
	"cardlink/internal/link"
	"cardlink/internal/protocol"
	"cardlink/internal/server"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// memoryFor stores id in a new device memory file, as 'cardlink device
// provision' does, and returns the memory (closed when the test ends).
func memoryFor(t *testing.T, id device.Identity) *device.Memory {
	t.Helper()
	mem, err := device.CreateMemory(filepath.Join(t.TempDir(), "device.nvm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	if err := mem.SetIdentity(id); err != nil {
		t.Fatal(err)
	}
	return mem
}

// authenticateFrom runs one authentication as the device whose memory is
// mem, the way 'cardlink device auth' does: identity from memory, updates
// pinned into it, a new TCP connection for each pinned key tried. It
// returns the result and the bytes on the wire of the connection that
// carried the authentication.
func (b *bed) authenticateFrom(t *testing.T, mem *device.Memory, opts device.AuthOptions) (device.Result, int64, error) {
	t.Helper()
	id, err := mem.Identity()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var last *countingConn
	redial := func(ctx context.Context) (link.Link, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", b.addr)
		if err != nil {
			return nil, err
		}
		last = &countingConn{Conn: c}
		return last, nil
	}
	first, err := redial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	opts.Memory, opts.Redial = mem, redial
	res, err := device.Authenticate(ctx, first, id, b.card.Client, opts)
	return res, last.up.Load() + last.down.Load(), err
}

func pinned(t *testing.T, mem *device.Memory) [][]byte {
	t.Helper()
	id, err := mem.Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.ServerKeys
}

// TestRotateKey walks a rotation of the server key end to end over
// loopback: a device provisioned with K1 authenticates after K2 is added
// (with K1, learning K2 within the byte budget), then with K2; K1 is
// retired and the device still authenticates, while a device that never
// connected during the overlap is refused with a clear error.
func TestRotateKey(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	ctx := context.Background()
	k1 := b.pubs[0]
	mem := memoryFor(t, b.id)
	sleeper := b.addDevice(t) // provisioned with K1, never connects until the end
	const budget = 600

	// Before the rotation: no update, the server learns the card.
	res, _, err := b.authenticateFrom(t, mem, device.AuthOptions{PIN: wallettest.PIN})
	if err != nil || !res.OK() || res.ServerKeys != nil || !bytes.Equal(res.ServerKey, k1) {
		t.Fatalf("Authenticate() before rotation = %+v, %v; want success with K1 and no key update", res, err)
	}
	b.setPIN(t, "4321")

	k2, err := server.RotateKey(ctx, b.st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := server.EnsureKey(ctx, b.st); err != nil || !reflect.DeepEqual(keys, [][]byte{k2, k1}) {
		t.Fatalf("EnsureKey() after RotateKey = %x, %v; want [K2 K1]", keys, err)
	}

	// The device still uses K1 and learns K2, with the online PIN (the
	// largest common authentication) within the byte budget.
	res, n, err := b.authenticateFrom(t, mem, device.AuthOptions{OnlinePIN: "4321"})
	if err != nil || !res.OK() {
		t.Fatalf("Authenticate() during the overlap = %+v, %v; want success", res, err)
	}
	if !bytes.Equal(res.ServerKey, k1) || !reflect.DeepEqual(res.ServerKeys, [][]byte{k2, k1}) {
		t.Errorf("Authenticate() during the overlap used %x and learned %x; want K1 and [K2 K1]", res.ServerKey, res.ServerKeys)
	}
	if got := pinned(t, mem); !reflect.DeepEqual(got, [][]byte{k2, k1}) {
		t.Errorf("pinned keys after the update = %x, want [K2 K1]", got)
	}
	t.Logf("authentication with a key update: %d bytes on the wire", n)
	if n > budget {
		t.Errorf("authentication with a key update = %d bytes on the wire, want at most %d", n, budget)
	}

	// Now on K2: no update.
	res, n, err = b.authenticateFrom(t, mem, device.AuthOptions{OnlinePIN: "4321"})
	if err != nil || !res.OK() || !bytes.Equal(res.ServerKey, k2) || res.ServerKeys != nil {
		t.Fatalf("Authenticate() after the update = %+v, %v; want success with K2 and no update", res, err)
	}
	t.Logf("authentication on the newest key: %d bytes on the wire", n)

	// Retire K1; K2, the last current key, cannot be retired.
	if err := server.RetireKey(ctx, b.st, k1, time.Now()); err != nil {
		t.Fatalf("RetireKey(K1) = %v", err)
	}
	if err := server.RetireKey(ctx, b.st, k2, time.Now()); !errors.Is(err, server.ErrLastKey) {
		t.Errorf("RetireKey(last key) = %v, want ErrLastKey", err)
	}
	if err := server.RetireKey(ctx, b.st, k1, time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetireKey(retired key) = %v, want store.ErrNotFound", err)
	}
	if err := server.RetireKey(ctx, b.st, make([]byte, channel.KeyLen), time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetireKey(unknown key) = %v, want store.ErrNotFound", err)
	}
	res, _, err = b.authenticateFrom(t, mem, device.AuthOptions{PIN: wallettest.PIN})
	if err != nil || !res.OK() || !bytes.Equal(res.ServerKey, k2) {
		t.Fatalf("Authenticate() after retiring K1 = %+v, %v; want success with K2", res, err)
	}

	// A device pinned first to a key the server never held falls back.
	stray, err := channel.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.SetServerKeys([][]byte{stray.Public, k2}); err != nil {
		t.Fatal(err)
	}
	res, _, err = b.authenticateFrom(t, mem, device.AuthOptions{PIN: wallettest.PIN})
	if err != nil || !res.OK() || !bytes.Equal(res.ServerKey, k2) {
		t.Fatalf("Authenticate() pinned to [stray K2] = %+v, %v; want success with K2", res, err)
	}

	// The device that slept through the overlap is stranded.
	before, _ := b.card.Client.Counter(ctx)
	res, _, err = b.authenticateFrom(t, memoryFor(t, sleeper), device.AuthOptions{})
	if !errors.Is(err, device.ErrServerRefused) || !errors.Is(err, channel.ErrHandshake) {
		t.Fatalf("Authenticate() pinned to the retired key = %+v, %v; want ErrServerRefused", res, err)
	}
	if after, _ := b.card.Client.Counter(ctx); after != before {
		t.Errorf("card counter went from %d to %d for a refused channel", before, after)
	}
}

// TestKeyUpdateBeforeFirstReply checks where the update goes: a device on
// an older key that sends Hello (no reply) and then a request gets
// ServerKeys just before the answer to the request; one on the newest key
// gets the answer alone.
func TestKeyUpdateBeforeFirstReply(t *testing.T) {
	b := newBed(t, servertest.SQLite(t), server.Config{})
	ctx := context.Background()
	k1 := b.pubs[0]
	k2, err := server.RotateKey(ctx, b.st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req := &protocol.ChallengeRequest{CardNumber: protocol.CardNumber(b.card.CardNumber), CertID: protocol.CertID(b.card.CardCert.Raw), Purpose: txn.PurposeAuth}
	tests := []struct {
		name  string
		key   []byte
		types []protocol.Type
	}{
		{"older key", k1, []protocol.Type{protocol.TypeServerKeys, protocol.TypeError}},
		{"newest key", k2, []protocol.Type{protocol.TypeError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, testTimeout)
			defer cancel()
			c, err := channel.Dial(cctx, b.dial(t), channel.Config{Static: b.id.Static, ServerPub: tt.key})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, m := range []protocol.Message{&protocol.Hello{Software: "test"}, req} {
				if err := c.WriteMessage(encode(t, m)); err != nil {
					t.Fatal(err)
				}
			}
			for i, want := range tt.types {
				raw, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("ReadMessage() %d = %v", i, err)
				}
				m, err := protocol.Decode(raw)
				if err != nil {
					t.Fatal(err)
				}
				if m.Type() != want {
					t.Fatalf("message %d from the server = %v, want %v", i, m.Type(), want)
				}
				if k, ok := m.(*protocol.ServerKeys); ok && !reflect.DeepEqual(k.Keys, [][]byte{k2, k1}) {
					t.Errorf("ServerKeys = %x, want [K2 K1]", k.Keys)
				}
				if e, ok := m.(*protocol.Error); ok && e.Code != protocol.CodeCertificateNeeded {
					t.Errorf("Error = %v, want certificate needed", e)
				}
			}
		})
	}
}
