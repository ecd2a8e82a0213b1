package wallet

import (
	"encoding/binary"
	"errors"
	"math"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/money"
	"cardlink/internal/txn"
)

// The e-money purse (docs/wallet-applet.md, "Purse"). Its state is two NVM
// records beside the currency and maximum written at personalization; an
// absent record reads as zero.
const (
	keyPurseBalance = "wallet/purse/balance" // 8 bytes, minor units, big-endian
	keyPurseSeq     = "wallet/purse/seq"     // 4 bytes, sequence of the last load applied
)

// Purse data objects (docs/wallet-applet.md, tag table); the counter, CVM
// and signature tags are declared in wallet.go.
const (
	tagPurseBalance  iso7816.Tag = 0xDF30 // 8 bytes
	tagPurseCurrency iso7816.Tag = 0xDF31 // 3 ASCII letters
	tagPurseSeq      iso7816.Tag = 0xDF32 // 4 bytes
	tagPurseMax      iso7816.Tag = 0xDF33 // 8 bytes
)

// refusal is a status word returned from inside an nvm.Update callback so
// that the transaction is discarded and the command answers with it.
type refusal iso7816.SW

func (r refusal) Error() string { return iso7816.SW(r).String() }

// refusalSW maps the error of an nvm.Update to the status word to answer: a
// refusal is itself, nvm.ErrFull is 6A84, anything else (a power cut, a
// medium failure) is 6581.
func refusalSW(err error) iso7816.SW {
	if r, ok := errors.AsType[refusal](err); ok {
		return iso7816.SW(r)
	}
	if errors.Is(err, nvm.ErrFull) {
		return iso7816.SWNoSpace
	}
	return iso7816.SWMemoryFailure
}

// purseCurrency returns the purse's currency written at personalization,
// and whether it is there.
func purseCurrency(ctx *card.Context) (money.Currency, bool) {
	b := ctx.NVM.Get(keyPurseCurrency)
	if len(b) != 3 {
		return "", false
	}
	return money.Currency(b), true
}

// purseMax returns the maximum balance written at personalization; absent
// (or malformed) means no limit but int64's.
func purseMax(get func(string) []byte) uint64 {
	b := get(keyPurseMax)
	if len(b) != 8 {
		return math.MaxInt64
	}
	return min(binary.BigEndian.Uint64(b), math.MaxInt64)
}

// purseBalance and purseSeq read the purse's state; absent is zero.
func purseBalance(get func(string) []byte) uint64 {
	b := get(keyPurseBalance)
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func purseSeq(get func(string) []byte) uint32 {
	b := get(keyPurseSeq)
	if len(b) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// purseLoad handles PURSE LOAD (80 A2 00 00, data = E5 signed load): it
// credits the purse with an issuer-signed load whose sequence number is the
// purse's next one, and answers DF30 balance, DF32 sequence, 9F36 counter
// and 9F4B the card's receipt signature (purpose LoadReceipt, CVM none,
// payload the load's Bytes()). No holder verification is needed: the
// issuer's signature is the authority.
//
// Status words: 6A80 malformed data, another card's load or a foreign
// currency; 6982 bad issuer signature; 6985 not operational, a replayed or
// out-of-order sequence number, or the counter at its maximum; 6A84 the
// balance would exceed the maximum (or NVM is full); 6581 NVM failure.
func purseLoad(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	l, sig, err := txn.ParseSignedLoad(cmd.Data)
	if err != nil {
		return nil, iso7816.SWWrongData
	}
	if !txn.VerifyLoad(opsKey(ctx), &l, sig) {
		return nil, iso7816.SWSecurityStatus
	}
	cur, ok := purseCurrency(ctx)
	if !ok {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	pan := cardNumber(ctx)
	if l.CardNumber != pan || l.Amount.Currency != cur || l.Amount.Minor <= 0 {
		return nil, iso7816.SWWrongData
	}
	msg := l.Bytes()

	var balance uint64
	var counter uint32
	err = ctx.NVM.Update(func(tx *nvm.Tx) error {
		if seq := purseSeq(tx.Get); uint64(l.Seq) != uint64(seq)+1 {
			return refusal(iso7816.SWConditionsNotSatisfied)
		}
		old := purseBalance(tx.Get)
		amount := uint64(l.Amount.Minor)
		// max ≤ MaxInt64, so neither the sum nor the difference wraps.
		if maxBal := purseMax(tx.Get); old > maxBal || amount > maxBal-old {
			return refusal(iso7816.SWNoSpace)
		}
		c, err := bumpCounter(tx)
		if err != nil {
			return refusal(iso7816.SWConditionsNotSatisfied) // at its maximum
		}
		balance, counter = old+amount, c
		tx.Put(keyPurseBalance, binary.BigEndian.AppendUint64(nil, balance))
		tx.Put(keyPurseSeq, binary.BigEndian.AppendUint32(nil, l.Seq))
		appendLog(tx, txn.PurposeLoadReceipt, counter, txn.CVMNone, msg)
		return nil
	})
	if err != nil {
		return nil, refusalSW(err)
	}
	rsig, sw := sign(ctx, &txn.Envelope{
		Purpose:    txn.PurposeLoadReceipt,
		CardNumber: pan,
		Counter:    counter,
		CVM:        txn.CVMNone,
		Payload:    msg,
	})
	if sw != iso7816.SWOK {
		return nil, sw
	}
	resp := iso7816.AppendTLV(nil, tagPurseBalance, binary.BigEndian.AppendUint64(nil, balance))
	resp = iso7816.AppendTLV(resp, tagPurseSeq, binary.BigEndian.AppendUint32(nil, l.Seq))
	resp = iso7816.AppendTLV(resp, tagCounter, binary.BigEndian.AppendUint32(nil, counter))
	resp = iso7816.AppendTLV(resp, tagSignature, rsig)
	return resp, iso7816.SWOK
}

// purseDebit handles PURSE DEBIT (80 A6 00 00, data = canonical
// transaction): it pays the transaction's merchant from the purse and
// answers DF30 balance, 9F36 counter, 9F34 CVM and 9F4B the card's
// signature (purpose PurseDebit, payload the transaction bytes) — the
// receipt the merchant redeems at the server.
//
// Checks, in order: class, P1-P2, operational (6985); the data is a
// canonical transaction (6A80) in the purse's currency (6A80). Past these,
// the pending holder verification is consumed whatever happens next: none
// (or one that is neither offline PIN nor biometric) is 6982; an amount
// over the balance is 6985; the counter at its maximum 6985; NVM full 6A84,
// NVM failure 6581.
func purseDebit(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return nil, iso7816.SWIncorrectP1P2
	}
	t, err := txn.Parse(cmd.Data)
	if err != nil || t.Amount.Minor <= 0 {
		return nil, iso7816.SWWrongData
	}
	cur, ok := purseCurrency(ctx)
	if !ok {
		return nil, iso7816.SWConditionsNotSatisfied
	}
	if t.Amount.Currency != cur {
		return nil, iso7816.SWWrongData
	}
	cvm := consumeCVM(ctx)
	if cvm != txn.CVMOfflinePIN && cvm != txn.CVMBiometric {
		return nil, iso7816.SWSecurityStatus
	}
	payload := append([]byte(nil), cmd.Data...)

	var balance uint64
	var counter uint32
	err = ctx.NVM.Update(func(tx *nvm.Tx) error {
		old := purseBalance(tx.Get)
		amount := uint64(t.Amount.Minor)
		if amount > old {
			return refusal(iso7816.SWConditionsNotSatisfied)
		}
		c, err := bumpCounter(tx)
		if err != nil {
			return refusal(iso7816.SWConditionsNotSatisfied) // at its maximum
		}
		balance, counter = old-amount, c
		tx.Put(keyPurseBalance, binary.BigEndian.AppendUint64(nil, balance))
		appendLog(tx, txn.PurposePurseDebit, counter, cvm, payload)
		return nil
	})
	if err != nil {
		return nil, refusalSW(err)
	}
	sig, sw := sign(ctx, &txn.Envelope{
		Purpose:    txn.PurposePurseDebit,
		CardNumber: cardNumber(ctx),
		Counter:    counter,
		CVM:        cvm,
		Payload:    payload,
	})
	if sw != iso7816.SWOK {
		return nil, sw
	}
	resp := iso7816.AppendTLV(nil, tagPurseBalance, binary.BigEndian.AppendUint64(nil, balance))
	resp = iso7816.AppendTLV(resp, tagCounter, binary.BigEndian.AppendUint32(nil, counter))
	resp = iso7816.AppendTLV(resp, tagCVM, []byte{byte(cvm)})
	resp = iso7816.AppendTLV(resp, tagSignature, sig)
	return resp, iso7816.SWOK
}

// purseData answers GET DATA for the purse's tags: DF30 balance (8 bytes),
// DF31 currency (3 letters; absent before personalization writes it), DF32
// sequence of the last load (4 bytes), DF33 maximum balance (8 bytes). The
// value is returned without tag and length. ok is false for a tag that is
// not the purse's.
func purseData(ctx *card.Context, tag iso7816.Tag) (data []byte, ok bool) {
	switch tag {
	case tagPurseBalance:
		return binary.BigEndian.AppendUint64(nil, purseBalance(ctx.NVM.Get)), true
	case tagPurseCurrency:
		c, ok := purseCurrency(ctx)
		if !ok {
			return nil, false
		}
		return []byte(c), true
	case tagPurseSeq:
		return binary.BigEndian.AppendUint32(nil, purseSeq(ctx.NVM.Get)), true
	case tagPurseMax:
		return binary.BigEndian.AppendUint64(nil, purseMax(ctx.NVM.Get)), true
	}
	return nil, false
}
