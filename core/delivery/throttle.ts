// Per-destination throttles: limits per destination domain and per MX host (concurrent
// connections, messages per minute, messages per connection), automatic backoff when a destination
// answers 421 / 4.7.x "slow down" (fewer connections, a pause, then recovery), and, with Redis, the
// counters shared by every node. One concern: deciding whether work for a destination may start now.
// A named route's sending caps ('r:<name>', per second too) use the same counters (route-throttle.ts).
import crypto from 'node:crypto'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { Outcome } from './smtp-session.js'
import { slowsDestination } from './classify.js'
import { MINUTE_MS, SECOND_MS } from './throttle-scripts.js'
import { SharedCounters } from './shared-counters.js'
import { windowRetryAt } from './throttle-window.js'

export interface Limits {
  concurrency?: number
  perMinute?: number
  /** Messages started per sliding second (route sending caps). */
  perSecond?: number
  messagesPerConnection?: number
}

type ThrottleConfig = RelayConfig['delivery']['throttle']

/** Backoff and counters of one destination ('d:<domain>' or 'h:<address>:<port>'), in this process. */
interface State {
  inFlight: number
  /** Start times of the last minute (sliding window). */
  starts: number[]
  pauseUntil: number
  /** Current pause length (0: not backing off). */
  pauseMs: number
  /** Reduced concurrency after a backoff (undefined: the configured limit). */
  reduced?: number
  successes: number
}

/** A granted slot; give it back with `release`. */
export interface Slot {
  key: string
  token: string
  redis: boolean
  /** Granted by the primary process's throttle (route caps in an SMTP worker: `remoteRoutes`). */
  remote?: boolean
}

/** Route caps counted in another process (the primary, for SMTP worker processes). */
export interface RemoteRouteCounts {
  admit(name: string, limits: Limits): Promise<Admission>
  release(slot: Slot): void
}

/** Local slots need no unique token (only a shared slot is named in Redis): no random draw per slot. */
let localTokens = 0

export type Admission = { ok: true; slot: Slot } | { ok: false; retryAt: number }

const WINDOW_MS = MINUTE_MS

function matchRule<T>(rules: Record<string, T>, name: string): T | undefined {
  const n = name.toLowerCase().replace(/\.$/, '')
  if (rules[n]) return rules[n]
  // '*.example.net': any subdomain; the longest matching pattern wins.
  let best: { len: number; rule: T } | undefined
  for (const [pattern, rule] of Object.entries(rules)) {
    if (!pattern.startsWith('*.')) continue
    const suffix = pattern.slice(1).toLowerCase()
    if (n.endsWith(suffix) && (!best || suffix.length > best.len)) best = { len: suffix.length, rule }
  }
  return best?.rule
}

export class Throttle {
  private readonly states = new Map<string, State>()
  /** With delivery.throttle.redis: the counters every node shares. */
  private readonly counters?: SharedCounters

  constructor(
    private readonly config: ThrottleConfig,
    /** delivery.concurrency.perDomain: the ceiling of every domain's concurrency. */
    private readonly perDomain: number,
    log: Logger,
    /** How long a shared slot lives unless its node renews it (a dead node's slots are free after it). */
    slotTtl?: number,
  ) {
    if (config.redis) this.counters = new SharedCounters(config.redis, config.keyPrefix, log, slotTtl)
  }

  /** Anything beyond the built-in perDomain limit applies (else the scheduler's fast path is fine). */
  get active(): boolean {
    return Boolean(this.config.redis) || Object.keys(this.config.domains).length > 0 || Object.values(this.config.default).some((v) => v !== undefined)
  }

  get shared(): boolean {
    return Boolean(this.config.redis)
  }

  domainLimits(domain: string): Limits {
    return { ...this.config.default, ...matchRule(this.config.domains, domain) }
  }

  hostLimits(name: string, address: string): Limits {
    return { ...matchRule(this.config.hosts, address), ...matchRule(this.config.hosts, name) }
  }

  /** A host rule limits the connections to this host (its name or its address). */
  hostCapped(name: string, address: string): boolean {
    return this.hostLimits(name, address).concurrency !== undefined
  }

  /** Messages per connection for a host of a domain: host rule, else domain rule, else default. */
  messagesPerConnection(domain: string, name: string, address: string): number | undefined {
    return this.hostLimits(name, address).messagesPerConnection ?? this.domainLimits(domain).messagesPerConnection
  }

  /** How long after its last pause a destination's backoff (pause length, reduced concurrency) is remembered. */
  private get forgetAfter(): number {
    return Math.max(this.config.backoff.max * 4, 60_000)
  }

  /** Destinations (domains, hosts, routes) this process has state for. */
  get size(): number {
    return this.states.size
  }

  /** Domains this process has throttle state for. */
  domains(now = Date.now()): string[] {
    const out: string[] = []
    for (const [k, s] of this.states) {
      // Nothing to remember: forget it (the map stays as small as the set of busy destinations). A
      // backoff is remembered as long as Redis keeps its shared copy (forgetAfter) after its pause.
      const quiet = (s.reduced === undefined && !s.pauseMs) || s.pauseUntil <= now - this.forgetAfter
      if (!s.inFlight && quiet && s.pauseUntil <= now && !this.recent(s, now)) {
        this.states.delete(k)
        continue
      }
      if (k.startsWith('d:')) out.push(k.slice(2))
    }
    return out
  }

  static domainKey(domain: string): string {
    return `d:${domain.toLowerCase()}`
  }

  static hostKey(address: string, port: number): string {
    return `h:${address}:${port}`
  }

  static routeKey(name: string): string {
    return `r:${name}`
  }

  private state(key: string): State {
    let s = this.states.get(key)
    if (!s) {
      s = { inFlight: 0, starts: [], pauseUntil: 0, pauseMs: 0, successes: 0 }
      this.states.set(key, s)
    }
    return s
  }

  /** The concurrency a destination has now: the configured one, lowered after a backoff. */
  private concurrency(key: string, limits: Limits, ceiling: number): number {
    const configured = Math.min(limits.concurrency ?? ceiling, ceiling)
    const reduced = this.states.get(key)?.reduced
    return reduced !== undefined ? Math.min(reduced, configured) : configured
  }

  /**
   * For the queue claim: how many more jobs this domain may start now in this process (0 while it
   * is paused or its minute is used up), or undefined when nothing but `perDomain` limits it.
   */
  room(domain: string, now = Date.now()): number | undefined {
    const key = Throttle.domainKey(domain)
    const s = this.states.get(key)
    const limits = this.domainLimits(domain)
    if (!s && limits.concurrency === undefined && limits.perMinute === undefined) return undefined
    if (s && s.pauseUntil > now) return 0
    let room = this.concurrency(key, limits, this.perDomain) - (s?.inFlight ?? 0)
    if (limits.perMinute !== undefined) room = Math.min(room, limits.perMinute - this.recent(s, now))
    return Math.max(0, room)
  }

  private recent(s: State | undefined, now: number): number {
    if (!s) return 0
    while (s.starts.length && s.starts[0]! <= now - WINDOW_MS) s.starts.shift()
    return s.starts.length
  }

  /** Ask for a slot for one job to a domain. */
  admitDomain(domain: string): Promise<Admission> {
    return this.admit(Throttle.domainKey(domain), this.domainLimits(domain), this.perDomain)
  }

  /** Ask for a slot for one transaction with one MX host. */
  admitHost(name: string, address: string, port: number): Promise<Admission> {
    return this.admit(Throttle.hostKey(address, port), this.hostLimits(name, address), Number.MAX_SAFE_INTEGER)
  }

  /** Set in an SMTP worker process without Redis: route caps are the whole relay's, counted by the primary. */
  remoteRoutes: RemoteRouteCounts | undefined

  /** Ask for a slot for one attempt through a named route (its caps apply to the route as a whole). */
  async admitRoute(name: string, limits: Limits): Promise<Admission> {
    if (this.remoteRoutes && !this.shared) {
      const a = await this.remoteRoutes.admit(name, limits)
      return a.ok ? { ok: true, slot: { ...a.slot, remote: true } } : a
    }
    return this.admit(Throttle.routeKey(name), limits, Number.MAX_SAFE_INTEGER)
  }

  /** The in-memory decision alone (no Redis), granted at once when it says yes. */
  admitLocal(domain: string, now = Date.now()): Admission {
    const key = Throttle.domainKey(domain)
    return this.localAdmit(key, this.domainLimits(domain), this.perDomain, now)
  }

  private localAdmit(key: string, limits: Limits, ceiling: number, now: number): Admission {
    const s = this.state(key)
    if (s.pauseUntil > now) return { ok: false, retryAt: s.pauseUntil }
    if (s.inFlight >= this.concurrency(key, limits, ceiling)) return { ok: false, retryAt: 0 }
    if (limits.perMinute !== undefined && this.recent(s, now) >= limits.perMinute) return { ok: false, retryAt: s.starts[0]! + WINDOW_MS }
    const second = limits.perSecond === undefined ? 0 : windowRetryAt(s.starts, now, SECOND_MS, limits.perSecond)
    if (second) return { ok: false, retryAt: second }
    return this.grant(key, s, now, false)
  }

  private grant(key: string, s: State, now: number, redis: boolean): Admission {
    s.inFlight++
    s.starts.push(now)
    return { ok: true, slot: { key, token: String(++localTokens), redis } }
  }

  private async admit(key: string, limits: Limits, ceiling: number): Promise<Admission> {
    const now = Date.now()
    if (!this.counters?.usable(now)) return this.localAdmit(key, limits, ceiling, now)
    // Local pause first (no round trip); the shared counters decide the rest.
    const s = this.state(key)
    if (s.pauseUntil > now) return { ok: false, retryAt: s.pauseUntil }
    const token = crypto.randomBytes(8).toString('hex')
    const configured = Math.min(limits.concurrency ?? ceiling, ceiling)
    const concurrency = configured >= Number.MAX_SAFE_INTEGER ? 0 : configured
    try {
      const [ok, retryAt] = await this.counters.acquire(this.counters.keys(key), now, token, concurrency, limits.perMinute ?? 0, limits.perSecond ?? 0)
      if (!ok) {
        if (retryAt > now) s.pauseUntil = Math.max(s.pauseUntil, retryAt)
        return { ok: false, retryAt }
      }
      s.inFlight++
      s.starts.push(now)
      return { ok: true, slot: { key, token, redis: true } }
    } catch {
      return this.localAdmit(key, limits, ceiling, now)
    }
  }

  release(slot: Slot): void {
    if (slot.remote) return this.remoteRoutes?.release({ ...slot, remote: false })
    const s = this.states.get(slot.key)
    if (s) s.inFlight = Math.max(0, s.inFlight - 1)
    if (slot.redis) this.counters?.release(this.counters.keys(slot.key).conc, slot.token)
  }

  /**
   * The destination said "slow down" (421, 4.7.x throttled): halve its concurrency (at least 1) and
   * pause it, base doubling to max while it keeps saying so. A pause running already is kept.
   */
  backoff(key: string, limits: Limits, ceiling: number, now = Date.now()): { pauseMs: number; concurrency: number } | undefined {
    const s = this.state(key)
    if (s.pauseUntil > now) return undefined
    const { base, max } = this.config.backoff
    const current = this.concurrency(key, limits, ceiling)
    // Halve what it had in use (or its limit, if lower), not a ceiling it never reached.
    const used = Math.max(1, Math.min(current, s.inFlight))
    s.reduced = Math.max(1, Math.floor(used / 2))
    s.pauseMs = s.pauseMs ? Math.min(s.pauseMs * 2, max) : base
    s.pauseUntil = now + s.pauseMs
    s.successes = 0
    this.counters?.backoff(this.counters.keys(key), s.pauseMs, s.reduced, this.forgetAfter, s.pauseUntil)
    return { pauseMs: s.pauseMs, concurrency: s.reduced }
  }

  /** A delivery went through: after `recoverAfter` of them, one more connection; the next backoff starts at base. */
  success(key: string, limits: Limits, ceiling: number): void {
    const s = this.states.get(key)
    if (!s) return
    s.pauseMs = 0
    if (++s.successes < this.config.backoff.recoverAfter) return
    s.successes = 0
    const configured = Math.min(limits.concurrency ?? ceiling, ceiling)
    if (s.reduced !== undefined) s.reduced = s.reduced + 1 >= configured ? undefined : s.reduced + 1
    if (configured < Number.MAX_SAFE_INTEGER) this.counters?.recover(this.counters.keys(key), configured)
  }

  backoffDomain(domain: string, now = Date.now()) {
    return this.backoff(Throttle.domainKey(domain), this.domainLimits(domain), this.perDomain, now)
  }

  successDomain(domain: string): void {
    this.success(Throttle.domainKey(domain), this.domainLimits(domain), this.perDomain)
  }

  backoffHost(name: string, address: string, port: number) {
    return this.backoff(Throttle.hostKey(address, port), this.hostLimits(name, address), Number.MAX_SAFE_INTEGER)
  }

  successHost(name: string, address: string, port: number): void {
    this.success(Throttle.hostKey(address, port), this.hostLimits(name, address), Number.MAX_SAFE_INTEGER)
  }

  /** Destination domains paused now after a "slow down" reply, for metrics (their MX hosts' own pauses aside). */
  pausedDomains(now = Date.now()): number {
    let n = 0
    for (const [k, s] of this.states) if (k.startsWith('d:') && s.pauseUntil > now) n++
    return n
  }

  /** Paused until (epoch ms), for logs; 0 when not paused. */
  pausedUntil(key: string, now = Date.now()): number {
    const until = this.states.get(key)?.pauseUntil ?? 0
    return until > now ? until : 0
  }

  close(): void {
    this.counters?.close()
  }
}

/**
 * One transaction with one MX host under that host's throttle: waits (up to `waitMs`) for a slot,
 * runs it, gives the slot back, and backs the host off when it said "slow down" (421, 4.7.x).
 * No slot in time: the host counts as unreachable for this attempt (the next host is tried, or the
 * attempt is deferred, which counts as an attempt).
 */
export async function throughHost(
  throttle: Throttle | undefined,
  host: { name: string; address: string },
  port: number,
  waitMs: number,
  run: () => Promise<Outcome>,
): Promise<Outcome> {
  if (!throttle) return run()
  const deadline = Date.now() + waitMs
  let admission = await throttle.admitHost(host.name, host.address, port)
  while (!admission.ok) {
    const now = Date.now()
    if (now >= deadline) return { kind: 'unreachable', response: `local throttle: no slot for this host within ${waitMs} ms (limit or backoff pause)`, remoteHost: `${host.name}[${host.address}]:${port}`, notTried: true }
    const delay = admission.retryAt > now ? admission.retryAt - now : 100
    await new Promise((resolve) => setTimeout(resolve, Math.max(20, Math.min(delay, 250, deadline - now))))
    admission = await throttle.admitHost(host.name, host.address, port)
  }
  let outcome: Outcome
  try {
    outcome = await run()
  } finally {
    throttle.release(admission.slot)
  }
  if (saysSlowDown(outcome)) throttle.backoffHost(host.name, host.address, port)
  else if (outcome.kind === 'done' && [...outcome.replies.values()].some((r) => r.ok)) throttle.successHost(host.name, host.address, port)
  return outcome
}

function saysSlowDown(o: Outcome): boolean {
  const slow = (code: number, response: string, stage?: string) => code >= 400 && code < 500 && slowsDestination(`${code} ${response}`, undefined, stage)
  if (o.kind === 'unreachable') return o.code !== undefined && slow(o.code, o.response)
  return [...o.replies.values()].some((r) => slow(r.code, r.response, r.stage))
}
