// The Redis side of the throttle (delivery.throttle.redis): concurrency slots, per-minute counts and
// backoff pauses shared by every node, each decision one atomic script (throttle-scripts.ts).
// A slot a node holds lives `slotTtl` (the cluster's heartbeat deadAfter, else 30 s) unless the node
// renews it (three times per slotTtl while it holds any): a node killed mid-delivery frees its slots
// when its leased work is taken over, not after delivery.lease, and a slot taken by a command that
// timed out here (Redis ran it late) is removed, or expires unrenewed. After a failed command the
// node keeps its own limits for DOWN_MS instead of waiting on Redis each time.
import type { Logger } from 'pino'
import type { Redis } from 'ioredis'
import { importOptional } from '../optional.js'
import { ACQUIRE, BACKOFF, RECOVER } from './throttle-scripts.js'

/** How long a slot lives unrenewed outside a cluster (no heartbeat). */
const SLOT_TTL_MS = 30_000
const DOWN_MS = 10_000
/** How long a Redis command may take before the node decides alone. */
const COMMAND_TIMEOUT_MS = 2_000

export interface CounterKeys {
  conc: string
  rate: string
  pause: string
  reduced: string
}

export class SharedCounters {
  private redis?: Redis
  private closed = false
  private lastWarning = 0
  private downUntil = 0
  /** Commands timed out in a row (no answer since): the second makes the connection anew. */
  private timeouts = 0
  /** The slots this node holds: token → its concurrency key (renewed until released). */
  private readonly held = new Map<string, string>()
  private renewer?: NodeJS.Timeout

  constructor(
    url: string,
    private readonly prefix: string,
    private readonly log: Logger,
    private readonly slotTtl = SLOT_TTL_MS,
  ) {
    // ioredis is imported only here, so a relay without shared limits never loads it (limits are per node until it connects).
    importOptional('ioredis', 'delivery.throttle.redis', () => import('ioredis')).then(({ Redis }) => {
      if (this.closed) return
      this.redis = new Redis(url, { lazyConnect: false, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: COMMAND_TIMEOUT_MS, commandTimeout: COMMAND_TIMEOUT_MS })
      this.redis.on('error', (err) => this.failed(err))
    }, (err: Error) => this.failed(err))
  }

  keys(key: string): CounterKeys {
    const base = `${this.prefix}${key}`
    return { conc: `${base}:conc`, rate: `${base}:rate`, pause: `${base}:pause`, reduced: `${base}:reduced` }
  }

  /** Connected, and no command failed in the last DOWN_MS: else the node decides alone (logged). */
  usable(now = Date.now()): boolean {
    if (!this.redis) return false
    if (this.redis.status !== 'ready') {
      this.failed(new Error(`redis ${this.redis.status}`))
      return false
    }
    return now >= this.downUntil
  }

  /**
   * One slot under the shared counters: [1, 0] granted (held until release), [0, retryAt] refused.
   * Throws when Redis did not answer; whatever the script did there is undone.
   */
  async acquire(k: CounterKeys, now: number, token: string, concurrency: number, perMinute: number, perSecond: number): Promise<[number, number]> {
    const redis = this.redis!
    try {
      const [ok, retryAt] = (await redis.eval(ACQUIRE, 4, k.conc, k.rate, k.pause, k.reduced, now, token, concurrency, perMinute, this.slotTtl, perSecond)) as [number, number]
      if (ok) this.hold(token, k.conc)
      this.timeouts = 0
      return [ok, retryAt]
    } catch (err) {
      // Sent on the same connection after the script, so it runs after it should Redis run it late.
      redis.zrem(k.conc, token).catch(() => undefined)
      this.downUntil = Date.now() + DOWN_MS
      this.failed(err as Error)
      throw err
    }
  }

  release(conc: string, token: string): void {
    this.held.delete(token)
    if (!this.held.size) this.stopRenewing()
    this.redis?.zrem(conc, token).catch((err: Error) => this.failed(err))
  }

  backoff(k: CounterKeys, pauseMs: number, reduced: number, forgetAfter: number, pauseUntil: number): void {
    if (this.usable()) this.redis!.eval(BACKOFF, 2, k.pause, k.reduced, pauseMs, reduced, forgetAfter, pauseUntil).catch((err: Error) => this.failed(err))
  }

  recover(k: CounterKeys, configured: number): void {
    if (this.usable()) this.redis!.eval(RECOVER, 1, k.reduced, configured).catch((err: Error) => this.failed(err))
  }

  close(): void {
    this.closed = true
    this.stopRenewing()
    this.redis?.disconnect()
  }

  private hold(token: string, conc: string): void {
    this.held.set(token, conc)
    if (this.renewer) return
    this.renewer = setInterval(() => this.renew(), Math.max(100, Math.floor(this.slotTtl / 3)))
    this.renewer.unref()
  }

  private stopRenewing(): void {
    clearInterval(this.renewer)
    this.renewer = undefined
  }

  /** Every slot this node holds lives slotTtl more (ZADD XX: one another node already removed as expired stays removed). */
  private renew(): void {
    if (!this.redis || this.redis.status !== 'ready' || !this.held.size) return
    const until = Date.now() + this.slotTtl
    const batch = this.redis.pipeline()
    const keys = new Set<string>()
    for (const [token, conc] of this.held) {
      batch.zadd(conc, 'XX', until, token)
      keys.add(conc)
    }
    for (const key of keys) batch.pexpire(key, this.slotTtl)
    batch.exec().catch((err: Error) => this.failed(err))
  }

  /** Fail open: without Redis each node keeps its own counters; logged at most every 30 s. */
  private failed(err: Error): void {
    // Commands that time out on a connection Redis answers no more (its path lost: a firewall or
    // NAT forgot it) would do so for ever: after a second timeout in a row (the first one's undo
    // had its chance to run), the connection is made anew.
    if (err.message === 'Command timed out' && this.redis && ++this.timeouts >= 2) {
      this.timeouts = 0
      this.redis.disconnect(true)
    }
    const now = Date.now()
    if (now - this.lastWarning < 30_000) return
    this.lastWarning = now
    this.log.warn({ err: err.message }, 'throttle: Redis unavailable; limits are enforced per node until it is back')
  }
}
