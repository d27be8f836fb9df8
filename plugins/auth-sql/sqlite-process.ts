// The relay's side of auth-sql's SQLite lookups: each goes to a child process (sqlite-child.ts)
// and waits at most queryTimeout. Past it the lookup fails (AUTH 454) and the process is killed,
// which stops the query; the next lookup starts a new one. The event loop never waits on SQLite.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { CHILD_ENV, type FromSqlite, type SqliteChildData, type ToSqlite, type UserRow } from './sqlite-child.js'

interface Pending {
  resolve: (row: UserRow | undefined) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

interface Child {
  process: ChildProcess
  pending: Map<number, Pending>
}

/** Built (dist/): sqlite-child.js beside this file. From source (tsx, vitest): the .ts through tsx. */
function startChild(data: SqliteChildData): ChildProcess {
  const fromSource = import.meta.url.endsWith('.ts')
  const entry = fileURLToPath(new URL(fromSource ? './sqlite-child.ts' : './sqlite-child.js', import.meta.url))
  let tsx = 'tsx'
  if (fromSource) {
    try {
      tsx = import.meta.resolve(tsx)
    } catch {
      // no import.meta.resolve here: the bare name, resolved from the working directory
    }
  }
  return fork(entry, [], {
    env: { ...process.env, [CHILD_ENV]: JSON.stringify(data) },
    execArgv: fromSource ? ['--import', tsx] : [],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    serialization: 'advanced',
  })
}

export class SqliteProcess {
  private child: Child | undefined
  private seq = 0

  constructor(
    private readonly data: SqliteChildData,
    private readonly timeoutMs: number,
  ) {}

  /** The user's row (undefined: no such user); `username` undefined only opens the database. */
  lookup(username?: string): Promise<UserRow | undefined> {
    return new Promise((resolve, reject) => {
      const c = (this.child ??= this.start())
      const id = ++this.seq
      const timer = setTimeout(() => this.end(c, new Error(`SQLite query timed out after ${this.timeoutMs} ms`)), this.timeoutMs)
      c.pending.set(id, { resolve, reject, timer })
      c.process.send({ id, username } satisfies ToSqlite, (err) => err && this.end(c, err))
    })
  }

  close(): void {
    if (this.child) this.end(this.child, new Error('auth-sql is shutting down'))
  }

  private start(): Child {
    const c: Child = { process: startChild(this.data), pending: new Map() }
    c.process.on('message', (m: FromSqlite) => {
      const p = c.pending.get(m.id)
      if (!p) return
      c.pending.delete(m.id)
      clearTimeout(p.timer)
      if (m.error !== undefined) p.reject(new Error(m.error))
      else p.resolve(m.row)
    })
    c.process.on('error', (err) => this.end(c, err))
    c.process.on('exit', (code, signal) => this.end(c, new Error(`the SQLite lookup process ended (${signal ?? `exit code ${code}`})`)))
    // An idle child does not keep the relay running (shutdown kills it anyway).
    c.process.unref()
    c.process.channel?.unref()
    return c
  }

  /** Fails what waits on `c` (those queued behind a slow query too) and kills its process. */
  private end(c: Child, err: Error): void {
    if (this.child === c) this.child = undefined
    for (const p of c.pending.values()) {
      clearTimeout(p.timer)
      p.reject(err)
    }
    c.pending.clear()
    if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGKILL')
  }
}
