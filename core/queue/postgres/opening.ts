// The PostgreSQL queue's opening (its migrations). A database that cannot be reached at start (it
// restarts, the network is not up yet) does not stop the node: the node runs, every queue call
// fails at once meanwhile (SMTP answers 451, delivery scans fail and are retried), and opening is
// tried again in the background until it succeeds. Errors the server gave (a wrong password, a
// missing database, a schema newer than this relay) still stop the start: waiting would not help.
import pg from 'pg'
import type { Logger } from 'pino'

/** Retry backoff while the database cannot be reached. */
const RETRY_MIN_MS = 500
const RETRY_MAX_MS = 5000
/** At most one warning per this while it stays unreachable. */
const WARN_EVERY_MS = 30_000

/** SQLSTATE classes that mean "not now" rather than "never": connection exceptions, the server starting or stopping. */
const TRANSIENT_STATES = /^(08|57P0[1-3])/

/** Whether opening failed for a reason that may go away by itself. */
export function unreachable(err: unknown): boolean {
  if (err instanceof pg.DatabaseError) return TRANSIENT_STATES.test(err.code ?? '')
  // Socket errors (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENOTFOUND…), pg's connection timeout and
  // 'Connection terminated'; not our own refusals (a schema newer than this relay).
  const e = err as { code?: unknown; message?: unknown }
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) return true
  return typeof e?.message === 'string' && /timeout|Connection terminated|connection.*(closed|ended)/i.test(e.message)
}

/**
 * `err`, marked `kind: 'unavailable'` when the database could not be reached (the operator verbs'
 * contract: an HTTP API answers 503, the CLI prints the message), as it is otherwise.
 */
export function markUnavailable(err: unknown): unknown {
  if (unreachable(err) && typeof (err as { kind?: unknown }).kind !== 'string') Object.assign(err as object, { kind: 'unavailable' })
  return err
}

export class PgOpening {
  /** The first attempt: resolves once open; rejects (also when it is retried) if that attempt failed. */
  readonly first: Promise<void>
  private open = false
  private retrying = false
  private closed = false
  private lastError: Error | undefined
  private timer: NodeJS.Timeout | undefined
  /** A start's recovery asked for while the database could not be reached: run before the queue opens. */
  private recoverPending = false

  constructor(
    private readonly o: {
      migrate: () => Promise<void>
      recover: () => Promise<number>
      /** The database and schema, for messages (no password). */
      where: string
      log: Logger | undefined
    },
  ) {
    this.first = this.o.migrate().then(
      () => void (this.open = true),
      (err: Error) => {
        // `kind`: a failure the message says in full (the CLI prints it without a stack trace).
        const wrapped = Object.assign(new Error(`queue: PostgreSQL at ${this.o.where}: ${err.message}`, { cause: err }), { kind: 'unavailable' as const })
        if (unreachable(err)) {
          this.lastError = wrapped
          this.retrying = true
          this.o.log?.error({ err: wrapped }, 'queue: PostgreSQL not reachable at start; mail is refused with 451 until it is (retrying)')
          this.schedule(RETRY_MIN_MS, Date.now())
        }
        throw wrapped
      },
    )
    // Failures surface at the first call; this only keeps an unawaited rejection quiet.
    this.first.catch(() => undefined)
  }

  /** True once open. */
  isOpen(): boolean {
    return this.open
  }

  /** Resolves when open; waits for the first attempt; while retrying, rejects at once. */
  whenOpen(): Promise<void> {
    if (this.open) return Promise.resolve()
    if (this.retrying) return Promise.reject(this.lastError)
    return this.first
  }

  /**
   * The start's recovery: true when it was deferred (the database is not reachable; it runs before
   * the queue opens), false when the caller should run it now.
   */
  async deferRecovery(): Promise<boolean> {
    await this.first.catch(() => undefined)
    if (this.open || !this.retrying) return false
    this.recoverPending = true
    return true
  }

  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
  }

  private schedule(delayMs: number, warnedAt: number): void {
    if (this.closed) return
    this.timer = setTimeout(() => void this.retry(delayMs, warnedAt), delayMs)
    this.timer.unref()
  }

  private async retry(delayMs: number, warnedAt: number): Promise<void> {
    try {
      await this.o.migrate()
      // This node's leases from before the start are released before any claim can take work.
      const recovered = this.recoverPending ? await this.o.recover() : 0
      this.recoverPending = false
      this.open = true
      this.retrying = false
      this.o.log?.info({ recovered }, 'queue: PostgreSQL reachable; taking mail')
      if (recovered) this.o.log?.info({ recovered }, 'recovered deliveries the last run left unfinished (a crash, or a stop with deliveries in flight): due again')
    } catch (err) {
      this.lastError = Object.assign(new Error(`queue: PostgreSQL at ${this.o.where}: ${(err as Error).message}`, { cause: err }), { kind: 'unavailable' as const })
      const now = Date.now()
      if (now - warnedAt >= WARN_EVERY_MS) {
        this.o.log?.warn({ err: this.lastError }, 'queue: PostgreSQL still not reachable; mail is refused with 451 (retrying)')
        warnedAt = now
      }
      this.schedule(Math.min(delayMs * 2, RETRY_MAX_MS), warnedAt)
    }
  }
}
