-- :n users' shapes on :"schema".t, each asked for on behalf of role
-- bench_user with the claims {"sub": i, "role": "bench_user"}, i = 1..n, and
-- no filter of its own: the effective filter is the table's row-level
-- security policy (owner_id = auth.uid()) folded with the claims, i.e.
-- "owner_id = <i>" (docs/auth.md). Through the public API, one statement.
SELECT count(*) AS registered
  FROM (SELECT shapesync.get_or_create_shape(format('%I.t', :'schema')::regclass, NULL, NULL, '', NULL,
                                             'bench_user', jsonb_build_object('sub', i, 'role', 'bench_user'))
          FROM generate_series(1, :n) i) s;
