-- Remote authentication (issue 3). Times are timestamptz (microseconds, UTC);
-- NULL means "not set".

CREATE TABLE challenges (
	value   bytea       PRIMARY KEY,
	card    text        NOT NULL,
	session bytea       NOT NULL,
	purpose smallint    NOT NULL,
	expires timestamptz NOT NULL
);
CREATE INDEX challenges_expires ON challenges (expires);

CREATE TABLE cards (
	number        text        PRIMARY KEY,
	cert          bytea       NOT NULL,
	issuer_key_id bytea       NOT NULL,
	counter       bigint      NOT NULL DEFAULT 0 CHECK (counter >= 0),
	created       timestamptz NOT NULL,
	revoked_at    timestamptz,
	cloned_at     timestamptz
);

CREATE TABLE devices (
	id         text        PRIMARY KEY,
	static_key bytea       NOT NULL UNIQUE,
	name       text        NOT NULL,
	created    timestamptz NOT NULL,
	revoked_at timestamptz
);

CREATE TABLE pins (
	card      text     PRIMARY KEY REFERENCES cards (number),
	hash      bytea    NOT NULL,
	salt      bytea    NOT NULL,
	params    text     NOT NULL,
	tries     integer  NOT NULL CHECK (tries >= 0),
	max_tries integer  NOT NULL CHECK (max_tries >= 1)
);

CREATE TABLE relying_parties (
	id             text        PRIMARY KEY,
	name           text        NOT NULL,
	key_hash       bytea       NOT NULL UNIQUE,
	webhook_url    text        NOT NULL,
	webhook_secret bytea       NOT NULL,
	policy         text        NOT NULL,
	created        timestamptz NOT NULL
);

CREATE TABLE auth_requests (
	id            text        PRIMARY KEY,
	relying_party text        NOT NULL REFERENCES relying_parties (id),
	card          text        NOT NULL,
	policy        text        NOT NULL,
	status        smallint    NOT NULL,
	result        bytea,
	created       timestamptz NOT NULL,
	updated       timestamptz NOT NULL,
	expires       timestamptz NOT NULL
);
CREATE INDEX auth_requests_pending ON auth_requests (card, created) WHERE status = 1;

CREATE TABLE server_keys (
	public     bytea       PRIMARY KEY,
	private    bytea       NOT NULL,
	created    timestamptz NOT NULL,
	retired_at timestamptz
);
