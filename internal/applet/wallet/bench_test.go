package wallet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/iso7816"
)

// The benchmarks run whole commands through the host client, the virtual
// reader, the card OS and an in-memory NVM.

func BenchmarkVerify(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyBiometric(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	sample := wallettest.Sample(env.BioTemplate, 20)
	b.ReportAllocs()
	for b.Loop() {
		if err := env.Client.VerifyBiometric(ctx, sample); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChangePIN(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	pins := [2]string{wallettest.PIN, "8642"}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if err := env.Client.ChangePIN(ctx, pins[i%2], pins[(i+1)%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkInternalAuthenticate(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	challenge := make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Client.Authenticate(ctx, challenge, []byte("session")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignTransaction(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	tb := encode(b, env.Transaction(1999, 1))
	b.ReportAllocs()
	for b.Loop() {
		if err := env.Client.VerifyPIN(ctx, wallettest.PIN); err != nil {
			b.Fatal(err)
		}
		if _, err := env.Client.SignTransaction(ctx, tb, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignTransactionOnlinePIN(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	tb := encode(b, env.Transaction(1999, 1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Client.SignTransaction(ctx, tb, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadRecord(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	if _, err := env.Client.SignTransaction(ctx, encode(b, env.Transaction(5, 1)), true); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Client.ReadRecord(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetData(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Client.GetData(ctx, iso7816.Tag(0x9F36)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCertificate(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Client.Certificate(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInfo(b *testing.B) {
	env := wallettest.New(b, wallettest.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Client.Info(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPersonalize covers a whole issuance: GENERATE KEY, certificate,
// PUT DATA and END PERSONALIZATION (with the test issuer's key generation).
func BenchmarkPersonalize(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		wallettest.New(b, wallettest.Options{})
	}
}

// BenchmarkRefECDSASign is the floor under every signing command: one
// ECDSA P-256 signature over a SHA-256 digest with the standard library,
// measured in the same run. InternalAuthenticate / RefECDSASign is the
// cost of the card OS, the APDUs, the NVM commit and the envelope on top.
func BenchmarkRefECDSASign(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("cardlink/sig/v1 reference"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}
