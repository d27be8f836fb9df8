// Open SMTP sessions per client for the whole relay under config `workers`: the primary counts
// them (smtp.maxConnectionsPerClient), each worker asks at connect and tells at close; connections
// still on their way in (TLS handshake, reverse lookup) count under `arriving <key>` the same way.
// The keys are the workers' clientKey()s (an IPv4 address, an IPv6 /smtp.clientIpv6Prefix network);
// `clients listen[i]` counts a listener's connections, accept to close, against smtp.maxClients.
export class ClientCounts {
  private readonly total = new Map<string, number>()
  private readonly byWorker = new Map<number, Map<string, number>>()

  /**
   * Counts one for each [key, max] unless one has `max` open (with `also`'s count added: read, not
   * counted): the index of that one (nothing counted), else -1. Then, either way, releases one of
   * each of `release`: a connection's arrival becomes its session in one step, never counted as neither.
   */
  admit(worker: number, counts: [key: string, max: number, also?: string][], release: string[] = []): number {
    const full = counts.findIndex(([key, max, also]) => (this.total.get(key) ?? 0) + (also === undefined ? 0 : (this.total.get(also) ?? 0)) >= max)
    for (const key of release) this.release(worker, key)
    if (full >= 0) return full
    const mine = this.byWorker.get(worker) ?? new Map<string, number>()
    this.byWorker.set(worker, mine)
    for (const [key] of counts) {
      this.total.set(key, (this.total.get(key) ?? 0) + 1)
      mine.set(key, (mine.get(key) ?? 0) + 1)
    }
    return -1
  }

  release(worker: number, ip: string): void {
    const mine = this.byWorker.get(worker)
    const n = mine?.get(ip)
    if (!mine || !n) return
    if (n > 1) mine.set(ip, n - 1)
    else mine.delete(ip)
    this.take(ip, 1)
  }

  /** A worker is gone: its sessions went with it. */
  forget(worker: number): void {
    for (const [ip, n] of this.byWorker.get(worker) ?? []) this.take(ip, n)
    this.byWorker.delete(worker)
  }

  private take(ip: string, n: number): void {
    const left = (this.total.get(ip) ?? 0) - n
    if (left > 0) this.total.set(ip, left)
    else this.total.delete(ip)
  }
}
