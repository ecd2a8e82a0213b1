package sqlite

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cardlink/internal/money"
	"cardlink/internal/store"
)

var _ store.Merchants = (*Store)(nil)

// CreateMerchant implements store.Merchants.
func (s *Store) CreateMerchant(ctx context.Context, m store.Merchant) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO merchants (id, name, key_hash, webhook_url, webhook_secret, account, created)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, m.ID, m.Name, blob(m.KeyHash), m.WebhookURL, blob(m.WebhookSecret),
			sql.NullString{String: m.Account, Valid: m.Account != ""}, m.Created.UnixMicro())
		if isUnique(err) {
			return fmt.Errorf("creating merchant %q: %w", m.ID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("creating merchant %q: %w", m.ID, err)
		}
		return nil
	})
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
	var account sql.NullString
	var created int64
	err := s.row(ctx, `SELECT id, name, key_hash, webhook_url, webhook_secret, account, created
		FROM merchants WHERE `+column+` = ?`, key).
		Scan(&m.ID, &m.Name, &m.KeyHash, &m.WebhookURL, &m.WebhookSecret, &account, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Merchant{}, fmt.Errorf("reading merchant by %s: %w", column, store.ErrNotFound)
	}
	if err != nil {
		return store.Merchant{}, fmt.Errorf("reading merchant by %s: %w", column, err)
	}
	m.Account, m.Created = account.String, fromMicros(sql.NullInt64{Int64: created, Valid: true})
	return m, nil
}

// CreateItem implements store.Merchants.
func (s *Store) CreateItem(ctx context.Context, it store.Item) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var stock sql.NullInt64
		if it.Stock != nil {
			stock = sql.NullInt64{Int64: *it.Stock, Valid: true}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO merchant_items (id, merchant, name, price, currency, stock, delivery, payload, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, it.ID, it.Merchant, it.Name, it.Price, string(it.Currency), stock,
			string(it.Delivery), blob(it.Payload), it.Created.UnixMicro())
		switch {
		case isUnique(err):
			return fmt.Errorf("creating item %q: %w", it.ID, store.ErrConflict)
		case isForeignKey(err):
			return fmt.Errorf("creating item %q: merchant %q: %w", it.ID, it.Merchant, store.ErrNotFound)
		case err != nil:
			return fmt.Errorf("creating item %q: %w", it.ID, err)
		}
		return nil
	})
}

const itemColumns = `id, merchant, name, price, currency, stock, delivery, payload, created`

func scanItem(row scanner) (store.Item, error) {
	var it store.Item
	var cur, delivery string
	var stock sql.NullInt64
	var created int64
	if err := row.Scan(&it.ID, &it.Merchant, &it.Name, &it.Price, &cur, &stock, &delivery, &it.Payload, &created); err != nil {
		return store.Item{}, err
	}
	if stock.Valid {
		it.Stock = &stock.Int64
	}
	it.Currency, it.Delivery = money.Currency(cur), store.DeliveryKind(delivery)
	it.Created = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	return it, nil
}

// Items implements store.Merchants.
func (s *Store) Items(ctx context.Context, merchant string) ([]store.Item, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+itemColumns+` FROM merchant_items WHERE merchant = ? ORDER BY created, id`, merchant)
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
	it, err := scanItem(s.row(ctx, `SELECT `+itemColumns+` FROM merchant_items WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	var item, key, device, matchedBy sql.NullString
	var cur, status string
	var created, expires, updated int64
	var counter, cvm sql.NullInt64
	var signature []byte
	err := row.Scan(&p.ID, &p.Merchant, &item, &p.Description, &p.Amount, &cur, &key, &p.Digest,
		&p.CallbackURL, &p.Reference, &status, &created, &expires, &p.Card, &updated,
		&p.Offer, &counter, &cvm, &signature, &device, &matchedBy, &p.Transfer, &p.Refunded, &p.Reason)
	if err != nil {
		return store.Purchase{}, err
	}
	p.Item, p.IdemKey, p.Currency, p.Status = item.String, key.String, money.Currency(cur), store.PurchaseStatus(status)
	p.Created = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	p.Expires = fromMicros(sql.NullInt64{Int64: expires, Valid: true})
	p.Updated = fromMicros(sql.NullInt64{Int64: updated, Valid: true})
	if signature != nil {
		p.Approval = &store.PurchaseApproval{Counter: uint32(counter.Int64), CVM: uint8(cvm.Int64),
			Signature: signature, Device: device.String, MatchedBy: matchedBy.String}
	}
	return p, nil
}

// CreatePurchase implements store.Merchants. Updated is Created unless
// set.
func (s *Store) CreatePurchase(ctx context.Context, p store.Purchase) (store.Purchase, bool, error) {
	var got store.Purchase
	updated := cmp.Or(p.Updated, p.Created)
	var replayed bool
	// Group commit: merchants create requests at the rate of purchases.
	err := s.gtx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if p.IdemKey != "" {
			old, err := scanPurchase(tx.QueryRowContext(ctx, `SELECT `+purchaseRow+`
				FROM purchases WHERE merchant = ? AND idem_key = ?`, p.Merchant, p.IdemKey))
			if err == nil {
				if !bytes.Equal(old.Digest, p.Digest) {
					return fmt.Errorf("idempotency key reused with another request: %w", store.ErrConflict)
				}
				got, replayed = old, true
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("reading purchase by key: %w", err)
			}
		}
		if p.Item != "" {
			var stock sql.NullInt64
			err := tx.QueryRowContext(ctx, `SELECT stock FROM merchant_items WHERE id = ? AND merchant = ?`,
				p.Item, p.Merchant).Scan(&stock)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("item %q: %w", p.Item, store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("reading item %q: %w", p.Item, err)
			}
			if stock.Valid && stock.Int64 <= 0 {
				return fmt.Errorf("item %q: %w", p.Item, store.ErrSoldOut)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO purchases (`+purchaseColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, p.ID, p.Merchant,
			sql.NullString{String: p.Item, Valid: p.Item != ""}, p.Description, p.Amount, string(p.Currency),
			sql.NullString{String: p.IdemKey, Valid: p.IdemKey != ""}, blob(p.Digest), p.CallbackURL,
			p.Reference, string(p.Status), p.Created.UnixMicro(), p.Expires.UnixMicro(), p.Card, updated.UnixMicro())
		switch {
		case isUnique(err):
			var n int
			if qerr := tx.QueryRowContext(ctx, `SELECT count(*) FROM purchases WHERE id = ?`, p.ID).Scan(&n); qerr == nil && n > 0 {
				return fmt.Errorf("creating purchase %q: %w", p.ID, store.ErrConflict)
			}
			return fmt.Errorf("creating purchase %q: %w", p.ID, store.ErrReferenceTaken)
		case isForeignKey(err):
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
	p, err := scanPurchase(s.row(ctx, `SELECT `+purchaseRow+`
		FROM purchases WHERE id = ?1 AND (?2 = '' OR merchant = ?2)`, id, merchant))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Purchase{}, fmt.Errorf("reading purchase %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Purchase{}, fmt.Errorf("reading purchase %q: %w", id, err)
	}
	return p, nil
}
