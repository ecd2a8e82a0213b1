-- The purchase lifecycle: the card a request is bound to and the offer it
-- was shown, the card's approval, the ledger transfer that paid it, what
-- was refunded, and refunds. No approval: approval_signature is NULL; no
-- offer: offer is NULL. Existing requests get updated = created.
ALTER TABLE purchases
	ADD COLUMN card                text NOT NULL DEFAULT '',
	ADD COLUMN offer               bytea,
	ADD COLUMN approval_counter    bigint,
	ADD COLUMN approval_cvm        smallint,
	ADD COLUMN approval_signature  bytea,
	ADD COLUMN approval_device     text,
	ADD COLUMN approval_matched_by text,
	ADD COLUMN transfer            bigint NOT NULL DEFAULT 0,
	ADD COLUMN refunded            bigint NOT NULL DEFAULT 0,
	ADD COLUMN reason              text NOT NULL DEFAULT '',
	ADD COLUMN updated             timestamptz;
UPDATE purchases SET updated = created;
ALTER TABLE purchases ALTER COLUMN updated SET NOT NULL;

-- Pending requests pushed to or bound to a card; pending requests by
-- deadline (expiry); requests by status and last change (recovery).
CREATE INDEX purchases_pending_card ON purchases (card, created, id) WHERE status = 'pending';
CREATE INDEX purchases_pending_expires ON purchases (expires) WHERE status = 'pending';
CREATE INDEX purchases_status_updated ON purchases (status, updated, id);

-- Refunds of paid requests. An idempotency key is unique per purchase
-- (NULL means none).
CREATE TABLE refunds (
	id       text PRIMARY KEY,
	purchase text NOT NULL REFERENCES purchases (id),
	merchant text NOT NULL REFERENCES merchants (id),
	amount   bigint NOT NULL CHECK (amount > 0),
	idem_key text,
	digest   bytea NOT NULL,
	status   text NOT NULL,
	transfer bigint NOT NULL DEFAULT 0,
	reason   text NOT NULL DEFAULT '',
	created  timestamptz NOT NULL,
	updated  timestamptz NOT NULL,
	UNIQUE (purchase, idem_key)
);

CREATE INDEX refunds_purchase ON refunds (purchase, created, id);
CREATE INDEX refunds_pending ON refunds (updated, id) WHERE status = 'pending';
