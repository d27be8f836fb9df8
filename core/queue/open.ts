// Picks the queue implementation the config names: SQLite in the data directory (one machine) or
// PostgreSQL (cluster mode, every node on the same database).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { Queue } from './types.js'
import type { Spool } from './spool.js'
import { SqliteQueue } from './sqlite/queue.js'
import { importOptional } from '../optional.js'

/**
 * This node's identity in a shared queue: leases carry it and `recover` at start releases only its
 * own. The machine's name joins the configured hostname, so nodes sharing one public hostname stay
 * apart while a restarted node still finds its own work.
 */
export function nodeIdOf(config: Pick<RelayConfig, 'hostname'>): string {
  return `${config.hostname}/${os.hostname()}`
}

/** The SQLite queue's database in the data directory. */
export const SQLITE_QUEUE_FILE = 'queue.sqlite'

export async function openQueue(config: RelayConfig, o: { spool: Spool; log?: Logger }): Promise<Queue> {
  const q = config.queue
  if (q.driver === 'postgres') {
    // Loaded only in cluster mode: a one-machine relay never loads pg.
    const { PgQueue } = await importOptional('pg', "queue: { driver: 'postgres' }", () => import('./postgres/queue.js'))
    return new PgQueue({ url: q.url, poolSize: q.poolSize, queryTimeout: q.queryTimeout, schema: q.schema, nodeId: nodeIdOf(config), retention: q.retention, heartbeat: q.heartbeat, log: o.log })
  }
  const file = path.join(config.dataDir, SQLITE_QUEUE_FILE)
  await refuseLostDatabase(file, o.spool)
  return new SqliteQueue(file, o.spool, { retentionMs: config.queue.retention })
}

/** The queue's database is missing, empty or without its -wal file: the CLI says it in one line (no stack), exit 1. */
class LostQueueError extends Error {
  readonly kind = 'damaged' as const
}

/**
 * A missing or empty queue database beside message bodies in the spool is a lost database, not a
 * new queue: opening it would make a fresh one, and the start's spool sweep would delete the bodies
 * as left over from a crash. Stop instead, before anything is written, and say what to do.
 */
async function refuseLostDatabase(file: string, spool: Spool): Promise<void> {
  const size = fs.statSync(file, { throwIfNoEntry: false })?.size
  if (size) return refuseLostWal(file)
  const bodies = await spool.list()
  if (!bodies.length) return
  throw new LostQueueError(
    `queue database ${file} is ${size === undefined ? 'missing' : 'empty'} but ${path.dirname(bodies[0]!)} holds ${bodies.length} message ${bodies.length === 1 ? 'body' : 'bodies'}: ` +
      'restore the database from a backup (relay queue restore), or move the spool files away to start with an empty queue',
  )
}

/**
 * A database file with no queue in it (no schema) was made by a relay whose work, schema included,
 * lived in the -wal file (SQLite copies it into the file only every ~1,000 pages): the -wal file is
 * gone or damaged. Opening it would make a fresh queue in silence: stop and say what to do.
 */
function refuseLostWal(file: string): void {
  const wal = `${file}-wal`
  const walSize = fs.statSync(wal, { throwIfNoEntry: false })?.size
  let version: number
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      version = db.pragma('user_version', { simple: true }) as number
    } finally {
      db.close()
    }
  } catch {
    return // damaged otherwise: the queue's own open names it
  }
  if (version !== 0) return
  throw new LostQueueError(
    `queue database ${file} holds no queue (no tables), and its write-ahead log ${wal} ${walSize ? 'is damaged' : 'is missing'}: the queue was there. ` +
      'Put the -wal file back, or restore from a backup (relay queue restore), or move the database and its -wal/-shm files aside to start with an empty queue',
  )
}
