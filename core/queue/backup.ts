// `relay queue backup <dir>` and `relay queue restore <dir>` for the SQLite queue: the database
// copied with SQLite's online backup (consistent while a relay writes to it), then the spool files
// of the messages in that copy. The backup directory is itself a data directory (its spool paths
// point into it); restore copies it into a new, empty data directory. PostgreSQL: pg_dump.
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import Database from 'better-sqlite3'
import { SQLITE_QUEUE_FILE } from './open.js'
import { makeDirs, privateDir, privateFile } from './private-files.js'

const MANIFEST = 'backup.json'

export interface BackupResult {
  dir: string
  /** Messages in the backup. */
  messages: number
  /** Spool files copied (bodies too large to be inline). */
  spoolFiles: number
  /** Messages that left the queue between the database copy and their spool file's copy (left out). */
  leftOut: string[]
}

/** Why a backup or restore cannot be done: the CLI exits 1 with the message. */
export class BackupError extends Error {
  readonly kind = 'conflict' as const
}

/**
 * Copies the queue of `dataDir` into `dir` (created; it must be empty if it exists). A backup that
 * fails part way (its disk full) leaves nothing there, so the same command can be run again.
 */
export async function backupQueue(dataDir: string, dir: string): Promise<BackupResult> {
  const source = path.join(dataDir, SQLITE_QUEUE_FILE)
  if (!fs.existsSync(source)) throw new BackupError(`no queue in ${dataDir} (${SQLITE_QUEUE_FILE} is missing)`)
  await requireEmpty(dir, 'the backup directory')
  const existed = fs.existsSync(dir)
  try {
    return await copyQueue(source, dataDir, dir)
  } catch (err) {
    const left = existed ? (await fsp.readdir(dir).catch(() => [])).map((name) => path.join(dir, name)) : [dir]
    await Promise.all(left.map((f) => fsp.rm(f, { recursive: true, force: true }).catch(() => undefined)))
    const e = err as NodeJS.ErrnoException
    throw Object.assign(new BackupError(`backup into ${dir} failed: ${e.message || String(err)}${e.code ? ` (${e.code})` : ''}; what it had written there is removed, the queue is as it was`), { cause: err })
  }
}

async function copyQueue(source: string, dataDir: string, dir: string): Promise<BackupResult> {
  makeDirs(path.join(dir, 'spool'), 0o700)
  await fsp.chmod(dir, 0o700)
  const target = path.join(dir, SQLITE_QUEUE_FILE)
  privateFile(target) // 0600 before a byte of mail is in it (its -wal and -shm follow)

  // 1. The database, as of one moment (the online backup restarts itself if the relay writes meanwhile).
  const db = new Database(source, { fileMustExist: true })
  try {
    db.pragma('busy_timeout = 5000')
    await db.backup(target)
  } finally {
    db.close()
  }

  // 2. The spool files that copy refers to; a message delivered since has no file any more.
  const copy = new Database(target)
  let spoolFiles = 0
  const leftOut: string[] = []
  try {
    const rows = copy.prepare(`SELECT id, body_file FROM messages WHERE body_file IS NOT NULL`).all() as { id: string; body_file: string }[]
    const repoint = copy.prepare(`UPDATE messages SET body_file = ? WHERE id = ?`)
    for (const row of rows) {
      const into = path.join(dir, 'spool', path.basename(row.body_file))
      try {
        await copyDurably(row.body_file, into)
        repoint.run(into, row.id)
        spoolFiles++
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        leftOut.push(row.id)
      }
    }
    copy.transaction(() => {
      for (const id of leftOut) deleteMessage(copy, id)
    })()
    const messages = (copy.prepare(`SELECT count(*) AS n FROM messages`).get() as { n: number }).n
    copy.pragma('wal_checkpoint(TRUNCATE)')
    copy.close()
    await syncDir(path.join(dir, 'spool'))
    await fsp.writeFile(path.join(dir, MANIFEST), JSON.stringify({ createdAt: new Date().toISOString(), from: path.resolve(dataDir), messages, spoolFiles, leftOut }, null, 2) + '\n', { mode: 0o600 })
    await syncDir(dir)
    return { dir, messages, spoolFiles, leftOut }
  } finally {
    if (copy.open) copy.close()
  }
}

/** Restores a backup into `dataDir`, which must be new (missing or empty). */
export async function restoreQueue(dir: string, dataDir: string): Promise<{ dataDir: string; messages: number; spoolFiles: number }> {
  const source = path.join(dir, SQLITE_QUEUE_FILE)
  if (!fs.existsSync(source) || !fs.existsSync(path.join(dir, MANIFEST))) throw new BackupError(`${dir} is not a queue backup (no ${SQLITE_QUEUE_FILE} and ${MANIFEST})`)
  await requireEmpty(dataDir, 'the data directory to restore into')
  privateDir(path.join(dataDir, 'spool'))
  const target = path.join(dataDir, SQLITE_QUEUE_FILE)
  privateFile(target)
  const from = new Database(source, { readonly: true, fileMustExist: true })
  try {
    await from.backup(target)
  } finally {
    from.close()
  }
  const db = new Database(target)
  let spoolFiles = 0
  try {
    const rows = db.prepare(`SELECT id, body_file FROM messages WHERE body_file IS NOT NULL`).all() as { id: string; body_file: string }[]
    const repoint = db.prepare(`UPDATE messages SET body_file = ? WHERE id = ?`)
    for (const row of rows) {
      const name = path.basename(row.body_file)
      const into = path.join(dataDir, 'spool', name)
      await copyDurably(path.join(dir, 'spool', name), into)
      repoint.run(into, row.id)
      spoolFiles++
    }
    const messages = (db.prepare(`SELECT count(*) AS n FROM messages`).get() as { n: number }).n
    db.pragma('wal_checkpoint(TRUNCATE)')
    db.close()
    await syncDir(path.join(dataDir, 'spool'))
    await syncDir(dataDir)
    return { dataDir, messages, spoolFiles }
  } finally {
    if (db.open) db.close()
  }
}

/** A message and its recipients and attempts, as the queue removes one. */
function deleteMessage(db: Database.Database, id: string): void {
  for (const table of ['recipients', 'attempts']) {
    const exists = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table)
    if (exists) db.prepare(`DELETE FROM ${table} WHERE message_id = ?`).run(id)
  }
  db.prepare(`DELETE FROM messages WHERE id = ?`).run(id)
}

async function requireEmpty(dir: string, what: string): Promise<void> {
  const entries = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? [] : Promise.reject(err)))
  if (entries.length) throw new BackupError(`${what} ${dir} is not empty`)
}

async function copyDurably(from: string, to: string): Promise<void> {
  await fsp.copyFile(from, to, fs.constants.COPYFILE_EXCL)
  await fsp.chmod(to, 0o600)
  const handle = await fsp.open(to, 'r+')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}
