package purchase

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"cardlink/internal/money"
	"cardlink/internal/protocol"
	"cardlink/internal/server/auth"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Text limits of the canonical transaction (txn.Transaction) and e-good
// (txn.Item), in bytes.
const (
	maxMerchant = 40
	maxItem     = 64
	maxTitle    = 40
	maxContent  = 1024
	nonceLen    = 16
)

// idPrefix starts every purchase ID; 32 hex digits (the transaction id)
// follow.
const idPrefix = "pur_"

// TransactionID returns the 16-byte transaction id of purchase id ("pur_"
// and 32 hex digits), or an error for any other form.
func TransactionID(id string) ([16]byte, error) {
	var t [16]byte
	h, ok := strings.CutPrefix(id, idPrefix)
	if !ok || len(h) != 2*len(t) {
		return t, fmt.Errorf("purchase id %q: want %s and %d hex digits", id, idPrefix, 2*len(t))
	}
	if _, err := hex.Decode(t[:], []byte(h)); err != nil {
		return t, fmt.Errorf("purchase id %q: %w", id, err)
	}
	return t, nil
}

// PurchaseID returns the purchase ID of a 16-byte transaction id; ok is
// false when id is not 16 bytes.
func PurchaseID(id []byte) (string, bool) {
	if len(id) != protocol.TransactionIDLen {
		return "", false
	}
	return idPrefix + hex.EncodeToString(id), true
}

// Offer answers an OfferRequest for the device of sess: a
// *protocol.TransactionOffer, the transaction for the holder to approve,
// or — for a reference no pending request has, but that names a purchase
// this card paid (approved or refunded partially, not refunded in full; the newest,
// store.Merchants.PaidPurchase), or for no reference when nothing is
// pending for the card but req.Paid names a purchase it paid — that
// purchase's *protocol.TransactionResult again: CodeOK, the CVM of the stored approval and the item's e-goods
// signed again (the same txn.Item ID, the transaction id), so that a
// device whose connection dropped before the result arrived gets the
// goods. Nothing is posted and no counter moves. A refusal is a
// *protocol.Error (the card checks as for a challenge;
// CodeTransactionUnknown when no pending request has the reference and
// the card paid none with it (with no reference: none pending, none paid
// with req.Paid), or it is bound to another card;
// CodeTransactionExpired). Other errors are internal.
//
// The checks of the card are auth.Service.CheckCard's. The request is
// found by req.Reference, or, with no reference, as the card's oldest
// pending request: one the merchant addressed to it, or one it bound by
// reference before (a retry). The transaction offered
// is txn.Transaction{ID from the purchase ID, Merchant = the merchant's
// name, Item = the description (else the item's name), Amount, Time =
// now in whole seconds, a fresh 16-byte Nonce}, bound to the card in the
// store (BindPurchase): a device asking again for a request already bound
// to its card gets the same bytes, and another card gets
// CodeTransactionUnknown. TTL is the time left until the request's
// Expires, in whole seconds, rounded down (at least 1); the methods
// offered are the auth service's DefaultCVMs.
func (s *Service) Offer(ctx context.Context, sess *auth.Session, req *protocol.OfferRequest) (protocol.Message, error) {
	number := string(req.CardNumber)
	_, code, err := s.cfg.Auth.CheckCard(ctx, sess, number, req.CertID, req.Certificate)
	if err != nil {
		return nil, fmt.Errorf("offering transaction: %w", err)
	}
	if code != protocol.CodeOK {
		return nil, s.refuseOffer(ctx, sess, number, "", code, nil)
	}
	now := s.now()
	var p store.Purchase
	if req.Reference != "" {
		p, err = s.ms.PendingPurchase(ctx, req.Reference, now)
		if errors.Is(err, store.ErrNotFound) {
			return s.paidBefore(ctx, sess, number, req.Reference)
		}
	} else {
		var ps []store.Purchase
		ps, err = s.ms.PendingPurchasesForCard(ctx, number, now, 1)
		if err == nil && len(ps) == 0 {
			return s.pushedPaidBefore(ctx, sess, number, req.Paid)
		}
		if err == nil {
			p = ps[0]
		}
	}
	if err != nil {
		return nil, fmt.Errorf("offering transaction: %w", err)
	}
	if p.Card != "" && p.Card != number {
		// Said as for an unknown reference: the device learns nothing of
		// another holder's purchase.
		return nil, s.refuseOffer(ctx, sess, number, p.ID, protocol.CodeTransactionUnknown, errors.New("bound to another card"))
	}
	offer := p.Offer
	if len(offer) == 0 {
		if offer, err = s.transaction(ctx, p, now); err != nil {
			return nil, fmt.Errorf("offering transaction for %s: %w", p.ID, err)
		}
	}
	bound, err := s.ms.BindPurchase(ctx, p.ID, number, offer, now)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		return nil, s.refuseOffer(ctx, sess, number, p.ID, protocol.CodeTransactionUnknown, err)
	case errors.Is(err, store.ErrExpired):
		return nil, s.refuseOffer(ctx, sess, number, p.ID, protocol.CodeTransactionExpired, nil)
	case err != nil:
		return nil, fmt.Errorf("offering transaction for %s: %w", p.ID, err)
	}
	p = bound
	left := p.Expires.Sub(now) / time.Second
	if left < 1 {
		// Less than a second: the device could not show it in time.
		return nil, s.refuseOffer(ctx, sess, number, p.ID, protocol.CodeTransactionExpired, nil)
	}
	ttl := uint32(min(left, 1<<32-1))
	s.log.LogAttrs(ctx, slog.LevelInfo, "transaction offered", slog.String("purchase", p.ID),
		slog.String("card", auth.MaskCard(number)), slog.String("device", sess.Device.ID), slog.Uint64("ttl", uint64(ttl)))
	return &protocol.TransactionOffer{Transaction: p.Offer, CVMs: s.cfg.Auth.DefaultCVMs(), TTL: ttl}, nil
}

// paidBefore answers an OfferRequest with a reference no pending request
// has: the TransactionResult of the purchase card paid with it, again, or
// CodeTransactionUnknown.
func (s *Service) paidBefore(ctx context.Context, sess *auth.Session, card, reference string) (protocol.Message, error) {
	p, err := s.ms.PaidPurchase(ctx, reference, card)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Also when another card paid it: said as for an unknown
		// reference.
		return nil, s.refuseOffer(ctx, sess, card, "", protocol.CodeTransactionUnknown, fmt.Errorf("no pending request with reference %s", reference))
	case err != nil:
		return nil, fmt.Errorf("offering transaction: %w", err)
	}
	return s.resultAgain(ctx, sess, card, p)
}

// resultAgain is the TransactionResult of the paid purchase p, again,
// with its goods signed again.
func (s *Service) resultAgain(ctx context.Context, sess *auth.Session, card string, p store.Purchase) (protocol.Message, error) {
	id, err := TransactionID(p.ID)
	if err != nil {
		return nil, fmt.Errorf("answering again for %s: %w", p.ID, err)
	}
	var cvm txn.CVM
	if p.Approval != nil {
		cvm = txn.CVM(p.Approval.CVM)
	}
	goods := s.goods(ctx, p)
	s.log.LogAttrs(ctx, slog.LevelInfo, "purchase result sent again", slog.String("purchase", p.ID),
		slog.String("card", auth.MaskCard(card)), slog.String("device", sess.Device.ID),
		slog.String("status", string(p.Status)), slog.Int("goods", len(goods)))
	return &protocol.TransactionResult{ID: id[:], Code: protocol.CodeOK, CVM: cvm, Goods: goods}, nil
}

// pushedPaidBefore answers an OfferRequest with no reference when no
// request is pending for card: the TransactionResult of the pushed
// purchase paid (the transaction the device names, whose result it lost),
// again, when card paid it and it is still paid (not refunded in full);
// else CodeTransactionUnknown. A pushed purchase has no reference the
// device knows, so the device names the transaction it was settling.
// Nothing is posted and no counter moves.
func (s *Service) pushedPaidBefore(ctx context.Context, sess *auth.Session, card string, paid []byte) (protocol.Message, error) {
	unknown := func(cause error) (protocol.Message, error) {
		return nil, s.refuseOffer(ctx, sess, card, "", protocol.CodeTransactionUnknown, cause)
	}
	if paid == nil {
		return unknown(errors.New("no pending request for the card"))
	}
	id, ok := PurchaseID(paid)
	if !ok {
		return unknown(errors.New("no pending request for the card; not a purchase's transaction id"))
	}
	p, err := s.ms.Purchase(ctx, "", id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return unknown(err)
	case err != nil:
		return nil, fmt.Errorf("offering transaction: %w", err)
	}
	if p.Card != card || (p.Status != store.PurchaseApproved && p.Status != store.PurchaseRefundedPartially) {
		return unknown(fmt.Errorf("no pending request for the card; %s is %s (for card %s)", p.ID, p.Status, auth.MaskCard(p.Card)))
	}
	return s.resultAgain(ctx, sess, card, p)
}

// refuseOffer logs a refused OfferRequest and returns its error.
func (s *Service) refuseOffer(ctx context.Context, sess *auth.Session, card, id string, code protocol.Code, cause error) *protocol.Error {
	s.log.LogAttrs(ctx, slog.LevelInfo, "offer refused", attrs(sess, card, id, code, cause)...)
	return &protocol.Error{Code: code}
}

// attrs are the log attributes of a refusal; the card number is masked.
func attrs(sess *auth.Session, card, id string, code protocol.Code, cause error) []slog.Attr {
	a := []slog.Attr{slog.String("code", code.String()), slog.String("device", sess.Device.ID)}
	if id != "" {
		a = append(a, slog.String("purchase", id))
	}
	if card != "" {
		a = append(a, slog.String("card", auth.MaskCard(card)))
	}
	if cause != nil {
		a = append(a, slog.String("cause", cause.Error()))
	}
	return a
}

// transaction makes the canonical transaction offered for p at now.
func (s *Service) transaction(ctx context.Context, p store.Purchase, now time.Time) ([]byte, error) {
	id, err := TransactionID(p.ID)
	if err != nil {
		return nil, err
	}
	m, err := s.ms.Merchant(ctx, p.Merchant)
	if err != nil {
		return nil, fmt.Errorf("reading merchant %s: %w", p.Merchant, err)
	}
	item := p.Description
	if item == "" && p.Item != "" {
		it, err := s.ms.Item(ctx, p.Item)
		if err != nil {
			return nil, fmt.Errorf("reading item %s: %w", p.Item, err)
		}
		item = it.Name
	}
	t := txn.Transaction{
		ID:       id,
		Merchant: text(m.Name, maxMerchant, m.ID),
		Item:     text(item, maxItem, "purchase "+p.Reference),
		Amount:   money.Amount{Minor: p.Amount, Currency: p.Currency},
		Time:     now.Truncate(time.Second).UTC(),
		Nonce:    make([]byte, nonceLen),
	}
	if _, err := io.ReadFull(s.rand, t.Nonce); err != nil {
		return nil, fmt.Errorf("drawing nonce: %w", err)
	}
	return t.Encode()
}

// text makes s fit a canonical text field of at most max bytes: the
// unprintable runes (and invalid UTF-8) become spaces, surrounding space
// is trimmed, and it is cut to max bytes on a rune boundary. If nothing is left it
// returns fallback, made to fit the same way.
func text(s string, max int, fallback string) string {
	t := clean(s, max)
	if t == "" {
		t = clean(fallback, max)
	}
	if t == "" {
		t = "-"
	}
	return t
}

func clean(s string, max int) string {
	var b strings.Builder
	for _, r := range strings.TrimLeftFunc(s, unicode.IsSpace) {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}
