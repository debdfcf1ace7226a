-- the shape registry
CREATE TABLE todo (id int PRIMARY KEY, owner text, title text, done bool);
SELECT shapesync.track('todo');

SELECT handle AS h1, created FROM shapesync.get_or_create_shape('todo', 'owner = ''u1''', '{id,title}') \gset
SELECT :'created' AS created, :'h1' ~ '^[0-9a-f]{16}-[0-9]+$' AS handle_format;
-- same definition, same handle
SELECT handle = :'h1' AS same_handle, created
  FROM shapesync.get_or_create_shape('todo', 'owner = ''u1''', '{id,title}');
-- other definitions, other handles
SELECT handle AS h2 FROM shapesync.get_or_create_shape('todo', 'owner = ''u2''', '{id,title}') \gset
SELECT handle AS h3 FROM shapesync.get_or_create_shape('todo', NULL, NULL) \gset
SELECT handle AS h4 FROM shapesync.get_or_create_shape('todo', 'owner = ''u1''', NULL) \gset
SELECT count(DISTINCT h) AS distinct_handles FROM (VALUES (:'h1'), (:'h2'), (:'h3'), (:'h4')) v(h);
SELECT handle = :'h3' AS same_handle, created FROM shapesync.get_or_create_shape('todo', NULL, NULL);

-- invalidate: the next get_or_create makes a new handle
SELECT shapesync.invalidate_shape(:'h1', 'test');
SELECT shapesync.invalidate_shape(:'h1', 'again');
SELECT shapesync.invalidate_shape('no-such-handle', 'test');
SELECT state, reason, invalidated_at IS NOT NULL AS has_time FROM shapesync.shapes WHERE handle = :'h1';
SELECT handle AS h1b, created FROM shapesync.get_or_create_shape('todo', 'owner = ''u1''', '{id,title}') \gset
SELECT :'created' AS created, :'h1b' <> :'h1' AS new_handle;

-- errors
SELECT * FROM shapesync.get_or_create_shape('todo', NULL, '{id,nope}');
CREATE TABLE untracked (id int PRIMARY KEY);
SELECT * FROM shapesync.get_or_create_shape('untracked', NULL, NULL);
SELECT * FROM shapesync.get_or_create_shape(NULL, NULL, NULL);

-- TRUNCATE invalidates the table's active shapes, also for a writer
-- without privileges on the registry
CREATE ROLE shapesync_writer;
GRANT ALL ON todo TO shapesync_writer;
SET ROLE shapesync_writer;
INSERT INTO todo VALUES (1, 'u1', 'write tests', false);
TRUNCATE todo;
RESET ROLE;
SELECT handle = :'h1' AS is_h1, state, reason FROM shapesync.shapes
 WHERE table_name = 'todo'::regclass ORDER BY created_at, handle;
SELECT op FROM shapesync.change_log WHERE table_name = 'todo'::regclass ORDER BY seq;
SELECT handle <> :'h1b' AS new_handle, created
  FROM shapesync.get_or_create_shape('todo', 'owner = ''u1''', '{id,title}');

-- untrack invalidates too
SELECT shapesync.untrack('todo');
SELECT state, reason, count(*) FROM shapesync.shapes
 WHERE table_name = 'todo'::regclass GROUP BY 1, 2 ORDER BY 1, 2;

REVOKE ALL ON todo FROM shapesync_writer;
DROP ROLE shapesync_writer;
DROP TABLE todo, untracked;
