import { inject, injectable } from 'tsyringe'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import type { Job, NewMessage, Queue, RecipientResult } from '../queue/types.js'
import type { DeliveryEvent } from '../hooks/types.js'
import { newQueueId } from '../queue/id.js'
import { parseAddress } from '../smtp/address.js'
import { attemptDelivery, type AttemptResult } from './attempt.js'
import { retryDelay } from './retry.js'
import { ConnectionPool } from './smtp-client.js'
import { buildDsn, statusOf } from './dsn.js'

/** Longest sleep between queue scans when nothing is due. */
const IDLE_SCAN_MS = 30_000
/** When work is due but every slot for it is taken, look again this soon at the latest. */
const BUSY_SCAN_MS = 1000

/**
 * Takes due work from the queue within the concurrency limits (global and per destination domain),
 * runs one attempt per job, applies the retry policy, records results and bounces, emits events.
 */
@injectable()
export class DeliveryScheduler {
  private inFlight = 0
  private readonly byDomain: Record<string, number> = {}
  private readonly running = new Set<Promise<void>>()
  private timer: NodeJS.Timeout | undefined
  private claiming = false
  private again = false
  private stopped = true
  private readonly pool: ConnectionPool

  constructor(
    @inject(Tokens.Config) private readonly config: RelayConfig,
    @inject(Tokens.Logger) private readonly log: Logger,
    @inject(Tokens.Queue) private readonly queue: Queue,
    @inject(Tokens.Resolver) private readonly resolver: Resolver,
    @inject(Tokens.Hooks) private readonly hooks: HookBus,
  ) {
    this.pool = new ConnectionPool(config.delivery.reuse.maxMessages, config.delivery.reuse.idleTimeout)
  }

  start(): void {
    this.stopped = false
    this.notify()
  }

  /** New work may be due (a message was queued, a slot came free): scan soon. */
  notify(): void {
    if (this.stopped) return
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
    const { global, perDomain } = this.config.delivery.concurrency
    const free = global - this.inFlight
    if (free <= 0) return // a finishing job calls notify()
    this.claiming = true
    this.again = false
    let nextDueAt: number | undefined
    let claimed = 0
    try {
      const now = Date.now()
      const result = await this.queue.claim({ limit: free, perDomain, inFlight: { ...this.byDomain }, leaseMs: this.config.delivery.lease, now })
      nextDueAt = result.nextDueAt
      claimed = result.jobs.length
      // Claimed while stop() ran: not started, so none outlives the queue; they stay leased and
      // the next start makes them due again (queue.recover).
      if (!this.stopped) for (const job of result.jobs) this.run(job)
    } catch (err) {
      this.log.error({ err }, 'queue scan failed')
    } finally {
      this.claiming = false
    }
    if (this.stopped) return
    if (this.again || (claimed > 0 && claimed === free)) return this.schedule(0)
    const now = Date.now()
    if (nextDueAt === undefined) return this.schedule(IDLE_SCAN_MS)
    this.schedule(nextDueAt > now ? nextDueAt - now : claimed ? 0 : BUSY_SCAN_MS)
  }

  /**
   * Fast path for a new message, before its queue write: when every one of its domains has a free
   * slot, the slots are taken now and the message is written already leased, then delivered from
   * memory (`startReserved`) without a queue scan. Returns the lease expiry, or undefined.
   */
  reserve(domains: string[]): number | undefined {
    const { global, perDomain } = this.config.delivery.concurrency
    // Not while a scan is out: its claim counted the slots as they were.
    if (this.stopped || this.claiming || this.inFlight + domains.length > global) return undefined
    if (domains.some((d) => (this.byDomain[d] ?? 0) >= perDomain)) return undefined
    for (const d of domains) this.take(d)
    return Date.now() + this.config.delivery.lease
  }

  /** The queue write after `reserve` failed: the slots go back. */
  unreserve(domains: string[]): void {
    for (const d of domains) this.give(d)
    this.notify()
  }

  /** The message reserved for is on disk (recipients leased, `rowIds` in order): deliver it now. */
  startReserved(message: NewMessage, rowIds: number[]): void {
    const { recipients, ...queued } = message
    const byDomain = new Map<string, Job>()
    recipients.forEach((r, i) => {
      const job = byDomain.get(r.domain) ?? { message: queued, domain: r.domain, recipients: [] }
      job.recipients.push({ rowId: rowIds[i]!, address: r.address, attempts: 0, args: r.args })
      byDomain.set(r.domain, job)
    })
    for (const job of byDomain.values()) this.run(job, true)
  }

  private take(domain: string): void {
    this.inFlight++
    this.byDomain[domain] = (this.byDomain[domain] ?? 0) + 1
  }

  private give(domain: string): void {
    this.inFlight--
    if (--this.byDomain[domain]! <= 0) delete this.byDomain[domain]
  }

  private run(job: Job, reserved = false): void {
    if (!reserved) this.take(job.domain)
    const p = this.deliver(job)
      .catch((err) => this.log.error({ err, queueId: job.message.id, domain: job.domain }, 'delivery attempt failed; the lease will expire and it is tried again'))
      .finally(() => {
        this.running.delete(p)
        this.give(job.domain)
        this.notify()
      })
    this.running.add(p)
  }

  private async deliver(job: Job): Promise<void> {
    const started = Date.now()
    const attempts = await attemptDelivery(job, { config: this.config, resolver: this.resolver, hooks: this.hooks, pool: this.pool })
    const now = Date.now()
    const expired = now >= job.message.expiresAt
    const byRow = new Map(job.recipients.map((r) => [r.rowId, r]))
    const results: RecipientResult[] = []
    const bounced: AttemptResult[] = []
    const events: { name: 'delivered' | 'deferred' | 'bounced'; event: DeliveryEvent }[] = []

    for (const a of attempts) {
      const tries = (byRow.get(a.rowId)?.attempts ?? 0) + 1
      let state: RecipientResult['state'] = a.outcome === 'delivered' ? 'delivered' : a.outcome === 'failed' ? 'bounced' : 'deferred'
      let response = a.response
      let nextAttemptAt: number | undefined
      if (state === 'deferred') {
        if (expired) {
          state = 'bounced'
          response = `4.4.7 Message expired after ${Math.round((now - job.message.receivedAt) / 3600_000)} h in the queue; last error: ${a.response}`
          a.status = '4.4.7'
        } else {
          // The last try happens at expiry; a failure then bounces.
          nextAttemptAt = Math.min(now + retryDelay(tries, this.config.delivery.retry), job.message.expiresAt)
        }
      }
      if (state === 'bounced') bounced.push({ ...a, response })
      results.push({ rowId: a.rowId, state, response, remoteHost: a.remoteHost, nextAttemptAt })
      events.push({
        name: state,
        event: {
          queueId: job.message.id,
          messageId: job.message.messageId,
          sender: job.message.sender,
          recipient: a.address,
          domain: job.domain,
          remoteHost: a.remoteHost,
          response,
          attempts: tries,
          durationMs: now - started,
          queuedMs: now - job.message.receivedAt,
          nextAttemptAt,
          tls: a.tls,
        },
      })
    }

    const bounce = bounced.length && job.message.sender !== '' ? await this.bounceFor(job, bounced) : undefined
    await this.queue.complete(job.message.id, results, bounce)
    if (bounce) this.notify()

    for (const { name, event } of events) {
      const level = name === 'delivered' ? 'info' : 'warn'
      this.log[level]({ event: name, ...event }, `${name} ${event.recipient}`)
      await this.hooks.emit(name, event)
    }
  }

  /** A DSN (RFC 3464) from the null sender to the original sender, queued with the results. */
  private async bounceFor(job: Job, failed: AttemptResult[]): Promise<NewMessage | undefined> {
    const parsed = parseAddress(job.message.sender)
    if (!parsed) return undefined
    const id = newQueueId()
    const dsn = await buildDsn({
      reportingMta: this.config.hostname,
      queueId: job.message.id,
      sender: job.message.sender,
      arrivalDate: new Date(job.message.receivedAt),
      originalHeaders: job.message.headers,
      envid: typeof job.message.senderArgs?.ENVID === 'string' ? job.message.senderArgs.ENVID : undefined,
      recipients: failed.map((f) => ({
        address: f.address,
        status: f.status ?? statusOf(f.response, '5.0.0'),
        remoteHost: f.remoteHost,
        diagnostic: f.response,
        remote: f.remote,
      })),
    })
    const split = dsn.indexOf('\r\n\r\n')
    const now = Date.now()
    const headers = dsn.subarray(0, split + 2)
    const body = dsn.subarray(split + 2)
    const messageId = /^Message-ID:\s*(.+)$/im.exec(headers.toString('latin1'))?.[1]?.trim()
    this.log.info({ queueId: id, dsnFor: job.message.id, to: job.message.sender }, 'bounce queued')
    return {
      id,
      sender: '',
      recipients: [{ address: job.message.sender, domain: parsed.domain }],
      headers,
      body: { inline: body },
      size: dsn.length,
      messageId,
      receivedAt: now,
      expiresAt: now + this.config.delivery.maxQueueLifetime,
      meta: { dsnFor: job.message.id },
    }
  }

  /** Stops taking work; waits for attempts in flight up to the timeout (their leases make them due again). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    const all = Promise.all([...this.running])
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
    await Promise.race([all, timeout])
    clearTimeout(timer)
    this.pool.close()
    this.log.info({ connectionsOpened: this.pool.opened }, 'delivery stopped')
    if (this.running.size) this.log.warn({ inFlight: this.running.size }, 'stopping with deliveries in flight; they are tried again at next start')
  }
}
