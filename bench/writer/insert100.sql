-- one 100-row INSERT ... SELECT per transaction
\set owner random(1, :owners)
INSERT INTO t (owner_id, amount, title, payload)
SELECT (:owner + g) % :owners + 1, (g * 7919 + :owner) % 10000,
       'title ' || md5((:owner + g)::text), repeat('x', 100)
  FROM generate_series(1, 100) g;
