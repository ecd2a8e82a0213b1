package protocol

import (
	"errors"
	"fmt"
	"math"
)

// E-money purse messages (Version 1, types appended after
// TransactionResult).
//
// A load: the device reads the purse (balance, sequence number) and sends
// PurseRequest{PurseKindLoad, Seq = the purse's sequence number}; the
// server offers the load as a TransactionOffer (payee the issuer, item
// "Purse load"), the holder approves it as a purchase (SIGN TRANSACTION,
// TransactionApproval); the server posts it and answers PurseLoad, the
// issuer-signed load for sequence number Seq+1; the device applies it
// (PURSE LOAD) and sends the card's LoadReceipt, answered by a
// TransactionResult. A server that already signed the load for Seq+1
// (a retry after a lost answer) answers the PurseRequest with that
// PurseLoad at once.
//
// An unload: PurseRequest{PurseKindUnload}; the server offers it
// (item "Purse unload"), the card signs it with PURSE DEBIT, so that the
// purse really goes down, and the device sends that signature as a
// TransactionApproval; the server answers a TransactionResult.

// Purse request kinds, PurseRequest.Kind.
const (
	PurseKindLoad   = 1 // holder account → purse
	PurseKindUnload = 2 // purse → holder account
)

// MaxSignedLoad bounds PurseLoad.Load: an issuer-signed load (template
// E5) is about 120 bytes.
const MaxSignedLoad = 256

// PurseRequest asks the server for a purse load or unload, device →
// server. The card is named as in an OfferRequest, with the same
// certificate exchange (CodeCertificateNeeded).
type PurseRequest struct {
	Kind        uint8      `cbor:"1,keyasint,omitempty"` // PurseKindLoad or PurseKindUnload
	CardNumber  CardNumber `cbor:"2,keyasint,omitempty"` // required
	CertID      []byte     `cbor:"3,keyasint,omitempty"` // CertID of the card certificate, CertIDLen bytes
	Certificate []byte     `cbor:"4,keyasint,omitempty"` // only after CodeCertificateNeeded; at most MaxCertificate
	Amount      uint64     `cbor:"5,keyasint,omitempty"` // minor units, 1..2^63-1
	Currency    string     `cbor:"6,keyasint,omitempty"` // the purse's currency, 3 upper-case ASCII letters
	Seq         uint32     `cbor:"7,keyasint,omitempty"` // the purse's load sequence number as read (0 before the first load)
	Balance     uint64     `cbor:"8,keyasint,omitempty"` // the purse's balance as read, minor units, at most 2^63-1
}

// Type returns TypePurseRequest.
func (*PurseRequest) Type() Type { return TypePurseRequest }

func (r *PurseRequest) validate() error {
	if r.Kind != PurseKindLoad && r.Kind != PurseKindUnload {
		return fmt.Errorf("kind: unknown value %d", r.Kind)
	}
	if err := checkCard(r.CardNumber, r.CertID, r.Certificate); err != nil {
		return err
	}
	if r.Amount == 0 || r.Amount > math.MaxInt64 {
		return fmt.Errorf("amount: %d out of range 1..2^63-1", r.Amount)
	}
	if r.Balance > math.MaxInt64 {
		return fmt.Errorf("balance: %d over 2^63-1", r.Balance)
	}
	if len(r.Currency) != 3 {
		return fmt.Errorf("currency: %d bytes, want 3", len(r.Currency))
	}
	for i := range 3 {
		if c := r.Currency[i]; c < 'A' || c > 'Z' {
			return errors.New("currency: not 3 upper-case letters")
		}
	}
	if r.Kind == PurseKindLoad && r.Seq == math.MaxUint32 {
		return errors.New("seq: the purse takes no more loads")
	}
	return nil
}

// checkCard checks how a device names a card (as in OfferRequest).
func checkCard(n CardNumber, certID, cert []byte) error {
	r := OfferRequest{CardNumber: n, CertID: certID, Certificate: cert}
	return r.validate()
}

// PurseLoad is the issuer-signed load for the card's purse, server →
// device: the answer to an approved load (or to a PurseRequest for a
// load already signed). The device sends Load to the card (PURSE LOAD)
// and answers with a LoadReceipt.
type PurseLoad struct {
	ID   []byte `cbor:"1,keyasint,omitempty"` // the load's transaction id, TransactionIDLen bytes
	Load []byte `cbor:"2,keyasint,omitempty"` // txn.Load.EncodeSigned (template E5), 1..MaxSignedLoad bytes
}

// Type returns TypePurseLoad.
func (*PurseLoad) Type() Type { return TypePurseLoad }

func (l *PurseLoad) validate() error {
	if err := checkLen("id", l.ID, TransactionIDLen, TransactionIDLen); err != nil {
		return err
	}
	return checkLen("load", l.Load, 1, MaxSignedLoad)
}

// LoadReceipt is the card's receipt for an applied load, device →
// server: its signature over Envelope{PurposeLoadReceipt, card, Counter,
// CVM none, payload = the Load's bytes}. The server answers with a
// TransactionResult.
type LoadReceipt struct {
	ID        []byte `cbor:"1,keyasint,omitempty"` // the load's transaction id, TransactionIDLen bytes
	Counter   uint32 `cbor:"2,keyasint,omitempty"` // the card's counter after the load, at least 1
	Signature []byte `cbor:"3,keyasint,omitempty"` // MinSignature..MaxSignature bytes of DER
	Balance   uint64 `cbor:"4,keyasint,omitempty"` // the purse's balance after the load, at most 2^63-1
}

// Type returns TypeLoadReceipt.
func (*LoadReceipt) Type() Type { return TypeLoadReceipt }

func (r *LoadReceipt) validate() error {
	if err := checkLen("id", r.ID, TransactionIDLen, TransactionIDLen); err != nil {
		return err
	}
	if r.Balance > math.MaxInt64 {
		return fmt.Errorf("balance: %d over 2^63-1", r.Balance)
	}
	return checkSigned(r.Counter, 0, r.Signature, nil, nil)
}
