// Bounded label values for destination domains. A relay sends to an unbounded set of domains and
// each label value is a time series kept by Prometheus, so at most `maxDomainLabels` domains get a
// value of their own and every other one counts as 'other'. Which ones:
//   - `domains` (an allowlist): exactly those, fixed by the config;
//   - `topDomains: N`: the N with the most delivery results lately, counted in a bounded table and
//     recomputed every `topDomainsInterval`; a domain that another one beats has its series
//     removed (Prometheus keeps what it scraped) and counts as 'other' from then on;
//   - neither: the first `maxDomainLabels` seen (for a relay with a few fixed destinations).
import { TopCounter } from './top-counter.js'

export interface DomainLabelOptions {
  maxDomainLabels: number
  domains?: string[]
  topDomains?: number
  /** ms between recomputations of the top domains. */
  topDomainsInterval: number
}

export class DomainLabels {
  private readonly labelled = new Set<string>()
  private readonly mode: 'allowlist' | 'top' | 'first-seen'
  private readonly max: number
  private readonly counter: TopCounter | undefined
  private timer: NodeJS.Timeout | undefined

  constructor(
    options: DomainLabelOptions,
    /** A domain lost its label (top N recomputed): its series are removed. */
    private readonly dropped: (domain: string) => void = () => undefined,
  ) {
    if (options.domains) {
      this.mode = 'allowlist'
      for (const d of options.domains.slice(0, options.maxDomainLabels)) this.labelled.add(d.toLowerCase())
      this.max = this.labelled.size
    } else if (options.topDomains !== undefined) {
      this.mode = 'top'
      this.max = Math.min(options.topDomains, options.maxDomainLabels)
      // Room for the contenders, not just the winners: a bounded table is only exact for the heavy hitters.
      this.counter = new TopCounter(Math.max(100, this.max * 10))
      this.timer = setInterval(() => this.recompute(), options.topDomainsInterval)
      this.timer.unref()
    } else {
      this.mode = 'first-seen'
      this.max = options.maxDomainLabels
    }
  }

  /** The label value for a delivery result to `domain` (and, for top N, one more for its volume). */
  label(domain: string): string {
    const d = domain.toLowerCase()
    if (!d) return 'other'
    this.counter?.add(d)
    if (this.labelled.has(d)) return d
    // Allowlist: fixed. Top N and first seen: free slots go to domains as they come (a new relay
    // labels at once instead of waiting for the first recomputation).
    if (this.mode === 'allowlist' || this.labelled.size >= this.max) return 'other'
    this.labelled.add(d)
    return d
  }

  /**
   * Top N: the domains with the most results lately become the labelled ones. Slots the counts do
   * not fill (a quiet interval) keep their domain: a label only goes to a domain that beat it.
   */
  recompute(): void {
    if (!this.counter) return
    const top = new Set(this.counter.top(this.max))
    for (const d of this.labelled) if (top.size < this.max) top.add(d)
    for (const d of this.labelled) {
      if (top.has(d)) continue
      this.labelled.delete(d)
      this.dropped(d)
    }
    for (const d of top) this.labelled.add(d)
    // Recent volume counts more than old: halve every count, so a domain whose traffic stopped falls behind.
    this.counter.decay()
  }

  stop(): void {
    clearInterval(this.timer)
  }
}
