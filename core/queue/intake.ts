// The one door from SMTP into the queue. SMTP hands over a message and gets back once it is
// durable; the queue then announces the new work. A subscriber (delivery) may claim the work before
// the write, so the recipients are written already leased to it and it sends them from memory
// without a queue scan: the fast path, without SMTP knowing that delivery exists.
import type { NewMessage, Queue } from './types.js'

/** Who hears of new work: the delivery scheduler. */
export interface NewWorkSubscriber {
  /**
   * Before the write: take these domains' recipients (each domain once) now? Returns the
   * lease expiry to write them with, or undefined to leave them due in the queue.
   */
  claim(domains: string[], message: NewMessage): number | undefined
  /** The write after a claim failed, or wrote the message due (no row ids): what was taken goes back. */
  unclaim(domains: string[]): void
  /** The message is durable. `rowIds` (recipient order) when it was claimed; undefined: it waits in the queue. */
  queued(message: NewMessage, rowIds: number[] | undefined): void
}

export class QueueIntake {
  private subscriber: NewWorkSubscriber | undefined

  constructor(private readonly queue: Queue) {}

  /** One subscriber: the node's delivery scheduler. */
  subscribe(subscriber: NewWorkSubscriber): void {
    this.subscriber = subscriber
  }

  /** Resolves once the message is durable (fsync'd, or committed in PostgreSQL). */
  async enqueue(message: NewMessage): Promise<void> {
    const domains = [...new Set(message.recipients.map((r) => r.domain))]
    const sub = this.subscriber
    const leaseUntil = sub?.claim(domains, message)
    let rowIds: number[]
    try {
      rowIds = await this.queue.enqueue(message, leaseUntil)
    } catch (err) {
      if (leaseUntil) sub?.unclaim(domains)
      throw err
    }
    // No row ids for a leased write: the queue wrote it due instead (in an SMTP worker, the primary
    // found no room for it in the relay's concurrency): what was taken goes back, it waits there.
    if (leaseUntil && !rowIds.length) {
      sub?.unclaim(domains)
      return sub?.queued(message, undefined)
    }
    sub?.queued(message, leaseUntil ? rowIds : undefined)
  }
}
