package purchase

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/ledger"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Reasons a purchase is declined, as stored (Purchase.Reason) for the
// merchant.
const (
	ReasonFunds     = "insufficient funds"             // the holder account would go below its limit
	ReasonNoAccount = "no account"                     // the holder (or merchant) account does not exist
	ReasonSoldOut   = "sold out"                       // the item's stock ran out before the approval
	ReasonHolder    = "declined by the card holder"    // on the device
	reasonNoMerch   = "merchant has no ledger account" // the merchant cannot be paid
	reasonCurrency  = "account currency differs"       // an account in another currency
)

// Approve answers a TransactionApproval: it always returns a
// TransactionResult whose Code says the outcome, unless the failure is
// internal.
//
// Approve is for a caller that kept no offer (the listener calls
// ApproveOffered with the one it sent on the connection of sess). The
// checks, in order: the device is not revoked
// (CodeDeviceRevoked); the purchase with the approval's ID is pending and
// bound to a card with an offer (else CodeTransactionUnknown: also a
// replayed approval of a purchase already settled, which therefore never
// reaches the card's counter); its deadline has not passed
// (CodeTransactionExpired); the signature is the card's over
// txn.Envelope{PurposeTransaction, the bound card, Counter, CVM, payload =
// the server's own stored offer}, never over anything the device sent,
// with the counter growing and the holder verification accepted by the
// auth service's DefaultCVMs (auth.Service.VerifySignature's codes). Such
// a refusal leaves the purchase pending: the holder may try again until
// its deadline.
//
// Then it records the approval, takes one off the item's stock, posts
// the payment and completes the purchase. With a store.PurchaseApprover
// (SQLite) that is ONE store write (ApprovePurchase, after
// auth.Service.VerifySignatureDeferred): the card's counter — unless the
// holder verification made the auth service advance it already —, the
// approval, the ledger transfer TransferKey(id) and the completion become
// durable together, with one commit instead of three, and a crash can no
// longer leave a purchase authorized but unpaid on this path. Without one
// (PostgreSQL) it records the approval (AuthorizePurchase, or with a
// store.CountingAuthorizer AuthorizePurchaseCounting, the counter in the
// same transaction), then posts the payment through the ledger (settle).
// Either way it answers CodeOK with the signed e-goods of the item,
// CodeInsufficientFunds when the ledger refused the transfer (the
// purchase is then declined, its stock given back), or
// CodeTransactionDeclined for a sold-out item (declined too), and Notify
// is called with the purchase as completed. An internal error after the
// approval was recorded leaves the purchase authorized, for Sweep to
// settle (through the ledger).
//
// The reads before the write: the device (its revocation stops an
// approval), and the purchase, for the card and the stored offer the
// signature is verified over, and to refuse a purchase that is no longer
// pending or has expired before the card's counter is touched. The write
// repeats these purchase checks under its lock. The merchant, which
// settle reads for its ledger account, is read inside the write.
func (s *Service) Approve(ctx context.Context, sess *auth.Session, a *protocol.TransactionApproval) (*protocol.TransactionResult, error) {
	id, r, err := s.approvable(ctx, sess, a)
	if r != nil || err != nil {
		return r, err
	}
	p, err := s.ms.Purchase(ctx, "", id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.approveResult(ctx, sess, "", id, a.ID, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("approving %s: %w", id, err)
	}
	now := s.now()
	switch {
	case p.Status != store.PurchasePending || p.Card == "" || len(p.Offer) == 0:
		return s.approveResult(ctx, sess, p.Card, id, a.ID, protocol.CodeTransactionUnknown, fmt.Errorf("purchase is %s", p.Status)), nil
	case !now.Before(p.Expires):
		return s.approveResult(ctx, sess, p.Card, id, a.ID, protocol.CodeTransactionExpired, nil), nil
	}
	if t, err := txn.Parse(p.Offer); err != nil || !bytes.Equal(t.ID[:], a.ID) {
		return nil, fmt.Errorf("approving %s: the stored offer is not this transaction (%v)", id, err)
	}
	return s.approve(ctx, sess, a, id, p.Card, p.Offer)
}

// ApproveOffered is Approve for the approval of the transaction this
// server offered on the connection of sess: card and offer are what Offer
// bound in the store and sent (the TransactionOffer's bytes), kept by the
// listener for the connection, never anything the device sent. It skips
// Approve's read of the purchase: a bound offer never changes (BindPurchase
// binds only a request without one), and the checks of that read — still
// pending, bound to card, before its deadline — are made again under the
// store's lock by the write that records the approval, whose refusal
// answers the same codes (the card's counter is then spent: the card
// signed). The device's revocation is checked as in Approve.
func (s *Service) ApproveOffered(ctx context.Context, sess *auth.Session, a *protocol.TransactionApproval, card string, offer []byte) (*protocol.TransactionResult, error) {
	id, r, err := s.approvable(ctx, sess, a)
	if r != nil || err != nil {
		return r, err
	}
	if t, err := txn.Parse(offer); err != nil || !bytes.Equal(t.ID[:], a.ID) {
		return nil, fmt.Errorf("approving %s: the offer kept for the connection is not this transaction (%v)", id, err)
	}
	return s.approve(ctx, sess, a, id, card, offer)
}

// approvable returns the purchase id of a's transaction, or the result
// that refuses a: a malformed id, or a device revoked since it connected.
func (s *Service) approvable(ctx context.Context, sess *auth.Session, a *protocol.TransactionApproval) (string, *protocol.TransactionResult, error) {
	id, ok := PurchaseID(a.ID)
	if !ok {
		return "", s.approveResult(ctx, sess, "", "", a.ID, protocol.CodeMalformed, nil), nil
	}
	if code, err := s.cfg.Auth.CheckDevice(ctx, sess); err != nil {
		return "", nil, fmt.Errorf("approving %s: %w", id, err)
	} else if code != protocol.CodeOK {
		return "", s.approveResult(ctx, sess, "", id, a.ID, code, nil), nil
	}
	return id, nil, nil
}

// approve verifies the card's signature of a over offer, the server's
// own copy of purchase id bound to card, and records it.
func (s *Service) approve(ctx context.Context, sess *auth.Session, a *protocol.TransactionApproval, id, card string, offer []byte) (*protocol.TransactionResult, error) {
	env := txn.Envelope{Purpose: txn.PurposeTransaction, CardNumber: card, Counter: a.Counter, CVM: a.CVM, Payload: offer}
	// With a store that can, the card's counter is advanced in the
	// transaction that records the approval: one commit fewer.
	verify, authorize := s.cfg.Auth.VerifySignature, s.ms.AuthorizePurchase
	pa, approving := s.ms.(store.PurchaseApprover)
	ca, counting := s.ms.(store.CountingAuthorizer)
	if approving || counting {
		verify = s.cfg.Auth.VerifySignatureDeferred
	}
	v, err := verify(ctx, sess, &env, a.Signature, a.PINBlock, a.Biometric, s.cfg.Auth.DefaultCVMs())
	if err != nil {
		return nil, fmt.Errorf("approving %s: %w", id, err)
	}
	if v.Code != protocol.CodeOK {
		r := s.approveResult(ctx, sess, card, id, a.ID, v.Code, v.Cause)
		r.TriesLeft = v.TriesLeft
		return r, nil
	}

	var p store.Purchase
	approval := store.PurchaseApproval{Counter: a.Counter, CVM: uint8(v.CVM), Signature: a.Signature, Device: sess.Device.ID, MatchedBy: v.MatchedBy}
	if approving {
		// One write: counter, approval, payment and completion.
		p, err = pa.ApprovePurchase(ctx, id, env.CardNumber, approval, v.CounterDeferred, s.payer(), s.now())
	} else {
		if v.CounterDeferred {
			authorize = ca.AuthorizePurchaseCounting
		}
		p, err = authorize(ctx, id, env.CardNumber, approval, s.now())
	}
	switch {
	case errors.Is(err, store.ErrCounterReplay):
		// Another signature with this counter or a higher one was
		// accepted meanwhile: the store flagged the card.
		s.log.LogAttrs(ctx, slog.LevelWarn, "card counter did not grow: possibly cloned",
			slog.String("card", auth.MaskCard(env.CardNumber)), slog.Uint64("counter", uint64(a.Counter)),
			slog.String("device", sess.Device.ID))
		return s.approveResult(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeCounterNotIncreasing, err), nil
	case errors.Is(err, store.ErrRevoked):
		return s.approveResult(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeCardRevoked, err), nil
	case errors.Is(err, store.ErrNotFound):
		// Declined, expired or approved meanwhile (another instance).
		return s.approveResult(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeTransactionUnknown, err), nil
	case errors.Is(err, store.ErrExpired):
		return s.approveResult(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeTransactionExpired, nil), nil
	case errors.Is(err, store.ErrSoldOut):
		d, derr := s.ms.DeclinePurchase(ctx, id, env.CardNumber, ReasonSoldOut, s.now())
		if derr == nil {
			s.notifyEnd(ctx, d)
		} else if !errors.Is(derr, store.ErrNotFound) {
			return nil, fmt.Errorf("approving %s: declining sold-out purchase: %w", id, derr)
		}
		return s.approveResult(ctx, sess, env.CardNumber, id, a.ID, protocol.CodeTransactionDeclined, err), nil
	case err != nil:
		return nil, fmt.Errorf("approving %s: %w", id, err)
	}

	if p.Status == store.PurchaseAuthorized {
		// The path without a PurchaseApprover: post and complete now.
		p, err = s.settle(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("approving %s: %w", id, err)
		}
	} else {
		if p.Status == store.PurchaseDeclined {
			s.log.LogAttrs(ctx, slog.LevelInfo, "purchase declined", slog.String("purchase", p.ID),
				slog.String("card", auth.MaskCard(p.Card)), slog.String("reason", p.Reason))
		}
		s.notifyEnd(ctx, p)
	}
	switch p.Status {
	case store.PurchaseApproved, store.PurchaseRefundedPartially, store.PurchaseRefunded:
	case store.PurchaseDeclined:
		code := protocol.CodeTransactionDeclined
		if p.Reason == ReasonFunds || p.Reason == ReasonNoAccount {
			code = protocol.CodeInsufficientFunds
		}
		return s.approveResult(ctx, sess, p.Card, id, a.ID, code, errors.New(p.Reason)), nil
	default:
		return nil, fmt.Errorf("approving %s: settled as %s", id, p.Status)
	}
	goods := s.goods(ctx, p)
	s.log.LogAttrs(ctx, slog.LevelInfo, "purchase approved", slog.String("purchase", id),
		slog.String("card", auth.MaskCard(p.Card)), slog.String("cvm", v.CVM.String()),
		slog.Uint64("counter", uint64(a.Counter)), slog.String("device", sess.Device.ID),
		slog.Int64("transfer", p.Transfer), slog.Int("goods", len(goods)))
	return &protocol.TransactionResult{ID: a.ID, Code: protocol.CodeOK, CVM: v.CVM, Goods: goods}, nil
}

// approveResult logs a refused approval and returns its result.
func (s *Service) approveResult(ctx context.Context, sess *auth.Session, card, id string, txnID []byte, code protocol.Code, cause error) *protocol.TransactionResult {
	s.log.LogAttrs(ctx, slog.LevelInfo, "approval refused", attrs(sess, card, id, code, cause)...)
	if len(txnID) != protocol.TransactionIDLen {
		txnID = make([]byte, protocol.TransactionIDLen)
	}
	return &protocol.TransactionResult{ID: txnID, Code: code}
}

// Decline records that the holder declined the transaction id offered in
// sess: the purchase, pending and bound to a card, becomes declined
// (Reason ReasonHolder), Notify is called, and the result has
// CodeHolderDeclined; CodeTransactionUnknown when it is not pending (or
// bound) any more. The listener passes only the id it offered on the
// connection of sess.
func (s *Service) Decline(ctx context.Context, sess *auth.Session, id []byte) (*protocol.TransactionResult, error) {
	pid, ok := PurchaseID(id)
	if !ok {
		return s.approveResult(ctx, sess, "", "", id, protocol.CodeMalformed, nil), nil
	}
	p, err := s.ms.Purchase(ctx, "", pid)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.approveResult(ctx, sess, "", pid, id, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("declining %s: %w", pid, err)
	case p.Card == "":
		return s.approveResult(ctx, sess, "", pid, id, protocol.CodeTransactionUnknown, errors.New("not bound to a card")), nil
	}
	p, err = s.ms.DeclinePurchase(ctx, pid, p.Card, ReasonHolder, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.approveResult(ctx, sess, p.Card, pid, id, protocol.CodeTransactionUnknown, err), nil
	case err != nil:
		return nil, fmt.Errorf("declining %s: %w", pid, err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "purchase declined by the holder", slog.String("purchase", pid),
		slog.String("card", auth.MaskCard(p.Card)), slog.String("device", sess.Device.ID))
	s.notifyEnd(ctx, p)
	return &protocol.TransactionResult{ID: id, Code: protocol.CodeHolderDeclined}, nil
}

// settle posts the payment of the authorized purchase p and completes
// it (approved, or declined when the ledger refuses the transfer), then
// notifies. Approve calls it, and Sweep for purchases a crash left
// authorized.
//
// The transfer is TransferKey(p.ID): the holder account
// (ledger.HolderAccount(p.Card, p.Currency)) −amount, the merchant's
// account +amount. A refusal for funds (store.ErrLimit) or a missing
// account (store.ErrNotFound) declines the purchase with ReasonFunds or
// ReasonNoAccount; a merchant with no account, or an account in another
// currency, declines it too. Any other error (the store, a cancelled ctx)
// leaves p authorized and is returned: posting again is harmless, the key
// makes it idempotent. A purchase another instance completed meanwhile
// comes back as stored, without a second notification.
func (s *Service) settle(ctx context.Context, p store.Purchase) (store.Purchase, error) {
	m, err := s.ms.Merchant(ctx, p.Merchant)
	if err != nil {
		return p, fmt.Errorf("settling %s: reading merchant: %w", p.ID, err)
	}
	var (
		reason string
		posted ledger.Posted
	)
	t, err := payment(p, m.Account)
	if err == nil {
		posted, err = s.cfg.Ledger.Transfer(ctx, t)
	}
	if err != nil {
		if reason = declineReason(err); reason == "" {
			return p, fmt.Errorf("settling %s: %w", p.ID, err)
		}
	}
	got, err := s.ms.CompletePurchase(ctx, p.ID, posted.ID, reason, s.now())
	switch {
	case errors.Is(err, store.ErrConflict):
		return got, nil // completed meanwhile, and notified there
	case err != nil:
		return p, fmt.Errorf("settling %s: %w", p.ID, err)
	}
	if reason != "" {
		s.log.LogAttrs(ctx, slog.LevelInfo, "purchase declined", slog.String("purchase", p.ID),
			slog.String("card", auth.MaskCard(p.Card)), slog.String("reason", reason))
	}
	s.notifyEnd(ctx, got)
	return got, nil
}

// errNoMerchantAccount: the merchant has no ledger account to be paid
// into.
var errNoMerchantAccount = errors.New("merchant has no ledger account")

// payment returns the transfer that pays the authorized purchase p to
// account, the merchant's: TransferKey(p.ID), the holder account
// (ledger.HolderAccount(p.Card, p.Currency)) −amount, account +amount.
// errNoMerchantAccount if account is empty.
func payment(p store.Purchase, account string) (ledger.Transfer, error) {
	if account == "" {
		return ledger.Transfer{}, errNoMerchantAccount
	}
	return ledger.Transfer{
		Key:      TransferKey(p.ID),
		Currency: p.Currency,
		Legs: []ledger.Leg{
			{Account: ledger.HolderAccount(p.Card, p.Currency), Amount: -p.Amount},
			{Account: account, Amount: p.Amount},
		},
		Memo: "purchase " + p.ID + " " + p.Reference,
	}, nil
}

// declineReason returns the reason a purchase is declined for err, a
// refusal of its payment or store.ErrSoldOut, or "" if err does not
// decline it: the store, a cancelled ctx, a malformed transfer, the key
// posted with other content leave it authorized, and posting again is
// harmless, the key makes it idempotent.
func declineReason(err error) string {
	switch {
	case errors.Is(err, errNoMerchantAccount):
		return reasonNoMerch
	case errors.Is(err, store.ErrLimit):
		return ReasonFunds
	case errors.Is(err, store.ErrNotFound):
		return ReasonNoAccount
	case errors.Is(err, store.ErrCurrency):
		return reasonCurrency
	case errors.Is(err, store.ErrSoldOut):
		return ReasonSoldOut
	}
	return ""
}

// payer returns the store's part of the payment for a
// store.PurchaseApprover: payment, checked and digested by the ledger's
// rules (ledger.Prepare), and declineReason.
func (s *Service) payer() store.PurchasePayment {
	return store.PurchasePayment{
		Transfer: func(p store.Purchase, account string) (store.Transfer, error) {
			t, err := payment(p, account)
			if err != nil {
				return store.Transfer{}, err
			}
			return ledger.Prepare(t)
		},
		Reason: declineReason,
	}
}

// notifyEnd calls Notify, if set, with p.
func (s *Service) notifyEnd(ctx context.Context, p store.Purchase) {
	if s.notify != nil {
		s.notify(ctx, p)
	}
}

// goods returns the signed e-goods the approved purchase p delivers to
// its card: none without Config.SignItem, without an item, or for an item
// that delivers nothing. A failure is logged and delivers nothing: the
// payment stands.
func (s *Service) goods(ctx context.Context, p store.Purchase) [][]byte {
	if s.cfg.SignItem == nil || p.Item == "" {
		return nil
	}
	fail := func(err error) [][]byte {
		s.log.LogAttrs(ctx, slog.LevelError, "e-good not delivered", slog.String("purchase", p.ID),
			slog.String("card", auth.MaskCard(p.Card)), slog.String("cause", err.Error()))
		return nil
	}
	it, err := s.ms.Item(ctx, p.Item)
	if err != nil {
		return fail(fmt.Errorf("reading item %s: %w", p.Item, err))
	}
	kind, ok := itemKinds[it.Delivery]
	if !ok {
		if it.Delivery != store.DeliverNone && it.Delivery != "" {
			return fail(fmt.Errorf("item %s: unknown delivery %q", it.ID, it.Delivery))
		}
		return nil
	}
	id, err := TransactionID(p.ID)
	if err != nil {
		return fail(err)
	}
	content := it.Payload
	if len(content) > maxContent {
		return fail(fmt.Errorf("item %s: payload of %d bytes, over %d", it.ID, len(content), maxContent))
	}
	good := &txn.Item{CardNumber: p.Card, ID: id, Kind: kind, Title: text(it.Name, maxTitle, it.ID), Content: content}
	sig, err := s.cfg.SignItem(good)
	if err != nil {
		return fail(fmt.Errorf("signing: %w", err))
	}
	b := good.EncodeSigned(sig)
	if len(b) > protocol.MaxGood {
		return fail(fmt.Errorf("signed item of %d bytes, over %d", len(b), protocol.MaxGood))
	}
	return [][]byte{b}
}

// itemKinds maps the deliveries that put an e-good into the card to its
// kind.
var itemKinds = map[store.DeliveryKind]txn.ItemKind{
	store.DeliverVoucher: txn.ItemVoucher,
	store.DeliverTicket:  txn.ItemTicket,
	store.DeliverLicence: txn.ItemLicence,
	store.DeliverFile:    txn.ItemFile,
}
