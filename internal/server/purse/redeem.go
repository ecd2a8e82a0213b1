package purse

import (
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

// Errors of Redeem; branch with errors.Is (and errors.As for
// *RedeemedError and *CardError).
var (
	// ErrAlreadyRedeemed: the receipt was redeemed before (a
	// *RedeemedError names the first redemption). Nothing was posted.
	ErrAlreadyRedeemed = errors.New("purse receipt already redeemed")
	// ErrInvalid: the receipt is malformed (card number, transaction
	// encoding, counter 0, CVM, signature length).
	ErrInvalid = errors.New("invalid purse receipt")
	// ErrPayee: the transaction pays another merchant than the one
	// redeeming it.
	ErrPayee = errors.New("purse receipt pays another merchant")
	// ErrCurrency: the transaction's currency is not the merchant
	// account's.
	ErrCurrency = errors.New("purse receipt in another currency than the merchant account")
	// ErrNoAccount: the merchant has no ledger account to be paid into.
	ErrNoAccount = errors.New("merchant has no ledger account")
	// ErrFloat: the ledger refused to take the amount from the float:
	// more e-money redeemed than was loaded. Nothing was recorded.
	ErrFloat = errors.New("purse receipt exceeds the e-money outstanding")
)

// RedeemedError says that a receipt was redeemed before, and which
// redemption that was. It unwraps to ErrAlreadyRedeemed.
type RedeemedError struct{ First store.Redemption }

func (e *RedeemedError) Error() string {
	return fmt.Sprintf("purse receipt already redeemed as %s by merchant %s", e.First.ID, e.First.Merchant)
}

// Unwrap returns ErrAlreadyRedeemed.
func (e *RedeemedError) Unwrap() error { return ErrAlreadyRedeemed }

// CardError is a refusal of the card or its signature, with the protocol
// code auth.Service.VerifyCardSignature gave (CodeCardUnknown,
// CodeCardRevoked, CodeCertificateInvalid, CodeSignatureInvalid,
// CodeCounterNotIncreasing for a card flagged as cloned).
type CardError struct{ Code protocol.Code }

func (e *CardError) Error() string { return "purse receipt refused: " + e.Code.String() }

// Receipt is a card's purse debit receipt as a merchant presents it.
type Receipt struct {
	Card        string  // 16 digits
	Transaction []byte  // the canonical transaction the card signed
	Counter     uint32  // the card's counter in the signature
	CVM         txn.CVM // as the card signed it
	Signature   []byte  // ASN.1 DER
}

// Redeem redeems the receipt r for the merchant with ID merchant, once:
// it checks r (ErrInvalid), that the transaction's payee is the
// merchant's name and not the issuer, nor the transaction one of the
// server's own loads or unloads (ErrPayee), and its currency the merchant account's
// (ErrNoAccount, ErrCurrency), the card and the signature over
// Envelope{PurposePurseDebit, card, counter, CVM, payload = the
// transaction} (*CardError); records the redemption, unique by
// transaction and by (card, counter) (*RedeemedError otherwise); and
// posts float → merchant under RedeemKey. It returns the redemption as
// stored, redeemed. A refusal of the ledger (ErrFloat) removes the
// record; any other error after it leaves it pending, its posting
// outstanding, for Sweep to finish (the receipt is not redeemable again
// meanwhile; the transfer key keeps it paid once).
//
// The counter need not grow, nor be above what the server saw: receipts
// are made offline and reach the server in any order, through any
// merchant, after the card signed other things online. This is still
// safe: the card's counter grows with every signature it makes (it is
// persisted before the card signs), so no two genuine receipts of one
// card share a counter, and the store keeps one redemption per (card,
// counter) and per transaction id; a receipt is therefore spendable
// once, and a forged or altered one fails the signature.
func (s *Service) Redeem(ctx context.Context, merchant string, r Receipt) (store.Redemption, error) {
	if err := txn.ValidCardNumber(r.Card); err != nil {
		return store.Redemption{}, fmt.Errorf("redeeming: %w: %w", ErrInvalid, err)
	}
	t, err := txn.Parse(r.Transaction)
	if err != nil {
		return store.Redemption{}, fmt.Errorf("redeeming: %w: %w", ErrInvalid, err)
	}
	if r.Counter == 0 || r.CVM > txn.CVMBiometric || len(r.Signature) < protocol.MinSignature || len(r.Signature) > protocol.MaxSignature {
		return store.Redemption{}, fmt.Errorf("redeeming: %w: counter, CVM or signature length", ErrInvalid)
	}
	m, err := s.ms.Merchant(ctx, merchant)
	if err != nil {
		return store.Redemption{}, fmt.Errorf("redeeming: reading merchant: %w", err)
	}
	if t.Merchant != m.Name {
		return store.Redemption{}, fmt.Errorf("redeeming: paid to %q, not %q: %w", t.Merchant, m.Name, ErrPayee)
	}
	// An unload is a purse debit too, paying the issuer: its receipt is
	// never a merchant's to redeem, whatever the merchant is called.
	if t.Merchant == s.cfg.Issuer {
		return store.Redemption{}, fmt.Errorf("redeeming: paid to the issuer: %w", ErrPayee)
	}
	if _, err := s.ps.PurseOp(ctx, OpID(t.ID)); err == nil {
		return store.Redemption{}, fmt.Errorf("redeeming: transaction %x is a purse operation: %w", t.ID, ErrPayee)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Redemption{}, fmt.Errorf("redeeming: %w", err)
	}
	if m.Account == "" {
		return store.Redemption{}, fmt.Errorf("redeeming: %w", ErrNoAccount)
	}
	bal, err := s.cfg.Ledger.Balance(ctx, m.Account)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Redemption{}, fmt.Errorf("redeeming: %w", ErrNoAccount)
	case err != nil:
		return store.Redemption{}, fmt.Errorf("redeeming: reading merchant account: %w", err)
	case bal.Currency != t.Amount.Currency:
		return store.Redemption{}, fmt.Errorf("redeeming: %s, account in %s: %w", t.Amount.Currency, bal.Currency, ErrCurrency)
	}
	env := txn.Envelope{Purpose: txn.PurposePurseDebit, CardNumber: r.Card, Counter: r.Counter, CVM: r.CVM, Payload: r.Transaction}
	code, cause, err := s.cfg.Auth.VerifyCardSignature(ctx, &env, r.Signature)
	if err != nil {
		return store.Redemption{}, fmt.Errorf("redeeming: %w", err)
	}
	if code != protocol.CodeOK {
		s.log.LogAttrs(ctx, slog.LevelInfo, "redemption refused", slog.String("merchant", merchant),
			slog.String("card", auth.MaskCard(r.Card)), slog.String("code", code.String()), slog.Any("cause", cause))
		return store.Redemption{}, fmt.Errorf("redeeming: %w", &CardError{Code: code})
	}
	now := s.now()
	red, err := s.ps.CreateRedemption(ctx, store.Redemption{
		ID: RedemptionID(t.ID), Merchant: merchant, Card: r.Card, Counter: r.Counter, CVM: uint8(r.CVM),
		Transaction: r.Transaction, Signature: r.Signature, Amount: t.Amount, Created: now,
	})
	switch {
	case errors.Is(err, store.ErrConflict):
		s.log.LogAttrs(ctx, slog.LevelWarn, "purse receipt presented again", slog.String("merchant", merchant),
			slog.String("card", auth.MaskCard(r.Card)), slog.Uint64("counter", uint64(r.Counter)), slog.String("first", red.ID))
		return red, fmt.Errorf("redeeming: %w", &RedeemedError{First: red})
	case err != nil:
		return store.Redemption{}, fmt.Errorf("redeeming: %w", err)
	}
	red, err = s.post(ctx, red, m.Account)
	if err != nil {
		return store.Redemption{}, err
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "purse receipt redeemed", slog.String("redemption", red.ID), slog.String("merchant", merchant),
		slog.String("card", auth.MaskCard(r.Card)), slog.Uint64("counter", uint64(r.Counter)), slog.Int64("amount", t.Amount.Minor),
		slog.Int64("transfer", red.Transfer))
	return red, nil
}

// post posts the pending redemption red, float → account, under
// RedeemKey, and records it redeemed. A refusal of the ledger removes the
// record (ErrFloat); any other error leaves it pending.
func (s *Service) post(ctx context.Context, red store.Redemption, account string) (store.Redemption, error) {
	posted, err := s.cfg.Ledger.Transfer(ctx, ledger.Transfer{
		Key:      RedeemKey(red.Card, red.Counter),
		Currency: red.Amount.Currency,
		Legs: []ledger.Leg{
			{Account: ledger.FloatAccount(red.Amount.Currency), Amount: -red.Amount.Minor},
			{Account: account, Amount: red.Amount.Minor},
		},
		Memo: "purse redemption " + red.ID,
	})
	if errors.Is(err, store.ErrLimit) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrCurrency) {
		if derr := s.ps.DeleteRedemption(ctx, red.ID); derr != nil {
			return store.Redemption{}, fmt.Errorf("redeeming %s: %w (and removing the record: %v)", red.ID, ErrFloat, derr)
		}
		return store.Redemption{}, fmt.Errorf("redeeming %s: %w: %v", red.ID, ErrFloat, err)
	}
	if err != nil {
		return store.Redemption{}, fmt.Errorf("redeeming %s: %w", red.ID, err)
	}
	got, err := s.ps.FinishRedemption(ctx, red.ID, posted.ID, s.now())
	if errors.Is(err, store.ErrConflict) && got.Status == store.RedemptionRedeemed {
		return got, nil // finished meanwhile (a sweep)
	}
	if err != nil {
		return store.Redemption{}, fmt.Errorf("redeeming %s: %w", red.ID, err)
	}
	return got, nil
}
