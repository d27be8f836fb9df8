// The recipient rows this process has in flight (claimed, or leased at intake and delivered from
// memory; running, or held by a throttle), and the renewal of their leases while they are. An
// expired lease makes work due again (crash recovery; in cluster mode, the takeover of a dead
// node's work), so an attempt that outlasts `delivery.lease` must keep its lease for as long as the
// process holding it lives, and the process must never start a second attempt for a row it holds.
import type { Logger } from 'pino'
import type { Job, Queue } from '../queue/types.js'

/** Renewals are this far apart at least, whatever the lease (a lease of a few ms is a test's). */
const MIN_RENEW_MS = 100

export class InFlightLeases {
  /**
   * Row id → the message it belongs to. SQLite reuses the row id of a recipient deleted with its
   * message (INTEGER PRIMARY KEY): a new message's recipient can get it while the old attempt is
   * still winding down, and must not be taken for the old one's (it would never be started, and
   * sit leased until the lease ran out).
   */
  private readonly rows = new Map<number, string>()
  private timer: NodeJS.Timeout | undefined
  private renewing: Promise<void> | undefined

  constructor(
    private readonly queue: Queue,
    private readonly leaseMs: number,
    private readonly log: Logger,
  ) {}

  /** Renews every lease/3, while anything is in flight: a lease survives two failed or late renewals. */
  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => void this.renew(), Math.max(MIN_RENEW_MS, Math.floor(this.leaseMs / 3)))
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  get size(): number {
    return this.rows.size
  }

  hold(queueId: string, rowIds: Iterable<number>): void {
    for (const id of rowIds) this.rows.set(id, queueId)
  }

  /** The rows of this message only: a row id a newer message took over stays held for it. */
  release(queueId: string, rowIds: Iterable<number>): void {
    for (const id of rowIds) if (this.rows.get(id) === queueId) this.rows.delete(id)
  }

  /**
   * A job a claim returned, less the recipients an attempt of this process holds already (the claim
   * found their lease expired: a renewal failed or came late; its new lease on them is harmless).
   * What is left is held from now on; undefined when nothing is left, not to be started.
   */
  take(job: Job): { job: Job | undefined; dropped: number } {
    const recipients = job.recipients.filter((r) => this.rows.get(r.rowId) !== job.message.id)
    const dropped = job.recipients.length - recipients.length
    if (!recipients.length) return { job: undefined, dropped }
    this.hold(job.message.id, recipients.map((r) => r.rowId))
    return { job: dropped ? { ...job, recipients } : job, dropped }
  }

  /** One renewal of every lease in flight, one queue call; a failure is logged, the next tick tries again. */
  renew(): Promise<void> {
    if (this.renewing || !this.rows.size) return this.renewing ?? Promise.resolve()
    const rowIds = [...this.rows.keys()]
    this.renewing = this.queue
      .renewLeases(rowIds, Date.now() + this.leaseMs)
      .catch((err: unknown) => {
        this.log.warn({ err, recipients: rowIds.length, leaseMs: this.leaseMs }, 'renewing the leases of deliveries in flight failed; tried again at the next renewal (an expired lease makes the work due again)')
      })
      .finally(() => (this.renewing = undefined))
    return this.renewing
  }
}
