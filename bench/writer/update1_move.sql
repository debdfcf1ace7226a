-- one single-row UPDATE per transaction that gives the row to another owner:
-- with per-user shapes, a move-out of one shape and a move-in to another
\set id random(1, 100000)
\set owner random(1, :owners)
UPDATE t SET owner_id = :owner WHERE id = :id;
