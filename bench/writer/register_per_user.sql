-- :n per-user shapes "owner_id = <i>", i = 1..n, registered through the
-- public API, 10 000 per statement (each its own transaction: registering
-- many shapes in one transaction slows down with every shape it already
-- registered).
SELECT format('SELECT count(*) AS registered FROM (SELECT shapesync.get_or_create_shape(%L::regclass, '
              'format(''owner_id = %%s'', i), NULL, '''') FROM generate_series(%s, %s) i) s',
              format('%I.t', :'schema'), b * 10000 + 1, least((b + 1) * 10000, :n))
  FROM generate_series(0, (:n - 1) / 10000) b \gexec
