// Successful logins remembered for `cacheTtl`. Entries are keyed by an HMAC (with a random key made
// per process) of user name, password and client address: the key never holds the password, and
// it cannot be checked against guesses by anyone who only sees keys.
import { createHmac, randomBytes } from 'node:crypto'

interface Entry {
  expires: number
  senders?: string[]
}

export class LoginCache {
  private readonly secret = randomBytes(32)
  private readonly entries = new Map<string, Entry>()

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}

  get enabled(): boolean {
    return this.ttlMs > 0
  }

  key(username: string, password: string, client: string): string {
    return createHmac('sha256', this.secret).update(JSON.stringify([username, password, client])).digest('base64')
  }

  /** The remembered login, if still fresh. */
  get(key: string): Entry | undefined {
    const e = this.entries.get(key)
    if (!e) return undefined
    if (e.expires <= Date.now()) {
      this.entries.delete(key)
      return undefined
    }
    return e
  }

  set(key: string, senders: string[] | undefined): void {
    if (!this.enabled) return
    const now = Date.now()
    this.entries.delete(key)
    if (this.entries.size >= this.maxEntries) {
      for (const [k, e] of this.entries) if (e.expires <= now) this.entries.delete(k)
      // Still full: drop the oldest (a Map iterates in insertion order).
      for (const k of this.entries.keys()) {
        if (this.entries.size < this.maxEntries) break
        this.entries.delete(k)
      }
    }
    this.entries.set(key, { expires: now + this.ttlMs, senders })
  }

  clear(): void {
    this.entries.clear()
  }
}
