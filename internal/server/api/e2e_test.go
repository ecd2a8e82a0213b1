package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cardlink/internal/applet/wallet/wallettest"
	"cardlink/internal/pinblock"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/servertest"
	"cardlink/internal/store"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// TestEndToEnd runs a relying party's whole conversation over the real
// parts: a party is registered and asks for a card holder through the API,
// a wallettest card answers the auth service's challenge after an offline
// PIN, the service approves and notifies, the Notifier calls the party's
// webhook on loopback with a signature that verifies, and polling shows
// the approval.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	st := servertest.SQLite(t)
	clk := servertest.NewClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) // within wallettest's certificates
	card := wallettest.New(t, wallettest.Options{})
	servertest.PutCard(t, st, card, clk.Now())
	dev := store.Device{ID: "dev_1", StaticKey: bytes.Repeat([]byte{9}, 32), Name: "d"}
	if err := st.AddDevice(ctx, dev, clk.Now()); err != nil {
		t.Fatalf("AddDevice: %v", err)
	}

	hook := newReceiver(t, 200)
	notifier := newTestNotifier(t, NotifierConfig{Store: st, Now: clk.Now})
	svc, err := auth.New(auth.Config{Store: st, CA: card.CA, Now: clk.Now, Notify: notifier.Notify})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	sum := sha256.Sum256([]byte(operatorKey))
	srv := httptest.NewServer(New(Config{Store: st, Auth: svc, OperatorKeyHash: sum[:], Now: clk.Now, Notify: notifier.Notify}))
	defer srv.Close()
	e := &env{store: st, clock: clk, srv: srv}

	p := e.createParty(t, "shop", hook.srv.URL+"/cardlink", "offline-pin,online-pin")
	r := e.do(t, "POST", "/v1/auth-requests", p.key, `{"card":"`+card.CardNumber+`","policy":"offline-pin"}`)
	wantStatus(t, "create auth request", r, http.StatusCreated)
	created := decodeBody[authRequestView](t, r)

	// The device's side, at the service level.
	binding := make([]byte, 32)
	rand.Read(binding)
	sess, err := svc.NewSession(dev, binding)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	ch, err := svc.Challenge(ctx, sess, &protocol.ChallengeRequest{
		CardNumber:  protocol.CardNumber(card.CardNumber),
		CertID:      protocol.CertID(card.CardCert.Raw),
		Purpose:     txn.PurposeAuth,
		Certificate: card.CardCert.Raw,
	})
	if err != nil {
		t.Fatalf("Challenge: %v", err)
	}
	if err := card.Client.VerifyPIN(ctx, card.PIN); err != nil {
		t.Fatalf("VerifyPIN: %v", err)
	}
	sig, err := card.Client.Authenticate(ctx, ch.Challenge, ch.Context)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	clk.Add(time.Second)
	res, err := svc.Verify(ctx, sess, &protocol.AuthResponse{Challenge: ch.Challenge, Counter: sig.Counter, CVM: sig.CVM, Signature: sig.Sig})
	if err != nil || res.Code != protocol.CodeOK {
		t.Fatalf("Verify = %+v, %v; want CodeOK", res, err)
	}

	c := hook.next(t)
	checkSignature(t, c, p.secret, clk.Now())
	var got authRequestView
	if err := json.Unmarshal(c.body, &got); err != nil {
		t.Fatalf("webhook body %s: %v", c.body, err)
	}
	var approval struct {
		Card    string `json:"card"`
		CVM     string `json:"cvm"`
		Counter uint32 `json:"counter"`
		Device  string `json:"device"`
	}
	if err := json.Unmarshal(got.Result, &approval); err != nil {
		t.Fatalf("webhook result %s: %v", got.Result, err)
	}
	if got.ID != created.ID || got.Status != "approved" || approval.Card != card.CardNumber ||
		approval.CVM != "offline-pin" || approval.Counter != sig.Counter || approval.Device != dev.ID {
		t.Errorf("webhook body = %s, want %s approved by offline-pin on %s, counter %d", c.body, created.ID, dev.ID, sig.Counter)
	}

	polled := e.do(t, "GET", "/v1/auth-requests/"+created.ID, p.key, "")
	wantStatus(t, "poll", polled, http.StatusOK)
	if !bytes.Equal(bytes.TrimSpace(polled.body), c.body) {
		t.Errorf("poll = %s, want the webhook's body %s", strings.TrimSpace(string(polled.body)), c.body)
	}
}

// TestEndToEndCardCredentials: the operator sets a card's online PIN and
// enrolls its biometric through the API; a wallettest card then
// authenticates with each through an auth service that matches biometrics
// on the server, and the relying party sees how.
func TestEndToEndCardCredentials(t *testing.T) {
	ctx := context.Background()
	st := servertest.SQLite(t)
	clk := servertest.NewClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	card := wallettest.New(t, wallettest.Options{})
	servertest.PutCard(t, st, card, clk.Now())
	dev := store.Device{ID: "dev_1", StaticKey: bytes.Repeat([]byte{9}, 32), Name: "d"}
	if err := st.AddDevice(ctx, dev, clk.Now()); err != nil {
		t.Fatalf("AddDevice: %v", err)
	}
	svc, err := auth.New(auth.Config{Store: st, CA: card.CA, Now: clk.Now, ServerBiometric: true})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	sum := sha256.Sum256([]byte(operatorKey))
	srv := httptest.NewServer(New(Config{Store: st, Auth: svc, OperatorKeyHash: sum[:], Now: clk.Now}))
	defer srv.Close()
	e := &env{store: st, clock: clk, srv: srv}

	const pin = "5791"
	wantStatus(t, "PUT online-pin", e.do(t, "PUT", "/v1/cards/"+card.CardNumber+"/online-pin", operatorKey, `{"pin":"`+pin+`"}`), http.StatusNoContent)
	tmpl := base64.StdEncoding.EncodeToString(card.BioTemplate)
	wantStatus(t, "PUT biometric", e.do(t, "PUT", "/v1/cards/"+card.CardNumber+"/biometric", operatorKey, `{"template":"`+tmpl+`","threshold":40}`), http.StatusNoContent)
	p := e.createParty(t, "shop", "", "online-pin,biometric")

	tests := []struct {
		name      string
		online    bool   // online PIN, else a template for the server
		wantCVM   string // in the result
		matchedBy string
	}{
		{"online PIN", true, "online-pin", ""},
		{"server-matched biometric", false, "biometric", "server"},
	}
	for _, tt := range tests {
		r := e.do(t, "POST", "/v1/auth-requests", p.key, `{"card":"`+card.CardNumber+`"}`)
		wantStatus(t, tt.name+": create auth request", r, http.StatusCreated)
		created := decodeBody[authRequestView](t, r)

		binding := make([]byte, 32)
		rand.Read(binding)
		sess, err := svc.NewSession(dev, binding)
		if err != nil {
			t.Fatalf("NewSession: %v", err)
		}
		ch, err := svc.Challenge(ctx, sess, &protocol.ChallengeRequest{
			CardNumber: protocol.CardNumber(card.CardNumber), CertID: protocol.CertID(card.CardCert.Raw),
			Purpose: txn.PurposeAuth, Certificate: card.CardCert.Raw,
		})
		if err != nil {
			t.Fatalf("Challenge: %v", err)
		}
		resp := &protocol.AuthResponse{Challenge: ch.Challenge}
		var sig wallet.Signature
		if tt.online {
			sig, err = card.Client.AuthenticateOnlinePIN(ctx, ch.Challenge, ch.Context)
			block, berr := pinblock.Encrypt(pinblock.SessionKey(ch.Context), pin, card.CardNumber, nil)
			if berr != nil {
				t.Fatalf("pinblock.Encrypt: %v", berr)
			}
			resp.PINBlock = block[:]
		} else {
			sig, err = card.Client.Authenticate(ctx, ch.Challenge, ch.Context) // no verification on the card: CVM none
			resp.Biometric = wallettest.Sample(card.BioTemplate, 25)
		}
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		resp.Counter, resp.CVM, resp.Signature = sig.Counter, sig.CVM, sig.Sig
		res, err := svc.Verify(ctx, sess, resp)
		if err != nil || res.Code != protocol.CodeOK {
			t.Fatalf("%s: Verify = %+v, %v; want CodeOK", tt.name, res, err)
		}

		polled := decodeBody[authRequestView](t, e.do(t, "GET", "/v1/auth-requests/"+created.ID, p.key, ""))
		var approval struct {
			CVM       string `json:"cvm"`
			MatchedBy string `json:"matched_by"`
		}
		if err := json.Unmarshal(polled.Result, &approval); err != nil {
			t.Fatalf("%s: result %s: %v", tt.name, polled.Result, err)
		}
		if polled.Status != "approved" || approval.CVM != tt.wantCVM || approval.MatchedBy != tt.matchedBy {
			t.Errorf("%s: poll = %s %s, want approved with cvm %q, matched_by %q", tt.name, polled.Status, polled.Result, tt.wantCVM, tt.matchedBy)
		}
	}
}
