-- The ledger: double-entry accounts, transfers with idempotency keys, and
-- one entry per leg with the account's balance after it. The CHECK is a
-- backstop: transfers guard their UPDATE with the same condition.
CREATE TABLE ledger_accounts (
	id          text PRIMARY KEY,
	kind        text NOT NULL,
	currency    text NOT NULL,
	balance     bigint NOT NULL DEFAULT 0,
	lower_limit bigint NOT NULL,
	created     timestamptz NOT NULL,
	CHECK (balance >= lower_limit)
);

CREATE TABLE ledger_transfers (
	id       bigserial PRIMARY KEY,
	idem_key text NOT NULL UNIQUE,
	digest   bytea NOT NULL,
	currency text NOT NULL,
	memo     text NOT NULL,
	posted   timestamptz NOT NULL
);

CREATE TABLE ledger_entries (
	id       bigserial PRIMARY KEY,
	transfer bigint NOT NULL REFERENCES ledger_transfers (id),
	account  text NOT NULL REFERENCES ledger_accounts (id),
	amount   bigint NOT NULL,
	balance  bigint NOT NULL,
	posted   timestamptz NOT NULL
);

CREATE INDEX ledger_entries_account ON ledger_entries (account, posted, id);
CREATE INDEX ledger_entries_transfer ON ledger_entries (transfer);

-- ledger_post posts one transfer inside its own subtransaction (the
-- BEGIN … EXCEPTION block is a savepoint), so that the server can pipeline
-- a whole batch of calls in one round trip: a refused transfer rolls back
-- alone and reports why in o_status instead of failing the statement.
-- o_status: ok, replayed, conflict (key posted with another digest),
-- notfound, currency, limit (o_account names the leg), or error (o_account
-- holds the message).
CREATE OR REPLACE FUNCTION ledger_post(p_key text, p_digest bytea, p_currency text, p_memo text,
	p_posted timestamptz, p_accounts text[], p_amounts bigint[],
	OUT o_id bigint, OUT o_posted timestamptz, OUT o_status text, OUT o_account text)
LANGUAGE plpgsql AS $$
DECLARE
	v_digest   bytea;
	v_balance  bigint;
	v_currency text;
BEGIN
	o_status := 'ok';
	BEGIN
		INSERT INTO ledger_transfers (idem_key, digest, currency, memo, posted)
		VALUES (p_key, p_digest, p_currency, p_memo, p_posted)
		ON CONFLICT (idem_key) DO NOTHING
		RETURNING id INTO o_id;
		IF o_id IS NULL THEN
			SELECT id, digest, posted INTO o_id, v_digest, o_posted
			FROM ledger_transfers WHERE idem_key = p_key;
			IF v_digest = p_digest THEN
				o_status := 'replayed';
			ELSE
				o_status := 'conflict';
				o_id := NULL;
				o_posted := NULL;
			END IF;
			RETURN;
		END IF;
		o_posted := p_posted;
		FOR i IN 1 .. coalesce(array_length(p_accounts, 1), 0) LOOP
			UPDATE ledger_accounts SET balance = balance + p_amounts[i]
			WHERE id = p_accounts[i] AND currency = p_currency
				AND balance + p_amounts[i] >= lower_limit
			RETURNING balance INTO v_balance;
			IF NOT FOUND THEN
				o_account := p_accounts[i];
				SELECT currency INTO v_currency FROM ledger_accounts WHERE id = p_accounts[i];
				IF NOT FOUND THEN
					o_status := 'notfound';
				ELSIF v_currency <> p_currency THEN
					o_status := 'currency';
				ELSE
					o_status := 'limit';
				END IF;
				RAISE EXCEPTION 'ledger_post: refused';
			END IF;
			INSERT INTO ledger_entries (transfer, account, amount, balance, posted)
			VALUES (o_id, p_accounts[i], p_amounts[i], v_balance, p_posted);
		END LOOP;
	EXCEPTION WHEN OTHERS THEN
		IF o_status = 'ok' THEN
			o_status := 'error';
			o_account := SQLERRM;
		END IF;
		o_id := NULL;
		o_posted := NULL;
	END;
END
$$;
