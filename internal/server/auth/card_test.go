package auth

import (
	"testing"

	"cardlink/internal/protocol"
	"cardlink/internal/txn"
)

// TestCheckCard runs the card checks Challenge and the purchase service
// share.
func TestCheckCard(t *testing.T) {
	r := newRig(t, nil)
	sess := r.session()
	env := r.env
	cert := env.CardCert.Raw
	other := r.secondCard("4000000000000002")

	steps := []struct {
		name   string
		number string
		cert   []byte // sent with the request
		certID []byte
		revoke bool // revoke the device first
		want   protocol.Code
	}{
		{"unknown card, no certificate", env.CardNumber, nil, protocol.CertID(cert), false, protocol.CodeCertificateNeeded},
		{"unknown card, with its certificate", env.CardNumber, cert, protocol.CertID(cert), false, protocol.CodeOK},
		{"known card by id", env.CardNumber, nil, protocol.CertID(cert), false, protocol.CodeOK},
		{"another card's certificate", env.CardNumber, other.CardCert.Raw, protocol.CertID(other.CardCert.Raw), false, protocol.CodeCertificateInvalid},
		{"device revoked", env.CardNumber, nil, protocol.CertID(cert), true, protocol.CodeDeviceRevoked},
	}
	for _, s := range steps {
		if s.revoke {
			if err := r.st.RevokeDevice(r.ctx, r.dev.ID, r.clock.Now()); err != nil {
				t.Fatal(err)
			}
		}
		card, code, err := r.svc.CheckCard(r.ctx, sess, s.number, s.certID, s.cert)
		if err != nil || code != s.want {
			t.Errorf("%s: CheckCard() = %v, %v; want %v", s.name, code, err, s.want)
		}
		if code == protocol.CodeOK && card.Number != s.number {
			t.Errorf("%s: CheckCard() card = %q, want %q", s.name, card.Number, s.number)
		}
	}
}

// TestVerifySignature verifies card signatures over transactions, as the
// purchase service does: over the server's own payload, with the counter
// growing.
func TestVerifySignature(t *testing.T) {
	r := newRig(t, nil)
	sess := r.session()
	env := r.env
	if _, code, err := r.svc.CheckCard(r.ctx, sess, env.CardNumber, protocol.CertID(env.CardCert.Raw), env.CardCert.Raw); err != nil || code != protocol.CodeOK {
		t.Fatalf("CheckCard() = %v, %v", code, err)
	}
	offer, err := env.Transaction(1234, 1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := env.Transaction(1, 1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	sign := func(b []byte) (uint32, txn.CVM, []byte) {
		t.Helper()
		if err := env.Client.VerifyPIN(r.ctx, env.PIN); err != nil {
			t.Fatal(err)
		}
		s, err := env.Client.SignTransaction(r.ctx, b, false)
		if err != nil {
			t.Fatal(err)
		}
		return s.Counter, s.CVM, s.Sig
	}
	verify := func(counter uint32, cvm txn.CVM, sig []byte, accepted protocol.CVMSet) Verdict {
		t.Helper()
		env := txn.Envelope{Purpose: txn.PurposeTransaction, CardNumber: env.CardNumber, Counter: counter, CVM: cvm, Payload: offer}
		v, err := r.svc.VerifySignature(r.ctx, sess, &env, sig, nil, nil, accepted)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	c, cvm, sig := sign(forged) // the device had the card sign something else
	if v := verify(c, cvm, sig, DefaultCVMs); v.Code != protocol.CodeSignatureInvalid {
		t.Errorf("VerifySignature(signature over another transaction) = %+v, want CodeSignatureInvalid", v)
	}
	c, cvm, sig = sign(offer)
	if v := verify(c, cvm, sig, protocol.CVMs(txn.CVMOnlinePIN)); v.Code != protocol.CodeCVMNotAccepted {
		t.Errorf("VerifySignature(offline PIN, only online accepted) = %+v, want CodeCVMNotAccepted", v)
	}
	c, cvm, sig = sign(offer)
	if v := verify(c, cvm, sig, DefaultCVMs); v.Code != protocol.CodeOK || v.CVM != txn.CVMOfflinePIN || v.MatchedBy != "" {
		t.Errorf("VerifySignature(good) = %+v, want CodeOK, offline PIN", v)
	}
	if v := verify(c, cvm, sig, DefaultCVMs); v.Code != protocol.CodeCounterNotIncreasing {
		t.Errorf("VerifySignature(same counter again) = %+v, want CodeCounterNotIncreasing", v)
	}
	if got := r.svc.DefaultCVMs(); got != DefaultCVMs {
		t.Errorf("DefaultCVMs() = %v, want %v", got, DefaultCVMs)
	}
}

// TestVerifySignatureDeferred: with the card's own holder verification an
// accepted signature leaves the counter to the caller (CounterDeferred);
// a refusal after the signature verified advances it all the same; a
// counter that did not grow is refused at once.
func TestVerifySignatureDeferred(t *testing.T) {
	r := newRig(t, nil)
	sess := r.session()
	env := r.env
	if _, code, err := r.svc.CheckCard(r.ctx, sess, env.CardNumber, protocol.CertID(env.CardCert.Raw), env.CardCert.Raw); err != nil || code != protocol.CodeOK {
		t.Fatalf("CheckCard() = %v, %v", code, err)
	}
	offer, err := env.Transaction(1234, 1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	stored := func() uint32 {
		t.Helper()
		c, err := r.st.Card(r.ctx, env.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		return c.Counter
	}
	steps := []struct {
		name         string
		sign         bool // a new signature; else the last one again
		accepted     protocol.CVMSet
		want         protocol.Code
		wantDeferred bool
		wantAdvanced bool // the stored counter is the signature's afterwards
	}{
		{"accepted", true, DefaultCVMs, protocol.CodeOK, true, false},
		{"CVM refused", true, protocol.CVMs(txn.CVMOnlinePIN), protocol.CodeCVMNotAccepted, false, true},
		{"counter used", false, DefaultCVMs, protocol.CodeCounterNotIncreasing, false, true},
	}
	var s struct {
		counter uint32
		cvm     txn.CVM
		sig     []byte
	}
	for _, st := range steps {
		if st.sign {
			if err := env.Client.VerifyPIN(r.ctx, env.PIN); err != nil {
				t.Fatal(err)
			}
			sig, err := env.Client.SignTransaction(r.ctx, offer, false)
			if err != nil {
				t.Fatal(err)
			}
			s.counter, s.cvm, s.sig = sig.Counter, sig.CVM, sig.Sig
		}
		before := stored()
		e := txn.Envelope{Purpose: txn.PurposeTransaction, CardNumber: env.CardNumber, Counter: s.counter, CVM: s.cvm, Payload: offer}
		v, err := r.svc.VerifySignatureDeferred(r.ctx, sess, &e, s.sig, nil, nil, st.accepted)
		if err != nil || v.Code != st.want || v.CounterDeferred != st.wantDeferred {
			t.Errorf("%s: VerifySignatureDeferred() = %+v, %v; want %v, CounterDeferred %v", st.name, v, err, st.want, st.wantDeferred)
		}
		switch got := stored(); {
		case st.wantAdvanced && got != s.counter:
			t.Errorf("%s: stored counter = %d, want %d", st.name, got, s.counter)
		case !st.wantAdvanced && got != before:
			t.Errorf("%s: stored counter = %d, want %d (left to the caller)", st.name, got, before)
		}
	}
}
