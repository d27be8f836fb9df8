// One job, one attempt, and what follows from it: the retry policy (defer, or bounce once the
// message expired), hard-bounce suppression, the destination's backoff when it said "slow down",
// the results with the DSNs they owe in one queue write (one DSN per message: dsn.ts), then the
// delivered / deferred / bounced events.
import fsp from 'node:fs/promises'
import type { Logger } from 'pino'
import type { BounceCategory, DeliveryEvent } from '../hooks/types.js'
import { deliveryEvent } from '../hooks/delivery-event.js'
import { expiredResponse, wantsDsn } from '../mail/bounce.js'
import type { Job, Queue, RecipientResult, Suppression } from '../queue/types.js'
import { attemptDelivery, type AttemptDeps, type AttemptResult } from './attempt.js'
import { classify, isHardBounce, slowsDestination } from './classify.js'
import { DeliveryDsns } from './dsn.js'
import { retryDelay } from './retry.js'
import { Throttle } from './throttle.js'
import { isRelayPostmaster } from '../smtp/postmaster.js'

export interface DeliverDeps extends AttemptDeps {
  throttle: Throttle
  queue: Queue
  log: Logger
  dsns: DeliveryDsns
  /** A DSN was queued: delivery has work. */
  onBounceQueued: () => void
  /** Delivery is stopping: a result that cannot be written is left to the lease. */
  stopping?: () => boolean
}

type EventName = 'delivered' | 'deferred' | 'bounced'

const oneLine = (s: string, max = 300) => {
  const t = s.replace(/[\r\n]+/g, ' ').trim()
  return t.length > max ? `${t.slice(0, max - 3)}...` : t
}

export async function deliverJob(job: Job, deps: DeliverDeps): Promise<void> {
  const { queue, hooks, log } = deps
  const started = Date.now()
  const lost = await lostBody(job)
  if (lost) return holdLost(job, lost, deps)
  const attempts = await inTransactions(job, deps)
  const now = Date.now()
  const { results, bounced, suppress, events } = settle(job, attempts, started, now, deps)
  const succeeded = successesToReport(job, attempts)

  // The DSN these results owe is recorded with them; the message's last job running sends it (dsn.ts).
  const owed = DeliveryDsns.owed(job, bounced, succeeded)
  const done = await record(job, () => queue.complete(job.message.id, results.map((r) => (owed.has(r.rowId) ? { ...r, dsn: owed.get(r.rowId) } : r)), undefined, suppress), deps)
  if (done.dsnDue) {
    try {
      if (await deps.dsns.flush(job.message.id, job.message)) deps.onBounceQueued()
    } catch (err) {
      log.error({ err, queueId: job.message.id }, 'could not queue the DSN now; it stays owed and goes with the next check')
    }
  }
  for (const s of suppress) log.warn({ address: s.address, reason: s.reason, queueId: job.message.id, expiresAt: s.expiresAt === undefined ? undefined : new Date(s.expiresAt).toISOString() }, `suppressed ${s.address}`)

  // The log line ({ event: name, ... } with msg name) comes from core/events/log.ts, an observer.
  // Not awaited: a slow listener must not hold this delivery's slot (the bus bounds each call).
  for (const { name, event } of events) void hooks.emit(name, event)
}

/**
 * What is wrong with the message's spool file, when it is not the body the queue took: gone (an
 * operator, a cleanup job, a restore without the spool), unreadable (its permissions) or not its
 * size (damaged). Such a message
 * cannot be sent as it was accepted, now or later: it is not offered to any next hop.
 */
async function lostBody(job: Job): Promise<string | undefined> {
  const { body, size, headers } = job.message
  if (!('file' in body)) return undefined
  const want = size - headers.length
  try {
    // Opened, not only stat'ed: a file the relay may not read (EACCES) is as lost to the next hop.
    const fh = await fsp.open(body.file, 'r')
    const got = await fh.stat().then((st) => st.size).finally(() => fh.close())
    return got === want ? undefined : `its spool file ${body.file} has ${got} bytes, not the ${want} of the body queued`
  } catch (err) {
    return `its spool file ${body.file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`
  }
}

/**
 * A message whose body is lost is held (as Postfix moves a damaged queue file aside): not retried
 * for days and bounced with a confusing reason, never sent cut short. Its recipients say why; the
 * operator restores the file and releases it, or bounces (the DSN returns the headers) or deletes it.
 */
async function holdLost(job: Job, problem: string, deps: DeliverDeps): Promise<void> {
  const response = `4.3.0 Message held: ${problem}; restore it and release the message, or bounce or delete it`
  deps.log.error({ queueId: job.message.id, domain: job.domain, problem }, 'message held: its body is lost from the spool')
  // Held first: no scan takes it again between the two writes.
  await record(job, () => deps.queue.hold(job.message.id), deps)
  await record(job, () => deps.queue.complete(job.message.id, job.recipients.map((r) => ({ rowId: r.rowId, state: 'deferred', response, category: 'other', counted: false }))), deps)
}

/** Waits between tries to write an attempt's results: doubling from the first to the last. */
const RECORD_RETRY_MS = { first: 250, max: 5000 }

/**
 * Writes the attempt's results (and its DSN) to the queue, tried again while the queue refuses
 * (database locked by another process, disk full) for as long as this process delivers: the
 * recipients stay leased to it meanwhile (their leases are renewed), so mail the next hop took is
 * not sent again and mail it deferred is not left until the lease runs out. At stop, or after half
 * the lease, a result that still cannot be written is left to the lease (at-least-once).
 */
async function record<T>(job: Job, write: () => Promise<T>, deps: DeliverDeps): Promise<T> {
  let wait = RECORD_RETRY_MS.first
  // Bounded well inside the lease: a write that may have landed after all (its answer lost) is not
  // tried for ever.
  const until = Date.now() + deps.config.delivery.lease / 2
  for (let tries = 1; ; tries++) {
    try {
      const written = await write()
      if (tries > 1) deps.log.info({ queueId: job.message.id, domain: job.domain, tries }, 'delivery results written to the queue after it refused them')
      return written
    } catch (err) {
      if (deps.stopping?.() || Date.now() + wait > until) throw err
      if (tries === 1) deps.log.warn({ err, queueId: job.message.id, domain: job.domain }, 'writing delivery results to the queue failed; trying again (the recipients stay leased to this delivery)')
      await new Promise((resolve) => setTimeout(resolve, wait).unref())
      wait = Math.min(wait * 2, RECORD_RETRY_MS.max)
    }
  }
}

/**
 * Delivered recipients whose NOTIFY asks for SUCCESS and whose success nobody further on reports:
 * delivered here (LMTP: the mail store is the final delivery) or relayed to a next hop that did not
 * take NOTIFY on (RFC 3461 §5.2.2: the relay says `relayed`).
 */
function successesToReport(job: Job, attempts: AttemptResult[]): (AttemptResult & { action: 'delivered' | 'relayed' })[] {
  const args = new Map(job.recipients.map((r) => [r.rowId, r.args]))
  return attempts
    .filter((a) => a.outcome === 'delivered' && !a.notifyPassedOn && wantsDsn(args.get(a.rowId), 'SUCCESS'))
    .map((a) => ({ ...a, action: a.route === 'lmtp' ? ('delivered' as const) : ('relayed' as const) }))
}

/**
 * RFC 5321 §4.5.3.1.10: "452 too many recipients" asks for the rest in another transaction, now.
 * Older servers say 552 (5.5.3): the RFC (and Postfix) take it as the 452 it means, never a bounce.
 */
const tooManyRecipients = (a: AttemptResult) => a.replied === true && a.outcome !== 'delivered' && /^[45]52\b/.test(a.response) && /[45]\.5\.3|too many recipients/i.test(a.response)

/**
 * The job's recipients in transactions of at most delivery.maxRecipientsPerTransaction, one after
 * another (over the pooled connection); those a server refused with 452 too many recipients go in
 * the next one, as long as each transaction delivers to someone. A part that reached no transaction
 * (DNS, the route, no host answering) decides for the rest: they are not tried again in this attempt.
 */
async function inTransactions(job: Job, deps: DeliverDeps): Promise<AttemptResult[]> {
  const size = deps.config.delivery.maxRecipientsPerTransaction
  const results: AttemptResult[] = []
  let pending = job.recipients
  while (pending.length) {
    const part = (await attemptDelivery({ ...job, recipients: pending.slice(0, size) }, deps)).map((a) => (tooManyRecipients(a) ? { ...a, outcome: 'retry' as const } : a))
    let rest = pending.slice(size)
    const fate = part[0]
    if (fate && !part.some((a) => a.replied)) {
      results.push(...part, ...rest.map((r) => ({ ...fate, rowId: r.rowId, address: r.address })))
      break
    }
    // Bounded: a transaction that delivered to nobody ends the retries at once.
    const again = part.some((a) => a.outcome === 'delivered') ? part.filter(tooManyRecipients) : []
    results.push(...part.filter((a) => !again.includes(a)))
    if (again.length) {
      const rows = new Set(again.map((a) => a.rowId))
      rest = [...pending.filter((r) => rows.has(r.rowId)), ...rest]
    }
    pending = rest
  }
  return results
}

/** The attempt's results under the retry policy, with what to suppress and which events to emit. */
function settle(job: Job, attempts: AttemptResult[], started: number, now: number, deps: DeliverDeps) {
  const { config, throttle, log } = deps
  const expired = now >= job.message.expiresAt
  const byRow = new Map(job.recipients.map((r) => [r.rowId, r]))
  const results: RecipientResult[] = []
  const bounced: AttemptResult[] = []
  const suppress: Suppression[] = []
  const events: { name: EventName; event: DeliveryEvent }[] = []
  const { suppression } = config.delivery
  // The destination said "slow down" (421, 4.7.x rate limited): this domain alone backs off
  // (not for greylisting or one mailbox's rate: classify.ts slowsDestination).
  const slowDown = attempts.some((a) => a.remote && a.outcome === 'retry' && slowsDestination(a.response, a.status, a.stage))
  if (slowDown) {
    const b = throttle.backoffDomain(job.domain)
    if (b) log.warn({ domain: job.domain, pauseMs: b.pauseMs, concurrency: b.concurrency }, `throttle: ${job.domain} asked to slow down; paused ${b.pauseMs} ms, concurrency ${b.concurrency}`)
  } else if (attempts.some((a) => a.outcome === 'delivered')) throttle.successDomain(job.domain)
  const pausedUntil = throttle.pausedUntil(Throttle.domainKey(job.domain))
  // Opportunistic TLS fell back to plain text: the events say tls: false, this says why (Postfix logs it too).
  const fallback = attempts.find((a) => a.tlsFallback !== undefined)
  if (fallback) log.warn({ queueId: job.message.id, domain: job.domain, remoteHost: fallback.remoteHost, reason: fallback.tlsFallback }, `TLS with ${fallback.remoteHost} failed (${fallback.tlsFallback}): sent in plain text under TLS policy 'may'`)

  for (const a of attempts) {
    // A wait at the route's own cap (a.retryAt) is no attempt: it must not grow the retry backoff.
    const counted = a.retryAt === undefined
    const tries = (byRow.get(a.rowId)?.attempts ?? 0) + (counted ? 1 : 0)
    let state: RecipientResult['state'] = a.outcome === 'delivered' ? 'delivered' : a.outcome === 'failed' ? 'bounced' : 'deferred'
    let response = a.response
    let nextAttemptAt: number | undefined
    // What the failure was, from the reply itself (before an expiry rewrites the response).
    // A wait at a route's own sending cap (a.retryAt) is throttling by us, not a failure of the next hop.
    const category: BounceCategory | undefined = state === 'delivered' ? undefined : a.retryAt !== undefined ? 'throttled' : classify(a.response, a.status)
    // Only the reply to this recipient's RCPT (or LMTP's for it) is evidence about its mailbox; one to
    // MAIL FROM or DATA speaks of the whole transaction, whatever address its text names.
    const ownReply = a.stage === 'rcpt' || a.stage === 'lmtp'
    // The relay's postmaster is always taken at RCPT (RFC 5321 §4.5.1): an entry for it would refuse nothing.
    if (state === 'bounced' && suppression.enabled && ownReply && category && isHardBounce(category, a.response, a.status) && !isRelayPostmaster(a.address, config)) {
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
        response = expiredResponse(job.message.receivedAt, now, a.response)
        a.status = '4.4.7'
      } else {
        // The last try happens at expiry; a failure then bounces. A route at its sending cap
        // (a.retryAt) is due as soon as a slot may be free, without the retry backoff.
        const due = a.retryAt ?? now + retryDelay(tries, config.delivery.retry)
        nextAttemptAt = Math.min(Math.max(due, pausedUntil), job.message.expiresAt)
      }
    }
    // An expiry is this relay's verdict, whoever gave the last error it quotes.
    if (state === 'bounced') bounced.push({ ...a, response, remote: a.remote && response === a.response })
    results.push({ rowId: a.rowId, state, response, remoteHost: a.remoteHost, nextAttemptAt, category, ...(counted ? {} : { counted: false }) })
    const outcome = { recipient: a.address, domain: job.domain, remoteHost: a.remoteHost, response, attempts: tries, nextAttemptAt, category, tls: a.tls, route: a.route, routeName: a.routeName }
    events.push({ name: state, event: deliveryEvent(job.message, outcome, started, now) })
  }
  return { results, bounced, suppress, events }
}
