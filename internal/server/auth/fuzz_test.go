package auth

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/pinblock"
	"cardlink/internal/protocol"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// FuzzVerify feeds AuthResponse messages, as a device could send them, to
// Verify on a real SQLite store, each answering a fresh challenge of the
// session: Verify never panics, never fails internally, and never
// approves, since only the card can sign the fresh challenge and the
// fuzzer is not the card. Inputs that are not an AuthResponse are skipped
// (protocol has its own fuzz targets).
func FuzzVerify(f *testing.F) {
	ctx := context.Background()
	env := wallettest.New(f, wallettest.Options{})
	st := servertest.OpenSQLite(f, filepath.Join(f.TempDir(), "auth.db"))
	dev := store.Device{ID: "dev-1", StaticKey: make([]byte, 32)}
	if err := st.AddDevice(ctx, dev, testStart); err != nil {
		f.Fatalf("AddDevice = %v", err)
	}
	// Server-side biometric matching on, with the card's template
	// enrolled: a template in the response must not help either.
	svc, err := New(Config{Store: st, CA: env.CA, Now: func() time.Time { return testStart }, ServerBiometric: true})
	if err != nil {
		f.Fatalf("New = %v", err)
	}
	binding := make([]byte, 32)
	sess, err := svc.NewSession(dev, binding)
	if err != nil {
		f.Fatalf("NewSession = %v", err)
	}
	ch, err := svc.Challenge(ctx, sess, challengeRequest(env, true))
	if err != nil {
		f.Fatalf("Challenge = %v", err)
	}
	// Seeds: real answers to a challenge the fuzz function then replaces.
	if err := env.Client.VerifyPIN(ctx, env.PIN); err != nil {
		f.Fatalf("VerifyPIN = %v", err)
	}
	sig, err := env.Client.Authenticate(ctx, ch.Challenge, ch.Context)
	if err != nil {
		f.Fatalf("Authenticate = %v", err)
	}
	offline := &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig}
	sig, err = env.Client.AuthenticateOnlinePIN(ctx, ch.Challenge, ch.Context)
	if err != nil {
		f.Fatalf("AuthenticateOnlinePIN = %v", err)
	}
	block, err := pinblock.Encrypt(pinblock.SessionKey(binding), env.PIN, env.CardNumber, nil)
	if err != nil {
		f.Fatalf("Encrypt = %v", err)
	}
	online := &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: txn.CVMOnlinePIN, Signature: sig.Sig, PINBlock: block[:]}
	if err := st.PutCard(ctx, store.Card{Number: env.CardNumber, Cert: env.CardCert.Raw, IssuerKeyID: env.CA.SubjectKeyId}, testStart); err != nil {
		f.Fatalf("PutCard = %v", err)
	}
	enrolled, err := NewBiometric(env.CardNumber, env.BioTemplate, DefaultBiometricThreshold, MaxBiometricTries)
	if err != nil {
		f.Fatalf("NewBiometric = %v", err)
	}
	if err := st.SetBiometric(ctx, enrolled); err != nil {
		f.Fatalf("SetBiometric = %v", err)
	}
	bio := *offline
	bio.CVM, bio.Biometric = txn.CVMBiometric, wallettest.Template()
	serverBio := *offline
	serverBio.CVM, serverBio.Biometric = txn.CVMNone, wallettest.Sample(env.BioTemplate, 3)
	for _, m := range []*protocol.AuthResponse{offline, online, &bio, &serverBio} {
		b, err := protocol.Encode(m)
		if err != nil {
			f.Fatalf("Encode = %v", err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := protocol.Decode(msg)
		if err != nil {
			return
		}
		resp, ok := m.(*protocol.AuthResponse)
		if !ok {
			return
		}
		ch, err := svc.Challenge(ctx, sess, challengeRequest(env, false))
		if err != nil {
			t.Fatalf("Challenge = %v", err)
		}
		resp.Challenge = ch.Challenge
		res, err := svc.Verify(ctx, sess, resp)
		if err != nil {
			t.Fatalf("Verify = %v, want an AuthResult", err)
		}
		if res.Code == protocol.CodeOK {
			t.Fatalf("Verify(%x) approved a response the card did not sign", msg)
		}
	})
}
