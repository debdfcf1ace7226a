-- Registrations per second of per-user shapes "owner_id = <i>" at 1 000,
-- 10 000 and 100 000 shapes already registered on the table: fill up to
-- each level (10 000 per statement), then time 1 000 more in one statement.
-- psql -v schema=reg -f bench/writer/register_rate.sql (after make_table.sql
-- with nrows=100000 owners=100000 and shapesync.track(:'schema'.t))
\set reg 'SELECT count(*) FROM (SELECT shapesync.get_or_create_shape(format(''%I.t'', :''schema'')::regclass, format(''owner_id = %s'', i), NULL, '''') FROM generate_series(:lo, :hi) i) s'
\timing on
\set lo 1
\set hi 1000
:reg;
\echo timed: 1000 registrations at 1000 existing
\set lo 1001
\set hi 2000
:reg;
\timing off
\set lo 2001
\set hi 10000
:reg;
\echo timed: 1000 registrations at 10000 existing
\timing on
\set lo 10001
\set hi 11000
:reg;
\timing off
SELECT format('SELECT count(*) FROM (SELECT shapesync.get_or_create_shape(%L::regclass, '
              'format(''owner_id = %%s'', i), NULL, '''') FROM generate_series(%s, %s) i) s',
              format('%I.t', :'schema'), b, least(b + 9999, 100000))
  FROM generate_series(11001, 100000, 10000) b \gexec
\echo timed: 1000 registrations at 100000 existing
\timing on
\set lo 100001
\set hi 101000
:reg;
