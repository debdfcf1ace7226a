-- :n per-user shapes "owner_id = <i>", i = 1..n, registered through the
-- public API in one statement.
SELECT count(*) AS registered
  FROM (SELECT shapesync.get_or_create_shape(format('%I.t', :'schema')::regclass,
                                             format('owner_id = %s', i), NULL, '')
          FROM generate_series(1, :n) i) s;
