-- (Re)create :"schema".t with :nrows rows spread over :owners owners
-- (owner_id = (id - 1) % owners + 1, so with owners = number of per-user
-- shapes every row is in exactly one shape).
-- psql -v schema=... -v nrows=... -v owners=... -f make_table.sql
DROP SCHEMA IF EXISTS :"schema" CASCADE;
CREATE SCHEMA :"schema";
SET search_path = :"schema";
CREATE TABLE t (
	id       bigserial PRIMARY KEY,
	owner_id int NOT NULL,
	amount   int,
	title    text,
	payload  text
) WITH (autovacuum_enabled = off);
INSERT INTO t (owner_id, amount, title, payload)
SELECT (g - 1) % :owners + 1, (g * 7919) % 10000, 'title ' || md5(g::text), repeat('x', 100)
  FROM generate_series(1, :nrows) g;
VACUUM (ANALYZE) t;
