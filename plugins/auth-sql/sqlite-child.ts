// auth-sql's SQLite lookups run in this child process: better-sqlite3 is synchronous, so a slow
// query or a locked file would hold every SMTP session of the relay. The relay's side
// (sqlite-process.ts) kills the process when a lookup runs past queryTimeout: a query cannot be
// interrupted from outside (better-sqlite3 has no sqlite3_interrupt), and a worker thread stuck in
// one would hold the relay's exit until it ended.
import fs from 'node:fs'
import Database from 'better-sqlite3'

export interface SqliteChildData {
  file: string
  query: string
  /** How long a lookup waits for a locked file (ms). */
  busyTimeout: number
}
/** `username` absent: open the database only (the check at start). */
export type ToSqlite = { id: number; username?: string }
export type FromSqlite = { id: number; row?: UserRow; error?: string }

export interface UserRow {
  password_hash?: unknown
  senders?: unknown
}

export const NO_HASH_COLUMN = "the query returns no 'password_hash' column"

/** Set by sqlite-process.ts on the child it forks. */
export const CHILD_ENV = 'RELAY_AUTH_SQL_CHILD'

if (process.env[CHILD_ENV] && process.send) {
  const { file, query, busyTimeout } = JSON.parse(process.env[CHILD_ENV]) as SqliteChildData
  const send = (m: FromSqlite) => process.send!(m)
  // The relay went away (killed, even with -9): so does this process.
  process.on('disconnect', () => process.exit(0))
  let db: Database.Database | undefined
  let stmt: Database.Statement<[string], UserRow> | undefined
  let opened: { dev: number; ino: number } | undefined

  const close = () => {
    try {
      db?.close()
    } catch {
      // already closed
    }
    db = stmt = opened = undefined
  }
  const open = () => {
    const st = fs.statSync(file)
    const d = new Database(file, { readonly: true, fileMustExist: true, timeout: busyTimeout })
    try {
      const s = d.prepare<[string], UserRow>(query)
      if (!s.reader) throw new Error('the query returns no rows (expected a SELECT)')
      if (!s.columns().some((c) => c.name === 'password_hash')) throw new Error(NO_HASH_COLUMN)
      db = d
      stmt = s
      opened = { dev: st.dev, ino: st.ino }
    } catch (err) {
      d.close()
      throw err
    }
  }

  process.on('message', ({ id, username }: ToSqlite) => {
    try {
      // A file replaced under us (a new database renamed into place) is opened again.
      if (opened) {
        const st = fs.statSync(file, { throwIfNoEntry: false })
        if (st && (st.ino !== opened.ino || st.dev !== opened.dev)) close()
      }
      if (!stmt) open()
      const row = username === undefined ? undefined : stmt!.get(username)
      // Only the two columns the plugin reads cross back (a row may hold anything else).
      send({ id, row: row && { password_hash: row.password_hash, senders: row.senders } })
    } catch (err) {
      close()
      send({ id, error: (err as Error).message || String(err) })
    }
  })
}
