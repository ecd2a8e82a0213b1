package postgres

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

var _ store.Merchants = (*Store)(nil)

// nullText stores "" as NULL.
func nullText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CreateMerchant implements store.Merchants.
func (s *Store) CreateMerchant(ctx context.Context, m store.Merchant) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO merchants (id, name, key_hash, webhook_url, webhook_secret, account, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, m.ID, m.Name, blob(m.KeyHash), m.WebhookURL, blob(m.WebhookSecret),
		nullText(m.Account), m.Created.UTC())
	if isCode(err, sqlstateUnique) {
		return fmt.Errorf("creating merchant %q: %w", m.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("creating merchant %q: %w", m.ID, err)
	}
	return nil
}

// MerchantByKey implements store.Merchants.
func (s *Store) MerchantByKey(ctx context.Context, keyHash []byte) (store.Merchant, error) {
	return s.merchant(ctx, "key_hash", blob(keyHash))
}

// Merchant implements store.Merchants.
func (s *Store) Merchant(ctx context.Context, id string) (store.Merchant, error) {
	return s.merchant(ctx, "id", id)
}

// merchant reads the merchant whose column equals key.
func (s *Store) merchant(ctx context.Context, column string, key any) (store.Merchant, error) {
	var m store.Merchant
	var account *string
	err := s.pool.QueryRow(ctx, `SELECT id, name, key_hash, webhook_url, webhook_secret, account, created
		FROM merchants WHERE `+column+` = $1`, key).
		Scan(&m.ID, &m.Name, &m.KeyHash, &m.WebhookURL, &m.WebhookSecret, &account, &m.Created)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Merchant{}, fmt.Errorf("reading merchant by %s: %w", column, store.ErrNotFound)
	}
	if err != nil {
		return store.Merchant{}, fmt.Errorf("reading merchant by %s: %w", column, err)
	}
	if account != nil {
		m.Account = *account
	}
	m.Created = m.Created.UTC()
	return m, nil
}

// CreateItem implements store.Merchants.
func (s *Store) CreateItem(ctx context.Context, it store.Item) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO merchant_items (id, merchant, name, price, currency, stock, delivery, payload, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, it.ID, it.Merchant, it.Name, it.Price, string(it.Currency), it.Stock,
		string(it.Delivery), blob(it.Payload), it.Created.UTC())
	switch {
	case isCode(err, sqlstateUnique):
		return fmt.Errorf("creating item %q: %w", it.ID, store.ErrConflict)
	case isCode(err, sqlstateForeignKey):
		return fmt.Errorf("creating item %q: merchant %q: %w", it.ID, it.Merchant, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("creating item %q: %w", it.ID, err)
	}
	return nil
}

const itemColumns = `id, merchant, name, price, currency, stock, delivery, payload, created`

func scanItem(row scanner) (store.Item, error) {
	var it store.Item
	var cur, delivery string
	if err := row.Scan(&it.ID, &it.Merchant, &it.Name, &it.Price, &cur, &it.Stock, &delivery, &it.Payload, &it.Created); err != nil {
		return store.Item{}, err
	}
	it.Currency, it.Delivery, it.Created = money.Currency(cur), store.DeliveryKind(delivery), it.Created.UTC()
	return it, nil
}

// Items implements store.Merchants.
func (s *Store) Items(ctx context.Context, merchant string) ([]store.Item, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+itemColumns+` FROM merchant_items WHERE merchant = $1 ORDER BY created, id`, merchant)
	if err != nil {
		return nil, fmt.Errorf("listing items: %w", err)
	}
	defer rows.Close()
	var items []store.Item
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("listing items: %w", err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing items: %w", err)
	}
	return items, nil
}

// Item implements store.Merchants.
func (s *Store) Item(ctx context.Context, id string) (store.Item, error) {
	it, err := scanItem(s.pool.QueryRow(ctx, `SELECT `+itemColumns+` FROM merchant_items WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Item{}, fmt.Errorf("reading item %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Item{}, fmt.Errorf("reading item %q: %w", id, err)
	}
	return it, nil
}

// purchaseColumns are the columns CreatePurchase writes; purchaseRow adds
// those of the later life of a request.
const (
	purchaseColumns = `id, merchant, item, description, amount, currency, idem_key, digest, callback_url, reference, status, created, expires, card, updated`
	purchaseRow     = purchaseColumns + `, offer, approval_counter, approval_cvm, approval_signature, approval_device, approval_matched_by, transfer, refunded, reason`
)

func scanPurchase(row scanner) (store.Purchase, error) {
	var p store.Purchase
	var item, key, device, matchedBy *string
	var cur, status string
	var counter, cvm *int64
	var signature []byte
	err := row.Scan(&p.ID, &p.Merchant, &item, &p.Description, &p.Amount, &cur, &key, &p.Digest,
		&p.CallbackURL, &p.Reference, &status, &p.Created, &p.Expires, &p.Card, &p.Updated,
		&p.Offer, &counter, &cvm, &signature, &device, &matchedBy, &p.Transfer, &p.Refunded, &p.Reason)
	if err != nil {
		return store.Purchase{}, err
	}
	p.Item, p.IdemKey = deref(item), deref(key)
	p.Currency, p.Status = money.Currency(cur), store.PurchaseStatus(status)
	p.Created, p.Expires, p.Updated = p.Created.UTC(), p.Expires.UTC(), p.Updated.UTC()
	if signature != nil {
		p.Approval = &store.PurchaseApproval{Counter: uint32(deref(counter)), CVM: uint8(deref(cvm)),
			Signature: signature, Device: deref(device), MatchedBy: deref(matchedBy)}
	}
	return p, nil
}

// deref reads a nullable column: the zero value for NULL.
func deref[T any](v *T) T {
	var zero T
	if v == nil {
		return zero
	}
	return *v
}

// CreatePurchase implements store.Merchants. Two instances racing on one
// idempotency key: the loser gets a unique violation, reported as
// ErrReferenceTaken, and its retry finds the winner's request. Updated is
// Created unless set.
func (s *Store) CreatePurchase(ctx context.Context, p store.Purchase) (store.Purchase, bool, error) {
	var got store.Purchase
	updated := cmp.Or(p.Updated, p.Created)
	var replayed bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if p.IdemKey != "" {
			old, err := scanPurchase(tx.QueryRow(ctx, `SELECT `+purchaseRow+`
				FROM purchases WHERE merchant = $1 AND idem_key = $2`, p.Merchant, p.IdemKey))
			if err == nil {
				if !bytes.Equal(old.Digest, p.Digest) {
					return fmt.Errorf("idempotency key reused with another request: %w", store.ErrConflict)
				}
				got, replayed = old, true
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("reading purchase by key: %w", err)
			}
		}
		if p.Item != "" {
			var stock *int64
			err := tx.QueryRow(ctx, `SELECT stock FROM merchant_items WHERE id = $1 AND merchant = $2`,
				p.Item, p.Merchant).Scan(&stock)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("item %q: %w", p.Item, store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("reading item %q: %w", p.Item, err)
			}
			if stock != nil && *stock <= 0 {
				return fmt.Errorf("item %q: %w", p.Item, store.ErrSoldOut)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO purchases (`+purchaseColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`, p.ID, p.Merchant,
			nullText(p.Item), p.Description, p.Amount, string(p.Currency), nullText(p.IdemKey), blob(p.Digest),
			p.CallbackURL, p.Reference, string(p.Status), p.Created.UTC(), p.Expires.UTC(), p.Card, updated.UTC())
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == sqlstateUnique && pe.ConstraintName == "purchases_pkey":
			return fmt.Errorf("creating purchase %q: %w", p.ID, store.ErrConflict)
		case isCode(err, sqlstateUnique):
			return fmt.Errorf("creating purchase %q: %w", p.ID, store.ErrReferenceTaken)
		case isCode(err, sqlstateForeignKey):
			return fmt.Errorf("creating purchase %q: merchant %q: %w", p.ID, p.Merchant, store.ErrNotFound)
		case err != nil:
			return fmt.Errorf("creating purchase %q: %w", p.ID, err)
		}
		got = p
		got.Created, got.Expires = p.Created.UTC().Truncate(time.Microsecond), p.Expires.UTC().Truncate(time.Microsecond)
		got.Updated = updated.UTC().Truncate(time.Microsecond)
		return nil
	})
	if err != nil {
		return store.Purchase{}, false, err
	}
	return got, replayed, nil
}

// Purchase implements store.Merchants.
func (s *Store) Purchase(ctx context.Context, merchant, id string) (store.Purchase, error) {
	p, err := scanPurchase(s.pool.QueryRow(ctx, `SELECT `+purchaseRow+`
		FROM purchases WHERE id = $1 AND ($2 = '' OR merchant = $2)`, id, merchant))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Purchase{}, fmt.Errorf("reading purchase %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Purchase{}, fmt.Errorf("reading purchase %q: %w", id, err)
	}
	return p, nil
}
