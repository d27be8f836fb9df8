// Password hashing (scrypt: ~50 ms and 16 MiB a check) runs in libuv's thread pool, which the
// relay's own file and DNS work share (4 threads unless UV_THREADPOOL_SIZE says otherwise). A flood
// of AUTH attempts must neither take every thread (stalling spool writes and lookups for all) nor
// wait in an unbounded line: at most half the pool checks passwords at once, a bounded number wait,
// and the rest are told the relay is busy (the auth plugin answers 454 4.7.0, try again later).

/** What `run` returns instead of a result when the line is full. */
export const BUSY: unique symbol = Symbol('busy')

export class BoundedWork {
  // Private fields: the one instance is shared by every plugin of the process, and frozen.
  #active = 0
  readonly #line: (() => void)[] = []

  constructor(
    readonly running: number,
    readonly waiting: number,
  ) {}

  /** Runs `work` when a slot is free; BUSY at once when `waiting` are already in line. */
  async run<T>(work: () => Promise<T>): Promise<T | typeof BUSY> {
    if (this.#active < this.running) this.#active++
    else if (this.#line.length >= this.waiting) return BUSY
    else await new Promise<void>((resolve) => this.#line.push(resolve))
    try {
      return await work()
    } finally {
      // The slot passes to the next in line, or is freed.
      const next = this.#line.shift()
      if (next) next()
      else this.#active--
    }
  }
}

const poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4

/** One line for every auth plugin's password checks in this process. */
export const passwordChecks = Object.freeze(new BoundedWork(Math.max(1, Math.floor(poolSize / 2)), 64))
