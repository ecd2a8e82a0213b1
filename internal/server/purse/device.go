package purse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Reasons a load is declined, as stored (PurseOp.Reason).
const (
	ReasonFunds     = "insufficient funds" // the holder account would go below its limit
	ReasonNoAccount = "no account"         // the holder has no account in the currency
	ReasonHolder    = "declined by the card holder"
)

// onCard are the holder verifications PURSE DEBIT accepts: the card's
// own (docs/wallet-applet.md, "PURSE DEBIT").
var onCard = protocol.CVMs(txn.CVMOfflinePIN, txn.CVMBiometric)

// Request answers a PurseRequest for the device of sess: a
// *protocol.TransactionOffer for the holder to approve, or — for a load
// whose sequence number the server signed already (an answer lost) — the
// *protocol.PurseLoad to apply, posting nothing new. A refusal is a
// *protocol.Error: the card checks of auth.Service.CheckCard;
// CodeMalformed for an unknown currency; CodePurseState when the load
// after the reported sequence number was applied already (the device
// read a stale purse, or a clone of the card asks), or when the server
// never signed the reported sequence number; CodeCVMNotAccepted for an unload when the server
// accepts no on-card verification. Other errors are internal.
func (s *Service) Request(ctx context.Context, sess *auth.Session, req *protocol.PurseRequest) (protocol.Message, error) {
	card := string(req.CardNumber)
	_, code, err := s.cfg.Auth.CheckCard(ctx, sess, card, req.CertID, req.Certificate)
	if err != nil {
		return nil, fmt.Errorf("answering purse request: %w", err)
	}
	if code != protocol.CodeOK {
		return nil, s.refuse(ctx, sess, card, "", code, nil)
	}
	cur, err := money.ParseCurrency(req.Currency)
	if err != nil {
		return nil, s.refuse(ctx, sess, card, "", protocol.CodeMalformed, err)
	}
	amount := money.Amount{Minor: int64(req.Amount), Currency: cur}
	now := s.now()
	op := store.PurseOp{Card: card, Amount: amount, Created: now, Expires: now.Add(s.cfg.OfferTTL)}
	cvms := s.cfg.Auth.DefaultCVMs()
	item := ItemUnload
	if req.Kind == protocol.PurseKindLoad {
		op.Kind, op.Seq, item = store.PurseLoad, req.Seq+1, ItemLoad
		prev, err := s.ps.LoadBySeq(ctx, card, op.Seq)
		switch {
		case err == nil:
			return s.resume(ctx, sess, prev)
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("answering purse request: %w", err)
		}
		// The purse's sequence number comes only from loads this server
		// signed: a device reporting one it never signed (a bug, or a
		// lie) would get a load the card refuses, and the holder's money
		// would wait in the float for a sequence number the card never
		// reaches.
		if req.Seq > 0 {
			if _, err := s.ps.LoadBySeq(ctx, card, req.Seq); errors.Is(err, store.ErrNotFound) {
				return nil, s.refuse(ctx, sess, card, "", protocol.CodePurseState, fmt.Errorf("no load %d was signed", req.Seq))
			} else if err != nil {
				return nil, fmt.Errorf("answering purse request: %w", err)
			}
		}
	} else {
		op.Kind = store.PurseUnload
		if cvms &= onCard; cvms == 0 {
			return nil, s.refuse(ctx, sess, card, "", protocol.CodeCVMNotAccepted, errors.New("no on-card verification accepted for PURSE DEBIT"))
		}
	}
	t := txn.Transaction{Merchant: s.cfg.Issuer, Item: item, Amount: amount, Time: now.Truncate(time.Second).UTC(), Nonce: make([]byte, 16)}
	if _, err := io.ReadFull(s.rand, t.ID[:]); err != nil {
		return nil, fmt.Errorf("drawing transaction id: %w", err)
	}
	if _, err := io.ReadFull(s.rand, t.Nonce); err != nil {
		return nil, fmt.Errorf("drawing nonce: %w", err)
	}
	if op.Offer, err = t.Encode(); err != nil {
		return nil, fmt.Errorf("answering purse request: %w", err)
	}
	op.ID = OpID(t.ID)
	if err := s.ps.CreatePurseOp(ctx, op); err != nil {
		return nil, fmt.Errorf("answering purse request: %w", err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse "+string(op.Kind)+" offered", slog.String("op", op.ID),
		slog.String("card", auth.MaskCard(card)), slog.Uint64("seq", uint64(op.Seq)), slog.Int64("amount", amount.Minor),
		slog.String("currency", string(cur)), slog.String("device", sess.Device.ID))
	return &protocol.TransactionOffer{Transaction: op.Offer, CVMs: cvms, TTL: uint32(s.cfg.OfferTTL / time.Second)}, nil
}

// resume answers a load request for a sequence number that already has
// a live load: the signed load again, or, for one a crash left
// authorized, posting (idempotently) and signing it now.
func (s *Service) resume(ctx context.Context, sess *auth.Session, op store.PurseOp) (protocol.Message, error) {
	switch op.Status {
	case store.PurseSigned:
		s.log.LogAttrs(ctx, slog.LevelInfo, "purse load handed out again", slog.String("op", op.ID),
			slog.String("card", auth.MaskCard(op.Card)), slog.Uint64("seq", uint64(op.Seq)), slog.String("device", sess.Device.ID))
		return s.purseLoad(op)
	case store.PurseAuthorized:
		m, _, err := s.settleLoad(ctx, op)
		if err != nil {
			return nil, err
		}
		if r, ok := m.(*protocol.TransactionResult); ok {
			return nil, &protocol.Error{Code: r.Code}
		}
		return m, nil
	}
	return nil, s.refuse(ctx, sess, op.Card, op.ID, protocol.CodePurseState, fmt.Errorf("load %d is %s", op.Seq, op.Status))
}

func (s *Service) purseLoad(op store.PurseOp) (*protocol.PurseLoad, error) {
	t, err := txn.Parse(op.Offer)
	if err != nil {
		return nil, fmt.Errorf("purse operation %s: stored offer: %w", op.ID, err)
	}
	return &protocol.PurseLoad{ID: t.ID[:], Load: op.Load}, nil
}

// Approve answers the TransactionApproval of the purse operation offered
// on the connection of sess (the listener passes only that one): a
// *protocol.PurseLoad for an approved load, else a
// *protocol.TransactionResult (CodeOK for a posted unload; a refusal's
// code otherwise, as for purchase.Service.Approve: CodeTransactionUnknown,
// CodeTransactionExpired, auth.Service.VerifySignature's codes,
// CodeInsufficientFunds, CodePurseState when another load took the
// sequence number meanwhile). A load's signature is SIGN TRANSACTION's
// (PurposeTransaction); an unload's is PURSE DEBIT's (PurposePurseDebit),
// with an on-card verification. Both cover the server's own offer.
// Errors are internal.
func (s *Service) Approve(ctx context.Context, sess *auth.Session, a *protocol.TransactionApproval) (protocol.Message, error) {
	var tid [16]byte
	copy(tid[:], a.ID)
	id := OpID(tid)
	if code, err := s.cfg.Auth.CheckDevice(ctx, sess); err != nil {
		return nil, fmt.Errorf("approving %s: %w", id, err)
	} else if code != protocol.CodeOK {
		return s.result(ctx, sess, "", id, a.ID, code, nil), nil
	}
	op, err := s.ps.PurseOp(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.result(ctx, sess, "", id, a.ID, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("approving %s: %w", id, err)
	case op.Status != store.PurseOffered:
		return s.result(ctx, sess, op.Card, id, a.ID, protocol.CodeTransactionUnknown, fmt.Errorf("operation is %s", op.Status)), nil
	case !s.now().Before(op.Expires):
		return s.result(ctx, sess, op.Card, id, a.ID, protocol.CodeTransactionExpired, nil), nil
	}
	env := txn.Envelope{Purpose: txn.PurposeTransaction, CardNumber: op.Card, Counter: a.Counter, CVM: a.CVM, Payload: op.Offer}
	accepted := s.cfg.Auth.DefaultCVMs()
	if op.Kind == store.PurseUnload {
		env.Purpose, accepted = txn.PurposePurseDebit, accepted&onCard
	}
	v, err := s.cfg.Auth.VerifySignature(ctx, sess, &env, a.Signature, a.PINBlock, a.Biometric, accepted)
	if err != nil {
		return nil, fmt.Errorf("approving %s: %w", id, err)
	}
	if v.Code != protocol.CodeOK {
		r := s.result(ctx, sess, op.Card, id, a.ID, v.Code, v.Cause)
		r.TriesLeft = v.TriesLeft
		return r, nil
	}
	op, err = s.ps.MovePurseOp(ctx, id, store.PurseOffered, store.PurseAuthorized, store.PurseUpdate{Counter: a.Counter}, s.now())
	switch {
	case errors.Is(err, store.ErrExpired):
		return s.result(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeTransactionExpired, nil), nil
	case errors.Is(err, store.ErrConflict) && op.ID != id:
		return s.result(ctx, sess, env.CardNumber, id, a.ID, protocol.CodePurseState, fmt.Errorf("load taken by %s", op.ID)), nil
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		return s.result(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("approving %s: %w", id, err)
	}
	if op.Kind == store.PurseLoad {
		m, _, err := s.settleLoad(ctx, op)
		if err != nil {
			return nil, fmt.Errorf("approving %s: %w", id, err)
		}
		if r, ok := m.(*protocol.TransactionResult); ok {
			return s.result(ctx, sess, op.Card, id, a.ID, r.Code, errors.New("ledger refused")), nil
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "purse load approved", slog.String("op", id), slog.String("card", auth.MaskCard(op.Card)),
			slog.Uint64("seq", uint64(op.Seq)), slog.Int64("amount", op.Amount.Minor), slog.String("device", sess.Device.ID))
		return m, nil
	}
	op, err = s.settleUnload(ctx, op)
	if err != nil {
		return nil, fmt.Errorf("approving %s: %w", id, err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse unloaded", slog.String("op", id), slog.String("card", auth.MaskCard(op.Card)),
		slog.Int64("amount", op.Amount.Minor), slog.Int64("transfer", op.Transfer), slog.String("device", sess.Device.ID))
	return &protocol.TransactionResult{ID: a.ID, Code: protocol.CodeOK, CVM: v.CVM}, nil
}

// settleLoad posts the authorized load op (holder → float, LoadKey),
// signs it and records it signed, answering the PurseLoad; a refusal by
// the ledger declines it (the sequence number is free again) and answers
// a TransactionResult with CodeInsufficientFunds. Any other error leaves
// op authorized: the device's next request for the same sequence number
// finishes it (resume), the key making the posting idempotent.
func (s *Service) settleLoad(ctx context.Context, op store.PurseOp) (protocol.Message, store.PurseOp, error) {
	tid, err := txnID(op)
	if err != nil {
		return nil, op, err
	}
	posted, err := s.transfer(ctx, ledger.Transfer{
		Key:      LoadKey(op.Card, op.Seq),
		Currency: op.Amount.Currency,
		Legs: []ledger.Leg{
			{Account: ledger.HolderAccount(op.Card, op.Amount.Currency), Amount: -op.Amount.Minor},
			{Account: ledger.FloatAccount(op.Amount.Currency), Amount: op.Amount.Minor},
		},
		Memo: "purse load " + op.ID,
	})
	var reason string
	switch {
	case err == nil:
	case errors.Is(err, store.ErrLimit):
		reason = ReasonFunds
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrCurrency):
		reason = ReasonNoAccount
	default:
		return nil, op, fmt.Errorf("posting load %s: %w", op.ID, err)
	}
	if reason != "" {
		d, err := s.ps.MovePurseOp(ctx, op.ID, store.PurseAuthorized, store.PurseDeclined, store.PurseUpdate{Reason: reason}, s.now())
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, op, fmt.Errorf("declining load %s: %w", op.ID, err)
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "purse load declined", slog.String("op", op.ID),
			slog.String("card", auth.MaskCard(op.Card)), slog.String("reason", reason))
		return &protocol.TransactionResult{ID: tid[:], Code: protocol.CodeInsufficientFunds}, d, nil
	}
	l := txn.Load{CardNumber: op.Card, Seq: op.Seq, Amount: op.Amount}
	sig, err := s.cfg.SignLoad(&l)
	if err != nil {
		return nil, op, fmt.Errorf("signing load %s: %w", op.ID, err)
	}
	op, err = s.ps.MovePurseOp(ctx, op.ID, store.PurseAuthorized, store.PurseSigned,
		store.PurseUpdate{Load: l.EncodeSigned(sig), Transfer: posted.ID}, s.now())
	if errors.Is(err, store.ErrConflict) && op.Status == store.PurseSigned {
		err = nil // signed meanwhile by another instance: hand that one out
	}
	if err != nil {
		return nil, op, fmt.Errorf("recording signed load %s: %w", op.ID, err)
	}
	pl, err := s.purseLoad(op)
	return pl, op, err
}

// settleUnload posts the authorized unload op (float → holder,
// UnloadKey) and records it done. The card's purse went down already, so
// a refusal is not a decline: it is returned, and op stays authorized
// for the posting to be retried with the same key.
func (s *Service) settleUnload(ctx context.Context, op store.PurseOp) (store.PurseOp, error) {
	holder := ledger.HolderAccount(op.Card, op.Amount.Currency)
	t := ledger.Transfer{
		Key:      UnloadKey(op.ID),
		Currency: op.Amount.Currency,
		Legs: []ledger.Leg{
			{Account: ledger.FloatAccount(op.Amount.Currency), Amount: -op.Amount.Minor},
			{Account: holder, Amount: op.Amount.Minor},
		},
		Memo: "purse unload " + op.ID,
	}
	posted, err := s.transfer(ctx, t)
	if errors.Is(err, store.ErrNotFound) {
		// The holder never had an account in this currency: open it.
		if err := s.cfg.Ledger.CreateAccount(ctx, store.Account{ID: holder, Kind: store.KindHolder, Currency: op.Amount.Currency}); err != nil && !errors.Is(err, store.ErrConflict) {
			return op, fmt.Errorf("opening account %s: %w", holder, err)
		}
		posted, err = s.cfg.Ledger.Transfer(ctx, t)
	}
	if err != nil {
		return op, fmt.Errorf("posting unload %s: %w", op.ID, err)
	}
	op, err = s.ps.MovePurseOp(ctx, op.ID, store.PurseAuthorized, store.PurseDone, store.PurseUpdate{Transfer: posted.ID}, s.now())
	if errors.Is(err, store.ErrConflict) && op.Status == store.PurseDone {
		err = nil
	}
	return op, err
}

// transfer posts t, opening the float account of t's currency (lower
// limit 0) if it does not exist yet and posting again.
func (s *Service) transfer(ctx context.Context, t ledger.Transfer) (ledger.Posted, error) {
	posted, err := s.cfg.Ledger.Transfer(ctx, t)
	if !errors.Is(err, store.ErrNotFound) {
		return posted, err
	}
	float := ledger.FloatAccount(t.Currency)
	if _, berr := s.cfg.Ledger.Balance(ctx, float); !errors.Is(berr, store.ErrNotFound) {
		return posted, err // the float exists: another account is missing
	}
	if cerr := s.cfg.Ledger.CreateAccount(ctx, store.Account{ID: float, Kind: store.KindFloat, Currency: t.Currency}); cerr != nil && !errors.Is(cerr, store.ErrConflict) {
		return posted, fmt.Errorf("opening account %s: %w", float, cerr)
	}
	return s.cfg.Ledger.Transfer(ctx, t)
}

// Decline records that the holder declined the purse operation id
// offered in sess: it becomes declined and the result has
// CodeHolderDeclined; CodeTransactionUnknown when it is not offered any
// more.
func (s *Service) Decline(ctx context.Context, sess *auth.Session, id []byte) (*protocol.TransactionResult, error) {
	var tid [16]byte
	copy(tid[:], id)
	oid := OpID(tid)
	op, err := s.ps.MovePurseOp(ctx, oid, store.PurseOffered, store.PurseDeclined, store.PurseUpdate{Reason: ReasonHolder}, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrExpired):
		return s.result(ctx, sess, op.Card, oid, id, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("declining %s: %w", oid, err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse operation declined by the holder", slog.String("op", oid),
		slog.String("card", auth.MaskCard(op.Card)), slog.String("device", sess.Device.ID))
	return &protocol.TransactionResult{ID: id, Code: protocol.CodeHolderDeclined}, nil
}

// Receipt answers a LoadReceipt: the card's signature over
// Envelope{PurposeLoadReceipt, card, Counter, CVM none, payload = the
// signed load's bytes} for a load the server signed. It verifies it
// (auth.Service.VerifyCardSignature's codes), records the load applied
// and answers CodeOK; a receipt sent again for a load already applied
// with that counter is answered CodeOK too. CodeTransactionUnknown: no
// such load signed. It does not require the counter to grow, nor
// advance it: the receipt may arrive after signatures the card made
// later (offline debits), and its (card, seq) is unique anyway. Any
// device may carry it: the card's signature is the proof.
func (s *Service) Receipt(ctx context.Context, sess *auth.Session, r *protocol.LoadReceipt) (*protocol.TransactionResult, error) {
	var tid [16]byte
	copy(tid[:], r.ID)
	id := OpID(tid)
	op, err := s.ps.PurseOp(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.result(ctx, sess, "", id, r.ID, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("recording load receipt %s: %w", id, err)
	case op.Kind != store.PurseLoad || (op.Status != store.PurseSigned && op.Status != store.PurseApplied):
		return s.result(ctx, sess, op.Card, id, r.ID, protocol.CodeTransactionUnknown, fmt.Errorf("%s is %s", op.Kind, op.Status)), nil
	case op.Status == store.PurseApplied && op.Counter == r.Counter:
		return &protocol.TransactionResult{ID: r.ID, Code: protocol.CodeOK}, nil
	case op.Status == store.PurseApplied:
		return s.result(ctx, sess, op.Card, id, r.ID, protocol.CodeTransactionUnknown, errors.New("applied with another counter")), nil
	}
	l, _, err := txn.ParseSignedLoad(op.Load)
	if err != nil {
		return nil, fmt.Errorf("recording load receipt %s: stored load: %w", id, err)
	}
	env := txn.Envelope{Purpose: txn.PurposeLoadReceipt, CardNumber: op.Card, Counter: r.Counter, CVM: txn.CVMNone, Payload: l.Bytes()}
	code, cause, err := s.cfg.Auth.VerifyCardSignature(ctx, &env, r.Signature)
	if err != nil {
		return nil, fmt.Errorf("recording load receipt %s: %w", id, err)
	}
	if code != protocol.CodeOK {
		return s.result(ctx, sess, op.Card, id, r.ID, code, cause), nil
	}
	op, err = s.ps.MovePurseOp(ctx, id, store.PurseSigned, store.PurseApplied, store.PurseUpdate{Counter: r.Counter}, s.now())
	if err != nil && !(errors.Is(err, store.ErrConflict) && op.Status == store.PurseApplied && op.Counter == r.Counter) {
		return nil, fmt.Errorf("recording load receipt %s: %w", id, err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse load applied", slog.String("op", id), slog.String("card", auth.MaskCard(op.Card)),
		slog.Uint64("seq", uint64(op.Seq)), slog.Uint64("counter", uint64(r.Counter)), slog.Uint64("balance", r.Balance))
	return &protocol.TransactionResult{ID: r.ID, Code: protocol.CodeOK}, nil
}

// result logs a refusal and returns its TransactionResult.
func (s *Service) result(ctx context.Context, sess *auth.Session, card, id string, tid []byte, code protocol.Code, cause error) *protocol.TransactionResult {
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse operation refused", attrs(sess, card, id, code, cause)...)
	if len(tid) != protocol.TransactionIDLen {
		tid = make([]byte, protocol.TransactionIDLen)
	}
	return &protocol.TransactionResult{ID: bytes.Clone(tid), Code: code}
}

// refuse logs a refused request and returns its error.
func (s *Service) refuse(ctx context.Context, sess *auth.Session, card, id string, code protocol.Code, cause error) *protocol.Error {
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse request refused", attrs(sess, card, id, code, cause)...)
	return &protocol.Error{Code: code}
}

func attrs(sess *auth.Session, card, id string, code protocol.Code, cause error) []slog.Attr {
	a := []slog.Attr{slog.String("code", code.String())}
	if sess != nil {
		a = append(a, slog.String("device", sess.Device.ID))
	}
	if id != "" {
		a = append(a, slog.String("op", id))
	}
	if card != "" {
		a = append(a, slog.String("card", auth.MaskCard(card)))
	}
	if cause != nil {
		a = append(a, slog.String("cause", cause.Error()))
	}
	return a
}

func txnID(op store.PurseOp) ([16]byte, error) {
	t, err := txn.Parse(op.Offer)
	if err != nil {
		return [16]byte{}, fmt.Errorf("purse operation %s: stored offer: %w", op.ID, err)
	}
	return t.ID, nil
}
