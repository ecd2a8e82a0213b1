package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"cardlink/internal/protocol"
	"cardlink/internal/server/purse"
	"cardlink/internal/store"
	"cardlink/internal/txn"
)

// Problem types of purse redemptions (append only, as the others).
var (
	probAlreadyRedeemed = problemKind{"already-redeemed", "Purse receipt already redeemed", http.StatusConflict}
	probReceiptRefused  = problemKind{"receipt-refused", "Purse receipt refused", http.StatusUnprocessableEntity}
)

// redemptionRequest is the body of POST /v1/purse-redemptions: a card's
// purse debit receipt, as the merchant's point of sale collected it.
type redemptionRequest struct {
	Card        string `json:"card"`        // 16 digits
	Transaction string `json:"transaction"` // base64 (standard, padded) of the canonical transaction
	Counter     int64  `json:"counter"`     // the card's counter in the signature, 1..2^32-1
	CVM         int64  `json:"cvm"`         // 0..3, as the card signed it
	Signature   string `json:"signature"`   // base64 of the DER signature
}

// redemptionResponse is a redemption.
type redemptionResponse struct {
	ID          string    `json:"id"`
	Card        string    `json:"card"`
	Counter     uint32    `json:"counter"`
	Transaction string    `json:"transaction_id"` // 32 hex digits
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Status      string    `json:"status"`
	Transfer    int64     `json:"transfer"`
	Created     time.Time `json:"created"`
}

// parseRedemption checks req and returns the receipt; the message is
// for the client, "" means valid.
func parseRedemption(req *redemptionRequest) (purse.Receipt, string) {
	if txn.ValidCardNumber(req.Card) != nil {
		return purse.Receipt{}, "card must be 16 digits with a valid check digit."
	}
	t, err := base64.StdEncoding.Strict().DecodeString(req.Transaction)
	if err != nil || len(t) == 0 || len(t) > protocol.MaxTransaction {
		return purse.Receipt{}, fmt.Sprintf("transaction must be the base64 of 1..%d bytes.", protocol.MaxTransaction)
	}
	if _, err := txn.Parse(t); err != nil {
		return purse.Receipt{}, "transaction is not a canonical transaction."
	}
	if req.Counter < 1 || req.Counter > math.MaxUint32 {
		return purse.Receipt{}, "counter must be 1..4294967295."
	}
	if req.CVM < 0 || req.CVM > int64(txn.CVMBiometric) {
		return purse.Receipt{}, "cvm must be 0..3."
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(req.Signature)
	if err != nil || len(sig) < protocol.MinSignature || len(sig) > protocol.MaxSignature {
		return purse.Receipt{}, fmt.Sprintf("signature must be the base64 of %d..%d bytes.", protocol.MinSignature, protocol.MaxSignature)
	}
	return purse.Receipt{Card: req.Card, Transaction: t, Counter: uint32(req.Counter), CVM: txn.CVM(req.CVM), Signature: sig}, ""
}

func redemptionJSON(r store.Redemption) redemptionResponse {
	var tid string
	if t, err := txn.Parse(r.Transaction); err == nil {
		tid = fmt.Sprintf("%x", t.ID)
	}
	return redemptionResponse{ID: r.ID, Card: r.Card, Counter: r.Counter, Transaction: tid, Amount: r.Amount.Minor,
		Currency: string(r.Amount.Currency), Status: string(r.Status), Transfer: r.Transfer, Created: r.Created}
}

// createRedemption redeems a purse debit receipt for the merchant, once.
func (h *handler) createRedemption(w http.ResponseWriter, r *http.Request) {
	if h.purses == nil {
		writeProblem(w, probNotImplemented, "This server runs no e-money service.")
		return
	}
	var req redemptionRequest
	if !decode(w, r, &req) {
		return
	}
	rc, msg := parseRedemption(&req)
	if msg != "" {
		writeProblem(w, probInvalid, msg)
		return
	}
	m := merchantOf(r)
	red, err := h.purses.Redeem(r.Context(), m.ID, rc)
	var redeemed *purse.RedeemedError
	var cardErr *purse.CardError
	switch {
	case err == nil:
		writeJSON(w, http.StatusCreated, redemptionJSON(red))
	case errors.As(err, &redeemed):
		detail := "This receipt was redeemed before, as " + redeemed.First.ID
		if redeemed.First.Merchant == m.ID {
			detail += " (by you)"
		}
		writeProblem(w, probAlreadyRedeemed, detail+".")
	case errors.As(err, &cardErr):
		switch cardErr.Code {
		case protocol.CodeCardUnknown:
			writeProblem(w, probCardUnknown, "No such card.")
		case protocol.CodeCardRevoked:
			writeProblem(w, probCardRevoked, "The card is revoked.")
		default:
			writeProblem(w, probReceiptRefused, "The card or its signature was refused: "+cardErr.Code.String()+".")
		}
	case errors.Is(err, purse.ErrPayee):
		writeProblem(w, probReceiptRefused, "The receipt pays another merchant.")
	case errors.Is(err, purse.ErrCurrency):
		writeProblem(w, probReceiptRefused, "The receipt is in another currency than your account.")
	case errors.Is(err, purse.ErrNoAccount):
		writeProblem(w, probReceiptRefused, "You have no ledger account to be paid into.")
	case errors.Is(err, purse.ErrInvalid):
		writeProblem(w, probInvalid, "The receipt is malformed.")
	case errors.Is(err, purse.ErrFloat):
		writeProblem(w, probReceiptRefused, "The receipt exceeds the e-money outstanding.")
	default:
		h.internal(w, r, "redeeming purse receipt", err)
	}
}
