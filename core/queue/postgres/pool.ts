// The PostgreSQL queue's connection pools: durable commits, int8 as numbers, no password in messages.
import pg from 'pg'
import type { Logger } from 'pino'
import { redactUrl } from '../../config/redact-url.js'

// int8 (counts, epoch ms, row ids) as numbers: every value here is far below 2^53. Only this
// queue's pools parse so; other pg users in the process keep pg's defaults.
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20 && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
}

/**
 * The URL with `synchronous_commit=on` for this pool's sessions, whatever the server's default: a
 * 250 is given only once the message's commit is on disk. And a transaction left open by a
 * connection that went silent (this node lost its network mid-transaction) is ended by the server
 * after `idleTxMs`, so the row locks it held do not stop the other nodes until TCP gives up (hours).
 */
function durable(url: string, idleTxMs: number): string {
  // libpq's unix-socket form with user info names no host (`postgresql://relay:pw@/relay?host=/run/…`),
  // which new URL() refuses: parsed with a stand-in host, given back without it.
  const noHost = NO_HOST.test(url)
  try {
    const u = new URL(noHost ? url.replace(NO_HOST, `$1${STAND_IN}`) : url)
    const options = u.searchParams.get('options')
    u.searchParams.set('options', `${options ? `${options} ` : ''}-c synchronous_commit=on -c idle_in_transaction_session_timeout=${idleTxMs}`)
    return noHost ? u.toString().replace(`@${STAND_IN}`, '@') : u.toString()
  } catch {
    return url
  }
}
const NO_HOST = /^([^/]*\/\/[^/?#]*@)(?=[/?#]|$)/
const STAND_IN = 'relay-no-host.invalid'

/** A connection URL (or key=value string) fit for messages and logs: no password, in user info or query. */
export function withoutPassword(url: string): string {
  return redactUrl(url, '***')
}

/** The pool for the queue's work. */
export function workPool(url: string, poolSize: number, log: Logger | undefined, queryTimeoutMs: number): pg.Pool {
  // Pipelined: a transaction's statements go out together, not one round trip each (complete.ts).
  // A statement unanswered after queryTimeoutMs fails and its connection is dropped (pipelined:
  // pg destroys it; else pg-pool discards a client released with an error): without it a
  // database that stops answering hangs SMTP sessions at RCPT or DATA and the delivery scan for good.
  const pool = new pg.Pool({
    connectionString: durable(url, Math.max(60_000, 3 * queryTimeoutMs)), max: poolSize, types, pipeline: true,
    connectionTimeoutMillis: Math.min(10_000, queryTimeoutMs), query_timeout: queryTimeoutMs, keepAlive: true,
  })
  // An idle connection that breaks (PostgreSQL restarted) must not take the process down; the
  // pool replaces it, and queries in flight fail and are retried by their callers.
  pool.on('error', (err) => log?.warn({ err }, 'queue: PostgreSQL connection lost'))
  return pool
}

/** Heartbeats go through a connection of their own, so busy delivery work never delays them. */
export function beatPool(url: string, log: Logger | undefined): pg.Pool {
  // A beat that cannot finish well within deadAfter is no beat: time limits on both sides.
  const pool = new pg.Pool({
    connectionString: durable(url, 60_000), max: 1, types, connectionTimeoutMillis: 10_000, statement_timeout: 10_000, query_timeout: 15_000, keepAlive: true,
  })
  pool.on('error', (err) => log?.warn({ err }, 'queue: PostgreSQL heartbeat connection lost'))
  return pool
}
