package server_test

import (
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/device"
	"cardlink/internal/server"
	"cardlink/internal/store"
)

// BenchmarkAuthenticate is one whole authentication over loopback TCP:
// connect, Noise handshake, Hello, challenge, the card's offline PIN check
// and signature (the in-process virtual card), verification against a
// SQLite store, and the result. The card is known to the server.
func BenchmarkAuthenticate(b *testing.B) { benchAuthenticate(b, openSQLite(b)) }

// BenchmarkAuthenticatePostgres is BenchmarkAuthenticate on PostgreSQL
// (CARDLINK_TEST_POSTGRES; skipped when unset). Benchmark against a server
// with fsync on: scripts/postgres.sh start, without --fsync-off.
func BenchmarkAuthenticatePostgres(b *testing.B) { benchAuthenticate(b, backends()[1].open(b)) }

func benchAuthenticate(b *testing.B, st store.Store) {
	bd := newBed(b, st, server.Config{})
	opts := device.AuthOptions{PIN: wallettest.PIN}
	if res, err := bd.authenticate(b, bd.id, opts); err != nil || !res.OK() {
		b.Fatalf("Authenticate() = %+v, %v", res, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := bd.authenticate(b, bd.id, opts)
		if err != nil || !res.OK() {
			b.Fatalf("Authenticate() = %+v, %v", res, err)
		}
	}
}
