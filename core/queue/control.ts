// Operator actions on the queue, shared by the admin API (running relay) and the CLI (stopped data
// directory). Only the Queue interface: the same code works on SQLite and PostgreSQL.
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import { deliveryEvent } from '../hooks/delivery-event.js'
import { ADMIN_BOUNCE_RESPONSE, wantsDsn } from '../mail/bounce.js'
import { runBulk } from './bulk.js'
import type { BounceResult, BulkAction, BulkFilter, BulkResult } from '../hooks/operator.js'
import type { MessageDetail, Queue, QueueEntry, QueueFilter, QueueSummary } from './types.js'

/** Why an action could not be done: the API maps `kind` to an HTTP status, the CLI to exit code 1. */
export class QueueControlError extends Error {
  constructor(
    readonly kind: 'not-found' | 'conflict' | 'bad-input',
    message: string,
  ) {
    super(message)
    this.name = 'QueueControlError'
  }
}

export interface QueueControlEnv {
  queue: Queue
  config: RelayConfig
  log?: Logger
  /** On a running relay: wakes the delivery scheduler (work became due now). */
  wake?: () => void
  /** On a running relay: `bounced` events for recipients an operator bounced. */
  hooks?: HookBus
  /** Sends the message's owed DSN (core/delivery/dsn.ts `flush`): the queue id of the one queued. */
  sendOwedDsn?: (queueId: string) => Promise<string | undefined>
}

export type { BounceResult }

const ID = /^[A-Za-z0-9._-]{1,64}$/

/** list, show, raw, hold, release, delete, bounce, flush, bulk, summary. */
export class QueueControl {
  constructor(private readonly env: QueueControlEnv) {}

  list(filter: QueueFilter = {}): Promise<QueueEntry[]> {
    return this.env.queue.list(filter)
  }

  async show(id: string): Promise<MessageDetail> {
    checkId(id)
    const detail = await this.env.queue.show(id)
    if (!detail) throw notFound(id)
    return detail
  }

  /** The message as queued: header section, then body (`relay queue cat`). */
  async raw(id: string): Promise<Buffer> {
    checkId(id)
    const message = await this.env.queue.message(id)
    if (!message) throw notFound(id)
    const chunks: Buffer[] = [message.headers]
    try {
      for await (const chunk of this.env.queue.openBody(message)) chunks.push(chunk as Buffer)
    } catch (err) {
      // Delivered (and its body removed) between the two reads.
      if (!(await this.env.queue.show(id))) throw notFound(id)
      throw err
    }
    return Buffer.concat(chunks)
  }

  /** One verb on every message a filter selects (core/queue/bulk.ts); a dry run only lists them. */
  bulk(action: BulkAction, filter: BulkFilter, opts: { dryRun?: boolean } = {}): Promise<BulkResult> {
    const verbs = {
      list: (f?: QueueFilter) => this.list(f),
      show: (id: string) => this.show(id),
      hold: (id: string) => this.hold(id),
      release: (id: string) => this.release(id),
      remove: (id: string) => this.remove(id),
      flush: (f?: { id?: string; domain?: string }) => this.flush(f),
      bounce: (id: string) => this.bounce(id),
    }
    return runBulk(verbs, action, filter, opts).then((r) => {
      if (!r.dryRun) this.env.log?.info({ action, filter, matched: r.matched.length, done: r.done }, 'bulk action by the administrator')
      return r
    })
  }

  async hold(id: string): Promise<{ id: string; held: true; inFlight?: string[] }> {
    checkId(id)
    if (!(await this.env.queue.hold(id))) throw notFound(id)
    // A hold stops the next attempts, not one under way: the operator is told which recipients
    // it may still deliver (as bounce says which it leaves to their delivery).
    const detail = await this.env.queue.show(id)
    const inFlight = detail?.recipients.filter((r) => r.leased).map((r) => r.address) ?? []
    this.env.log?.info({ queueId: id, inFlight: inFlight.length ? inFlight : undefined }, 'message held by the administrator')
    return { id, held: true, ...(inFlight.length ? { inFlight } : {}) }
  }

  async release(id: string): Promise<{ id: string; released: true }> {
    checkId(id)
    if (!(await this.env.queue.release(id, Date.now()))) {
      if (!(await this.env.queue.show(id))) throw notFound(id)
      throw new QueueControlError('conflict', `message ${id} is not held`)
    }
    this.env.log?.info({ queueId: id }, 'message released by the administrator')
    this.env.wake?.()
    return { id, released: true }
  }

  async remove(id: string): Promise<{ id: string; deleted: true }> {
    checkId(id)
    const removed = await this.env.queue.remove(id, Date.now())
    // As bounce: an attempt under way would deliver what the operator was told is deleted.
    if (removed === 'in-flight') throw new QueueControlError('conflict', `message ${id} is being delivered right now: not deleted (hold it to stop further attempts, and delete it once this one has ended)`)
    if (!removed) throw notFound(id)
    this.env.log?.info({ queueId: id }, 'message deleted by the administrator')
    return { id, deleted: true }
  }

  /** Makes pending recipients due now (one message, or one destination domain, or all). */
  async flush(filter: { id?: string; domain?: string } = {}): Promise<{ flushed: number }> {
    if (filter.id !== undefined) checkId(filter.id)
    const domain = filter.domain?.trim().toLowerCase().replace(/\.$/, '')
    if (filter.domain !== undefined && !domain) throw new QueueControlError('bad-input', 'domain must not be empty')
    const flushed = await this.env.queue.flush({ queueId: filter.id, domain }, Date.now())
    if (!flushed && filter.id !== undefined) {
      const detail = await this.env.queue.show(filter.id)
      if (!detail) throw notFound(filter.id)
      if (detail.heldAt !== undefined) throw new QueueControlError('conflict', `message ${filter.id} is held: nothing flushed (release it to deliver it)`)
    }
    this.env.log?.info({ queueId: filter.id, domain, recipients: flushed }, 'queue flushed by the administrator')
    if (flushed) this.env.wake?.()
    return { flushed }
  }

  summary(): Promise<QueueSummary> {
    return this.env.queue.summary(Date.now())
  }

  /**
   * Bounces the message's pending recipients in one conditional write (queue.bounceNow): each one
   * not in flight at that moment becomes 'bounced' with ADMIN_BOUNCE_RESPONSE and is owed a DSN as a
   * delivery failure is (not to the null sender; RFC 3461 NOTIFY is honoured). The sender gets the
   * message's one DSN: these recipients with any owed from earlier jobs, sent now, or by the
   * complete of a delivery in flight (its recipients are left to it and reported as `inFlight`).
   */
  async bounce(id: string): Promise<BounceResult> {
    checkId(id)
    const { queue } = this.env
    // RCPT parameters never change: which recipients want a DSN can be read before the write.
    const detail = await queue.show(id)
    if (!detail) throw notFound(id)
    const owed = detail.sender === '' ? [] : detail.recipients.filter((r) => wantsDsn(r.args, 'FAILURE')).map((r) => r.rowId)
    const now = Date.now()
    const r = await queue.bounceNow(id, ADMIN_BOUNCE_RESPONSE, { action: 'failed', status: '5.0.0', remote: false }, owed, now)
    if (!r) throw notFound(id)
    if (!r.bounced.length && r.inFlight.length) throw new QueueControlError('conflict', `message ${id} is being delivered right now (${r.inFlight.join(', ')}): nothing bounced; try again in a moment`)
    const bounced = r.bounced.map((b) => b.address)
    const dsn = r.dsnDue ? await this.env.sendOwedDsn?.(id) : undefined
    const waits = !r.dsnDue && !r.finished && r.bounced.some((b) => owed.includes(b.rowId))
    if (r.bounced.length) this.env.log?.info({ queueId: id, recipients: bounced, inFlight: r.inFlight.length ? r.inFlight : undefined, dsn }, 'message bounced by the administrator')
    if (dsn) this.env.wake?.()
    const hooks = this.env.hooks
    if (hooks) {
      for (const b of r.bounced) {
        const outcome = { recipient: b.address, domain: b.domain, response: ADMIN_BOUNCE_RESPONSE, attempts: b.attempts, category: 'other' as const, byOperator: true as const }
        await hooks.emit('bounced', deliveryEvent(detail, outcome, now, now))
      }
    }
    return { id, bounced, ...(r.inFlight.length ? { inFlight: r.inFlight } : {}), ...(dsn ? { dsn } : {}), ...(waits ? { dsnWaits: true } : {}) }
  }
}

function checkId(id: string): void {
  if (!ID.test(id)) throw new QueueControlError('bad-input', `not a queue id: '${id}'`)
}

const notFound = (id: string) => new QueueControlError('not-found', `no message ${id} in the queue`)
