package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cardlink/internal/channel"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	_ "cardlink/internal/store/postgres"
	_ "cardlink/internal/store/sqlite"
	"cardlink/internal/txn"
)

// envPostgres names the PostgreSQL database for tests, as in the store's
// own tests.
const envPostgres = "CARDLINK_TEST_POSTGRES"

// TestTwoInstances runs two server instances (two stores and two auth
// services) on one database: a challenge issued by one is answered at the
// other, and only once. The device listener keeps a session on one
// instance, so this is checked at the service level.
func TestTwoInstances(t *testing.T) {
	backends := []struct {
		name string
		uri  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "shared.db") }},
		{"postgres", func(t *testing.T) string {
			dsn := os.Getenv(envPostgres)
			if dsn == "" {
				t.Skipf("set %s to a PostgreSQL URI (postgres://…) to run", envPostgres)
			}
			return dsn
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			uri := be.uri(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			card := servertest.Card(t)
			var svc [2]*auth.Service
			var st [2]store.Store
			for i := range svc {
				s, err := store.Open(ctx, uri)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				st[i] = s
				if svc[i], err = auth.New(auth.Config{Store: s, CA: card.CA}); err != nil {
					t.Fatal(err)
				}
			}
			k, err := channel.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			idb := make([]byte, 8)
			rand.Read(idb)
			dev := store.Device{ID: "dev-" + hex.EncodeToString(idb), StaticKey: k.Public, Name: "two instances"}
			if err := st[0].AddDevice(ctx, dev, time.Now()); err != nil {
				t.Fatal(err)
			}
			if dev, err = st[1].DeviceByKey(ctx, k.Public); err != nil {
				t.Fatalf("instance B does not see the device A registered: %v", err)
			}
			binding := make([]byte, 32)
			rand.Read(binding)
			sess, err := svc[0].NewSession(dev, binding)
			if err != nil {
				t.Fatal(err)
			}
			der := card.CardCert.Raw
			req := &protocol.ChallengeRequest{CardNumber: protocol.CardNumber(card.CardNumber), CertID: protocol.CertID(der), Purpose: txn.PurposeAuth, Certificate: der}
			ch, err := svc[0].Challenge(ctx, sess, req)
			if err != nil {
				t.Fatalf("Challenge() at A = %v", err)
			}
			if err := card.Client.VerifyPIN(ctx, card.PIN); err != nil {
				t.Fatal(err)
			}
			sig, err := card.Client.Authenticate(ctx, ch.Challenge, ch.Context)
			if err != nil {
				t.Fatal(err)
			}
			resp := &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig}
			tests := []struct {
				name string
				at   int
				want protocol.Code
			}{
				{"answered at B", 1, protocol.CodeOK},
				{"replayed at A", 0, protocol.CodeChallengeUnknown},
				{"replayed at B", 1, protocol.CodeChallengeUnknown},
			}
			for _, tt := range tests {
				r, err := svc[tt.at].Verify(ctx, sess, resp)
				if err != nil {
					t.Fatalf("%s: Verify() error = %v", tt.name, err)
				}
				if r.Code != tt.want {
					t.Errorf("%s: Verify() = %v, want %v", tt.name, r.Code, tt.want)
				}
			}
			c, err := st[0].Card(ctx, card.CardNumber)
			if err != nil || c.Counter != sig.Counter {
				t.Errorf("instance A's store: card counter = %d, %v; want %d", c.Counter, err, sig.Counter)
			}
		})
	}
}
