// A collaborative todo list on shapesync: the lists a user may see (their own
// and the shared ones: row-level security), the todos of one list, live;
// edits show at once (optimistic) and are confirmed by the stream; a status
// badge, an offline switch, and a dialog for conflicting edits.
import {
  uuid,
  useConflicts,
  useSyncClient,
  useSyncedMutation,
  useSyncedShape,
  useSyncStatus,
  type ConflictWithActions,
} from '@shapesync/react'
import { useMemo, useState, type FormEvent } from 'react'
import { z } from 'zod'

const List = z.object({ id: z.string(), name: z.string(), owner: z.string().nullable() })
const Todo = z.object({
  id: z.string(),
  list_id: z.string(),
  title: z.string().min(1),
  done: z.boolean(),
  position: z.number(),
  updated_by: z.string().nullable(),
})
type Todo = z.infer<typeof Todo>

export function App({ user }: { user: string }) {
  const lists = useSyncedShape({ table: 'lists', schema: List })
  const [selected, setSelected] = useState(() => new URLSearchParams(location.search).get('list') ?? 'shared')
  const sorted = useMemo(() => [...lists.data].sort((a, b) => a.name.localeCompare(b.name)), [lists.data])
  return (
    <div className="app">
      <header>
        <h1>shapesync todos</h1>
        <StatusBadge />
        <OfflineSwitch />
        <span className="user" data-testid="user">
          {user} · <a href="?">switch user</a>
        </span>
      </header>
      <div className="body">
        <nav data-testid="lists">
          <h2>Lists</h2>
          {lists.isLoading && sorted.length === 0 && <p className="muted">loading…</p>}
          {sorted.map((l) => (
            <button
              key={l.id}
              data-testid="list"
              data-id={l.id}
              className={l.id === selected ? 'list selected' : 'list'}
              onClick={() => setSelected(l.id)}
            >
              {l.name}
              <span className="tag">{l.owner === null ? 'shared' : 'private'}</span>
            </button>
          ))}
        </nav>
        <main>
          {/* before the lists arrive (offline after a reload) the chosen list is shown from what is pending */}
          {sorted.some((l) => l.id === selected) || (lists.isLoading && selected) ? (
            <TodoList list={selected} />
          ) : (
            <p className="muted">Pick a list.</p>
          )}
        </main>
      </div>
      <ConflictDialog />
    </div>
  )
}

function StatusBadge() {
  const s = useSyncStatus()
  const title = [
    s.lastSyncedAt ? `last synced ${new Date(s.lastSyncedAt).toLocaleTimeString()}` : 'not synced yet',
    s.lagMs !== undefined ? `stream ${Math.round(s.lagMs)} ms behind the last write` : '',
    s.error ? String(s.error.message) : '',
  ].filter(Boolean).join(' · ')
  return (
    <span className={`badge ${s.state}`} data-testid="status" data-state={s.state} data-pending={s.pendingWrites} title={title}>
      <span className="dot" />
      {s.state}
      {s.pendingWrites > 0 && <span> · {s.pendingWrites} pending</span>}
      {s.lagMs !== undefined && s.state === 'up-to-date' && <span className="muted"> · {Math.round(s.lagMs)} ms</span>}
    </span>
  )
}

function OfflineSwitch() {
  const client = useSyncClient()
  const s = useSyncStatus()
  const [forced, setForced] = useState(() => sessionStorage.getItem('demo-offline') === '1')
  return (
    <label className="switch">
      <input
        type="checkbox"
        data-testid="offline"
        checked={forced}
        onChange={(e) => {
          setForced(e.target.checked)
          sessionStorage.setItem('demo-offline', e.target.checked ? '1' : '0')
          client.setOffline(e.target.checked)
        }}
      />
      work offline{!s.online && !forced && ' (no network)'}
    </label>
  )
}

function TodoList({ list }: { list: string }) {
  const client = useSyncClient()
  const todos = useSyncedShape({
    table: 'todos',
    where: 'list_id = $1',
    params: [list],
    schema: Todo,
    match: (r) => r.list_id === list,
  })
  const m = useSyncedMutation({ table: 'todos', schema: Todo })
  const [title, setTitle] = useState('')
  const rows = useMemo(() => [...todos.data].sort((a, b) => a.position - b.position || a.id.localeCompare(b.id)), [todos.data])
  const pendingIds = new Set(client.pendingMutations('todos').map((p) => String(p.key?.id ?? p.values?.id)))

  const add = (e: FormEvent) => {
    e.preventDefault()
    const t = title.trim()
    if (!t) return
    void m.insert({ id: uuid(), list_id: list, title: t, done: false, position: Date.now(), updated_by: null })
    setTitle('')
  }

  return (
    <section data-testid="todos" data-list={list}>
      <form onSubmit={add} className="add">
        <input data-testid="new-title" value={title} onChange={(e) => setTitle(e.target.value)} placeholder="Add a todo…" />
        <button type="submit" data-action="add">Add</button>
      </form>
      {todos.error && <p className="error" data-testid="shape-error">{todos.error.message}</p>}
      {m.error && m.error.name !== 'MutationConflictError' && (
        <p className="error" data-testid="write-error">{m.error.message}</p>
      )}
      {todos.isLoading && rows.length === 0 && <p className="muted">loading…</p>}
      <ul>
        {rows.map((t) => (
          <TodoItem
            key={t.id}
            todo={t}
            pending={pendingIds.has(t.id)}
            onToggle={() => void m.update({ id: t.id }, { done: !t.done })}
            onRename={(title) => void m.update({ id: t.id }, { title })}
            onDelete={() => void m.remove({ id: t.id })}
          />
        ))}
      </ul>
      {!todos.isLoading && rows.length === 0 && <p className="muted">Nothing to do.</p>}
    </section>
  )
}

function TodoItem(p: { todo: Todo; pending: boolean; onToggle: () => void; onRename: (t: string) => void; onDelete: () => void }) {
  const [editing, setEditing] = useState<string | null>(null)
  const t = p.todo
  const save = () => {
    if (editing !== null && editing.trim() && editing.trim() !== t.title) p.onRename(editing.trim())
    setEditing(null)
  }
  return (
    <li data-testid="todo" data-id={t.id} data-title={t.title} data-done={String(t.done)} className={p.pending ? 'pending' : ''}>
      <input type="checkbox" data-action="toggle" checked={t.done} onChange={p.onToggle} aria-label={`done: ${t.title}`} />
      {editing === null ? (
        <span className={t.done ? 'title done' : 'title'} data-action="edit" onDoubleClick={() => setEditing(t.title)}>
          {t.title}
        </span>
      ) : (
        <input
          className="edit"
          data-testid="edit-title"
          autoFocus
          value={editing}
          onChange={(e) => setEditing(e.target.value)}
          onBlur={save}
          onKeyDown={(e) => {
            if (e.key === 'Enter') save()
            if (e.key === 'Escape') setEditing(null)
          }}
        />
      )}
      {t.updated_by && <span className="muted by">{t.updated_by}</span>}
      {p.pending && <span className="pending-dot" title="not confirmed yet" />}
      <button className="delete" data-action="delete" onClick={p.onDelete} aria-label={`delete ${t.title}`}>×</button>
    </li>
  )
}

function show(row: Record<string, unknown> | null | undefined) {
  if (!row) return <em>deleted</em>
  return (
    <>
      <span data-field="title">{String(row.title ?? '')}</span>
      {'done' in row && <span className="muted"> ({row.done ? 'done' : 'not done'})</span>}
    </>
  )
}

function ConflictDialog() {
  const conflicts = useConflicts()
  const c: ConflictWithActions | undefined = conflicts[0]
  const [merged, setMerged] = useState<string | null>(null)
  if (!c) return null
  const theirs = c.theirs
  const mine = c.mine ? { ...(c.base ?? {}), ...c.mine } : null
  const suggestion = `${String(theirs?.title ?? '')} / ${String(mine?.title ?? '')}`
  const close = () => setMerged(null)
  return (
    <div className="overlay">
      <div role="dialog" aria-modal="true" aria-labelledby="conflict-title" className="dialog" data-testid="conflict" data-id={c.id}>
        <h2 id="conflict-title">Someone else changed this todo</h2>
        <p className="muted">{c.reason}</p>
        <div className="versions">
          <div data-testid="conflict-mine">
            <h3>Your change</h3>
            {c.op === 'delete' ? <em>delete it</em> : show(mine)}
          </div>
          <div data-testid="conflict-theirs">
            <h3>Now on the server</h3>
            {show(theirs)}
          </div>
        </div>
        {merged !== null && (
          <input data-testid="merged-title" value={merged} onChange={(e) => setMerged(e.target.value)} autoFocus />
        )}
        <div className="actions">
          <button data-testid="keep-mine" onClick={() => { void c.resolve('mine'); close() }}>Keep mine</button>
          <button data-testid="keep-theirs" onClick={() => { void c.resolve('theirs'); close() }}>Keep theirs</button>
          {c.op === 'update' && theirs && (merged === null ? (
            <button data-testid="merge" onClick={() => setMerged(suggestion)}>Merge…</button>
          ) : (
            <button data-testid="save-merged" onClick={() => { void c.resolve({ ...c.mine, title: merged }); close() }}>Save merged</button>
          ))}
        </div>
        {conflicts.length > 1 && <p className="muted">{conflicts.length - 1} more after this one</p>}
      </div>
    </div>
  )
}
