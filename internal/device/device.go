// Package device is the device's firmware. Controller (controller.go,
// flows.go) is the state machine a person or a script drives: it waits
// for a card in the reader, offers the services on the display (sign in,
// buy by reference or a purchase pushed to the card, purse load and an
// offline payment, balance, log, e-goods, PIN change and unblock), reads
// the holder's keys, checks the power manager before card writes and
// transactions, prints receipts and takes fingers from the sensor, and
// settles a transaction a pulled card or a dropped link interrupted
// (docs/device.md).
//
// Below it are the exchanges with the server, as plain functions the CLI
// also uses. Authenticate opens the secure channel to the server with the
// pinned server key, asks for a challenge for the card, has the card sign
// it (after an offline PIN or biometric check on the card, or with an
// online PIN encrypted for the server), and returns the server's verdict.
// Memory keeps the device's own memory (identity key, pinned server keys,
// server address) in an nvm file, and Authenticate follows a rotation of
// the server's static key: it dials the newest pinned key, falls back to
// the older ones (AuthOptions.Redial), and pins the keys a server sends in
// a protocol.ServerKeys message in one atomic update (AuthOptions.Memory).
//
// Buy (buy.go) approves a purchase over the same channel: it fetches the
// transaction the server offers (by the reference the holder typed, or
// pushed to the card), has the holder confirm it, then verifies the
// holder (BuyOptions.Verify asks for the PIN or finger only now), has the
// card sign exactly the offered bytes, and stores the e-goods the server
// delivers on the card; Load and Unload (purse.go) move e-money the same
// way. Authenticate, Buy and the purse share the channel and card helpers
// (open, ask, verifyOnCard).
//
// It imports hal (never a driver), reader (never a driver), link,
// channel, protocol, pinblock, wallet, txn and nvm; it must not import a
// concrete link, a reader or hal driver, or any server package: the
// caller wires those in.
package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"cardlink/internal/channel"
	"cardlink/internal/link"
	"cardlink/internal/pinblock"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// Software is what Authenticate announces in Hello.
const Software = "cardlink/0.1"

// ErrServerRefused wraps a failed channel handshake: the server is not the
// one the device pinned, or it refused the device (unregistered or
// revoked); the device cannot tell which, and says nothing more to it.
var ErrServerRefused = errors.New("server refused the device or is not the pinned server")

// AuthOptions say how the card holder is verified. At most one of PIN,
// OnlinePIN, Biometric and ServerBiometric may be set; with none, the card
// signs with CVM none and the server's policy decides.
type AuthOptions struct {
	// PIN is verified by the card (offline PIN) before it signs.
	PIN string
	// OnlinePIN is sent to the server in an ISO 9564 format 4 PIN block
	// under the session's key (pinblock.SessionKey), and the card signs
	// with CVM online PIN.
	OnlinePIN string
	// Biometric is a template the card matches before it signs.
	Biometric []byte
	// Checked says the card already checked PIN or Biometric in this
	// session (the caller had it verify them, as the controller does to
	// ask again after a wrong PIN): it is not presented again, which
	// saves a card write. The card still refuses to sign without it.
	Checked bool
	// ServerBiometric is a template the server matches against the one
	// its operator enrolled (where the operator enabled server-side
	// matching): the card signs with CVM none and the template travels in
	// the AuthResponse, inside the channel. The server, not the card, then
	// sees the template: prefer Biometric where the card has one enrolled.
	ServerBiometric []byte
	// Features are the protocol.Feature* bits announced in Hello.
	Features uint32
	// Rand fills PIN blocks; nil means crypto/rand.
	Rand io.Reader
	// Redial opens a new link to the server. When the handshake with the
	// newest pinned server key fails (the server refused it, or no longer
	// holds that key), Authenticate calls Redial once for each other
	// pinned key, in order, and tries that key on the new link; it closes
	// the links it opened. Nil means only the newest key is tried.
	Redial func(ctx context.Context) (link.Link, error)
	// Memory, when set, is where a server key update (a ServerKeys
	// message during a rotation of the server key) is pinned, atomically,
	// before the authentication goes on; a failure to store it fails the
	// authentication. Nil leaves pinning to the caller (Result.ServerKeys).
	Memory *Memory
}

func (o *AuthOptions) validate() error {
	n := 0
	for _, set := range []bool{o.PIN != "", o.OnlinePIN != "", o.Biometric != nil, o.ServerBiometric != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("more than one holder verification method given")
	}
	return nil
}

// Result is the outcome of one authentication.
type Result struct {
	CardNumber string
	Counter    uint32        // the card's counter in the signature sent
	Code       protocol.Code // the server's verdict: CodeOK when authenticated
	CVM        txn.CVM       // with CodeOK, the method the server accepted
	TriesLeft  int           // with CodePINIncorrect, online PIN tries left
	SignedCVM  txn.CVM       // the method the card signed
	// Accepted are the methods the server's challenge said it accepts.
	// When the holder was not verified by one of them, the card does not
	// sign: Code is CodeCVMNotAccepted and Counter 0.
	Accepted protocol.CVMSet
	// ServerKey is the pinned server key the channel was made with.
	ServerKey []byte
	// ServerKeys, when not nil, are the server keys the server told the
	// device to pin (newest first) during a rotation; already stored when
	// AuthOptions.Memory was set.
	ServerKeys [][]byte
}

// method is how the holder is verified for opts, as the server's policy
// (the challenge's accepted methods) sees it. For ServerBiometric the card
// itself signs CVM none.
func method(opts AuthOptions) txn.CVM {
	switch {
	case opts.PIN != "":
		return txn.CVMOfflinePIN
	case opts.OnlinePIN != "":
		return txn.CVMOnlinePIN
	case opts.Biometric != nil, opts.ServerBiometric != nil:
		return txn.CVMBiometric
	}
	return txn.CVMNone
}

// OK reports whether the server authenticated the holder.
func (r Result) OK() bool { return r.Code == protocol.CodeOK }

// Authenticate runs one authentication of the card over l, which the
// caller opened to the server and closes afterwards. ctx bounds the whole
// exchange (l is closed when ctx ends, unless it has deadlines).
//
// The channel is made with the newest pinned server key (id.ServerKeys[0]);
// if that handshake fails and opts.Redial is set, with each older pinned
// key in turn over a new link. When the server answers with a ServerKeys
// update (it rotated its key and the device used an older one), the device
// checks that the update holds the key the channel was made with, pins the
// new list in opts.Memory and reports it in Result.ServerKeys.
//
// It returns a Result whenever the server answered with an AuthResult,
// whatever its code; a refusal with a protocol Error message is returned as
// a *protocol.Error (errors.As), a failed handshake (with every key tried)
// wraps ErrServerRefused and channel.ErrHandshake (unless it ran out of
// time: then it wraps ctx's error or the link's timeout), and a card that
// refuses returns the card's error (a wrong offline PIN is a
// *iso7816.PINError).
func Authenticate(ctx context.Context, l link.Link, id Identity, card *wallet.Client, opts AuthOptions) (res Result, err error) {
	if err := id.Validate(); err != nil {
		return Result{}, fmt.Errorf("authenticating: %w", err)
	}
	// Read the card and verify the holder on the card before dialing: a
	// wrong PIN costs no airtime.
	info, err := prepareAuth(ctx, card, opts)
	if err != nil {
		return Result{}, fmt.Errorf("authenticating: %w", err)
	}
	defer forgetUnused(ctx, card, opts, func() bool { return res.Counter == 0 })
	s, err := open(ctx, l, id, opts)
	if err != nil {
		return Result{}, fmt.Errorf("authenticating: %w", err)
	}
	defer s.Close()
	if res, err = s.authenticate(ctx, info, card, opts); err != nil {
		return res, fmt.Errorf("authenticating: %w", err)
	}
	return res, nil
}

// prepareAuth checks opts, reads the card and verifies the holder on it.
func prepareAuth(ctx context.Context, card *wallet.Client, opts AuthOptions) (wallet.Info, error) {
	if err := opts.validate(); err != nil {
		return wallet.Info{}, err
	}
	info, err := cardInfo(ctx, card)
	if err != nil {
		return wallet.Info{}, err
	}
	return info, verifyOnCard(ctx, card, opts)
}

// cardInfo reads the card and checks that it is personalized.
func cardInfo(ctx context.Context, card *wallet.Client) (wallet.Info, error) {
	info, err := card.Info(ctx)
	if err != nil {
		return wallet.Info{}, err
	}
	if info.Certificate == nil || info.CardNumber == "" {
		return wallet.Info{}, errors.New("card is not personalized")
	}
	return info, nil
}

// verifyOnCard verifies the holder on the card, for an offline PIN or a
// biometric in opts; else it does nothing.
func verifyOnCard(ctx context.Context, card *wallet.Client, opts AuthOptions) error {
	switch {
	case opts.Checked:
		return nil
	case opts.PIN != "":
		return card.VerifyPIN(ctx, opts.PIN)
	case opts.Biometric != nil:
		return card.VerifyBiometric(ctx, opts.Biometric)
	}
	return nil
}

// forgetUnused, deferred after verifyOnCard, forgets the holder's
// verification on the card when unused reports that no signature
// consumed it, so that it cannot cover a later signature. Best effort; a
// card reset forgets it too.
func forgetUnused(ctx context.Context, card *wallet.Client, opts AuthOptions, unused func() bool) {
	if (opts.PIN != "" || opts.Biometric != nil) && unused() {
		card.ResetVerification(context.WithoutCancel(ctx))
	}
}

// dial makes the channel over l with the newest pinned server key, then,
// if the server refuses it and opts.Redial is set, over new links with the
// older keys. It returns the channel, the key it was made with, the link
// the channel runs over (l or one Redial opened), and release, which
// closes the links dial opened (never l): call it when the conversation
// is over. While dial runs, ctx's end closes the link in use.
func dial(ctx context.Context, l link.Link, id Identity, opts AuthOptions) (*channel.Conn, []byte, link.Link, func(), error) {
	var opened []link.Link
	release := func() {
		for _, o := range opened {
			o.Close()
		}
	}
	var err error // the last handshake's
	tried := 0
	for i, pub := range id.ServerKeys {
		cur := l
		if i > 0 {
			if opts.Redial == nil {
				break
			}
			nl, rerr := opts.Redial(ctx)
			if rerr != nil {
				err = fmt.Errorf("%w; connecting again for the next pinned key: %v", err, rerr)
				break
			}
			cur = nl
			opened = append(opened, nl)
		}
		stop := context.AfterFunc(ctx, func() { cur.Close() })
		tried++
		var conn *channel.Conn
		conn, err = channel.Dial(ctx, cur, channel.Config{Static: id.Static, ServerPub: pub, Rand: opts.Rand})
		stop()
		if err == nil && ctx.Err() == nil {
			return conn, pub, cur, release, nil
		}
		var te interface{ Timeout() bool }
		switch {
		case ctx.Err() != nil:
			release()
			if err == nil {
				err = errors.New("link closed")
			}
			return nil, nil, nil, nil, fmt.Errorf("%w (%w)", ctx.Err(), err)
		case errors.As(err, &te) && te.Timeout():
			release()
			return nil, nil, nil, nil, fmt.Errorf("server did not answer in time: %w", err)
		}
	}
	release()
	if tried > 1 {
		return nil, nil, nil, nil, fmt.Errorf("%w (%d pinned keys tried): %w", ErrServerRefused, tried, err)
	}
	return nil, nil, nil, nil, fmt.Errorf("%w: %w", ErrServerRefused, err)
}

// session is one conversation over an established channel.
type session struct {
	conn     *channel.Conn
	mem      *Memory  // where a ServerKeys update is pinned; may be nil
	received int      // messages received so far
	newKeys  [][]byte // the ServerKeys update, if the server sent one
}

func (s *session) send(m protocol.Message) error {
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	if err := s.conn.WriteMessage(b); err != nil {
		return fmt.Errorf("sending %v: %w", m.Type(), err)
	}
	return nil
}

// receive reads the next message; a protocol Error comes back as the
// error. A ServerKeys update, allowed only as the server's first message,
// is pinned and skipped.
func (s *session) receive() (protocol.Message, error) {
	m, err := s.receiveOne()
	if err != nil {
		return nil, err
	}
	k, ok := m.(*protocol.ServerKeys)
	if !ok {
		return m, nil
	}
	if s.received > 1 {
		return nil, errors.New("receiving: ServerKeys after the server's first message")
	}
	if err := s.pin(k.Keys); err != nil {
		return nil, err
	}
	return s.receive()
}

// pin checks a ServerKeys update and stores it.
func (s *session) pin(keys [][]byte) error {
	used := s.conn.PeerStatic()
	if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, used) }) {
		// The server is authentic (the channel proves it) but wrong: a
		// list without the key that works would strand the device.
		return errors.New("receiving: the server's key update leaves out the key the device used; keeping the pinned keys")
	}
	if s.mem != nil {
		if err := s.mem.SetServerKeys(keys); err != nil {
			return err
		}
	}
	s.newKeys = keys
	return nil
}

// receiveOne reads and decodes the next message.
func (s *session) receiveOne() (protocol.Message, error) {
	s.received++
	b, err := s.conn.ReadMessage()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the server hung up mid-exchange
	}
	if err != nil {
		return nil, fmt.Errorf("receiving: %w", err)
	}
	m, err := protocol.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("receiving: %w", err)
	}
	if e, ok := m.(*protocol.Error); ok {
		return nil, e
	}
	return m, nil
}

// ask sends req and returns the server's answer. When the server asks
// for the card's certificate (CodeCertificateNeeded) and addCert puts it
// into req (it reports false when it already did), it sends req again.
func (s *session) ask(req protocol.Message, addCert func() bool) (protocol.Message, error) {
	for {
		if err := s.send(req); err != nil {
			return nil, err
		}
		m, err := s.receive()
		var perr *protocol.Error
		if errors.As(err, &perr) && perr.Code == protocol.CodeCertificateNeeded && addCert() {
			continue
		}
		return m, err
	}
}

// pinBlock encrypts the online PIN of opts for card under the session's
// key.
func (s *session) pinBlock(opts AuthOptions, card string) ([]byte, error) {
	block, err := pinblock.Encrypt(pinblock.SessionKey(s.conn.HandshakeHash()), opts.OnlinePIN, card, opts.Rand)
	if err != nil {
		return nil, err
	}
	return block[:], nil
}

func (s *session) authenticate(ctx context.Context, info wallet.Info, card *wallet.Client, opts AuthOptions) (Result, error) {
	res := Result{CardNumber: info.CardNumber}
	cert := info.Certificate.Raw
	req := &protocol.ChallengeRequest{
		CardNumber: protocol.CardNumber(info.CardNumber),
		CertID:     protocol.CertID(cert),
		Purpose:    txn.PurposeAuth,
	}
	m, err := s.ask(req, func() bool {
		if req.Certificate != nil {
			return false
		}
		req.Certificate = cert // once per card: the server keeps it
		return true
	})
	if err != nil {
		return res, err
	}
	ch, ok := m.(*protocol.Challenge)
	if !ok {
		return res, fmt.Errorf("receiving: %v instead of a Challenge", m.Type())
	}

	res.Accepted = ch.CVMs
	if want := method(opts); !ch.CVMs.Has(want) {
		// The card would sign, and spend a counter value, for nothing:
		// give up and say why.
		res.Code = protocol.CodeCVMNotAccepted
		return res, s.send(&protocol.Error{Code: protocol.CodeCVMNotAccepted})
	}
	resp := &protocol.AuthResponse{Challenge: ch.Challenge, Biometric: opts.ServerBiometric}
	var sig wallet.Signature
	if opts.OnlinePIN != "" {
		if resp.PINBlock, err = s.pinBlock(opts, info.CardNumber); err != nil {
			return res, err
		}
		sig, err = card.AuthenticateOnlinePIN(ctx, ch.Challenge, ch.Context)
		if err != nil {
			return res, err
		}
	} else if sig, err = card.Authenticate(ctx, ch.Challenge, ch.Context); err != nil {
		return res, err
	}
	resp.Counter, resp.CVM, resp.Signature = sig.Counter, sig.CVM, sig.Sig
	res.Counter, res.SignedCVM = sig.Counter, sig.CVM
	if err := s.send(resp); err != nil {
		return res, err
	}
	if m, err = s.receive(); err != nil {
		return res, err
	}
	r, ok := m.(*protocol.AuthResult)
	if !ok {
		return res, fmt.Errorf("receiving: %v instead of an AuthResult", m.Type())
	}
	res.Code, res.CVM, res.TriesLeft = r.Code, r.CVM, int(r.TriesLeft)
	return res, nil
}
