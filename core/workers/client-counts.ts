// Open SMTP sessions per client for the whole relay under config `workers`: the primary counts
// them (smtp.maxConnectionsPerClient), each worker asks at connect and tells at close; connections
// still on their way in (TLS handshake, reverse lookup) count under `arriving <key>` the same way.
// The keys are the workers' clientKey()s (an IPv4 address, an IPv6 /smtp.clientIpv6Prefix network).
export class ClientCounts {
  private readonly total = new Map<string, number>()
  private readonly byWorker = new Map<number, Map<string, number>>()

  admit(worker: number, ip: string, max: number): boolean {
    const open = this.total.get(ip) ?? 0
    if (open >= max) return false
    this.total.set(ip, open + 1)
    const mine = this.byWorker.get(worker) ?? new Map<string, number>()
    mine.set(ip, (mine.get(ip) ?? 0) + 1)
    this.byWorker.set(worker, mine)
    return true
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
