-- :n general (non-equality) shapes: half "amount BETWEEN a AND b" ranges that
-- partition 0..9999 (every row is in one), half "title ILIKE '%xy%'" with
-- distinct two-hex-digit patterns (each matches ~12% of the md5 titles).
SELECT count(*) AS registered
  FROM (SELECT shapesync.get_or_create_shape(
                 format('%I.t', :'schema')::regclass,
                 CASE WHEN k < :n / 2
                      THEN format('amount BETWEEN %s AND %s',
                                  k * (10000 / (:n / 2)), (k + 1) * (10000 / (:n / 2)) - 1)
                      ELSE format('title ILIKE %L',
                                  '%' || lpad(to_hex(((k - :n / 2) * 7) % 256), 2, '0') || '%')
                 END, NULL, '')
          FROM generate_series(0, :n - 1) k) s;
