package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"cardlink/internal/link"
	"cardlink/internal/protocol"
	"cardlink/internal/reader"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// BuyOptions say which purchase to approve and how the holder is
// verified.
type BuyOptions struct {
	// AuthOptions: holder verification, features, redial and memory, as
	// for Authenticate. The card signs a transaction only after verifying
	// the holder itself (PIN, Biometric) or with an online PIN
	// (OnlinePIN): one of the three is required, and ServerBiometric is
	// refused.
	AuthOptions
	// Reference is the code the holder typed (protocol.ReferenceLen
	// digits); "" asks for a purchase pushed to the card.
	Reference string
	// Confirm shows the transaction to the holder and reports whether they
	// approve it; nil approves (headless). Called after the server's offer
	// arrived and before the holder verification on the card, with ctx
	// bounded by the offer's deadline. An error from it wrapping
	// ErrInterrupted declines the transaction on the server with the
	// error's text as the reason, so that it does not wait for its
	// deadline; any other error leaves it pending.
	Confirm func(ctx context.Context, t txn.Transaction) (bool, error)
	// Verify, when set, asks the holder for their verification after
	// Confirm approved: the holder sees what they approve before they
	// give a PIN or a finger. See VerifyFunc.
	Verify VerifyFunc
	// Resume is an approval the card signed before (BuyResult.Approval)
	// whose answer was lost. When the server offers the same transaction
	// (same ID) again, Buy sends Resume as it is and confirms, verifies
	// and signs nothing; any other offer is handled as usual. For a
	// pushed purchase (no Reference) Buy names Resume's transaction in
	// the request (OfferRequest.Paid): when nothing else is pending and
	// the card paid it, the server answers with its result again, which
	// Buy takes as PaidBefore; a result for any other transaction is
	// CodeTransactionUnknown as a *protocol.Error.
	Resume *protocol.TransactionApproval
}

// ErrInterrupted is wrapped by the error of a Confirm or Verify hook
// when the holder's session ended before they answered (the card was
// pulled out, power is failing, they cancelled or walked away): Buy and
// Load then decline the offered transaction on the server, with the
// error's text as the reason, instead of leaving it pending until its
// deadline. Any other error from a hook leaves it pending.
var ErrInterrupted = errors.New("interrupted")

// errLeave, from a Confirm hook, ends Buy without telling the server:
// the controller settling an interrupted purchase was offered another.
var errLeave = errors.New("another transaction offered; left pending")

// VerifyFunc asks the holder how they are verified, after they saw and
// confirmed t. accepted are the methods the server's offer accepts. It
// returns AuthOptions with exactly one of PIN, OnlinePIN and Biometric
// set; the card then checks it as if it had been given up front, unless
// Checked says the hook already had the card check it. ctx is bounded by
// the offer's deadline. An
// error from it wrapping ErrInterrupted declines the transaction on the
// server, as one from Confirm does.
type VerifyFunc func(ctx context.Context, t txn.Transaction, accepted protocol.CVMSet) (AuthOptions, error)

// BuyResult is the outcome of one purchase approval.
type BuyResult struct {
	CardNumber  string
	Transaction txn.Transaction // as offered and shown
	// Code is the server's verdict: CodeOK when paid; CodeHolderDeclined
	// when the holder declined; CodeCVMNotAccepted when the server's offer
	// does not accept the holder verification asked for (the card then
	// did not sign); else why the server refused the approval.
	Code      protocol.Code
	CVM       txn.CVM    // with CodeOK, the method the server accepted
	TriesLeft int        // with CodePINIncorrect, online PIN tries left
	Counter   uint32     // the card's counter in the signature sent; 0 if the card did not sign
	Goods     []txn.Item // e-goods delivered and stored on the card
	// PaidBefore, with CodeOK, says the card paid this purchase before
	// (the server's first answer was lost) and did not sign now: the
	// server answered the OfferRequest with the purchase's result again
	// and its goods were stored. Transaction is then the zero value and
	// Counter 0.
	PaidBefore bool
	// Approval is the approval the card signed, set as soon as it did,
	// whether or not it reached the server; when the link dropped before
	// the result came, give it to the next Buy for the same purchase as
	// BuyOptions.Resume.
	Approval  *protocol.TransactionApproval
	ServerKey []byte // the pinned server key the channel was made with
	// answered says the server's TransactionResult arrived (Code is
	// then its code, not the zero value).
	answered bool
	// ServerKeys are the keys a server key update told the device to pin,
	// as in Result.
	ServerKeys [][]byte
}

// OK reports whether the purchase was paid.
func (r BuyResult) OK() bool { return r.Code == protocol.CodeOK }

// Buy approves one purchase with the card over l, which the caller opened
// to the server and closes afterwards; ctx bounds the whole exchange. The
// channel is made as for Authenticate (pinned keys, Redial, Memory).
//
// The device asks for the transaction (OfferRequest with opts.Reference,
// or none for a pushed one, sending the card's certificate if the server
// asks for it), has the holder confirm what the server offered
// (opts.Confirm) — declining tells the server (Error with
// CodeHolderDeclined) and ends with Code CodeHolderDeclined — then
// verifies the holder on the card (offline PIN or biometric) and has the
// card sign exactly the offered bytes (SIGN TRANSACTION; with an online
// PIN, the card declares it and the PIN goes to the server in a PIN block
// under the session's key), sends the approval and returns the server's
// verdict. The e-goods the server delivers are stored on the card (STORE
// ITEM; one already there is a retried delivery and is fine) and listed
// in Goods. When the card paid the purchase of opts.Reference before and
// the answer was lost, the server answers the OfferRequest with that
// purchase's TransactionResult: the goods are stored as above, nothing is
// confirmed or signed, and the result has PaidBefore set. So it does for
// a pushed purchase resumed (opts.Resume) that the server paid.
//
// It returns a BuyResult whenever the server answered the approval (or
// the decline) with a TransactionResult, whatever its code. A refusal of
// the request (no such purchase, card refused…) is a *protocol.Error
// (errors.As); a handshake failure is as for Authenticate; a card that
// refuses returns the card's error (a wrong offline PIN is a
// *iso7816.PINError), and the purchase stays pending on the server until
// its deadline. A good the card refuses (it checks the issuer's signature)
// is an error returned with the result after the payment: the payment was
// made all the same, and the error says so.
func Buy(ctx context.Context, l link.Link, id Identity, card *wallet.Client, opts BuyOptions) (res BuyResult, err error) {
	if err := id.Validate(); err != nil {
		return BuyResult{}, fmt.Errorf("buying: %w", err)
	}
	info, err := prepareBuy(ctx, card, &opts)
	if err != nil {
		return BuyResult{}, fmt.Errorf("buying: %w", err)
	}
	defer func() { forgetUnused(ctx, card, opts.AuthOptions, func() bool { return res.Counter == 0 }) }()
	s, err := open(ctx, l, id, opts.AuthOptions)
	if err != nil {
		return BuyResult{}, fmt.Errorf("buying: %w", err)
	}
	defer s.Close()
	if res, err = s.buy(ctx, info, card, &opts); err != nil {
		return res, fmt.Errorf("buying: %w", err)
	}
	return res, nil
}

// prepareBuy checks opts and reads the card.
func prepareBuy(ctx context.Context, card *wallet.Client, opts *BuyOptions) (wallet.Info, error) {
	if err := opts.validate(); err != nil {
		return wallet.Info{}, err
	}
	if err := checkSigner(opts.AuthOptions, opts.Verify != nil); err != nil {
		return wallet.Info{}, err
	}
	return cardInfo(ctx, card)
}

// checkSigner checks the holder verification of a purchase or a purse
// operation, which the card signs only after verifying the holder itself
// or with an online PIN: one is needed, up front or from a Verify hook
// (deferred), not both.
func checkSigner(opts AuthOptions, deferred bool) error {
	switch {
	case opts.ServerBiometric != nil:
		return errors.New("the card signs a transaction only after verifying the holder itself or with an online PIN: server-matched biometrics cannot approve one")
	case deferred && method(opts) != txn.CVMNone:
		return errors.New("give the holder verification up front or through Verify, not both")
	case !deferred && method(opts) == txn.CVMNone:
		return errors.New("a transaction needs the holder verified: give a PIN, an online PIN or a biometric")
	}
	return nil
}

func (s *session) buy(ctx context.Context, info wallet.Info, card *wallet.Client, opts *BuyOptions) (BuyResult, error) {
	res := BuyResult{CardNumber: info.CardNumber}
	cert := info.Certificate.Raw
	req := &protocol.OfferRequest{
		Reference:  opts.Reference,
		CardNumber: protocol.CardNumber(info.CardNumber),
		CertID:     protocol.CertID(cert),
	}
	if opts.Reference == "" && opts.Resume != nil {
		req.Paid = opts.Resume.ID
	}
	m, err := s.ask(req, func() bool {
		if req.Certificate != nil {
			return false
		}
		req.Certificate = cert
		return true
	})
	if err != nil {
		return res, err
	}
	if r, ok := m.(*protocol.TransactionResult); ok && opts.Reference == "" && (opts.Resume == nil || !bytes.Equal(r.ID, opts.Resume.ID)) {
		// The result of a pushed purchase paid before, which is not
		// the one this Buy settles: as the server said before it
		// answered so, nothing is pending.
		return res, &protocol.Error{Code: protocol.CodeTransactionUnknown}
	}
	if r, ok := m.(*protocol.TransactionResult); ok {
		// Paid before: the server delivers the goods again.
		res.Code, res.CVM, res.PaidBefore = r.Code, r.CVM, r.Code == protocol.CodeOK
		res.answered = true
		if r.Code != protocol.CodeOK {
			return res, fmt.Errorf("receiving: a TransactionResult with %v instead of a TransactionOffer", r.Code)
		}
		return res, storeGoods(ctx, card, r.Goods, &res)
	}
	offer, ok := m.(*protocol.TransactionOffer)
	if !ok {
		return res, fmt.Errorf("receiving: %v instead of a TransactionOffer", m.Type())
	}
	if r := opts.Resume; r != nil {
		if t, err := txn.Parse(offer.Transaction); err == nil && bytes.Equal(r.ID, t.ID[:]) {
			// The card signed this before; the server never took it.
			res.Transaction, res.Approval, res.Counter = t, r, r.Counter
			if err := s.send(r); err != nil {
				return res, err
			}
			return s.buyResult(ctx, card, t, &res)
		}
	}
	t, code, err := s.confirmOffer(ctx, offer, &opts.AuthOptions, opts.Confirm, opts.Verify)
	res.Transaction, res.Code = t, code
	if err != nil || code != protocol.CodeOK {
		return res, err
	}

	if err := verifyOnCard(ctx, card, opts.AuthOptions); err != nil {
		return res, s.abandonCard(t, err, &res.Code)
	}
	a := &protocol.TransactionApproval{ID: t.ID[:]}
	var sig wallet.Signature
	if opts.OnlinePIN != "" {
		if a.PINBlock, err = s.pinBlock(opts.AuthOptions, info.CardNumber); err != nil {
			return res, err
		}
		sig, err = card.SignTransaction(ctx, offer.Transaction, true)
	} else {
		sig, err = card.SignTransaction(ctx, offer.Transaction, false)
	}
	if err != nil {
		return res, s.abandonCard(t, err, &res.Code)
	}
	a.Counter, a.CVM, a.Signature = sig.Counter, sig.CVM, sig.Sig
	res.Counter, res.Approval = sig.Counter, a
	if err := s.send(a); err != nil {
		return res, err
	}
	return s.buyResult(ctx, card, t, &res)
}

// buyResult reads the result of the approval of t and stores its goods.
func (s *session) buyResult(ctx context.Context, card *wallet.Client, t txn.Transaction, res *BuyResult) (BuyResult, error) {
	r, err := s.result(t)
	if err != nil {
		return *res, err
	}
	res.Code, res.CVM, res.TriesLeft, res.answered = r.Code, r.CVM, int(r.TriesLeft), true
	return *res, storeGoods(ctx, card, r.Goods, res)
}

// interrupted handles a Confirm or Verify hook that failed: when err
// wraps ErrInterrupted the device declines t on the server with err's
// text as the reason, and returns the server's code; else it leaves t
// pending and returns CodeOK.
func (s *session) interrupted(t txn.Transaction, err error) protocol.Code {
	if !errors.Is(err, ErrInterrupted) {
		return protocol.CodeOK
	}
	code, _ := s.abandon(t, err.Error())
	return code
}

// abandonCard handles a card that failed before its approval was sent:
// when it went away (reader.ErrCardRemoved), the device declines the
// offered transaction with that reason, so that the server does not keep
// it pending until its deadline, and *code becomes the server's answer.
// Any other card error (a wrong PIN) leaves the transaction pending, to
// be approved again. It returns err.
func (s *session) abandonCard(t txn.Transaction, err error, code *protocol.Code) error {
	if errors.Is(err, reader.ErrCardRemoved) {
		if c, aerr := s.abandon(t, "card removed"); aerr == nil {
			*code = c
		}
	}
	return err
}

// abandon declines the offered transaction t on the server, because the
// holder could not finish (reason says why, for the server's log): it
// sends Error CodeHolderDeclined with reason and reads the server's
// result, whose code it returns.
func (s *session) abandon(t txn.Transaction, reason string) (protocol.Code, error) {
	if err := s.send(&protocol.Error{Code: protocol.CodeHolderDeclined, Text: reasonText(reason)}); err != nil {
		return protocol.CodeOK, err
	}
	r, err := s.result(t)
	if err != nil {
		return protocol.CodeOK, err
	}
	return r.Code, nil
}

// reasonText makes reason fit protocol.Error.Text: printable ASCII, at
// most protocol.MaxText bytes.
func reasonText(reason string) string {
	b := make([]byte, 0, len(reason))
	for _, r := range reason {
		if r < 0x20 || r > 0x7E {
			r = '?'
		}
		b = append(b, byte(r))
		if len(b) == protocol.MaxText {
			break
		}
	}
	return string(b)
}

// confirmOffer reads the offered transaction and has the holder confirm
// it. It returns CodeOK when the card may now verify the holder and sign;
// CodeCVMNotAccepted when the offer does not accept the verification of
// opts (the card would sign, and spend a counter value, for nothing: the
// server is told); or the server's answer to the holder's decline. An
// offer that does not parse is refused (CodeMalformed) and returned as an
// error.
func (s *session) confirmOffer(ctx context.Context, offer *protocol.TransactionOffer, opts *AuthOptions,
	confirm func(context.Context, txn.Transaction) (bool, error), verify VerifyFunc) (txn.Transaction, protocol.Code, error) {
	t, err := txn.Parse(offer.Transaction)
	if err != nil {
		s.send(&protocol.Error{Code: protocol.CodeMalformed})
		return t, protocol.CodeOK, fmt.Errorf("reading the offered transaction: %w", err)
	}
	if want := method(*opts); verify == nil && !offer.CVMs.Has(want) {
		return t, protocol.CodeCVMNotAccepted, s.send(&protocol.Error{Code: protocol.CodeCVMNotAccepted})
	}
	hctx, cancel := context.WithTimeout(ctx, time.Duration(offer.TTL)*time.Second)
	defer cancel()
	yes := true
	if confirm != nil {
		yes, err = confirm(hctx, t)
		if err != nil {
			return t, s.interrupted(t, err), fmt.Errorf("confirming with the holder: %w", err)
		}
	}
	if yes && verify != nil {
		v, err := verify(hctx, t, offer.CVMs)
		if err == nil {
			err = v.validate()
		}
		if err == nil && (method(v) == txn.CVMNone || v.ServerBiometric != nil) {
			err = errors.New("the Verify hook gave no PIN, online PIN or biometric")
		}
		if err != nil {
			return t, s.interrupted(t, err), fmt.Errorf("verifying the holder: %w", err)
		}
		if !offer.CVMs.Has(method(v)) {
			return t, protocol.CodeCVMNotAccepted, s.send(&protocol.Error{Code: protocol.CodeCVMNotAccepted})
		}
		opts.PIN, opts.OnlinePIN, opts.Biometric, opts.Checked = v.PIN, v.OnlinePIN, v.Biometric, v.Checked
	}
	if yes {
		return t, protocol.CodeOK, nil
	}
	if err := s.send(&protocol.Error{Code: protocol.CodeHolderDeclined}); err != nil {
		return t, protocol.CodeOK, err
	}
	r, err := s.result(t)
	if err != nil {
		return t, protocol.CodeOK, err
	}
	return t, r.Code, nil
}

// result reads the TransactionResult of t.
func (s *session) result(t txn.Transaction) (*protocol.TransactionResult, error) {
	m, err := s.receive()
	if err != nil {
		return nil, err
	}
	r, ok := m.(*protocol.TransactionResult)
	if !ok {
		return nil, fmt.Errorf("receiving: %v instead of a TransactionResult", m.Type())
	}
	if !bytes.Equal(r.ID, t.ID[:]) {
		return nil, fmt.Errorf("receiving: result for transaction %x, not %x", r.ID, t.ID)
	}
	return r, nil
}

// storeGoods stores the signed e-goods on the card and lists them in
// res.Goods. A good the card refuses is reported after the others are
// stored.
func storeGoods(ctx context.Context, card *wallet.Client, goods [][]byte, res *BuyResult) error {
	var errs []error
	for _, g := range goods {
		it, _, err := txn.ParseSignedItem(g)
		if err == nil {
			err = card.StoreItem(ctx, g)
			if errors.Is(err, wallet.ErrItemExists) {
				err = nil // a delivery retried
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Goods = append(res.Goods, it)
	}
	if len(errs) > 0 {
		return fmt.Errorf("the payment was made (%v), but the card refused an e-good it delivered: %w", res.Code, errors.Join(errs...))
	}
	return nil
}
