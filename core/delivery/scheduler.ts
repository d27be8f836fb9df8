import { buffer } from 'node:stream/consumers'
import { inject, injectable } from 'tsyringe'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import type { DelayCandidate, Job, NewMessage, Queue, QueuedMessage, RecipientResult, Suppression } from '../queue/types.js'
import type { BounceCategory, DeliveryEvent } from '../hooks/types.js'
import type { NewWorkSubscriber } from '../queue/intake.js'
import { newQueueId } from '../queue/id.js'
import { parseAddress } from '../mail/address.js'
import { attemptDelivery, type AttemptResult } from './attempt.js'
import { retryDelay } from './retry.js'
import { formatDuration } from '../config/duration.js'
import { ConnectionPool } from './smtp-client.js'
import { buildDsn, orcptOf, retOf, envidOf, statusOf, wantsDsn, RET_FULL_MAX, type DsnInput, type FailedRecipient } from '../mail/bounce.js'
import { classify, isHardBounce } from './classify.js'
import { Throttle, type Slot } from './throttle.js'
import { fromUntrustedClient, UntrustedDsnLimiter } from './dsn-policy.js'

/** Longest sleep between queue scans when nothing is due. */
const IDLE_SCAN_MS = 30_000
/** When work is due but every slot for it is taken, look again this soon at the latest. */
const BUSY_SCAN_MS = 1000
/** Messages looked at per delay-warning check. */
const DELAY_BATCH = 100

const oneLine = (s: string, max = 300) => {
  const t = s.replace(/[\r\n]+/g, ' ').trim()
  return t.length > max ? `${t.slice(0, max - 3)}...` : t
}

/**
 * Takes due work from the queue within the concurrency limits (global and per destination domain),
 * runs one attempt per job, applies the retry policy, records results and bounces, emits events.
 */
@injectable()
export class DeliveryScheduler implements NewWorkSubscriber {
  private inFlight = 0
  private readonly byDomain: Record<string, number> = {}
  private readonly running = new Set<Promise<void>>()
  private timer: NodeJS.Timeout | undefined
  private claiming = false
  /** Told how many recipients a claim took over from expired leases (core/relay.ts: a metric). */
  onTakeover: (recipients: number) => void = () => undefined
  private again = false
  private stopped = true
  private readonly pool: ConnectionPool
  private delayTimer: NodeJS.Timeout | undefined
  private delayCheck: Promise<void> | undefined
  /** Per-destination limits and backoff (throttle.ts). */
  private readonly throttle: Throttle
  /** Claimed (leased) jobs the throttle did not let start yet; their domains are not claimed meanwhile. */
  private held: Job[] = []
  private heldTimer: NodeJS.Timeout | undefined
  private retryingHeld = false
  /** Throttle slots taken by `claim`, by domain, for `queued`. */
  private readonly reservedSlots = new Map<string, Slot[]>()
  /** Who got a DSN for untrusted mail lately (delivery.untrustedDsn, dsn-policy.ts). */
  private readonly untrustedDsn = new UntrustedDsnLimiter()

  constructor(
    @inject(Tokens.Config) private readonly config: RelayConfig,
    @inject(Tokens.Logger) private readonly log: Logger,
    @inject(Tokens.Queue) private readonly queue: Queue,
    @inject(Tokens.Resolver) private readonly resolver: Resolver,
    @inject(Tokens.Hooks) private readonly hooks: HookBus,
  ) {
    this.pool = new ConnectionPool(config.delivery.reuse.maxMessages, config.delivery.reuse.idleTimeout)
    this.throttle = new Throttle(config.delivery.throttle, config.delivery.concurrency.perDomain, config.delivery.lease, log)
  }

  start(): void {
    this.stopped = false
    this.notify()
    // Delay warnings: a periodic look for messages that have waited `delayWarning` (an indexed query).
    const warning = this.config.delivery.delayWarning
    if (warning > 0) {
      this.delayTimer = setInterval(() => {
        if (!this.delayCheck) this.delayCheck = this.checkDelays().finally(() => (this.delayCheck = undefined))
      }, Math.min(Math.max(warning / 2, 500), 60_000))
      this.delayTimer.unref()
    }
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
      const result = await this.queue.claim({ limit: free, perDomain, inFlight: this.claimInFlight(now), leaseMs: this.config.delivery.lease, now })
      nextDueAt = result.nextDueAt
      claimed = result.jobs.length
      if (result.takenOver > 0) {
        this.log.warn({ recipients: result.takenOver }, 'took over queued work whose holder died or hung mid-delivery (its heartbeat stopped or its lease expired)')
        this.onTakeover(result.takenOver)
      }
      // Claimed while stop() ran: not started, so none outlives the queue; they stay leased and
      // the next start makes them due again (queue.recover).
      if (!this.stopped) for (const job of result.jobs) await this.admit(job)
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
   * What the claim counts as in flight per domain: the jobs running, and for throttled domains
   * whatever leaves only the room their throttle gives (none while paused, or while jobs are held).
   */
  private claimInFlight(now: number): Record<string, number> {
    const { perDomain } = this.config.delivery.concurrency
    const inFlight = { ...this.byDomain }
    for (const d of this.throttle.domains()) {
      const room = this.throttle.room(d, now)
      if (room !== undefined) inFlight[d] = Math.max(inFlight[d] ?? 0, perDomain - room)
    }
    for (const job of this.held) inFlight[job.domain] = perDomain
    return inFlight
  }

  /** A claimed job starts if its destination's throttle lets it, else it is held (still leased). */
  private async admit(job: Job): Promise<void> {
    const admission = this.throttle.shared ? await this.throttle.admitDomain(job.domain) : this.throttle.admitLocal(job.domain)
    if (this.stopped) {
      if (admission.ok) this.throttle.release(admission.slot)
      return
    }
    if (admission.ok) return this.run(job, false, admission.slot)
    this.held.push(job)
    this.retryHeldAt(admission.retryAt)
  }

  private retryHeldAt(retryAt: number): void {
    const wait = retryAt > Date.now() ? retryAt - Date.now() : 200
    const at = Date.now() + Math.max(20, Math.min(wait, 1000))
    if (this.heldTimer && (this.heldTimer as unknown as { at: number }).at <= at) return
    if (this.heldTimer) clearTimeout(this.heldTimer)
    this.heldTimer = Object.assign(setTimeout(() => void this.retryHeld(), at - Date.now()), { at })
  }

  /** Held jobs, oldest first, start as their throttles allow (within the global limit). */
  private async retryHeld(): Promise<void> {
    this.heldTimer = undefined
    if (this.stopped || this.retryingHeld || !this.held.length) return
    this.retryingHeld = true
    let next = Infinity
    try {
      const refused = new Set<string>()
      for (const job of [...this.held]) {
        if (this.stopped) return
        if (this.inFlight >= this.config.delivery.concurrency.global) break
        if (refused.has(job.domain)) continue
        const admission = this.throttle.shared ? await this.throttle.admitDomain(job.domain) : this.throttle.admitLocal(job.domain)
        if (this.stopped) {
          if (admission.ok) this.throttle.release(admission.slot)
          return
        }
        if (!admission.ok) {
          refused.add(job.domain)
          next = Math.min(next, admission.retryAt)
          continue
        }
        this.held.splice(this.held.indexOf(job), 1)
        this.run(job, false, admission.slot)
      }
    } finally {
      this.retryingHeld = false
    }
    if (this.held.length) this.retryHeldAt(next === Infinity ? 0 : next)
  }

  /**
   * Fast path for a new message, before its queue write: when every one of its domains has a free
   * slot, the slots are taken now and the message is written already leased, then delivered from
   * memory (`queued`) without a queue scan. Returns the lease expiry, or undefined.
   */
  claim(domains: string[]): number | undefined {
    const { global, perDomain } = this.config.delivery.concurrency
    // Not while a scan is out: its claim counted the slots as they were.
    if (this.stopped || this.claiming || this.inFlight + domains.length > global) return undefined
    if (domains.some((d) => (this.byDomain[d] ?? 0) >= perDomain)) return undefined
    // Throttled domains: with shared (Redis) counters always through the queue; else only when
    // every domain has room now (and no held work waits for it).
    if (this.throttle.shared) return undefined
    const now = Date.now()
    const count = new Map<string, number>()
    for (const d of domains) count.set(d, (count.get(d) ?? 0) + 1)
    for (const [d, n] of count) {
      if (this.held.some((j) => j.domain === d)) return undefined
      const room = this.throttle.room(d, now)
      if (room !== undefined && room < n) return undefined
    }
    for (const d of domains) {
      const admission = this.throttle.admitLocal(d)
      if (admission.ok) this.reservedSlots.set(d, [...(this.reservedSlots.get(d) ?? []), admission.slot])
      this.take(d)
    }
    return Date.now() + this.config.delivery.lease
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
    this.notify()
  }

  /**
   * A message is durable. Claimed (recipients leased to us, `rowIds` in order): deliver it now from
   * memory. Not claimed: it is due in the queue, scan soon.
   */
  queued(message: NewMessage, rowIds: number[] | undefined): void {
    if (!rowIds) return this.notify()
    const { recipients, ...queued } = message
    const byDomain = new Map<string, Job>()
    recipients.forEach((r, i) => {
      const job = byDomain.get(r.domain) ?? { message: queued, domain: r.domain, recipients: [] }
      job.recipients.push({ rowId: rowIds[i]!, address: r.address, attempts: 0, args: r.args })
      byDomain.set(r.domain, job)
    })
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
        if (slot) this.throttle.release(slot)
        this.give(job.domain)
        if (this.held.length) void this.retryHeld()
        this.notify()
      })
    this.running.add(p)
  }

  private async deliver(job: Job): Promise<void> {
    const started = Date.now()
    const attempts = await attemptDelivery(job, { config: this.config, resolver: this.resolver, hooks: this.hooks, pool: this.pool, throttle: this.throttle, openBody: (m) => this.queue.openBody(m) })
    const now = Date.now()
    const expired = now >= job.message.expiresAt
    const byRow = new Map(job.recipients.map((r) => [r.rowId, r]))
    const results: RecipientResult[] = []
    const bounced: AttemptResult[] = []
    const suppress: Suppression[] = []
    const events: { name: 'delivered' | 'deferred' | 'bounced'; event: DeliveryEvent }[] = []
    const { suppression } = this.config.delivery
    // The destination said "slow down" (421, 4.7.x rate limited): this domain alone backs off.
    // Greylisting is about one sender/recipient pair, not the destination's load: no backoff for it.
    const slowDown = attempts.some((a) => a.remote && a.outcome === 'retry' && classify(a.response, a.status) === 'throttled' && !/gr[ae]ylist/i.test(a.response))
    if (slowDown) {
      const b = this.throttle.backoffDomain(job.domain)
      if (b) this.log.warn({ domain: job.domain, pauseMs: b.pauseMs, concurrency: b.concurrency }, `throttle: ${job.domain} asked to slow down; paused ${b.pauseMs} ms, concurrency ${b.concurrency}`)
    } else if (attempts.some((a) => a.outcome === 'delivered')) this.throttle.successDomain(job.domain)
    const pausedUntil = this.throttle.pausedUntil(Throttle.domainKey(job.domain))

    for (const a of attempts) {
      const tries = (byRow.get(a.rowId)?.attempts ?? 0) + 1
      let state: RecipientResult['state'] = a.outcome === 'delivered' ? 'delivered' : a.outcome === 'failed' ? 'bounced' : 'deferred'
      let response = a.response
      let nextAttemptAt: number | undefined
      // What the failure was, from the reply itself (before an expiry rewrites the response).
      const category: BounceCategory | undefined = state === 'delivered' ? undefined : classify(a.response, a.status)
      if (state === 'bounced' && suppression.enabled && category && isHardBounce(category, a.response, a.status)) {
        suppress.push({
          address: a.address,
          reason: oneLine(a.response, 200),
          source: job.message.id,
          createdAt: now,
          expiresAt: suppression.ttl > 0 ? now + suppression.ttl : undefined,
        })
      }
      if (state === 'deferred') {
        if (expired) {
          state = 'bounced'
          response = `4.4.7 Message expired after ${formatDuration(now - job.message.receivedAt)} in the queue; last error: ${a.response}`
          a.status = '4.4.7'
        } else {
          // The last try happens at expiry; a failure then bounces.
          nextAttemptAt = Math.min(Math.max(now + retryDelay(tries, this.config.delivery.retry), pausedUntil), job.message.expiresAt)
        }
      }
      if (state === 'bounced') bounced.push({ ...a, response })
      results.push({ rowId: a.rowId, state, response, remoteHost: a.remoteHost, nextAttemptAt, category })
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
          category,
          tls: a.tls,
        },
      })
    }

    // RFC 3461: a failure DSN only for recipients whose NOTIFY asks for one (no NOTIFY: yes).
    const notify = bounced.filter((b) => wantsDsn(byRow.get(b.rowId)?.args, 'FAILURE'))
    const bounce = notify.length && job.message.sender !== '' ? await this.bounceFor(job, notify) : undefined
    await this.queue.complete(job.message.id, results, bounce, suppress)
    if (bounce) this.notify()
    for (const s of suppress) this.log.warn({ address: s.address, reason: s.reason, queueId: job.message.id, expiresAt: s.expiresAt }, `suppressed ${s.address}`)

    for (const { name, event } of events) {
      // The log line ({ event: name, ... } 'delivery event') comes from core/events/log.ts, an observer.
      await this.hooks.emit(name, event)
    }
  }

  /** A failure DSN (RFC 3464) from the null sender to the original sender, queued with the results. */
  private async bounceFor(job: Job, failed: AttemptResult[]): Promise<NewMessage | undefined> {
    const args = new Map(job.recipients.map((r) => [r.rowId, r.args]))
    return this.dsnMessage(job.message, 'failed', failed.map((f) => ({
      address: f.address,
      status: f.status ?? statusOf(f.response, '5.0.0'),
      remoteHost: f.remoteHost,
      diagnostic: f.response,
      remote: f.remote,
      orcpt: orcptOf(args.get(f.rowId)),
    })))
  }

  /** RET=FULL: the whole message when it is small enough, else undefined (headers only). */
  private async fullMessage(m: QueuedMessage): Promise<Buffer | undefined> {
    if (retOf(m.senderArgs) !== 'FULL' || m.size > RET_FULL_MAX) return undefined
    try {
      const body = 'inline' in m.body ? m.body.inline : await buffer(this.queue.openBody(m))
      return Buffer.concat([m.headers, body])
    } catch (err) {
      this.log.warn({ err, queueId: m.id }, 'could not read the message for RET=FULL; returning its headers')
      return undefined
    }
  }

  /** A DSN from the null sender to the message's sender, as a message to queue. */
  private async dsnMessage(m: QueuedMessage | DelayCandidate['message'], action: 'failed' | 'delayed', recipients: FailedRecipient[]): Promise<NewMessage | undefined> {
    const parsed = parseAddress(m.sender)
    if (!parsed) return undefined
    // Untrusted mail's sender may be forged: one DSN per sender per interval, headers only (dsn-policy.ts).
    const untrusted = fromUntrustedClient(m.meta)
    if (untrusted) {
      const { interval, maxSenders } = this.config.delivery.untrustedDsn
      if (!this.untrustedDsn.allow(m.sender, interval, maxSenders)) {
        this.log.info({ dsnFor: m.id, to: m.sender, action }, 'DSN dropped: this sender of untrusted mail got one within delivery.untrustedDsn.interval')
        return undefined
      }
    }
    const id = newQueueId()
    const input: DsnInput = {
      action,
      reportingMta: this.config.hostname,
      queueId: m.id,
      sender: m.sender,
      arrivalDate: new Date(m.receivedAt),
      originalHeaders: m.headers,
      envid: envidOf(m.senderArgs),
      recipients,
    }
    if (action === 'failed' && 'body' in m && !untrusted) input.originalMessage = await this.fullMessage(m)
    if (action === 'delayed') input.willRetryUntil = new Date(m.expiresAt)
    const dsn = await buildDsn(input)
    const split = dsn.indexOf('\r\n\r\n')
    const now = Date.now()
    const headers = dsn.subarray(0, split + 2)
    const body = dsn.subarray(split + 2)
    const messageId = /^Message-ID:\s*(.+)$/im.exec(headers.toString('latin1'))?.[1]?.trim()
    if (action === 'failed') this.log.info({ queueId: id, dsnFor: m.id, to: m.sender }, 'bounce queued')
    return {
      id,
      sender: '',
      recipients: [{ address: m.sender, domain: parsed.domain }],
      headers,
      body: { inline: body },
      size: dsn.length,
      messageId,
      receivedAt: now,
      expiresAt: now + this.config.delivery.maxQueueLifetime,
      meta: { dsnFor: m.id },
    }
  }

  /**
   * Delay warnings (RFC 3464 Action: delayed): once per message that has waited `delayWarning`,
   * to its sender (never the null sender), for the recipients still deferred whose NOTIFY asks for
   * DELAY (no NOTIFY: yes). A message with no such recipient is marked all the same.
   */
  private async checkDelays(): Promise<void> {
    try {
      const now = Date.now()
      const candidates = await this.queue.delayCandidates(now - this.config.delivery.delayWarning, DELAY_BATCH)
      for (const c of candidates) {
        if (this.stopped) return
        const wanted = c.recipients.filter((r) => wantsDsn(r.args, 'DELAY'))
        const dsn = wanted.length
          ? await this.dsnMessage(
              c.message,
              'delayed',
              wanted.map((r) => {
                const response = r.lastResponse ?? '4.0.0 Delivery not yet attempted'
                const status = statusOf(response, '4.0.0')
                return {
                  address: r.address,
                  status: status.startsWith('4.') ? status : '4.0.0',
                  remoteHost: r.remoteHost,
                  diagnostic: response,
                  remote: /^\d{3}[ -]/.test(response),
                  orcpt: orcptOf(r.args),
                }
              }),
            )
          : undefined
        if (!(await this.queue.markDelayNotified(c.message.id, dsn)) || !dsn) continue
        this.log.info({ queueId: dsn.id, dsnFor: c.message.id, to: c.message.sender, recipients: wanted.map((r) => r.address) }, 'delay warning queued')
        this.notify()
      }
    } catch (err) {
      if (!this.stopped) this.log.error({ err }, 'delay warning check failed')
    }
  }

  /** Stops taking work; waits for attempts in flight up to the timeout (their leases make them due again). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    clearInterval(this.delayTimer)
    clearTimeout(this.heldTimer)
    const all = Promise.all([...this.running, ...(this.delayCheck ? [this.delayCheck] : [])])
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
    await Promise.race([all, timeout])
    clearTimeout(timer)
    this.pool.close()
    this.throttle.close()
    this.log.info({ connectionsOpened: this.pool.opened }, 'delivery stopped')
    if (this.running.size) this.log.warn({ inFlight: this.running.size }, 'stopping with deliveries in flight; they are tried again at next start')
  }
}
