-- The purchase lifecycle: the card a request is bound to and the offer it
-- was shown, the card's approval, the ledger transfer that paid it, what
-- was refunded, and refunds. No approval: approval_signature is NULL; no
-- offer: offer is NULL. Existing requests get updated = created.
ALTER TABLE purchases ADD COLUMN card TEXT NOT NULL DEFAULT '';
ALTER TABLE purchases ADD COLUMN offer BLOB;
ALTER TABLE purchases ADD COLUMN approval_counter INTEGER;
ALTER TABLE purchases ADD COLUMN approval_cvm INTEGER;
ALTER TABLE purchases ADD COLUMN approval_signature BLOB;
ALTER TABLE purchases ADD COLUMN approval_device TEXT;
ALTER TABLE purchases ADD COLUMN approval_matched_by TEXT;
ALTER TABLE purchases ADD COLUMN transfer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE purchases ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE purchases ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE purchases ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
UPDATE purchases SET updated = created;

-- Pending requests pushed to or bound to a card; pending requests by
-- deadline (expiry); requests by status and last change (recovery).
CREATE INDEX purchases_pending_card ON purchases (card, created, id) WHERE status = 'pending';
CREATE INDEX purchases_pending_expires ON purchases (expires) WHERE status = 'pending';
CREATE INDEX purchases_status_updated ON purchases (status, updated, id);

-- Refunds of paid requests. An idempotency key is unique per purchase
-- (NULL means none).
CREATE TABLE refunds (
	id       TEXT PRIMARY KEY,
	purchase TEXT NOT NULL REFERENCES purchases (id),
	merchant TEXT NOT NULL REFERENCES merchants (id),
	amount   INTEGER NOT NULL CHECK (amount > 0),
	idem_key TEXT,
	digest   BLOB NOT NULL,
	status   TEXT NOT NULL,
	transfer INTEGER NOT NULL DEFAULT 0,
	reason   TEXT NOT NULL DEFAULT '',
	created  INTEGER NOT NULL,
	updated  INTEGER NOT NULL,
	UNIQUE (purchase, idem_key)
);

CREATE INDEX refunds_purchase ON refunds (purchase, created, id);
CREATE INDEX refunds_pending ON refunds (updated, id) WHERE status = 'pending';
