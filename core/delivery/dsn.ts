// Delivery's DSNs: failures (an expiry included), success reports and delay warnings, built by
// core/mail/bounce.ts under the untrusted-mail policy (dsn-policy.ts): a forged sender gets headers
// only, and at most one notification per sender per `delivery.untrustedDsn.interval` (all DSNs of
// one message count as one; a delay warning never takes the place of a failure).
//
// One failure/success DSN per message and pass, as Postfix's bounce log does it: a job (one
// message's recipients at one domain) does not send the DSN its results call for. Its complete
// marks each such recipient "DSN owed" (RecipientResult.dsn) in the same queue write as its result.
// The queue answers `dsnDue` to the complete after which none of the message's recipients is in
// flight or due now (or pending in a held message: its DSN waits for the release), i.e. to the
// last of the jobs running or due; that caller (`flush`) reads every
// owed recipient (queue.owedDsn), builds one DSN listing them all, each with its own status,
// diagnostic and remote MTA, and queues it while clearing their marks (queue.sendOwedDsn, which
// writes nothing if a mark is gone: another node or pass sent it). A message stays queued while it
// owes one. Recipients deferred to a later attempt hold nothing back; their own failure gets its own
// DSN. A crash between the two writes leaves marks with nothing in flight: `sweep` sends those at
// start and every minute. Completes of one message take turns (SQLite's one writer, PostgreSQL's
// message row lock), so two nodes finishing its last jobs at once still send one DSN. An operator's
// bounce (core/queue/control.ts) is one more such complete: its write (queue.bounceNow) takes only
// recipients not in flight at that moment and marks them owed; the DSN goes as above.
import { buffer } from 'node:stream/consumers'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import { delayDsn, failureDsn, wantsDsn, type DsnEnv, type DsnGate } from '../mail/bounce.js'
import { newQueueId } from '../queue/id.js'
import type { DelayCandidate, Job, MessageMeta, NewMessage, OwedDsn, OwedReport, Queue, QueuedMessage } from '../queue/types.js'
import type { HookBus } from '../hooks/bus.js'
import { runGenerated } from '../hooks/generated.js'
import type { AttemptResult } from './attempt.js'
import { fromUntrustedClient, UntrustedDsnLimiter } from './dsn-policy.js'

/** How often the sweep looks for owed DSNs nobody is sending (after a crash), and how many per look. */
const SWEEP_MS = 60_000
const SWEEP_BATCH = 100

export class DeliveryDsns {
  /** Who got a DSN for untrusted mail lately (delivery.untrustedDsn). */
  private readonly untrusted = new UntrustedDsnLimiter()
  private timer: NodeJS.Timeout | undefined
  private sweeping: Promise<void> | undefined

  constructor(
    /** The config in force (hot reload replaces it). */
    private readonly config: () => RelayConfig,
    private readonly queue: Queue,
    private readonly log: Logger,
    /** A DSN was queued: delivery has work. */
    private readonly onQueued: () => void = () => undefined,
    /** The plugins, whose `generated` hook sees each DSN before it is queued (a signature). */
    private readonly hooks: () => Pick<HookBus, 'has' | 'run'> | undefined | Promise<Pick<HookBus, 'has' | 'run'> | undefined> = () => undefined,
  ) {}

  /**
   * The DSNs an attempt's results owe, by recipient row: its bounced recipients whose NOTIFY asks
   * for FAILURE, and those `succeeded` (delivered or relayed) that asked for NOTIFY=SUCCESS.
   */
  static owed(job: Job, bounced: AttemptResult[], succeeded: (AttemptResult & { action: 'delivered' | 'relayed' })[]): Map<number, OwedDsn> {
    const owed = new Map<number, OwedDsn>()
    if (job.message.sender === '') return owed
    const args = new Map(job.recipients.map((r) => [r.rowId, r.args]))
    for (const b of bounced) if (wantsDsn(args.get(b.rowId), 'FAILURE')) owed.set(b.rowId, { action: 'failed', status: b.status, remote: b.remote })
    for (const s of succeeded) owed.set(s.rowId, { action: s.action, status: s.status, remote: s.remote })
    return owed
  }

  /**
   * Sends the message's owed DSN, if nothing of it is in flight or due; the queue id of the one queued.
   * `local`: the message as this process holds it, whose body it can read (an SMTP worker cannot
   * read a body stored in PostgreSQL). `operator`: an operator's bounce, deliberate: not limited
   * per sender (untrusted mail's DSN still returns the headers only).
   */
  async flush(queueId: string, local?: QueuedMessage, operator = false): Promise<string | undefined> {
    // Another pass may clear some of the marks read here meanwhile: read again (bounded).
    for (let pass = 0; pass < 3; pass++) {
      const owed = await this.queue.owedDsn(queueId, Date.now())
      if (!owed) return undefined
      const dsn = await this.build(owed, local && !('stored' in local.body) ? local : owed.message, operator)
      if (!(await this.queue.sendOwedDsn(queueId, owed.recipients.map((r) => r.rowId), dsn))) continue
      if (!dsn) return undefined
      const failed = owed.recipients.filter((r) => r.dsn.action === 'failed')
      const m = owed.message
      this.log.info({ queueId: dsn.id, dsnFor: m.id, to: m.sender, recipients: owed.recipients.map((r) => r.address), ...(failed.length ? {} : { success: true }) }, failed.length ? 'bounce queued' : 'success DSN queued')
      return dsn.id
    }
    return undefined
  }

  /** Looks for owed DSNs nobody is sending (their sender crashed), at once and then every SWEEP_MS. */
  start(): void {
    if (this.timer) return
    const run = () => {
      this.sweeping ??= this.sweep().finally(() => (this.sweeping = undefined))
    }
    this.timer = setInterval(run, SWEEP_MS)
    this.timer.unref()
    run()
  }

  /** No further sweeps; returns the one in progress, if any. */
  stop(): Promise<void> | undefined {
    clearInterval(this.timer)
    this.timer = undefined
    return this.sweeping
  }

  private async sweep(): Promise<void> {
    const ids = await this.queue.owedDsnMessages(Date.now(), SWEEP_BATCH).catch((err: unknown) => {
      this.log.error({ err }, 'owed DSN check failed; tried again in a minute')
      return []
    })
    for (const id of ids) {
      if (!this.timer) return
      // One message that cannot be reported keeps no other from it.
      await this.flush(id).then(
        (queued) => queued && this.onQueued(),
        (err: unknown) => this.log.error({ err, queueId: id }, 'could not queue an owed DSN; tried again in a minute'),
      )
    }
  }

  /** The one DSN (RFC 3464) for the message's owed recipients (failed, delivered, relayed). */
  private build(owed: OwedReport, bodyOf: QueuedMessage, operator: boolean): Promise<NewMessage | undefined> {
    const m = owed.message
    const recipient = (r: OwedReport['recipients'][number]) => ({ address: r.address, response: r.response, status: r.dsn.status, remoteHost: r.remoteHost, remote: r.dsn.remote, args: r.args })
    const failed = owed.recipients.filter((r) => r.dsn.action === 'failed').map(recipient)
    const succeeded = owed.recipients.flatMap((r) => (r.dsn.action === 'failed' ? [] : [{ ...recipient(r), action: r.dsn.action }]))
    const opts = fromUntrustedClient(m.meta) ? { allow: operator ? undefined : this.gate(m, failed.length ? 'failed' : 'delivered'), succeeded } : { readBody: () => buffer(this.queue.openBody(bodyOf)), succeeded }
    return failureDsn(this.env(), m, failed, opts)
  }

  /** The delay warning for a message that waited `delivery.delayWarning`, if one goes. */
  delay(c: DelayCandidate): Promise<NewMessage | undefined> {
    return delayDsn(this.env(), c, fromUntrustedClient(c.message.meta) ? { allow: this.gate(c.message, 'delayed') } : {})
  }

  private env(): DsnEnv {
    const config = this.config()
    return { reportingMta: config.hostname, lifetime: config.delivery.maxQueueLifetime, newId: newQueueId, log: this.log, generated: async (dsn) => runGenerated(await this.hooks(), dsn, this.log) }
  }

  /** Untrusted mail's sender may be forged: one DSN per sender per interval. */
  private gate(m: { id: string; sender: string; meta: MessageMeta }, action: 'failed' | 'delayed' | 'delivered'): DsnGate {
    return () => {
      const { interval, maxSenders } = this.config().delivery.untrustedDsn
      if (this.untrusted.allow(m.sender, m.id, action === 'failed', interval, maxSenders)) return true
      this.log.info({ dsnFor: m.id, to: m.sender, action }, 'DSN dropped: this sender of untrusted mail got one within delivery.untrustedDsn.interval')
      return false
    }
  }
}
