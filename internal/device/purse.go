package device

import (
	"context"
	"errors"
	"fmt"

	"cardlink/internal/link"
	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// LoadOptions say how much to load into the card's purse and how the
// holder is verified.
type LoadOptions struct {
	// AuthOptions: holder verification, features, redial and memory, as
	// for Buy (a PIN, an online PIN or a biometric is required).
	AuthOptions
	// Amount to load; its currency must be the purse's (empty means the
	// purse's).
	Amount money.Amount
	// Confirm shows the load (or unload) transaction to the holder and
	// reports whether they approve it; nil approves (headless).
	Confirm func(ctx context.Context, t txn.Transaction) (bool, error)
	// Verify, when set, asks for the holder's verification after Confirm,
	// as for Buy (an unload takes a PIN or a biometric only).
	Verify VerifyFunc
}

// PurseResult is the outcome of a purse load or unload.
type PurseResult struct {
	CardNumber  string
	Transaction txn.Transaction // as offered and shown; zero when the server handed out a load signed before
	// Code is the server's verdict: CodeOK when the purse was loaded (the
	// card applied the load and the server took its receipt) or unloaded
	// (the server credited the account); else as in BuyResult.
	Code      protocol.Code
	CVM       txn.CVM // with CodeOK after an approval, the method the server accepted
	TriesLeft int     // with CodePINIncorrect, online PIN tries left
	Counter   uint32  // the card's counter in its approval; 0 if the card did not sign one
	// Load is the issuer-signed load the server handed out (template E5),
	// nil for an unload or when none was handed out.
	Load []byte
	// Loaded is the load applied: its sequence number and amount (which
	// may differ from the amount asked for when the server handed out a
	// load it had signed before).
	Loaded txn.Load
	// Before and After are the purse as read before the exchange and
	// after it.
	Before, After wallet.PurseState
	ServerKey     []byte
	ServerKeys    [][]byte
}

// OK reports whether the load or unload went through.
func (r PurseResult) OK() bool { return r.Code == protocol.CodeOK }

// Load loads the card's purse from the holder's account over l, which
// the caller opened and closes; ctx bounds the whole exchange.
//
// It reads the purse, asks the server for a load of opts.Amount
// (PurseRequest with the purse's sequence number and balance), has the
// holder confirm the offered transaction (payee the issuer, item "Purse
// load"), verifies the holder and has the card sign it (SIGN
// TRANSACTION), as Buy does; the server posts it and answers with the
// issuer-signed load, which the card applies (PURSE LOAD) and whose
// receipt goes back to the server. When the server signed a load for the
// next sequence number before (its answer was lost), it hands that out
// again at once and the card applies it with no new approval.
//
// It returns a PurseResult whenever the server answered; a refusal of
// the request is a *protocol.Error; a card that refuses the load
// (iso7816.ErrConditions for a replayed or out-of-order sequence number)
// returns the card's error with the result, whose Load the server
// keeps signed for the next request.
func Load(ctx context.Context, l link.Link, id Identity, card *wallet.Client, opts LoadOptions) (PurseResult, error) {
	res, err := purse(ctx, l, id, card, opts, protocol.PurseKindLoad)
	if err != nil {
		return res, fmt.Errorf("loading purse: %w", err)
	}
	return res, nil
}

// Unload moves opts.Amount from the card's purse back to the holder's
// account: the server offers an unload transaction (payee the issuer,
// item "Purse unload"), the holder confirms, the card verifies the holder
// itself (PIN or Biometric: PURSE DEBIT takes no online PIN) and debits
// its purse over exactly the offered bytes (PURSE DEBIT), and the server
// verifies that signature and credits the account. Errors are as for
// Load; the card refuses an amount above its balance
// (iso7816.ErrConditions) before anything is posted.
func Unload(ctx context.Context, l link.Link, id Identity, card *wallet.Client, opts LoadOptions) (PurseResult, error) {
	res, err := purse(ctx, l, id, card, opts, protocol.PurseKindUnload)
	if err != nil {
		return res, fmt.Errorf("unloading purse: %w", err)
	}
	return res, nil
}

func purse(ctx context.Context, l link.Link, id Identity, card *wallet.Client, opts LoadOptions, kind uint8) (PurseResult, error) {
	if err := id.Validate(); err != nil {
		return PurseResult{}, err
	}
	var res PurseResult
	info, amount, err := preparePurse(ctx, card, &opts, kind, &res)
	if err != nil {
		return res, err
	}
	defer func() { forgetUnused(ctx, card, opts.AuthOptions, func() bool { return res.Counter == 0 }) }()
	s, err := open(ctx, l, id, opts.AuthOptions)
	if err != nil {
		return res, err
	}
	defer s.Close()
	err = s.purseExchange(ctx, info, card, &opts, kind, amount, &res)
	return res, err
}

// purse is Load and Unload on a Session.
func (s *Session) purse(ctx context.Context, card *wallet.Client, opts LoadOptions, kind uint8) (PurseResult, error) {
	var res PurseResult
	info, amount, err := preparePurse(ctx, card, &opts, kind, &res)
	if err != nil {
		return res, err
	}
	defer func() { forgetUnused(ctx, card, opts.AuthOptions, func() bool { return res.Counter == 0 }) }()
	err = s.purseExchange(ctx, info, card, &opts, kind, amount, &res)
	return res, err
}

// preparePurse checks opts, reads the card and its purse (res.Before)
// and returns the amount to move.
func preparePurse(ctx context.Context, card *wallet.Client, opts *LoadOptions, kind uint8, res *PurseResult) (wallet.Info, money.Amount, error) {
	if err := opts.validate(); err != nil {
		return wallet.Info{}, money.Amount{}, err
	}
	if err := checkSigner(opts.AuthOptions, opts.Verify != nil); err != nil {
		return wallet.Info{}, money.Amount{}, err
	}
	if kind == protocol.PurseKindUnload && method(opts.AuthOptions) == txn.CVMOnlinePIN {
		return wallet.Info{}, money.Amount{}, errUnloadOnline
	}
	info, err := cardInfo(ctx, card)
	if err != nil {
		return wallet.Info{}, money.Amount{}, err
	}
	res.CardNumber = info.CardNumber
	if res.Before, err = card.Purse(ctx); err != nil {
		return wallet.Info{}, money.Amount{}, err
	}
	amount := opts.Amount
	if amount.Currency == "" {
		amount.Currency = res.Before.Balance.Currency
	}
	if amount.Currency != res.Before.Balance.Currency || amount.Minor <= 0 {
		return wallet.Info{}, money.Amount{}, fmt.Errorf("amount %d %s: want a positive amount in the purse's currency %s", amount.Minor, amount.Currency, res.Before.Balance.Currency)
	}
	return info, amount, nil
}

// purseExchange is the exchange of a load or an unload, then the purse
// read again (res.After).
func (s *Session) purseExchange(ctx context.Context, info wallet.Info, card *wallet.Client, opts *LoadOptions, kind uint8, amount money.Amount, res *PurseResult) error {
	err := s.exchange(ctx, func(ss *session) error {
		return ss.purse(ctx, info, card, opts, kind, amount, res)
	})
	res.ServerKey, res.ServerKeys = s.pub, s.ServerKeys()
	if after, perr := card.Purse(context.WithoutCancel(ctx)); perr == nil {
		res.After = after
	} else if err == nil {
		err = perr
	}
	return err
}

// errUnloadOnline refuses an online PIN for an unload.
var errUnloadOnline = errors.New("an unload is a purse debit, which the card makes only after verifying the holder itself: give a PIN or a biometric")

func (s *session) purse(ctx context.Context, info wallet.Info, card *wallet.Client, opts *LoadOptions, kind uint8, amount money.Amount, res *PurseResult) error {
	cert := info.Certificate.Raw
	req := &protocol.PurseRequest{
		Kind:       kind,
		CardNumber: protocol.CardNumber(info.CardNumber),
		CertID:     protocol.CertID(cert),
		Amount:     uint64(amount.Minor),
		Currency:   string(amount.Currency),
		Seq:        res.Before.Seq,
		Balance:    uint64(res.Before.Balance.Minor),
	}
	m, err := s.ask(req, func() bool {
		if req.Certificate != nil {
			return false
		}
		req.Certificate = cert
		return true
	})
	if err != nil {
		return err
	}
	if pl, ok := m.(*protocol.PurseLoad); ok && kind == protocol.PurseKindLoad {
		res.Code = protocol.CodeOK
		return s.applyLoad(ctx, card, pl, res)
	}
	offer, ok := m.(*protocol.TransactionOffer)
	if !ok {
		return fmt.Errorf("receiving: %v instead of a TransactionOffer", m.Type())
	}
	t, code, err := s.confirmOffer(ctx, offer, &opts.AuthOptions, opts.Confirm, opts.Verify)
	res.Transaction, res.Code = t, code
	if err != nil || code != protocol.CodeOK {
		return err
	}
	if kind == protocol.PurseKindUnload && opts.OnlinePIN != "" {
		code, _ := s.abandon(t, "an unload needs an offline PIN or a biometric")
		res.Code = code
		return errUnloadOnline
	}
	if t.Amount != amount {
		// The holder confirmed what the server offered; the device also
		// holds it to what was asked.
		s.send(&protocol.Error{Code: protocol.CodeHolderDeclined})
		return fmt.Errorf("the server offered %d %s, not the %d %s asked for", t.Amount.Minor, t.Amount.Currency, amount.Minor, amount.Currency)
	}
	if err := verifyOnCard(ctx, card, opts.AuthOptions); err != nil {
		return s.abandonCard(t, err, &res.Code)
	}
	a := &protocol.TransactionApproval{ID: t.ID[:]}
	if kind == protocol.PurseKindUnload {
		d, err := card.Debit(ctx, &t)
		if err != nil {
			return s.abandonCard(t, err, &res.Code)
		}
		a.Counter, a.CVM, a.Signature = d.Counter, d.CVM, d.Sig
	} else {
		var sig wallet.Signature
		if opts.OnlinePIN != "" {
			if a.PINBlock, err = s.pinBlock(opts.AuthOptions, info.CardNumber); err != nil {
				return err
			}
		}
		if sig, err = card.SignTransaction(ctx, offer.Transaction, opts.OnlinePIN != ""); err != nil {
			return s.abandonCard(t, err, &res.Code)
		}
		a.Counter, a.CVM, a.Signature = sig.Counter, sig.CVM, sig.Sig
	}
	res.Counter = a.Counter
	if err := s.send(a); err != nil {
		return err
	}
	m, err = s.receive()
	if err != nil {
		return err
	}
	switch r := m.(type) {
	case *protocol.TransactionResult:
		if string(r.ID) != string(t.ID[:]) {
			return fmt.Errorf("receiving: result for transaction %x, not %x", r.ID, t.ID)
		}
		res.Code, res.CVM, res.TriesLeft = r.Code, r.CVM, int(r.TriesLeft)
		if kind == protocol.PurseKindLoad && r.Code == protocol.CodeOK {
			return errors.New("receiving: a load approved without the signed load")
		}
		return nil
	case *protocol.PurseLoad:
		if kind != protocol.PurseKindLoad || string(r.ID) != string(t.ID[:]) {
			return fmt.Errorf("receiving: a load for transaction %x, not %x", r.ID, t.ID)
		}
		res.Code, res.CVM = protocol.CodeOK, a.CVM
		return s.applyLoad(ctx, card, r, res)
	}
	return fmt.Errorf("receiving: %v instead of a TransactionResult", m.Type())
}

// applyLoad has the card apply the signed load pl and sends its receipt;
// res.Code becomes the server's answer to the receipt.
func (s *session) applyLoad(ctx context.Context, card *wallet.Client, pl *protocol.PurseLoad, res *PurseResult) error {
	res.Load = pl.Load
	l, _, err := txn.ParseSignedLoad(pl.Load)
	if err != nil {
		return fmt.Errorf("reading the signed load: %w", err)
	}
	res.Loaded = l
	rc, err := card.Load(ctx, pl.Load)
	if err != nil {
		s.send(&protocol.Error{Code: protocol.CodePurseState})
		return err
	}
	if err := s.send(&protocol.LoadReceipt{ID: pl.ID, Counter: rc.Counter, Signature: rc.Sig, Balance: uint64(rc.Balance.Minor)}); err != nil {
		return err
	}
	m, err := s.receive()
	if err != nil {
		return err
	}
	r, ok := m.(*protocol.TransactionResult)
	if !ok {
		return fmt.Errorf("receiving: %v instead of a TransactionResult", m.Type())
	}
	res.Code = r.Code
	return nil
}
