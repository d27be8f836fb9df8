/**
 * Counts occurrences of keys in a table of at most `capacity` entries (the Space-Saving algorithm):
 * when the table is full, a new key takes the place of the least counted one and inherits its count
 * (plus one). Counts can be too high by at most what was inherited, but any key seen more often than
 * total/capacity is in the table: the heavy hitters are found in bounded memory, however many
 * distinct keys come by.
 */
export class TopCounter {
  private readonly counts = new Map<string, number>()

  constructor(private readonly capacity: number) {}

  add(key: string): void {
    const n = this.counts.get(key)
    if (n !== undefined) {
      this.counts.set(key, n + 1)
      return
    }
    if (this.counts.size < this.capacity) {
      this.counts.set(key, 1)
      return
    }
    let minKey: string | undefined
    let min = Infinity
    for (const [k, c] of this.counts) {
      if (c < min) {
        min = c
        minKey = k
      }
    }
    this.counts.delete(minKey!)
    this.counts.set(key, min + 1)
  }

  /** The `n` most counted keys, most first (ties: the key first added). */
  top(n: number): string[] {
    return [...this.counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k]) => k)
  }

  /** Halves every count; keys that reach 0 leave the table. */
  decay(): void {
    for (const [k, c] of this.counts) {
      const half = Math.floor(c / 2)
      if (half) this.counts.set(k, half)
      else this.counts.delete(k)
    }
  }
}
