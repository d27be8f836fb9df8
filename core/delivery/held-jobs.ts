// Claimed jobs wait here while their destination's throttle says "not now" (a limit reached, a
// backoff pause): they stay leased to this node, and a timer tries them again, oldest first, as
// soon as a slot may be free. Their domains count as full for the queue claim meanwhile.
import type { Job } from '../queue/types.js'
import type { Slot, Throttle } from './throttle.js'

/** What the held jobs need from the scheduler. */
export interface HeldJobsOwner {
  stopped(): boolean
  /** The global concurrency limit is reached. */
  full(): boolean
  /** Runs a job with the slot its throttle granted. */
  start(job: Job, slot: Slot): void
}

export class HeldJobs {
  private jobs: Job[] = []
  private timer: (NodeJS.Timeout & { at: number }) | undefined
  private retrying = false

  constructor(
    private readonly throttle: Throttle,
    private readonly owner: HeldJobsOwner,
  ) {}

  get size(): number {
    return this.jobs.length
  }

  /** Domains with held work. */
  domains(): string[] {
    return this.jobs.map((j) => j.domain)
  }

  holds(domain: string): boolean {
    return this.jobs.some((j) => j.domain === domain)
  }

  /**
   * A claimed job starts if its destination's throttle lets it, else it is held (still leased).
   * With shared (Redis) counters each start asks them; else the in-memory decision, at once.
   */
  async admit(job: Job): Promise<void> {
    const admission = this.throttle.shared ? await this.throttle.admitDomain(job.domain) : this.throttle.admitLocal(job.domain)
    if (this.owner.stopped()) {
      if (admission.ok) this.throttle.release(admission.slot)
      return
    }
    if (admission.ok) return this.owner.start(job, admission.slot)
    this.jobs.push(job)
    this.retryAt(admission.retryAt)
  }

  /** Held jobs, oldest first, start as their throttles allow (within the global limit). */
  async retry(): Promise<void> {
    this.timer = undefined
    if (this.owner.stopped() || this.retrying || !this.jobs.length) return
    this.retrying = true
    let next = Infinity
    try {
      const refused = new Set<string>()
      for (const job of [...this.jobs]) {
        if (this.owner.stopped()) return
        if (this.owner.full()) break
        if (refused.has(job.domain)) continue
        const admission = this.throttle.shared ? await this.throttle.admitDomain(job.domain) : this.throttle.admitLocal(job.domain)
        if (this.owner.stopped()) {
          if (admission.ok) this.throttle.release(admission.slot)
          return
        }
        if (!admission.ok) {
          refused.add(job.domain)
          next = Math.min(next, admission.retryAt)
          continue
        }
        this.jobs.splice(this.jobs.indexOf(job), 1)
        this.owner.start(job, admission.slot)
      }
    } finally {
      this.retrying = false
    }
    if (this.jobs.length) this.retryAt(next === Infinity ? 0 : next)
  }

  stop(): void {
    clearTimeout(this.timer)
  }

  /** Looks again when the throttle said a slot may be free (0: unknown), within 20 ms .. 1 s. */
  private retryAt(retryAt: number): void {
    const wait = retryAt > Date.now() ? retryAt - Date.now() : 200
    const at = Date.now() + Math.max(20, Math.min(wait, 1000))
    if (this.timer && this.timer.at <= at) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = Object.assign(setTimeout(() => void this.retry(), at - Date.now()), { at })
  }
}
