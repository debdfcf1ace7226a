-- one single-row INSERT per transaction (pgbench -M prepared, -D owners=N)
\set owner random(1, :owners)
\set amount random(0, 9999)
\set r random(1, 1000000000)
INSERT INTO t (owner_id, amount, title, payload)
VALUES (:owner, :amount, 'title ' || md5(:r::text), repeat('x', 100));
