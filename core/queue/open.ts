// Picks the queue implementation the config names: SQLite in the data directory (one machine) or
// PostgreSQL (cluster mode, every node on the same database).
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
    return new PgQueue({ url: q.url, poolSize: q.poolSize, schema: q.schema, nodeId: nodeIdOf(config), retention: q.retention, log: o.log })
  }
  return new SqliteQueue(path.join(config.dataDir, SQLITE_QUEUE_FILE), o.spool, { retentionMs: config.queue.retention })
}
