package store

import (
	"context"
	"errors"
	"time"

	"cardlink/internal/money"
)

// Errors of the merchant repository, possibly wrapped; branch with
// errors.Is.
var (
	// ErrSoldOut: the item's stock is 0. Nothing was created.
	ErrSoldOut = errors.New("store: sold out")
	// ErrReferenceTaken: a pending purchase request already has this
	// reference code. Nothing was created; draw another code and retry.
	ErrReferenceTaken = errors.New("store: reference code taken")
	// ErrRefundTooLarge: the refund would take the purchase's refunds
	// (pending and done) above its amount. Nothing was created.
	ErrRefundTooLarge = errors.New("store: refund above the amount paid")
)

// Merchant is a supplier that sells through the server with its API key.
type Merchant struct {
	ID            string    // the key
	Name          string    // shown to the card holder
	KeyHash       []byte    // SHA-256 of its API key; unique
	WebhookURL    string    // where completion webhooks go; may be empty
	WebhookSecret []byte    // HMAC key of its webhooks
	Account       string    // its ledger account; empty if none yet
	Created       time.Time // when it was created
}

// DeliveryKind says what a catalogue item delivers on payment.
type DeliveryKind string

// Delivery kinds.
const (
	DeliverNone    DeliveryKind = "none"
	DeliverVoucher DeliveryKind = "voucher"
	DeliverTicket  DeliveryKind = "ticket"
	DeliverLicence DeliveryKind = "licence"
	DeliverFile    DeliveryKind = "file"
)

// Item is one entry of a merchant's catalogue.
type Item struct {
	ID       string         // the key
	Merchant string         // its merchant
	Name     string         // shown to the card holder
	Price    int64          // minor units of Currency
	Currency money.Currency // of Price
	Stock    *int64         // how many are left; nil means unlimited
	Delivery DeliveryKind   // what is delivered
	Payload  []byte         // what the delivery carries (a voucher code, a file…)
	Created  time.Time      // when it was created
}

// PurchaseStatus is where a purchase request is in its life.
type PurchaseStatus string

// Purchase statuses.
const (
	PurchasePending           PurchaseStatus = "pending"
	PurchaseAuthorized        PurchaseStatus = "authorized" // the card signed; the ledger posting is under way
	PurchaseApproved          PurchaseStatus = "approved"
	PurchaseDeclined          PurchaseStatus = "declined"
	PurchaseExpired           PurchaseStatus = "expired"
	PurchaseRefundedPartially PurchaseStatus = "refunded-partially"
	PurchaseRefunded          PurchaseStatus = "refunded"
)

// Purchase is a merchant's request that a card holder pay it.
type Purchase struct {
	ID          string         // the key
	Merchant    string         // who asks
	Item        string         // the catalogue item, or empty for a free amount
	Description string         // free text shown to the holder
	Amount      int64          // minor units of Currency
	Currency    money.Currency // of Amount
	IdemKey     string         // idempotency key, unique per merchant; may be empty
	Digest      []byte         // hash of the request content; a replayed key must match it
	CallbackURL string         // where to report completion; may be empty
	Reference   string         // short code the holder types; unique among pending requests
	Status      PurchaseStatus // where it is
	Created     time.Time      // when it was created
	Expires     time.Time      // when a pending request expires: the deadline for the card's signature

	// Card is the card the request is for: set by the merchant at
	// creation (the request is then pushed to that card's device), or by
	// BindPurchase when a device first fetches it by reference. Empty
	// until then.
	Card string
	// Offer is the canonical txn.Transaction the server offered the card
	// (its ID is the purchase's transaction id): the server's own copy,
	// against which the card's signature is verified. Set by BindPurchase.
	Offer []byte
	// Approval is the card's signature, set by AuthorizePurchase.
	Approval *PurchaseApproval
	Transfer int64     // the ledger transfer that paid it (store.Posted.ID); 0 if none
	Refunded int64     // minor units refunded so far (refunds done)
	Reason   string    // why it was declined or expired (for the merchant, not the holder)
	Updated  time.Time // last status change
}

// CountingAuthorizer is the optional ability of a Merchants backend to
// advance the card's counter in the same transaction that records the
// approval, one durable commit instead of two per purchase. Find it by
// type assertion; both backends have it.
type CountingAuthorizer interface {
	// AuthorizePurchaseCounting is Cards.AdvanceCounter(card, a.Counter)
	// followed by AuthorizePurchase(id, card, a), in one transaction.
	// The counter goes first and stands whatever the purchase checks say
	// (as when the two calls are made one after the other):
	// ErrCounterReplay (the card flagged as possibly cloned, and nothing
	// else changed), ErrRevoked or ErrNotFound for the card stop it;
	// then AuthorizePurchase's errors leave only the counter advanced.
	AuthorizePurchaseCounting(ctx context.Context, id, card string, a PurchaseApproval, now time.Time) (Purchase, error)
}

// PurchaseApprover is the optional ability of a Merchants backend that
// is also a Ledger to approve a purchase in ONE write: the card's
// counter, the approval, the payment and the completion become durable
// together, in one transaction (one group-commit write on SQLite), so a
// crash cannot leave the purchase authorized but unpaid, and the approval
// costs one commit instead of three. Find it by type assertion. The
// SQLite backend has it (its group commit shares one transaction among
// the approvals of the moment); PostgreSQL does not (2026-11-29): there
// one transaction per approval would hold the merchant's account row
// through its commit, and the approvals of one merchant would queue.
type PurchaseApprover interface {
	// ApprovePurchase, in one transaction:
	//
	//  1. if advance is set, advances the card's counter to a.Counter,
	//     as AuthorizePurchaseCounting: ErrCounterReplay (the card
	//     flagged as possibly cloned, and nothing else changed),
	//     ErrRevoked or ErrNotFound for the card stop it (advance is
	//     false when the caller advanced it already, Cards.AdvanceCounter);
	//  2. runs AuthorizePurchase's checks on the request id, locked:
	//     ErrNotFound (no pending request id bound to card) and
	//     ErrExpired leave only the counter advanced; a sold-out item
	//     (ErrSoldOut) declines the request with pay.Reason(ErrSoldOut)
	//     if that is not empty (else it is returned, only the counter
	//     advanced);
	//  3. records the approval a (status authorized, one off the stock);
	//  4. posts pay.Transfer(p, merchant's ledger account) with the rules
	//     of Ledger.PostTransfers (a key posted before with the same
	//     digest is the payment, replayed; with another digest
	//     ErrConflict; ErrLimit, ErrNotFound, ErrCurrency);
	//  5. completes the request: approved with the transfer's ID, or —
	//     when pay.Transfer or the posting refused it with an error err
	//     for which pay.Reason(err) is not empty — declined with that
	//     reason and its stock given back, as CompletePurchase.
	//
	// It returns the request as stored at the end. When pay.Reason(err)
	// is empty the approval stays recorded (status authorized, for a
	// later settlement) and err is returned. Any other failure (the
	// database) changes nothing. pay's functions run inside the write:
	// they must be quick and must not call the store.
	ApprovePurchase(ctx context.Context, id, card string, a PurchaseApproval, advance bool, pay PurchasePayment, now time.Time) (Purchase, error)
}

// PurchasePayment is the caller's part of ApprovePurchase: how a purchase
// is paid and which refusals decline it.
type PurchasePayment struct {
	// Transfer returns the transfer that pays the authorized purchase p
	// to account, the merchant's ledger account (empty if it has none):
	// checked and with its digest, as the ledger posts it. An error
	// refuses the payment (see Reason).
	Transfer func(p Purchase, account string) (Transfer, error)
	// Reason returns why a purchase refused with err is declined, or ""
	// if err does not decline it.
	Reason func(err error) string
}

// PurchaseApproval is the card's signature that approved a purchase.
type PurchaseApproval struct {
	Counter   uint32 // the card's counter in the signature
	CVM       uint8  // txn.CVM the server accepted
	Signature []byte // the card's ASN.1 DER signature over the txn.Envelope
	Device    string // store.Device.ID of the device that relayed it
	MatchedBy string // "server" for a server-matched biometric, else empty
}

// RefundStatus is where a refund is.
type RefundStatus string

// Refund statuses.
const (
	RefundPending RefundStatus = "pending" // recorded; the ledger posting is under way
	RefundDone    RefundStatus = "done"    // posted
	RefundFailed  RefundStatus = "failed"  // the posting was refused (Reason); the amount is free again
)

// Refund gives back some or all of a paid purchase.
type Refund struct {
	ID       string       // the key
	Purchase string       // the purchase it refunds
	Merchant string       // the purchase's merchant
	Amount   int64        // minor units of the purchase's currency, > 0
	IdemKey  string       // idempotency key, unique per purchase; may be empty
	Digest   []byte       // hash of the request content; a replayed key must match it
	Status   RefundStatus // where it is
	Transfer int64        // the ledger transfer, once done
	Reason   string       // why it failed
	Created  time.Time
	Updated  time.Time
}

// Merchants keeps merchants, their catalogues and their purchase
// requests. A backend that has it implements it beside Store (find it by
// type assertion). Implementations are safe for concurrent use.
type Merchants interface {
	// CreateMerchant creates m. It returns ErrConflict if the ID or key
	// hash exists.
	CreateMerchant(ctx context.Context, m Merchant) error
	// MerchantByKey returns the merchant with this API key hash, or
	// ErrNotFound.
	MerchantByKey(ctx context.Context, keyHash []byte) (Merchant, error)
	// CreateItem creates it. It returns ErrNotFound for an unknown
	// merchant and ErrConflict if the ID exists.
	CreateItem(ctx context.Context, it Item) error
	// Items returns the merchant's items, oldest first.
	Items(ctx context.Context, merchant string) ([]Item, error)
	// CreatePurchase creates p in one transaction. If p.IdemKey was used
	// by the merchant before, it creates nothing and returns the earlier
	// request with replayed set when the digests match, ErrConflict
	// otherwise. It returns ErrNotFound if p.Item is not one of the
	// merchant's items, ErrSoldOut if the item's stock is 0, and
	// ErrReferenceTaken if a pending request has p.Reference. Stock is
	// only checked here: taking one off is the approval's.
	CreatePurchase(ctx context.Context, p Purchase) (got Purchase, replayed bool, err error)
	// Purchase returns the merchant's purchase request with this ID, or
	// ErrNotFound (also when another merchant owns it). An empty merchant
	// matches any (the server's own reads).
	Purchase(ctx context.Context, merchant, id string) (Purchase, error)
	// Merchant returns the merchant with this ID, or ErrNotFound.
	Merchant(ctx context.Context, id string) (Merchant, error)
	// Item returns the item with this ID, or ErrNotFound.
	Item(ctx context.Context, id string) (Item, error)

	// PendingPurchase returns the pending request with this reference
	// whose Expires is after now, or ErrNotFound.
	PendingPurchase(ctx context.Context, reference string, now time.Time) (Purchase, error)
	// PaidPurchase returns the newest request with this reference bound
	// to card (Card equal to card) whose status is approved or
	// refunded-partially: a paid purchase whose result the device asks
	// for again (one refunded in full is not: its goods are not owed). ErrNotFound if there is none (references
	// are unique only among pending requests, hence the card).
	PaidPurchase(ctx context.Context, reference, card string) (Purchase, error)
	// PendingPurchasesForCard returns the card's pending requests (Card
	// equal to card) whose Expires is after now, oldest first, at most
	// limit.
	PendingPurchasesForCard(ctx context.Context, card string, now time.Time, limit int) ([]Purchase, error)
	// BindPurchase binds the pending, unexpired request id to card with
	// offer, in one conditional update, and returns it. If it is already
	// bound to card with an offer, it changes nothing and returns it as
	// stored (a device retrying gets the same transaction). ErrNotFound:
	// no pending request with this id; ErrExpired: its Expires is at or
	// before now; ErrConflict: it is bound to another card.
	BindPurchase(ctx context.Context, id, card string, offer []byte, now time.Time) (Purchase, error)
	// AuthorizePurchase records the card's approval of the pending
	// request id bound to card: status authorized, Approval a, Updated
	// now, and — for an item with a stock — one taken off the stock, all
	// in one transaction. ErrNotFound: no pending request id bound to
	// card (already authorized, declined…); ErrExpired: its Expires is at
	// or before now (nothing changed); ErrSoldOut: the item's stock is 0
	// (nothing changed).
	AuthorizePurchase(ctx context.Context, id, card string, a PurchaseApproval, now time.Time) (Purchase, error)
	// CompletePurchase ends the authorized request id: with reason ""
	// it becomes approved with Transfer transfer; otherwise declined with
	// Reason reason and the stock AuthorizePurchase took given back, in
	// one transaction. ErrNotFound: no such request; ErrConflict: it is
	// not authorized (it returns the request as stored).
	CompletePurchase(ctx context.Context, id string, transfer int64, reason string, now time.Time) (Purchase, error)
	// DeclinePurchase declines the pending request id with reason. With
	// card not empty the request must be bound to card. ErrNotFound: no
	// pending request id (bound to card).
	DeclinePurchase(ctx context.Context, id, card, reason string, now time.Time) (Purchase, error)
	// ExpirePurchases sets every pending request whose Expires is at or
	// before now to expired (Reason "expired"), at most limit of them,
	// and returns those it changed.
	ExpirePurchases(ctx context.Context, now time.Time, limit int) ([]Purchase, error)
	// AuthorizedPurchases returns requests left authorized with Updated
	// before before, oldest first, at most limit: approvals whose posting
	// a crash interrupted, for recovery.
	AuthorizedPurchases(ctx context.Context, before time.Time, limit int) ([]Purchase, error)

	// CreateRefund records r (status pending) in one transaction with the
	// checks: the purchase r.Purchase of r.Merchant is approved or
	// refunded-partially (else ErrConflict), and its refunds pending and
	// done plus r.Amount stay within its amount (else ErrRefundTooLarge).
	// If r.IdemKey was used for the purchase before, it creates nothing
	// and returns the earlier refund with replayed set when the digests
	// match, ErrConflict otherwise. ErrNotFound: no such purchase of
	// this merchant.
	CreateRefund(ctx context.Context, r Refund) (got Refund, replayed bool, err error)
	// FinishRefund ends the pending refund id: with reason "" it is done
	// with Transfer transfer, and the purchase's Refunded grows by its
	// amount and its status becomes refunded (all of it refunded) or
	// refunded-partially; otherwise it failed with Reason reason. One
	// transaction. ErrNotFound: no such refund; ErrConflict: not pending
	// (it returns the refund as stored).
	FinishRefund(ctx context.Context, id string, transfer int64, reason string, now time.Time) (Refund, error)
	// Refunds returns the purchase's refunds, oldest first.
	Refunds(ctx context.Context, purchase string) ([]Refund, error)
	// PendingRefunds returns refunds left pending with Updated before
	// before, oldest first, at most limit, for recovery.
	PendingRefunds(ctx context.Context, before time.Time, limit int) ([]Refund, error)
}
