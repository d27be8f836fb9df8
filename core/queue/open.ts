// Picks the queue implementation the config names: SQLite in the data directory (one machine) or
// PostgreSQL (cluster mode, every node on the same database).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
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
    return new PgQueue({ url: q.url, poolSize: q.poolSize, queryTimeout: q.queryTimeout, schema: q.schema, nodeId: nodeIdOf(config), retention: q.retention, log: o.log })
  }
  const file = path.join(config.dataDir, SQLITE_QUEUE_FILE)
  await refuseLostDatabase(file, o.spool)
  return new SqliteQueue(file, o.spool, { retentionMs: config.queue.retention })
}

/**
 * A missing or empty queue database beside message bodies in the spool is a lost database, not a
 * new queue: opening it would make a fresh one, and the start's spool sweep would delete the bodies
 * as left over from a crash. Stop instead, before anything is written, and say what to do.
 */
async function refuseLostDatabase(file: string, spool: Spool): Promise<void> {
  const size = fs.statSync(file, { throwIfNoEntry: false })?.size
  if (size) return
  const bodies = await spool.list()
  if (!bodies.length) return
  throw new Error(
    `queue database ${file} is ${size === undefined ? 'missing' : 'empty'} but ${path.dirname(bodies[0]!)} holds ${bodies.length} message ${bodies.length === 1 ? 'body' : 'bodies'}: ` +
      'restore the database from a backup (relay queue restore), or move the spool files away to start with an empty queue',
  )
}
