package wallet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/txn"
)

// Purse instructions and data objects (docs/wallet-applet.md, "Purse").
const (
	insPurseLoad  = 0xA2
	insPurseDebit = 0xA6

	tagPurseBalance  iso7816.Tag = 0xDF30
	tagPurseCurrency iso7816.Tag = 0xDF31
	tagPurseSeq      iso7816.Tag = 0xDF32
	tagPurseMax      iso7816.Tag = 0xDF33
)

// PurseState is what the card's purse holds.
type PurseState struct {
	Balance money.Amount
	// Seq is the sequence number of the last load applied (0 before the
	// first); the next load must carry Seq+1.
	Seq uint32
	// Max is the largest balance the card accepts.
	Max money.Amount
}

// LoadReceipt is the card's answer to a purse load: its new state and its
// signature over the load (purpose LoadReceipt, CVM none).
type LoadReceipt struct {
	Load    txn.Load
	Balance money.Amount
	Counter uint32 // the card's transaction counter after the load
	Sig     []byte // ASN.1 DER, over Envelope().Bytes()
}

// Envelope returns what r.Sig covers.
func (r *LoadReceipt) Envelope() *txn.Envelope {
	return &txn.Envelope{
		Purpose:    txn.PurposeLoadReceipt,
		CardNumber: r.Load.CardNumber,
		Counter:    r.Counter,
		CVM:        txn.CVMNone,
		Payload:    r.Load.Bytes(),
	}
}

// DebitReceipt is the card's answer to a purse debit: the receipt the
// merchant redeems at the server, once.
type DebitReceipt struct {
	Transaction []byte // the canonical transaction bytes signed
	Balance     money.Amount
	Counter     uint32  // the card's transaction counter after the debit
	CVM         txn.CVM // how the holder was verified
	Sig         []byte  // ASN.1 DER, over Envelope(card number).Bytes()
}

// Envelope returns what r.Sig covers, for the card with the given number.
func (r *DebitReceipt) Envelope(cardNumber string) *txn.Envelope {
	return &txn.Envelope{
		Purpose:    txn.PurposePurseDebit,
		CardNumber: cardNumber,
		Counter:    r.Counter,
		CVM:        r.CVM,
		Payload:    r.Transaction,
	}
}

// Purse reads the purse's balance, load sequence number and maximum
// balance with four GET DATA commands.
func (c *Client) Purse(ctx context.Context) (PurseState, error) {
	var v [4][]byte
	for i, tag := range []iso7816.Tag{tagPurseCurrency, tagPurseBalance, tagPurseSeq, tagPurseMax} {
		b, err := c.GetData(ctx, tag)
		if err != nil {
			return PurseState{}, fmt.Errorf("reading purse: %w", err)
		}
		v[i] = b
	}
	cur, err := money.ParseCurrency(string(v[0]))
	if err != nil {
		return PurseState{}, fmt.Errorf("reading purse currency: %w: %w", errMalformedReply, err)
	}
	bal, err1 := amount8(v[1], cur)
	maxBal, err2 := amount8(v[3], cur)
	if err := errors.Join(err1, err2); err != nil {
		return PurseState{}, fmt.Errorf("reading purse: %w", err)
	}
	if len(v[2]) != 4 {
		return PurseState{}, fmt.Errorf("reading purse sequence: %w: %d bytes", errMalformedReply, len(v[2]))
	}
	return PurseState{Balance: bal, Seq: binary.BigEndian.Uint32(v[2]), Max: maxBal}, nil
}

// amount8 decodes an 8-byte unsigned big-endian amount.
func amount8(b []byte, cur money.Currency) (money.Amount, error) {
	if len(b) != 8 {
		return money.Amount{}, fmt.Errorf("%w: amount of %d bytes", errMalformedReply, len(b))
	}
	v := binary.BigEndian.Uint64(b)
	if v > math.MaxInt64 {
		return money.Amount{}, fmt.Errorf("%w: amount %d over int64", errMalformedReply, v)
	}
	return money.Amount{Minor: int64(v), Currency: cur}, nil
}

// responseFields parses a response made of primitive BER-TLV objects and
// returns the values of the wanted tags, all of which must be present.
func responseFields(b []byte, want ...iso7816.Tag) ([][]byte, error) {
	list, err := iso7816.ParseTLV(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedReply, err)
	}
	return fieldsOf(list, want...)
}

// Load sends PURSE LOAD with signedLoad (the issuer's E5 template, as made
// by txn.Load.EncodeSigned) and returns the card's receipt. Refusals are
// *iso7816.StatusError: ErrWrongData (another card's load, a foreign
// currency), ErrSecurityStatus (bad issuer signature), ErrConditions
// (replayed or out-of-order sequence number), ErrNoSpace (the balance would
// exceed the maximum).
func (c *Client) Load(ctx context.Context, signedLoad []byte) (LoadReceipt, error) {
	l, _, err := txn.ParseSignedLoad(signedLoad)
	if err != nil {
		return LoadReceipt{}, fmt.Errorf("loading purse: %w", err)
	}
	resp, err := c.exchange(ctx, claProprietary, insPurseLoad, 0, 0, signedLoad, 256)
	if err != nil {
		return LoadReceipt{}, fmt.Errorf("loading purse: %w", err)
	}
	f, err := responseFields(resp, tagPurseBalance, tagPurseSeq, tagCounter, tagSignature)
	if err != nil {
		return LoadReceipt{}, fmt.Errorf("loading purse: %w", err)
	}
	bal, err := amount8(f[0], l.Amount.Currency)
	if err != nil {
		return LoadReceipt{}, fmt.Errorf("loading purse: %w", err)
	}
	if len(f[1]) != 4 || binary.BigEndian.Uint32(f[1]) != l.Seq || len(f[2]) != 4 {
		return LoadReceipt{}, fmt.Errorf("loading purse: %w: sequence or counter", errMalformedReply)
	}
	return LoadReceipt{Load: l, Balance: bal, Counter: binary.BigEndian.Uint32(f[2]), Sig: f[3]}, nil
}

// Debit sends PURSE DEBIT for t, paying its merchant from the purse. The
// holder must have been verified (PIN or biometric) since the last card
// signature. Refusals are *iso7816.StatusError: ErrSecurityStatus (no
// pending verification), ErrWrongData (a currency other than the purse's),
// ErrConditions (amount over the balance).
func (c *Client) Debit(ctx context.Context, t *txn.Transaction) (DebitReceipt, error) {
	b, err := t.Encode()
	if err != nil {
		return DebitReceipt{}, fmt.Errorf("debiting purse: %w", err)
	}
	resp, err := c.exchange(ctx, claProprietary, insPurseDebit, 0, 0, b, 256)
	if err != nil {
		return DebitReceipt{}, fmt.Errorf("debiting purse: %w", err)
	}
	f, err := responseFields(resp, tagPurseBalance, tagCounter, tagCVM, tagSignature)
	if err != nil {
		return DebitReceipt{}, fmt.Errorf("debiting purse: %w", err)
	}
	bal, err := amount8(f[0], t.Amount.Currency)
	if err != nil {
		return DebitReceipt{}, fmt.Errorf("debiting purse: %w", err)
	}
	if len(f[1]) != 4 || len(f[2]) != 1 {
		return DebitReceipt{}, fmt.Errorf("debiting purse: %w: counter or CVM", errMalformedReply)
	}
	return DebitReceipt{
		Transaction: b,
		Balance:     bal,
		Counter:     binary.BigEndian.Uint32(f[1]),
		CVM:         txn.CVM(f[2][0]),
		Sig:         f[3],
	}, nil
}
