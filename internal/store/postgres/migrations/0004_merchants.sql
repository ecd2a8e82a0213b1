-- Merchants, their catalogues and their purchase requests. A reference
-- code is unique among pending requests only (the partial index), and an
-- idempotency key among one merchant's requests (NULL means none).
CREATE TABLE merchants (
	id             text PRIMARY KEY,
	name           text NOT NULL,
	key_hash       bytea NOT NULL UNIQUE,
	webhook_url    text NOT NULL,
	webhook_secret bytea NOT NULL,
	account        text,
	created timestamptz NOT NULL
);

CREATE TABLE merchant_items (
	id       text PRIMARY KEY,
	merchant text NOT NULL REFERENCES merchants (id),
	name     text NOT NULL,
	price    bigint NOT NULL,
	currency text NOT NULL,
	stock    bigint,
	delivery text NOT NULL,
	payload  bytea NOT NULL,
	created timestamptz NOT NULL
);

CREATE INDEX merchant_items_merchant ON merchant_items (merchant, created, id);

CREATE TABLE purchases (
	id           text PRIMARY KEY,
	merchant     text NOT NULL REFERENCES merchants (id),
	item         text REFERENCES merchant_items (id),
	description  text NOT NULL,
	amount       bigint NOT NULL,
	currency     text NOT NULL,
	idem_key     text,
	digest       bytea NOT NULL,
	callback_url text NOT NULL,
	reference    text NOT NULL,
	status       text NOT NULL,
	created      timestamptz NOT NULL,
	expires      timestamptz NOT NULL,
	UNIQUE (merchant, idem_key)
);

CREATE UNIQUE INDEX purchases_pending_reference ON purchases (reference) WHERE status = 'pending';
