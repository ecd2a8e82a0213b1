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
	Expires     time.Time      // when a pending request expires
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
	// ErrNotFound (also when another merchant owns it).
	Purchase(ctx context.Context, merchant, id string) (Purchase, error)
}
