// Group commit for the PostgreSQL queue, as the SQLite worker does it: calls that arrive while a
// batch is being written (or in the same tick) are written together in the next batch — one
// transaction, one fsync and a few round trips for many callers. Each caller's promise settles
// only when its batch has committed.
import pg from 'pg'

export interface GroupCommitOptions {
  /** At most this many items in one batch. */
  maxBatch: number
  /** Batches written at once (each on its own connection). */
  maxInFlight: number
}

interface Waiting<T, R> {
  item: T
  resolve: (result: R) => void
  reject: (err: unknown) => void
}

/** Collects items and writes them in batches with `write`, which gives one result per item, in order. */
export class GroupCommit<T, R> {
  private waiting: Waiting<T, R>[] = []
  private inFlight = 0
  private scheduled = false
  private idleWaiters: (() => void)[] = []

  constructor(
    private readonly write: (items: T[]) => Promise<R[]>,
    private readonly o: GroupCommitOptions,
  ) {}

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.waiting.push({ item, resolve, reject })
      this.kick()
    })
  }

  /** Resolves once every item added so far has been written (or failed). */
  idle(): Promise<void> {
    if (!this.inFlight && !this.waiting.length) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private kick(): void {
    if (this.scheduled || this.inFlight >= this.o.maxInFlight || !this.waiting.length) return
    this.scheduled = true
    // setImmediate, not a microtask: the callers whose data arrived in this same turn join in.
    setImmediate(() => {
      this.scheduled = false
      void this.run()
    })
  }

  private async run(): Promise<void> {
    if (this.inFlight >= this.o.maxInFlight || !this.waiting.length) return
    const batch = this.waiting.splice(0, this.o.maxBatch)
    this.inFlight++
    try {
      await this.settle(batch)
    } finally {
      this.inFlight--
      this.kick()
      if (!this.inFlight && !this.waiting.length) for (const resolve of this.idleWaiters.splice(0)) resolve()
    }
  }

  private async settle(batch: Waiting<T, R>[]): Promise<void> {
    try {
      const results = await this.write(batch.map((w) => w.item))
      batch.forEach((w, i) => w.resolve(results[i]!))
      return
    } catch (err) {
      // Only an error the server reported means the batch surely did not commit; any other (a lost
      // connection) leaves it unknown, so writing the items again could apply them twice. (Items
      // are checked before they join a batch, so no other error comes from one item.)
      if (batch.length === 1 || !(err instanceof pg.DatabaseError)) {
        for (const w of batch) w.reject(err)
        return
      }
    }
    // One item's error (a duplicate id, say) failed the whole batch: each item alone, so every
    // caller gets its own result or its own error.
    await Promise.all(
      batch.map(async (w) => {
        try {
          w.resolve((await this.write([w.item]))[0]!)
        } catch (err) {
          w.reject(err)
        }
      }),
    )
  }
}
