-- Remote authentication (issue 3). Times are INTEGER microseconds since the
-- Unix epoch, UTC; NULL means "not set".

CREATE TABLE challenges (
	value   BLOB    PRIMARY KEY,
	card    TEXT    NOT NULL,
	session BLOB    NOT NULL,
	purpose INTEGER NOT NULL,
	expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX challenges_expires ON challenges (expires);

CREATE TABLE cards (
	number        TEXT    PRIMARY KEY,
	cert          BLOB    NOT NULL,
	issuer_key_id BLOB    NOT NULL,
	counter       INTEGER NOT NULL DEFAULT 0 CHECK (counter >= 0),
	created       INTEGER NOT NULL,
	revoked_at    INTEGER,
	cloned_at     INTEGER
);

CREATE TABLE devices (
	id         TEXT    PRIMARY KEY,
	static_key BLOB    NOT NULL UNIQUE,
	name       TEXT    NOT NULL,
	created    INTEGER NOT NULL,
	revoked_at INTEGER
);

CREATE TABLE pins (
	card      TEXT    PRIMARY KEY REFERENCES cards (number),
	hash      BLOB    NOT NULL,
	salt      BLOB    NOT NULL,
	params    TEXT    NOT NULL,
	tries     INTEGER NOT NULL CHECK (tries >= 0),
	max_tries INTEGER NOT NULL CHECK (max_tries >= 1)
);

CREATE TABLE relying_parties (
	id             TEXT    PRIMARY KEY,
	name           TEXT    NOT NULL,
	key_hash       BLOB    NOT NULL UNIQUE,
	webhook_url    TEXT    NOT NULL,
	webhook_secret BLOB    NOT NULL,
	policy         TEXT    NOT NULL,
	created        INTEGER NOT NULL
);

CREATE TABLE auth_requests (
	id            TEXT    PRIMARY KEY,
	relying_party TEXT    NOT NULL REFERENCES relying_parties (id),
	card          TEXT    NOT NULL,
	policy        TEXT    NOT NULL,
	status        INTEGER NOT NULL,
	result        BLOB,
	created       INTEGER NOT NULL,
	updated       INTEGER NOT NULL,
	expires       INTEGER NOT NULL
);
CREATE INDEX auth_requests_pending ON auth_requests (card, created) WHERE status = 1;

CREATE TABLE server_keys (
	public     BLOB    PRIMARY KEY,
	private    BLOB    NOT NULL,
	created    INTEGER NOT NULL,
	retired_at INTEGER
);
