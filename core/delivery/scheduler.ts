import { inject, injectable } from 'tsyringe'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import { formatDuration } from '../config/duration.js'
import type { HookBus } from '../hooks/bus.js'
import type { Job, NewMessage, Queue } from '../queue/types.js'
import type { NewWorkSubscriber } from '../queue/intake.js'
import { deliveryEnv, type DeliveryEnv } from './attempt.js'
import { ConnectionPool } from './connection-pool.js'
import { DelayWarnings } from './delay-warnings.js'
import { deliverJob } from './deliver.js'
import { DeliveryDsns } from './dsn.js'
import { HeldJobs } from './held-jobs.js'
import { InFlightLeases } from './leases.js'
import { Throttle, type RemoteRouteCounts, type Slot } from './throttle.js'

/** Every queued message expires `lifetime` after its arrival (at start, and when a reload changes delivery.maxQueueLifetime). */
export async function applyLifetime(queue: Queue, lifetime: number, log: Logger): Promise<void> {
  try {
    const n = await queue.applyLifetime(lifetime)
    if (n) log.info({ messages: n, maxQueueLifetime: formatDuration(lifetime) }, `delivery.maxQueueLifetime: ${n} queued message(s) now expire ${formatDuration(lifetime)} after they arrived`)
  } catch (err) {
    log.error({ err }, 'delivery.maxQueueLifetime: could not apply it to queued mail (it applies to new mail)')
  }
}

/** Longest sleep between queue scans when nothing is due. */
const IDLE_SCAN_MS = 30_000
/** When work is due but every slot for it is taken, look again this soon at the latest. */
const BUSY_SCAN_MS = 1000
/** A scan that failed (the queue's database unreachable) is tried again this soon, doubling to IDLE_SCAN_MS. */
const FAILED_SCAN_MS = 1000

/**
 * Takes due work from the queue within the concurrency limits (global and per destination domain)
 * and runs one attempt per job (deliver.ts). Live settings come from the config in force
 * (`applyConfig`); concurrency, lease, connection reuse and throttles keep their values from start.
 */
@injectable()
export class DeliveryScheduler implements NewWorkSubscriber {
  private inFlight = 0
  private readonly byDomain: Record<string, number> = {}
  /** Jobs SMTP worker processes deliver (config `workers`), by domain: within the same limits as ours. */
  private readonly workerByDomain: Record<string, number> = {}
  private workerJobs = 0
  private readonly running = new Set<Promise<void>>()
  private timer: NodeJS.Timeout | undefined
  private claiming = false
  /** Told how many recipients a claim took over from expired leases (core/relay.ts: a metric). */
  onTakeover: (recipients: number) => void = () => undefined
  private again = false
  /** Scans failed in a row: what is due when the database comes back goes then, not at the idle scan. */
  private failedScans = 0
  private stopped = true
  /** Restart-only settings, read once: global and per-domain concurrency, the lease. */
  private readonly limits: { global: number; perDomain: number; lease: number }
  private readonly pool: ConnectionPool
  /** Per-destination limits and backoff (throttle.ts). */
  private readonly throttle: Throttle
  private readonly env: DeliveryEnv
  private readonly dsns: DeliveryDsns
  private readonly delays: DelayWarnings
  /** Claimed (leased) jobs the throttle did not let start yet; their domains are not claimed meanwhile. */
  private readonly held: HeldJobs
  /** Throttle slots taken by `claim`, by domain, for `queued`. */
  private readonly reservedSlots = new Map<string, Slot[]>()
  /** The recipient rows in flight here (one attempt at a time each), their leases renewed meanwhile. */
  private readonly leases: InFlightLeases
  /**
   * In an SMTP worker process (config `workers`): it delivers only the new mail it takes at intake;
   * queue scans, retries and delay warnings are the primary's, woken by `wake` for work left due.
   */
  private fresh: { wake: () => void; throttled: boolean } | undefined

  constructor(
    /** The config in force: replaced by `applyConfig` on a hot reload. */
    @inject(Tokens.Config) private config: RelayConfig,
    @inject(Tokens.Logger) private readonly log: Logger,
    @inject(Tokens.Queue) private readonly queue: Queue,
    @inject(Tokens.Resolver) private readonly resolver: Resolver,
    @inject(Tokens.Hooks) private readonly hooks: HookBus,
  ) {
    const { concurrency, reuse, throttle, lease } = config.delivery
    this.limits = { global: concurrency.global, perDomain: concurrency.perDomain, lease }
    this.pool = new ConnectionPool(reuse.maxMessages, reuse.idleTimeout)
    // In a cluster a dead node's shared slots go when its work is taken over (the heartbeat's deadAfter).
    this.throttle = new Throttle(throttle, concurrency.perDomain, log, config.queue.driver === 'postgres' ? config.queue.heartbeat.deadAfter : undefined)
    this.env = deliveryEnv(config, resolver, log)
    this.dsns = new DeliveryDsns(() => this.config, queue, log, () => this.notify(), () => hooks)
    this.delays = new DelayWarnings(() => this.config, queue, this.dsns, log, () => this.notify())
    this.leases = new InFlightLeases(queue, lease, log)
    this.held = new HeldJobs(this.throttle, {
      stopped: () => this.stopped,
      full: () => this.inFlight >= this.limits.global,
      start: (job, slot) => this.run(job, false, slot),
    })
  }

  start(): void {
    this.stopped = false
    this.leases.start()
    this.notify()
    this.delays.start()
    this.dsns.start()
  }

  /**
   * The SMTP worker's way (see `fresh`). Route caps are counted by the primary (`routes`); with
   * domain or host throttles configured, every delivery goes through the primary (one set of limits).
   */
  startFreshOnly(o: { wake: () => void; routes: RemoteRouteCounts }): void {
    const { throttle } = this.config.delivery
    this.fresh = { wake: o.wake, throttled: this.throttle.active || Object.keys(throttle.hosts).length > 0 }
    this.throttle.remoteRoutes = o.routes
    this.stopped = false
    this.leases.start()
  }

  /** Work is due in the queue: scan (or, in an SMTP worker, tell the primary). */
  private newWork(): void {
    if (this.fresh) this.fresh.wake()
    else this.notify()
  }

  /** Hot reload: the new config is in force from the next decision on (restart-only settings excepted). */
  applyConfig(next: RelayConfig): void {
    const lifetime = next.delivery.maxQueueLifetime
    const lifetimeChanged = lifetime !== this.config.delivery.maxQueueLifetime
    this.config = next
    this.delays.follow()
    // Queued mail too, not only mail accepted from now on (Postfix's maximal_queue_lifetime): an
    // operator who lengthens it during a long outage saves what waits.
    if (lifetimeChanged) void applyLifetime(this.queue, lifetime, this.log).then(() => this.notify())
  }

  /** New work may be due (a message was queued, a slot came free): scan soon. */
  notify(): void {
    if (this.stopped || this.fresh) return
    if (this.claiming) {
      this.again = true
      return
    }
    this.schedule(0)
  }

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => void this.scan(), Math.max(0, Math.min(ms, IDLE_SCAN_MS)))
  }

  private async scan(): Promise<void> {
    this.timer = undefined
    if (this.stopped || this.claiming) return
    const free = this.limits.global - this.inFlight - this.workerJobs
    if (free <= 0) return // a finishing job calls notify()
    this.claiming = true
    this.again = false
    let nextDueAt: number | undefined
    let claimed = 0
    try {
      const now = Date.now()
      const result = await this.queue.claim({ limit: free, perDomain: this.limits.perDomain, inFlight: this.claimInFlight(now), leaseMs: this.limits.lease, now })
      nextDueAt = result.nextDueAt
      claimed = result.jobs.length
      // Recipients an attempt of ours still holds (their lease ran out under it) are not started
      // again; they were counted as taken over (leased while due), but their holder lives.
      const jobs: Job[] = []
      let ours = 0
      for (const claimedJob of result.jobs) {
        const { job, dropped } = this.leases.take(claimedJob)
        ours += dropped
        if (job) jobs.push(job)
      }
      const takenOver = Math.max(0, result.takenOver - ours)
      if (takenOver > 0) {
        this.log.warn({ recipients: takenOver }, 'took over queued work whose holder died or hung mid-delivery (its heartbeat stopped or its lease expired)')
        this.onTakeover(takenOver)
      }
      // Claimed while stop() ran: not started, so none outlives the queue; they stay leased and
      // the next start makes them due again (queue.recover).
      if (!this.stopped) for (const job of jobs) await this.held.admit(job)
      this.failedScans = 0
    } catch (err) {
      this.log.error({ err }, 'queue scan failed')
      this.failedScans++
    } finally {
      this.claiming = false
    }
    if (this.stopped) return
    if (this.failedScans) return this.schedule(FAILED_SCAN_MS * 2 ** Math.min(this.failedScans - 1, 5))
    if (this.again || (claimed > 0 && claimed === free)) return this.schedule(0)
    const now = Date.now()
    if (nextDueAt === undefined) return this.schedule(IDLE_SCAN_MS)
    this.schedule(nextDueAt > now ? nextDueAt - now : claimed ? 0 : BUSY_SCAN_MS)
  }

  /**
   * What the claim counts as in flight per domain: the jobs running, and for throttled domains
   * whatever leaves only the room their throttle gives (none while paused, or while jobs are held).
   */
  private claimInFlight(now: number): Record<string, number> {
    const { perDomain } = this.limits
    const inFlight = { ...this.byDomain }
    for (const [d, n] of Object.entries(this.workerByDomain)) inFlight[d] = (inFlight[d] ?? 0) + n
    for (const d of this.throttle.domains()) {
      const room = this.throttle.room(d, now)
      if (room !== undefined) inFlight[d] = Math.max(inFlight[d] ?? 0, perDomain - room)
    }
    for (const domain of this.held.domains()) inFlight[domain] = perDomain
    return inFlight
  }

  /**
   * Fast path for a new message, before its queue write: when every one of its domains has a free
   * slot, the slots are taken now and the message is written already leased, then delivered from
   * memory (`queued`) without a queue scan. Returns the lease expiry, or undefined.
   */
  claim(domains: string[], message?: NewMessage): number | undefined {
    const { global, perDomain } = this.limits
    // Not while a scan is out: its claim counted the slots as they were.
    if (this.stopped || this.claiming || this.inFlight + this.workerJobs + domains.length > global) return undefined
    if (this.fresh?.throttled) return undefined
    // The PostgreSQL queue moves a spooled body into the database (and removes the file): the
    // primary, which can read it there, delivers such a message.
    if (this.fresh && message && 'file' in message.body && this.config.queue.driver === 'postgres') return undefined
    if (domains.some((d) => (this.byDomain[d] ?? 0) + (this.workerByDomain[d] ?? 0) >= perDomain)) return undefined
    // Throttled domains: with shared (Redis) counters always through the queue; else only when
    // every domain has room now (and no held work waits for it).
    if (this.throttle.shared) return undefined
    const now = Date.now()
    const count = new Map<string, number>()
    for (const d of domains) count.set(d, (count.get(d) ?? 0) + 1)
    for (const [d, n] of count) {
      if (this.held.holds(d)) return undefined
      const room = this.throttle.room(d, now)
      if (room !== undefined && room < n) return undefined
    }
    for (const d of domains) {
      const admission = this.throttle.admitLocal(d)
      if (admission.ok) this.reservedSlots.set(d, [...(this.reservedSlots.get(d) ?? []), admission.slot])
      this.take(d)
    }
    return Date.now() + this.limits.lease
  }

  private reservedSlot(domain: string): Slot | undefined {
    const list = this.reservedSlots.get(domain)
    const slot = list?.shift()
    if (list && !list.length) this.reservedSlots.delete(domain)
    return slot
  }

  /** The queue write after `claim` failed: the slots go back. */
  unclaim(domains: string[]): void {
    for (const d of domains) {
      const slot = this.reservedSlot(d)
      if (slot) this.throttle.release(slot)
      this.give(d)
    }
    this.newWork()
  }

  /**
   * A message is durable. Claimed (recipients leased to us, `rowIds` in order): deliver it now from
   * memory. Not claimed: it is due in the queue, scan soon.
   */
  queued(message: NewMessage, rowIds: number[] | undefined): void {
    if (!rowIds) return this.newWork()
    const { recipients, ...queued } = message
    const byDomain = new Map<string, Job>()
    recipients.forEach((r, i) => {
      const job = byDomain.get(r.domain) ?? { message: queued, domain: r.domain, recipients: [] }
      job.recipients.push({ rowId: rowIds[i]!, address: r.address, attempts: 0, args: r.args })
      byDomain.set(r.domain, job)
    })
    this.leases.hold(message.id, rowIds)
    for (const job of byDomain.values()) this.run(job, true, this.reservedSlot(job.domain))
  }

  private take(domain: string): void {
    this.inFlight++
    this.byDomain[domain] = (this.byDomain[domain] ?? 0) + 1
  }

  private give(domain: string): void {
    this.inFlight--
    if (--this.byDomain[domain]! <= 0) delete this.byDomain[domain]
  }

  private run(job: Job, reserved = false, slot?: Slot): void {
    if (!reserved) this.take(job.domain)
    const p = this.deliver(job)
      .catch((err) => this.log.error({ err, queueId: job.message.id, domain: job.domain }, 'delivery attempt failed; the lease will expire and it is tried again'))
      .finally(() => {
        this.running.delete(p)
        this.leases.release(job.message.id, job.recipients.map((r) => r.rowId))
        if (slot) this.throttle.release(slot)
        this.give(job.domain)
        if (this.held.size) void this.held.retry()
        this.notify()
      })
    this.running.add(p)
  }

  private deliver(job: Job): Promise<void> {
    const { config, resolver, hooks, pool, throttle, env, queue, log, dsns } = this
    return deliverJob(job, { config, resolver, hooks, pool, throttle, env, queue, log, dsns, openBody: (m) => queue.openBody(m), onBounceQueued: () => this.newWork(), stopping: () => this.stopped })
  }

  /**
   * An SMTP worker's fast path for a new message (one job per domain): taken when the relay as a
   * whole has room, counted against `delivery.concurrency` with this process's jobs and the other
   * workers' (each worker's own share alone let N workers and this process each take perDomain).
   * False: the message is due in the queue, where this process's scan delivers it.
   */
  admitWorkerJobs(domains: string[]): boolean {
    const { global, perDomain } = this.limits
    if (this.stopped || this.inFlight + this.workerJobs + domains.length > global) return false
    const count = new Map<string, number>()
    for (const d of domains) count.set(d, (count.get(d) ?? 0) + 1)
    for (const [d, n] of count) if ((this.byDomain[d] ?? 0) + (this.workerByDomain[d] ?? 0) + n > perDomain) return false
    for (const d of domains) this.workerByDomain[d] = (this.workerByDomain[d] ?? 0) + 1
    this.workerJobs += domains.length
    return true
  }

  /** A worker's job admitted by admitWorkerJobs has ended (or its worker died). */
  releaseWorkerJob(domain: string): void {
    // Only a slot that held work back is worth a scan (a scan per message a worker delivered costs a claim each).
    const { global, perDomain } = this.limits
    const wasFull = (this.byDomain[domain] ?? 0) + (this.workerByDomain[domain] ?? 0) >= perDomain || this.inFlight + this.workerJobs >= global
    const n = (this.workerByDomain[domain] ?? 0) - 1
    if (n > 0) this.workerByDomain[domain] = n
    else delete this.workerByDomain[domain]
    this.workerJobs = Math.max(0, this.workerJobs - 1)
    if (wasFull) this.notify()
  }

  /** Route caps for SMTP worker processes: counted here, for the whole relay (core/workers). */
  routeCounts(): RemoteRouteCounts {
    return { admit: (name, limits) => this.throttle.admitRoute(name, limits), release: (slot) => this.throttle.release(slot) }
  }

  /** For metrics: outbound connections open now (busy or idle in the pool), destination domains paused by the throttle. */
  status(): { openConnections: number; pausedDestinations: number } {
    return { openConnections: this.pool.open, pausedDestinations: this.throttle.pausedDomains() }
  }

  /** Stops taking work; waits for attempts in flight up to the timeout (their leases make them due again). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    const checks = [this.delays.stop(), this.dsns.stop()].filter((c) => c !== undefined)
    this.held.stop()
    const all = Promise.all([...this.running, ...checks])
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
    await Promise.race([all, timeout])
    clearTimeout(timer)
    // Renewed while attempts drained; what is still in flight now keeps its lease until it expires.
    this.leases.stop()
    this.pool.close()
    this.throttle.close()
    this.log.info({ connectionsOpened: this.pool.opened }, 'delivery stopped')
    if (this.running.size) this.log.warn({ inFlight: this.running.size }, 'stopping with deliveries in flight; they are tried again at next start')
  }
}
