-- E-money: loads of a card's purse from its holder account and unloads
-- back (purse_ops), and merchants' redemptions of card-signed purse debit
-- receipts (purse_redemptions). IF NOT EXISTS: the upgrade test runs the
-- migrations again on a database that has them.
CREATE TABLE IF NOT EXISTS purse_ops (
	id       text PRIMARY KEY,
	kind     text NOT NULL CHECK (kind IN ('load', 'unload')),
	card     text NOT NULL,
	seq      bigint NOT NULL DEFAULT 0,
	amount   bigint NOT NULL CHECK (amount > 0),
	currency text NOT NULL,
	offer    bytea NOT NULL,
	status   text NOT NULL,
	counter  bigint NOT NULL DEFAULT 0,
	load     bytea,
	transfer bigint NOT NULL DEFAULT 0,
	reason   text NOT NULL DEFAULT '',
	created  timestamptz NOT NULL,
	updated  timestamptz NOT NULL,
	expires  timestamptz NOT NULL
);

-- One live load per (card, sequence number): the one the issuer signs.
CREATE UNIQUE INDEX IF NOT EXISTS purse_ops_load_seq ON purse_ops (card, seq)
	WHERE kind = 'load' AND status IN ('authorized', 'signed', 'applied');

-- Approvals and redemptions whose posting a crash interrupted (recovery).
CREATE INDEX IF NOT EXISTS purse_ops_authorized ON purse_ops (updated, id) WHERE status = 'authorized';

-- A receipt is redeemed once: unique by transaction (id) and by the
-- card's counter.
CREATE TABLE IF NOT EXISTS purse_redemptions (
	id          text PRIMARY KEY,
	merchant    text NOT NULL,
	card        text NOT NULL,
	counter     bigint NOT NULL,
	cvm         bigint NOT NULL,
	transaction_bytes bytea NOT NULL,
	signature   bytea NOT NULL,
	amount      bigint NOT NULL CHECK (amount > 0),
	currency    text NOT NULL,
	status      text NOT NULL,
	transfer    bigint NOT NULL DEFAULT 0,
	created     timestamptz NOT NULL,
	updated     timestamptz NOT NULL,
	UNIQUE (card, counter)
);

CREATE INDEX IF NOT EXISTS purse_redemptions_pending ON purse_redemptions (updated, id) WHERE status = 'pending';
