package store

import (
	"context"
	"time"

	"cardlink/internal/money"
)

// PurseOpKind says what a purse operation does.
type PurseOpKind string

// Purse operation kinds.
const (
	PurseLoad   PurseOpKind = "load"   // holder account → e-money purse
	PurseUnload PurseOpKind = "unload" // e-money purse → holder account
)

// PurseOpStatus is where a purse operation is in its life:
//
//	offered → authorized → signed → applied   (a load)
//	offered → authorized → done               (an unload)
//	offered | authorized → declined
type PurseOpStatus string

// Purse operation statuses.
const (
	PurseOffered    PurseOpStatus = "offered"    // the transaction was offered to the device
	PurseAuthorized PurseOpStatus = "authorized" // the card's approval verified; the ledger posting is under way
	PurseSigned     PurseOpStatus = "signed"     // a load: posted, and the issuer-signed load handed out
	PurseApplied    PurseOpStatus = "applied"    // a load: the card's load receipt verified
	PurseDone       PurseOpStatus = "done"       // an unload: posted
	PurseDeclined   PurseOpStatus = "declined"   // refused (funds, the holder); frees its load sequence number
)

// PurseOp is a load of a card's purse from its holder account, or an
// unload back to it.
type PurseOp struct {
	ID     string // the key
	Kind   PurseOpKind
	Card   string
	Seq    uint32 // a load: the purse sequence number it carries; 0 for an unload
	Amount money.Amount
	Offer  []byte // the canonical transaction offered to the holder
	Status PurseOpStatus
	// Counter is the card's counter in the approval (authorized on), and
	// in the load receipt once applied.
	Counter  uint32
	Load     []byte // a load, signed on: the issuer-signed load (template E5)
	Transfer int64  // the ledger transfer, once posted
	Reason   string // why it was declined
	Created  time.Time
	Updated  time.Time
	Expires  time.Time // the offer's deadline
}

// PurseUpdate is what MovePurseOp sets beside the status; zero fields
// leave the stored value.
type PurseUpdate struct {
	Counter  uint32
	Load     []byte
	Transfer int64
	Reason   string
}

// Redemption is a merchant's redemption of a card-signed purse debit
// receipt.
type Redemption struct {
	ID          string // the key: derived from the transaction id, so unique per transaction
	Merchant    string // who redeemed it
	Card        string // whose purse paid
	Counter     uint32 // the card's counter in the receipt; unique per card
	CVM         uint8  // as the card signed it
	Transaction []byte // the canonical transaction the card signed
	Signature   []byte // the card's signature
	Amount      money.Amount
	Status      RedemptionStatus
	Transfer    int64 // the ledger transfer, once redeemed
	Created     time.Time
	Updated     time.Time
}

// RedemptionStatus is where a redemption is.
type RedemptionStatus string

// Redemption statuses.
const (
	RedemptionPending  RedemptionStatus = "pending"  // recorded; the ledger posting is under way
	RedemptionRedeemed RedemptionStatus = "redeemed" // posted
)

// Purses keeps e-money purse loads, unloads and redemptions. A backend
// that has it implements it beside Store (find it by type assertion).
// Implementations are safe for concurrent use.
type Purses interface {
	// CreatePurseOp records op (status offered). ErrConflict: the ID
	// exists.
	CreatePurseOp(ctx context.Context, op PurseOp) error
	// PurseOp returns the operation with this ID, or ErrNotFound.
	PurseOp(ctx context.Context, id string) (PurseOp, error)
	// LoadBySeq returns card's load with sequence number seq that is
	// authorized, signed or applied (at most one is), or ErrNotFound.
	LoadBySeq(ctx context.Context, card string, seq uint32) (PurseOp, error)
	// MovePurseOp changes operation id from status from to status to,
	// setting u's non-zero fields and Updated now, in one conditional
	// update, and returns it. ErrNotFound: no such operation;
	// ErrConflict: it is not in status from (it returns it as stored),
	// or — moving a load to authorized — another load of the card holds
	// the same sequence number (it returns that one); ErrExpired: from is
	// offered and Expires is at or before now. Nothing changes on an
	// error.
	MovePurseOp(ctx context.Context, id string, from, to PurseOpStatus, u PurseUpdate, now time.Time) (PurseOp, error)
	// AuthorizedPurseOps returns operations left authorized with Updated
	// before before, oldest first, at most limit: approvals whose posting
	// a crash interrupted, for recovery.
	AuthorizedPurseOps(ctx context.Context, before time.Time, limit int) ([]PurseOp, error)

	// CreateRedemption records r (status pending). ErrConflict: a
	// redemption with r's ID (the same transaction) or with r's card and
	// counter exists; it returns that one.
	CreateRedemption(ctx context.Context, r Redemption) (Redemption, error)
	// FinishRedemption makes the pending redemption id redeemed with
	// transfer. ErrNotFound: no such redemption; ErrConflict: not
	// pending (it returns it as stored).
	FinishRedemption(ctx context.Context, id string, transfer int64, now time.Time) (Redemption, error)
	// DeleteRedemption removes the pending redemption id (the ledger
	// refused it, so its receipt stays redeemable). ErrNotFound: no
	// pending redemption id.
	DeleteRedemption(ctx context.Context, id string) error
	// Redemption returns the redemption with this ID, or ErrNotFound.
	Redemption(ctx context.Context, id string) (Redemption, error)
	// PendingRedemptions returns redemptions left pending with Updated
	// before before, oldest first, at most limit, for recovery.
	PendingRedemptions(ctx context.Context, before time.Time, limit int) ([]Redemption, error)
}
