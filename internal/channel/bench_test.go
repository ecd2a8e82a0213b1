package channel

import (
	"bytes"
	"testing"

	"github.com/flynn/noise"

	"cardlink/internal/link/linktest"
)

// BenchmarkHandshake is one complete IK handshake, both sides, over an
// in-memory pipe.
func BenchmarkHandshake(b *testing.B) {
	b.ReportAllocs()
	devKey, srvKey := mustKey(b), mustKey(b)
	cfg := Config{Static: devKey, ServerPub: srvKey.Public}
	scfg := ServerConfig{Keys: []noise.DHKey{srvKey}, Authorize: func([]byte) error { return nil }}
	for b.Loop() {
		x, y := linktest.Pipe(linktest.Config{})
		dev, srv := handshake(b, x, y, cfg, scfg)
		if dev.err != nil || srv.err != nil {
			b.Fatal(dev.err, srv.err)
		}
	}
}

// BenchmarkMessage writes and reads one 200-byte message (about an
// authentication response).
func BenchmarkMessage(b *testing.B) {
	b.ReportAllocs()
	dev, srv := pair(b)
	var wire bytes.Buffer
	dev.rw = rw{nil, &wire}
	srv.rw = rw{&wire, nil}
	msg := make([]byte, 200)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := dev.WriteMessage(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := srv.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}
