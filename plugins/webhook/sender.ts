// Sending the outbox: batches in order, each one signed POST; rows go only after a 2xx; a failure
// waits `retry.base`, doubling up to `retry.max`, and the same batch goes again. A batch the
// endpoint refuses for good (4xx but 408, 425, 429) `maxRejects` times is dropped (413, too large,
// first halves the batch down to one event); the outbox is
// kept within `maxEvents` and `maxAge` by dropping the oldest events. Every drop is logged and counted.
//
//   POST <url>  {"events":[{id,type,at,...fields}, ...]}
//   X-Relay-Timestamp: <unix seconds>
//   X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + '.' + body)>
import crypto from 'node:crypto'
import { safeUrl, scrubUrls, type PluginContext } from '../../core/index.js'
import type { Dropped, Outbox, OutboxEvent } from './outbox.js'
import type { WebhookOptions } from './options.js'

export type PostResult = { ok: true; status: number } | { ok: false; reason: string; status?: number }

/** The request body: each event is `{ id, type, at, ...fields }`. */
export function batchBody(events: OutboxEvent[]): string {
  return JSON.stringify({ events: events.map((e) => ({ id: e.id, type: e.type, at: e.at, ...(JSON.parse(e.data) as object) })) })
}

export function sign(secret: string, timestamp: number, body: string): string {
  return 'sha256=' + crypto.createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')
}

/** POSTs the body; only a 2xx is success. Redirects are not followed (a 3xx is a failure). */
export async function post(url: string, secret: string, body: string, timeoutMs: number, abort: AbortSignal): Promise<PostResult> {
  const timestamp = Math.floor(Date.now() / 1000)
  // A plain timer, not AbortSignal.any([abort, AbortSignal.timeout()]): a timeout signal inside
  // any() can be garbage collected before it fires (nodejs/node#57736), and the POST then waited
  // for undici's own 300 s header timeout.
  const deadline = new AbortController()
  const timer = setTimeout(() => deadline.abort(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { name: 'TimeoutError' })), timeoutMs)
  const onStop = () => deadline.abort(abort.reason)
  abort.addEventListener('abort', onStop, { once: true })
  if (abort.aborted) onStop()
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'User-Agent': 'relay-webhook',
        'X-Relay-Timestamp': String(timestamp),
        'X-Relay-Signature': sign(secret, timestamp, body),
      },
      body,
      signal: deadline.signal,
      redirect: 'manual',
    })
    // The status decides. A short answer is read (and dropped) so the connection can be reused; a
    // long or endless one is cut off, neither held in memory nor waited for past the status line.
    await drain(res)
    if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status }
    return { ok: false, reason: `HTTP ${res.status}`, status: res.status }
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } }
    if (abort.aborted) return { ok: false, reason: 'stopped at shutdown' }
    if (e.name === 'TimeoutError') return { ok: false, reason: `no answer within ${timeoutMs} ms` }
    // fetch's messages may quote the URL (with what it holds: a password, a key in the query).
    return { ok: false, reason: scrubUrls(e.cause?.code ?? e.cause?.message ?? e.message) }
  } finally {
    clearTimeout(timer)
    abort.removeEventListener('abort', onStop)
  }
}

export { safeUrl, scrubUrls }

/** Most of an answer's body read (and dropped) before the rest is cancelled. */
const MAX_DRAIN = 64 * 1024

async function drain(res: Response): Promise<void> {
  const reader = res.body?.getReader()
  if (!reader) return
  try {
    for (let read = 0; read <= MAX_DRAIN; ) {
      const { done, value } = await reader.read()
      if (done) return
      read += value.byteLength
    }
    await reader.cancel()
  } catch {
    // a body that breaks off changes nothing: the status has been given
  }
}

/** An answer that sending the same batch again will not change: a 4xx but timeout, too early, too many. */
export function permanent(status: number | undefined): boolean {
  return status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 425 && status !== 429
}

/** How often the outbox is checked against `maxEvents` and `maxAge` while events come in. */
const TRIM_EVERY_MS = 1000

/**
 * Sends the outbox to the endpoint. Woken by new events (after `flushInterval`, or at once when a
 * batch is full); one batch in flight at a time, so the endpoint sees the events in order.
 */
export class Sender {
  private readonly owner = `${process.pid}:${crypto.randomUUID()}`
  private readonly stopping = new AbortController()
  private timer: NodeJS.Timeout | undefined
  private timerDue = 0
  private sending: Promise<void> | undefined
  private again = false
  private stopped = false
  /** Events added since the last batch was taken. */
  private pending = 0
  private failures = 0
  private retryAt = 0
  /** Permanent refusals of the batch that starts at `rejectedSeq`. */
  private rejects = 0
  private rejectedSeq = 0
  private trimmedAt = 0
  /** Events per batch while the endpoint finds batches too large (413): halved by each 413, doubled back by each success. */
  private batchLimit: number | undefined

  constructor(
    private readonly outbox: Outbox,
    private readonly o: WebhookOptions,
    private readonly log: PluginContext<unknown>['log'],
  ) {}

  /** Events left by an earlier run go out first. */
  start(): void {
    this.trim()
    if (this.outbox.count() > 0) this.wake(0)
  }

  /** An event was written to the outbox. */
  added(): void {
    this.pending++
    if (Date.now() - this.trimmedAt >= TRIM_EVERY_MS) this.trim()
    if (this.retryAt > Date.now()) return // the retry timer is set
    this.wake(this.pending >= this.o.batchSize ? 0 : this.o.flushInterval)
  }

  /** Sets the timer to `delay` unless it fires sooner already (`force`: set it anyway). */
  private wake(delay: number, force = false): void {
    if (this.stopped) return
    const due = Date.now() + delay
    if (this.timer && this.timerDue <= due && !force) return
    clearTimeout(this.timer)
    this.timerDue = due
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.flush()
    }, delay)
    this.timer.unref()
  }

  /** Sends batches until the outbox is empty or a POST fails. */
  flush(): Promise<void> {
    if (this.sending) {
      this.again = true
      return this.sending
    }
    this.sending = this.sendAll()
      .catch((err: unknown) => {
        if (this.outbox.open) this.log.error({ err }, 'webhook: sending the outbox failed')
      })
      .finally(() => {
        this.sending = undefined
        if (this.again && this.retryAt <= Date.now()) this.wake(0)
        this.again = false
      })
    return this.sending
  }

  /** Drops (logs, counts) what is beyond `maxEvents` or older than `maxAge`. */
  trim(): void {
    if (!this.outbox.open) return
    this.trimmedAt = Date.now()
    try {
      const expired = this.outbox.dropOlderThan(new Date(Date.now() - this.o.maxAge))
      if (expired.n) this.dropped(expired, 'expired', `webhook: events older than maxAge (${this.o.maxAge} ms) dropped unsent`, { maxAge: this.o.maxAge })
      const overflow = this.outbox.dropBeyond(this.o.maxEvents)
      if (overflow.n) this.dropped(overflow, 'overflow', `webhook: outbox over maxEvents (${this.o.maxEvents}); the oldest events dropped unsent`, { maxEvents: this.o.maxEvents })
    } catch (err) {
      this.log.error({ err }, 'webhook: trimming the outbox failed')
    }
  }

  private dropped(d: Dropped, reason: string, msg: string, extra: Record<string, unknown>): void {
    this.log.warn({ url: safeUrl(this.o.url), reason, dropped: d.n, oldestAt: d.oldest, newestAt: d.newest, waiting: this.outbox.count(), ...extra }, msg)
  }

  private async sendAll(): Promise<void> {
    // A batch is bounded by `timeout`; the lease outlasts it, so it cannot lapse mid-batch.
    const leaseMs = this.o.timeout + 60_000
    const url = this.o.url
    for (;;) {
      if (!this.outbox.open) return
      if (!this.outbox.lease(this.owner, leaseMs)) {
        // Another sender (a reloaded instance, another process) is at it: look again later.
        this.wake(Math.max(this.o.flushInterval, 1000), true)
        return
      }
      this.pending = 0
      if (Date.now() - this.trimmedAt >= TRIM_EVERY_MS) this.trim()
      const batch = this.outbox.next(Math.min(this.o.batchSize, this.batchLimit ?? this.o.batchSize))
      if (!batch.length) {
        // Nothing to send: another sender (after a reload) may take over at once.
        this.outbox.release(this.owner)
        return
      }
      const r = await post(url, this.o.secret, batchBody(batch), this.o.timeout, this.stopping.signal)
      if (!this.outbox.open) return
      if (r.status === 413 && batch.length > 1) {
        // Too large as a whole, not refused: the same events go again, fewer at a time.
        this.batchLimit = Math.ceil(batch.length / 2)
        this.log.info({ url: safeUrl(url), events: batch.length, batchLimit: this.batchLimit }, `webhook: endpoint refused a batch of ${batch.length} events as too large (HTTP 413); sending ${this.batchLimit} at a time`)
        continue
      }
      if (!r.ok && permanent(r.status)) {
        if (this.rejectedSeq !== batch[0]!.seq) this.rejects = 0
        this.rejectedSeq = batch[0]!.seq
        this.rejects++
        if (this.rejects >= this.o.maxRejects) {
          // The endpoint will not take it: retrying would hold every later event back for ever.
          const d = this.outbox.drop(batch.at(-1)!.seq, 'rejected')
          this.dropped(d, 'rejected', `webhook: endpoint refused a batch ${this.rejects} times (HTTP ${r.status}); its events dropped unsent`, { status: r.status, tries: this.rejects, firstId: batch[0]!.id, lastId: batch.at(-1)!.id })
          this.rejects = 0
          this.failures = 0
          this.retryAt = 0
          continue
        }
      }
      if (!r.ok) {
        this.failures++
        const delay = Math.min(this.o.retry.max, this.o.retry.base * 2 ** Math.min(this.failures - 1, 40))
        this.retryAt = Date.now() + delay
        this.log.warn({ url: safeUrl(url), reason: r.reason, status: r.status, failures: this.failures, retryInMs: delay, waiting: this.outbox.count() }, 'webhook POST failed; will retry')
        this.wake(delay, true)
        return
      }
      this.outbox.remove(batch.at(-1)!.seq)
      if (this.batchLimit !== undefined) this.batchLimit = this.batchLimit * 2 >= this.o.batchSize ? undefined : this.batchLimit * 2
      if (this.failures) this.log.info({ url: safeUrl(url), failures: this.failures }, 'webhook endpoint answers again')
      this.failures = 0
      this.retryAt = 0
      this.rejects = 0
    }
  }

  /**
   * Stops the timers, tries one last flush (the POST in flight included) for at most `boundMs`,
   * then lets go of the outbox. What is left goes out at the next start.
   */
  async stop(boundMs: number): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    const bound = setTimeout(() => this.stopping.abort(), boundMs)
    try {
      await this.sending
      if (!this.stopping.signal.aborted && this.outbox.count() > 0) await this.flush()
    } finally {
      clearTimeout(bound)
      this.outbox.release(this.owner)
    }
  }
}
