-- One double-entry transfer as pgbench sees it: two guarded balance
-- updates and an insert with a unique idempotency key, committed durably.
-- Setup: testdata/pgbench-setup.sql. See bench_test.go for the command.
\set h random(1, 64)
\set m random(1001, 1008)
BEGIN;
UPDATE bench_accounts SET balance = balance - 1 WHERE id = :h AND balance - 1 >= lower_limit;
UPDATE bench_accounts SET balance = balance + 1 WHERE id = :m AND balance + 1 >= lower_limit;
INSERT INTO bench_transfers (idem_key, posted) VALUES (gen_random_uuid()::text, now());
END;
