// The dashboard's "recent events" (GET /api/events): delivery attempts (delivered, deferred,
// bounced) from the queue's attempt log, so a restart or another node's work blanks nothing; and,
// in memory, the last few hundred of what the queue does not store: messages accepted, refusals,
// suppressed recipients, AUTH failures, complaints. Kept in memory only for those (the queue has the
// attempts durably and for every node: keeping them twice would show them twice). Fed by the
// plugin's event hooks (index.ts), so it costs nothing on the SMTP path but a small object per event.
import type { AcceptedEvent, ComplaintEvent, EventContexts, QueueOperations, RecentAttempt, RejectedEvent, SessionInfo, SuppressedEvent } from '../../core/index.js'

export type RecentEventType = 'accepted' | 'rejected' | 'suppressed' | 'delivered' | 'deferred' | 'bounced' | 'authFailed' | 'complaint'
export const RECENT_EVENT_TYPES: RecentEventType[] = ['accepted', 'rejected', 'suppressed', 'delivered', 'deferred', 'bounced', 'authFailed', 'complaint']

export interface RecentEvent {
  /** Events held in memory: increasing (attempts from the queue have none). */
  seq?: number
  at: number
  type: RecentEventType
  queueId?: string
  sender?: string
  recipient?: string
  /** Destination domain (delivery events) or the sending domain (complaints). */
  domain?: string
  client?: string
  /** Reply text, reason, or a short summary. */
  text: string
  category?: string
  /** Delivery attempts: the host that answered. */
  remoteHost?: string
}

export interface EventFilter {
  type?: string
  /** Exact domain, or any address/domain field ending in it. */
  domain?: string
  /** Case-insensitive substring of any field. */
  text?: string
  /** Only events after this time (epoch ms): what is newer than what a client has. */
  after?: number
  limit?: number
}

export class RecentEvents {
  private readonly buffer: (RecentEvent | undefined)[]
  private next = 0
  private seq = 0

  constructor(readonly capacity = 500) {
    this.buffer = new Array<RecentEvent | undefined>(capacity)
  }

  accepted(e: AcceptedEvent): void {
    const n = e.recipients.length
    this.add({ type: 'accepted', queueId: e.queueId, sender: e.sender, recipient: e.recipients.join(', '), domain: domains(e.recipients), client: client(e.session), text: `${n} recipient${n === 1 ? '' : 's'}, ${e.size} bytes` })
  }

  rejected(e: RejectedEvent): void {
    // A refused MAIL FROM names the sender: not a recipient, and its domain no destination.
    const who = e.command === 'mail' || (e.command === undefined && e.stage === 'mail') ? { sender: e.address } : { recipient: e.address, domain: e.address ? domainOf(e.address) : undefined }
    this.add({ type: 'rejected', ...who, client: client(e.session), text: `${e.code}${e.status ? ` ${e.status}` : ''} ${e.message} (${e.stage}${e.plugin ? `, ${e.plugin}` : ''})` })
  }

  suppressed(e: SuppressedEvent): void {
    this.add({ type: 'suppressed', recipient: e.recipient, domain: domainOf(e.recipient), client: client(e.session), text: e.reason })
  }

  authFailed(e: EventContexts['authFailed']): void {
    this.add({ type: 'authFailed', client: client(e.session), text: `${e.method} ${e.username}${e.temporary ? ' (temporary)' : ''}` })
  }

  /** A complaint recorded from a feedback-loop report. */
  complaint(c: ComplaintEvent): void {
    this.add({ type: 'complaint', queueId: c.queueId, domain: c.senderDomain || undefined, recipient: c.destDomain, text: `${c.feedbackType}${c.matched ? '' : ' (not matched)'}${c.userAgent ? ` from ${c.userAgent}` : ''}` })
  }

  add(e: Omit<RecentEvent, 'seq' | 'at'> & { at?: number }): void {
    if (e.type === 'delivered' || e.type === 'deferred' || e.type === 'bounced') return // the queue's attempt log has them
    this.buffer[this.next] = { seq: ++this.seq, at: e.at ?? Date.now(), ...e }
    this.next = (this.next + 1) % this.capacity
  }

  /** Newest first. */
  list(filter: EventFilter = {}): RecentEvent[] {
    const out: RecentEvent[] = []
    const limit = Math.max(0, Math.min(filter.limit ?? this.capacity, this.capacity))
    const matches = matcher(filter)
    for (let i = 1; i <= this.capacity && out.length < limit; i++) {
      const e = this.buffer[(this.next - i + this.capacity) % this.capacity]
      if (!e) break
      if (filter.after !== undefined && e.at <= filter.after) break
      if (matches(e)) out.push(e)
    }
    return out
  }
}

const ATTEMPT_TYPES = new Set<string>(['delivered', 'deferred', 'bounced'])
/** Attempts read from the queue per page, and at most this many pages for one filtered list. */
const PAGE = 500
const MAX_PAGES = 10

/**
 * The recent events, newest first: the queue's delivery attempts merged with those in memory. A
 * narrow filter reads at most MAX_PAGES pages of attempts to find `limit` matches.
 */
export async function recentEvents(queue: Pick<QueueOperations, 'recentAttempts'>, memory: RecentEvents, filter: EventFilter = {}): Promise<RecentEvent[]> {
  const limit = Math.max(0, filter.limit ?? memory.capacity)
  const events = memory.list({ ...filter, limit })
  if (!filter.type || ATTEMPT_TYPES.has(filter.type)) {
    const matches = matcher(filter)
    const narrowed = !!(filter.type || filter.domain || filter.text)
    let found = 0
    for await (const a of attemptsNewestFirst(queue, narrowed ? PAGE : Math.max(1, limit), narrowed ? MAX_PAGES : 1)) {
      if (found >= limit || (filter.after !== undefined && a.at <= filter.after)) break
      const e = attemptEvent(a)
      if (matches(e)) {
        events.push(e)
        found++
      }
    }
  }
  return events.sort((a, b) => b.at - a.at).slice(0, limit)
}

/**
 * The queue's attempts page by page. Attempts of one batch share their time, so a page that ends
 * inside such a tie is continued from that time again, skipping the ones already seen (the order,
 * time then insertion, is stable).
 */
async function* attemptsNewestFirst(queue: Pick<QueueOperations, 'recentAttempts'>, pageSize: number, pages: number): AsyncGenerator<RecentAttempt> {
  let before: number | undefined
  let skip = 0
  for (let page = 0; page < pages; page++) {
    const attempts = await queue.recentAttempts({ limit: pageSize, before })
    yield* attempts.slice(skip)
    if (attempts.length < pageSize) return
    const last = attempts[attempts.length - 1]!.at
    const tied = attempts.filter((a) => a.at === last).length
    // A whole page of one time: the rest of that tie is passed over rather than read forever.
    if (tied === attempts.length) [before, skip] = [last, 0]
    else [before, skip] = [last + 1, tied]
  }
}

export function attemptEvent(a: RecentAttempt): RecentEvent {
  return { at: a.at, type: a.state, queueId: a.queueId, sender: a.sender, recipient: a.recipient, domain: domainOf(a.recipient), text: a.response, category: a.category, remoteHost: a.remoteHost }
}

const client = (s: SessionInfo) => s.remoteAddress
const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase()
function domains(addresses: string[]): string {
  return [...new Set(addresses.map(domainOf))].join(', ')
}

function matcher(filter: EventFilter): (e: RecentEvent) => boolean {
  const domain = filter.domain?.toLowerCase()
  const text = filter.text?.toLowerCase()
  return (e) => (!filter.type || e.type === filter.type) && (!domain || matchesDomain(e, domain)) && (!text || JSON.stringify(e).toLowerCase().includes(text))
}

function matchesDomain(e: RecentEvent, domain: string): boolean {
  for (const v of [e.domain, e.sender, e.recipient]) {
    if (!v) continue
    for (const part of v.toLowerCase().split(/,\s*/)) if (part === domain || part.endsWith(`@${domain}`) || part.endsWith(`.${domain}`)) return true
  }
  return false
}
