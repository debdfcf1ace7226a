-- The demo's database: todo lists, each private to its owner or shared with
-- everyone (owner NULL), and their todos. Who sees and writes what is
-- row-level security on the token's claims (docs/auth.md): a user sees their
-- own lists and the shared ones, in shapes and through POST /v1/mutations.
-- Idempotent: `make demo` applies it to `make run`'s database every time.
--
-- The role `authenticated` is what the demo's tokens name; the sidecar's role
-- (shapesync_sidecar) must be a member of it (GRANT below, by the caller).

DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS public.lists (
  id    text PRIMARY KEY,
  name  text NOT NULL,
  owner text              -- the user (JWT `sub`) it belongs to; NULL: shared
);

CREATE TABLE IF NOT EXISTS public.todos (
  id         uuid PRIMARY KEY,
  list_id    text NOT NULL REFERENCES public.lists (id) ON DELETE CASCADE,
  -- the list's owner, copied by todos_set_owner(): a policy may not look into
  -- another table (a shape's filter has no subquery), so the todo carries it
  owner      text,
  title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
  done       boolean NOT NULL DEFAULT false,
  position   double precision NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000),
  updated_by text
);

-- The claims' subject, or NULL outside a request.
CREATE OR REPLACE FUNCTION public.demo_sub() RETURNS text
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub' $$;

-- Owner from the list (whoever writes), updated_by from the token.
CREATE OR REPLACE FUNCTION public.todos_set_owner() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
BEGIN
  SELECT l.owner INTO NEW.owner FROM public.lists l WHERE l.id = NEW.list_id;
  NEW.updated_by := coalesce(public.demo_sub(), NEW.updated_by);
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS todos_set_owner ON public.todos;
CREATE TRIGGER todos_set_owner BEFORE INSERT OR UPDATE ON public.todos
  FOR EACH ROW EXECUTE FUNCTION public.todos_set_owner();

ALTER TABLE public.lists ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS lists_own_or_shared ON public.lists;
CREATE POLICY lists_own_or_shared ON public.lists FOR SELECT TO authenticated
  USING (owner IS NULL OR owner = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'));

DROP POLICY IF EXISTS todos_own_or_shared ON public.todos;
CREATE POLICY todos_own_or_shared ON public.todos FOR ALL TO authenticated
  USING (owner IS NULL OR owner = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))
  WITH CHECK (owner IS NULL OR owner = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'));

GRANT SELECT ON public.lists TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.todos TO authenticated;

SELECT shapesync.track('public.lists');
SELECT shapesync.track('public.todos');
SELECT shapesync.grant_writer('authenticated');

INSERT INTO public.lists (id, name, owner) VALUES
  ('alice', 'Alice''s list', 'alice'),
  ('bob', 'Bob''s list', 'bob'),
  ('shared', 'Shared list', NULL)
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.todos (id, list_id, title, done, position)
SELECT v.id::uuid, v.list_id, v.title, v.done, v.position
  FROM (VALUES
    ('00000000-0000-4000-8000-000000000001', 'shared', 'Plan the launch party', false, 1),
    ('00000000-0000-4000-8000-000000000002', 'shared', 'Book a room', true, 2),
    ('00000000-0000-4000-8000-000000000003', 'alice', 'Alice''s secret: buy a gift for Bob', false, 1),
    ('00000000-0000-4000-8000-000000000004', 'bob', 'Bob''s secret: learn the guitar', false, 1)
  ) v(id, list_id, title, done, position)
 WHERE NOT EXISTS (SELECT 1 FROM public.todos);
