-- Merchants, their catalogues and their purchase requests. A reference
-- code is unique among pending requests only (the partial index), and an
-- idempotency key among one merchant's requests (NULL means none).
CREATE TABLE merchants (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL,
	key_hash       BLOB NOT NULL UNIQUE,
	webhook_url    TEXT NOT NULL,
	webhook_secret BLOB NOT NULL,
	account        TEXT,
	created        INTEGER NOT NULL
);

CREATE TABLE merchant_items (
	id       TEXT PRIMARY KEY,
	merchant TEXT NOT NULL REFERENCES merchants (id),
	name     TEXT NOT NULL,
	price    INTEGER NOT NULL,
	currency TEXT NOT NULL,
	stock    INTEGER,
	delivery TEXT NOT NULL,
	payload  BLOB NOT NULL,
	created  INTEGER NOT NULL
);

CREATE INDEX merchant_items_merchant ON merchant_items (merchant, created, id);

CREATE TABLE purchases (
	id           TEXT PRIMARY KEY,
	merchant     TEXT NOT NULL REFERENCES merchants (id),
	item         TEXT REFERENCES merchant_items (id),
	description  TEXT NOT NULL,
	amount       INTEGER NOT NULL,
	currency     TEXT NOT NULL,
	idem_key     TEXT,
	digest       BLOB NOT NULL,
	callback_url TEXT NOT NULL,
	reference    TEXT NOT NULL,
	status       TEXT NOT NULL,
	created      INTEGER NOT NULL,
	expires      INTEGER NOT NULL,
	UNIQUE (merchant, idem_key)
);

CREATE UNIQUE INDEX purchases_pending_reference ON purchases (reference) WHERE status = 'pending';
