-- E-money: loads of a card's purse from its holder account and unloads
-- back (purse_ops), and merchants' redemptions of card-signed purse debit
-- receipts (purse_redemptions). IF NOT EXISTS: the upgrade test runs the
-- migrations again on a database that has them.
CREATE TABLE IF NOT EXISTS purse_ops (
	id       TEXT PRIMARY KEY,
	kind     TEXT NOT NULL CHECK (kind IN ('load', 'unload')),
	card     TEXT NOT NULL,
	seq      INTEGER NOT NULL DEFAULT 0,
	amount   INTEGER NOT NULL CHECK (amount > 0),
	currency TEXT NOT NULL,
	offer    BLOB NOT NULL,
	status   TEXT NOT NULL,
	counter  INTEGER NOT NULL DEFAULT 0,
	load     BLOB,
	transfer INTEGER NOT NULL DEFAULT 0,
	reason   TEXT NOT NULL DEFAULT '',
	created  INTEGER NOT NULL,
	updated  INTEGER NOT NULL,
	expires  INTEGER NOT NULL
);

-- One live load per (card, sequence number): the one the issuer signs.
CREATE UNIQUE INDEX IF NOT EXISTS purse_ops_load_seq ON purse_ops (card, seq)
	WHERE kind = 'load' AND status IN ('authorized', 'signed', 'applied');

-- Approvals and redemptions whose posting a crash interrupted (recovery).
CREATE INDEX IF NOT EXISTS purse_ops_authorized ON purse_ops (updated, id) WHERE status = 'authorized';

-- A receipt is redeemed once: unique by transaction (id) and by the
-- card's counter.
CREATE TABLE IF NOT EXISTS purse_redemptions (
	id          TEXT PRIMARY KEY,
	merchant    TEXT NOT NULL,
	card        TEXT NOT NULL,
	counter     INTEGER NOT NULL,
	cvm         INTEGER NOT NULL,
	transaction_bytes BLOB NOT NULL,
	signature   BLOB NOT NULL,
	amount      INTEGER NOT NULL CHECK (amount > 0),
	currency    TEXT NOT NULL,
	status      TEXT NOT NULL,
	transfer    INTEGER NOT NULL DEFAULT 0,
	created     INTEGER NOT NULL,
	updated     INTEGER NOT NULL,
	UNIQUE (card, counter)
);

CREATE INDEX IF NOT EXISTS purse_redemptions_pending ON purse_redemptions (updated, id) WHERE status = 'pending';
