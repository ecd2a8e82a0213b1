-- The ledger: double-entry accounts, transfers with idempotency keys, and
-- one entry per leg with the account's balance after it. The CHECK is a
-- backstop: transfers guard their UPDATE with the same condition.
CREATE TABLE ledger_accounts (
	id          TEXT PRIMARY KEY,
	kind        TEXT NOT NULL,
	currency    TEXT NOT NULL,
	balance     INTEGER NOT NULL DEFAULT 0,
	lower_limit INTEGER NOT NULL,
	created     INTEGER NOT NULL,
	CHECK (balance >= lower_limit)
);

CREATE TABLE ledger_transfers (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	idem_key TEXT NOT NULL UNIQUE,
	digest   BLOB NOT NULL,
	currency TEXT NOT NULL,
	memo     TEXT NOT NULL,
	posted   INTEGER NOT NULL
);

CREATE TABLE ledger_entries (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	transfer INTEGER NOT NULL REFERENCES ledger_transfers (id),
	account  TEXT NOT NULL REFERENCES ledger_accounts (id),
	amount   INTEGER NOT NULL,
	balance  INTEGER NOT NULL,
	posted   INTEGER NOT NULL
);

CREATE INDEX ledger_entries_account ON ledger_entries (account, posted, id);
CREATE INDEX ledger_entries_transfer ON ledger_entries (transfer);
