-- Tables for testdata/pgbench.sql: the ledger's double-entry transaction
-- without the ledger. 64 holders (ids 1-64) funded, 8 merchants (1001-1008).
DROP TABLE IF EXISTS bench_entries, bench_transfers, bench_accounts;
CREATE TABLE bench_accounts (
	id          bigint PRIMARY KEY,
	balance     bigint NOT NULL,
	lower_limit bigint NOT NULL,
	CHECK (balance >= lower_limit)
);
CREATE TABLE bench_transfers (
	id       bigserial PRIMARY KEY,
	idem_key text NOT NULL UNIQUE,
	posted   timestamptz NOT NULL
);
INSERT INTO bench_accounts SELECT g, 1000000000000, 0 FROM generate_series(1, 64) g;
INSERT INTO bench_accounts SELECT 1000 + g, 0, 0 FROM generate_series(1, 8) g;
