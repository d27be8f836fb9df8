// The last few hundred events (accepted, delivered, deferred, bounced, rejected, suppressed,
// AUTH failures, complaints) in memory, for the dashboard's "recent events" (GET /api/events).
// Fed by the plugin's event hooks (index.ts), so it costs nothing on the SMTP path but a small object per event.
import type { AcceptedEvent, ComplaintEvent, DeliveryEvent, EventContexts, RejectedEvent, SessionInfo, SuppressedEvent } from '../../core/index.js'

export type RecentEventType = 'accepted' | 'rejected' | 'suppressed' | 'delivered' | 'deferred' | 'bounced' | 'authFailed' | 'complaint'
export const RECENT_EVENT_TYPES: RecentEventType[] = ['accepted', 'rejected', 'suppressed', 'delivered', 'deferred', 'bounced', 'authFailed', 'complaint']

export interface RecentEvent {
  /** Increasing; lets a client ask for what is newer than what it has. */
  seq: number
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
}

export interface EventFilter {
  type?: string
  /** Exact domain, or any address/domain field ending in it. */
  domain?: string
  /** Case-insensitive substring of any field. */
  text?: string
  /** Only events with a larger seq. */
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

  delivery(type: 'delivered' | 'deferred' | 'bounced', e: DeliveryEvent): void {
    this.add({ type, queueId: e.queueId, sender: e.sender, recipient: e.recipient, domain: e.domain, text: e.response, category: e.category })
  }

  accepted(e: AcceptedEvent): void {
    const n = e.recipients.length
    this.add({ type: 'accepted', queueId: e.queueId, sender: e.sender, recipient: e.recipients.join(', '), domain: domains(e.recipients), client: client(e.session), text: `${n} recipient${n === 1 ? '' : 's'}, ${e.size} bytes` })
  }

  rejected(e: RejectedEvent): void {
    this.add({ type: 'rejected', recipient: e.address, domain: e.address ? domainOf(e.address) : undefined, client: client(e.session), text: `${e.code}${e.status ? ` ${e.status}` : ''} ${e.message} (${e.stage}${e.plugin ? `, ${e.plugin}` : ''})` })
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
    this.buffer[this.next] = { seq: ++this.seq, at: e.at ?? Date.now(), ...e }
    this.next = (this.next + 1) % this.capacity
  }

  /** Newest first. */
  list(filter: EventFilter = {}): RecentEvent[] {
    const out: RecentEvent[] = []
    const limit = Math.max(0, Math.min(filter.limit ?? this.capacity, this.capacity))
    const domain = filter.domain?.toLowerCase()
    const text = filter.text?.toLowerCase()
    for (let i = 1; i <= this.capacity && out.length < limit; i++) {
      const e = this.buffer[(this.next - i + this.capacity) % this.capacity]
      if (!e) break
      if (filter.after !== undefined && e.seq <= filter.after) break
      if (filter.type && e.type !== filter.type) continue
      if (domain && !matchesDomain(e, domain)) continue
      if (text && !JSON.stringify(e).toLowerCase().includes(text)) continue
      out.push(e)
    }
    return out
  }
}

const client = (s: SessionInfo) => s.remoteAddress
const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase()
function domains(addresses: string[]): string {
  return [...new Set(addresses.map(domainOf))].join(', ')
}

function matchesDomain(e: RecentEvent, domain: string): boolean {
  for (const v of [e.domain, e.sender, e.recipient]) {
    if (!v) continue
    for (const part of v.toLowerCase().split(/,\s*/)) if (part === domain || part.endsWith(`@${domain}`) || part.endsWith(`.${domain}`)) return true
  }
  return false
}
