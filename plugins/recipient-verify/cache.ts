// Remembered probe results, each for its own time to live, at most `maxEntries` (the oldest
// written go first). Concurrent lookups of one address share one probe.

export class ProbeCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>()
  private readonly pending = new Map<string, Promise<V>>()

  constructor(private readonly maxEntries: number) {}

  get(key: string, now = Date.now()): V | undefined {
    const e = this.entries.get(key)
    if (!e) return undefined
    if (e.expiresAt <= now) {
      this.entries.delete(key)
      return undefined
    }
    return e.value
  }

  set(key: string, value: V, ttlMs: number): void {
    this.entries.delete(key)
    if (ttlMs <= 0) return
    this.entries.set(key, { value, expiresAt: Date.now() + ttlMs })
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!)
  }

  /** Lookups running now (one per key). */
  get running(): number {
    return this.pending.size
  }

  /** Whether `key` has a fresh value or a lookup on the way (asking costs no new lookup). */
  known(key: string): boolean {
    return this.pending.has(key) || this.get(key) !== undefined
  }

  /** The cached value, else the running lookup for the key, else a new one (`ttlOf` says how long to keep its result). */
  async lookup(key: string, run: () => Promise<V>, ttlOf: (v: V) => number): Promise<{ value: V; cached: boolean }> {
    const hit = this.get(key)
    if (hit !== undefined) return { value: hit, cached: true }
    let p = this.pending.get(key)
    if (!p) {
      p = run()
        .then((v) => {
          this.set(key, v, ttlOf(v))
          return v
        })
        .finally(() => this.pending.delete(key))
      this.pending.set(key, p)
    }
    return { value: await p, cached: false }
  }
}
