// Hosts that did not answer at all (connection refused or timed out, or no byte before the greeting
// timeout): tried after the hosts that do answer, for a while, so that a dead primary MX does not cost
// every message connectTimeout before its backup is tried (as Exim's retry database and KumoMTA's
// per-site suspension do). Nothing is ever skipped: a host that is down is still tried, last.

/** First period a silent host is tried last; doubled at each further silence, up to MAX_MS. */
const FIRST_MS = 60_000
const MAX_MS = 600_000
/** Bounded: a relay that sends to the whole internet forgets the oldest entries first. */
const MAX_ENTRIES = 10_000

interface Entry {
  until: number
  periodMs: number
}

export class SilentHosts {
  private readonly hosts = new Map<string, Entry>()

  constructor(private readonly now: () => number = Date.now) {}

  /** `hosts` with those that were silent lately moved to the end, each group in its own order. */
  order<T extends { address: string }>(hosts: T[], port: number): T[] {
    if (!this.hosts.size || hosts.length < 2) return hosts
    const now = this.now()
    const answering: T[] = []
    const silent: T[] = []
    for (const h of hosts) ((this.hosts.get(key(h.address, port))?.until ?? 0) > now ? silent : answering).push(h)
    return silent.length ? [...answering, ...silent] : hosts
  }

  /** The host did not answer: tried last for a minute, then for twice as long at each further silence. */
  silent(address: string, port: number): void {
    const k = key(address, port)
    const last = this.hosts.get(k)
    const now = this.now()
    // Silent again soon after its last period: twice as long; long after it: a fresh start.
    const periodMs = last && now - last.until < MAX_MS ? Math.min(last.periodMs * 2, MAX_MS) : FIRST_MS
    this.hosts.delete(k)
    if (this.hosts.size >= MAX_ENTRIES) this.hosts.delete(this.hosts.keys().next().value!)
    this.hosts.set(k, { until: now + periodMs, periodMs })
  }

  /** The host answered (whatever it said): it takes its place again. */
  answered(address: string, port: number): void {
    if (this.hosts.size) this.hosts.delete(key(address, port))
  }
}

const key = (address: string, port: number) => `${address}|${port}`
