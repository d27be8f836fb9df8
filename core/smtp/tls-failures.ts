// Failed implicit-TLS handshakes per client (config smtp.maxTlsHandshakeFailures within
// smtp.tlsHandshakeFailurePeriod): a client that keeps opening connections to the TLS port and
// breaking its handshakes off (or sending no TLS at all) makes the server do key exchanges for
// nothing, and reaches neither onConnect nor a rate limit there. Past the limit its new connections
// are refused on arrival, before any handshake, until the period has passed since its last failure
// (as Postfix's anvil and postscreen make a client's misbehaviour cost it). Per process, in memory.

/** At most this many clients are remembered; the longest quiet one goes first. */
const MAX_CLIENTS = 100_000

export class TlsFailures {
  /** By client key: failures in a row less than a period apart, and the time of the last one. */
  private readonly failures = new Map<string, { count: number; last: number }>()

  /** A handshake of `key`'s failed. */
  failed(key: string, period: number, now = Date.now()): void {
    const f = this.failures.get(key)
    const count = f && now - f.last < period ? f.count + 1 : 1
    // Re-inserted: the Map's order is then least recently failed first.
    this.failures.delete(key)
    this.failures.set(key, { count, last: now })
    if (this.failures.size > MAX_CLIENTS) this.failures.delete(this.failures.keys().next().value!)
  }

  /** Has `key` failed `max` handshakes (0: no limit), the last less than `period` ago? Its count, or undefined. */
  over(key: string, max: number, period: number, now = Date.now()): number | undefined {
    const f = this.failures.get(key)
    if (!f) return undefined
    if (now - f.last >= period) {
      this.failures.delete(key)
      return undefined
    }
    return max > 0 && f.count >= max ? f.count : undefined
  }
}
