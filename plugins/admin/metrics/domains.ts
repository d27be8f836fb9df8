/**
 * Bounded label values for destination domains: the first `max` distinct domains seen get their
 * own value, every later one counts as 'other'. A relay sends to an unbounded set of domains and
 * each label value is a time series kept forever by Prometheus.
 */
export class DomainLabels {
  private readonly known = new Set<string>()

  constructor(private readonly max: number) {}

  label(domain: string): string {
    const d = domain.toLowerCase()
    if (this.known.has(d)) return d
    if (this.known.size >= this.max || !d) return 'other'
    this.known.add(d)
    return d
  }
}
