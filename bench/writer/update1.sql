-- one single-row UPDATE per transaction: changes a column, the row stays in
-- its per-user shape (owner_id unchanged)
\set id random(1, 100000)
UPDATE t SET amount = amount + 1 WHERE id = :id;
