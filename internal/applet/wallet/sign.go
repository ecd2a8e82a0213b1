package wallet

import (
	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/iso7816"
	"cardlink/internal/txn"
)

// INTERNAL AUTHENTICATE data objects.
const (
	tagChallenge iso7816.Tag = 0x80
	tagContext   iso7816.Tag = 0x81

	challengeLen  = 32
	maxContextLen = 64
)

// INTERNAL AUTHENTICATE and SIGN TRANSACTION P1: who verifies the holder.
const (
	p1CVMOnCard    = 0x00 // offline PIN or biometric verified on this card (INTERNAL AUTHENTICATE: if any)
	p1CVMOnlinePIN = 0x02 // the server checks an encrypted PIN block
)

// parseAuthData checks INTERNAL AUTHENTICATE data: 80 (32 bytes), then
// optionally 81 (1..64 bytes), nothing else.
func parseAuthData(b []byte) bool {
	list, err := iso7816.ParseTLV(b)
	if err != nil || len(list) < 1 || len(list) > 2 {
		return false
	}
	if list[0].Tag != tagChallenge || len(list[0].Value) != challengeLen {
		return false
	}
	if len(list) == 2 && (list[1].Tag != tagContext || len(list[1].Value) < 1 || len(list[1].Value) > maxContextLen) {
		return false
	}
	return true
}

// internalAuthenticate handles INTERNAL AUTHENTICATE (00 88 P1 00): it bumps
// and persists the counter and signs Envelope{PurposeAuth, payload = the
// command data}. P1 00 consumes the pending CVM (none if there is none).
// P1 02 declares that the holder keyed an online PIN, which the server
// checks: CVM online PIN. It is refused (6985) while an on-card
// verification is pending, which then stays pending: the envelope names one
// method, and the card does not choose between two for the device.
func internalAuthenticate(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P2 != 0 || cmd.P1 != p1CVMOnCard && cmd.P1 != p1CVMOnlinePIN {
		return nil, iso7816.SWIncorrectP1P2
	}
	if !parseAuthData(cmd.Data) {
		return nil, iso7816.SWWrongData
	}
	cvm, sw := signatureCVM(ctx, cmd.P1, false)
	if !sw.OK() {
		return nil, sw
	}
	var n uint32
	err := ctx.NVM.Update(func(tx *nvm.Tx) (err error) {
		n, err = bumpCounter(tx)
		return err
	})
	if err != nil {
		return nil, commitSW(err)
	}
	return signed(ctx, txn.PurposeAuth, n, cvm, cmd.Data)
}

// signatureCVM decides the CVM a signature will name, for P1 of INTERNAL
// AUTHENTICATE and SIGN TRANSACTION. P1 00: the pending on-card
// verification, consumed (one verification covers one signature); when
// onCardRequired and none is pending, 6982. P1 02: online PIN, refused with
// 6985 while an on-card verification is pending (which then stays pending):
// the envelope names one method, and the card does not choose between two
// for the device.
func signatureCVM(ctx *card.Context, p1 byte, onCardRequired bool) (txn.CVM, iso7816.SW) {
	if p1 == p1CVMOnlinePIN {
		if pendingCVM(ctx) != txn.CVMNone {
			return 0, iso7816.SWConditionsNotSatisfied
		}
		return txn.CVMOnlinePIN, iso7816.SWOK
	}
	if onCardRequired {
		if c := pendingCVM(ctx); c != txn.CVMOfflinePIN && c != txn.CVMBiometric {
			return 0, iso7816.SWSecurityStatus
		}
	}
	return consumeCVM(ctx), iso7816.SWOK
}

// signTransaction handles SIGN TRANSACTION (80 A0 P1 00): data is a
// canonical transaction. P1 00 needs a pending on-card verification (6982
// otherwise); P1 02 declares online PIN (6985 while an on-card
// verification is pending). The counter and the log record are
// written in one update before the card signs
// Envelope{PurposeTransaction, payload = the transaction}.
func signTransaction(ctx *card.Context, cmd iso7816.Command) ([]byte, iso7816.SW) {
	if cmd.P2 != 0 || cmd.P1 != p1CVMOnCard && cmd.P1 != p1CVMOnlinePIN {
		return nil, iso7816.SWIncorrectP1P2
	}
	if _, err := txn.Parse(cmd.Data); err != nil {
		return nil, iso7816.SWWrongData
	}
	cvm, sw := signatureCVM(ctx, cmd.P1, true)
	if !sw.OK() {
		return nil, sw
	}
	var n uint32
	err := ctx.NVM.Update(func(tx *nvm.Tx) (err error) {
		if n, err = bumpCounter(tx); err != nil {
			return err
		}
		appendLog(tx, txn.PurposeTransaction, n, cvm, cmd.Data)
		return nil
	})
	if err != nil {
		return nil, commitSW(err)
	}
	return signed(ctx, txn.PurposeTransaction, n, cvm, cmd.Data)
}

// signed signs the envelope and encodes the reply.
func signed(ctx *card.Context, p txn.Purpose, counter uint32, cvm txn.CVM, payload []byte) ([]byte, iso7816.SW) {
	sig, sw := sign(ctx, &txn.Envelope{
		Purpose:    p,
		CardNumber: cardNumber(ctx),
		Counter:    counter,
		CVM:        cvm,
		Payload:    payload,
	})
	if !sw.OK() {
		return nil, sw
	}
	return signatureResponse(counter, cvm, sig), iso7816.SWOK
}
