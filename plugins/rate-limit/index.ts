// rate-limit: per-IP connection limits and AUTH lockout, per-user and per-sender-domain message
// limits, on rate-limiter-flexible (in memory, or in Redis shared by several relays).
// Put it FIRST in `plugins` (before auth backends and relay-acl): the first verdict decides.
// Listed with `{}` it already guards: 60 connections per minute per IP and an AUTH lockout (10
// failures in 15 min: 15 min); budgets stay opt-in. Every option and default: README.md.
import { addressKey, clientKey, definePlugin, redactUrl, networkMatcher, parseAddress, tempfail, type PluginContext, type SessionInfo, type Verdict } from '../../core/index.js'
import { optionsSchema, type AuthFailureLimit, type RateLimitOptions } from './options.js'
import { processMemoryStore } from './shared.js'
import { consume, peek, redisStore, type Gauge, type Limiter, type Outcome, type Store } from './store.js'

/** A connection slot of one session: still being taken, held, or its session ended while it was being taken. */
interface Slot {
  key: string
  phase: 'acquiring' | 'held' | 'closed'
}

interface State {
  store: Store
  exempt(ip: string): boolean
  /** The counting key of a client address: IPv6 by its /ipv6Prefix network, IPv4 by address. */
  key(ip: string): string
  connRate?: Limiter
  authFail?: Limiter
  /** AUTH attempts per address: failures, and checks still under way (reserved at the auth hook). */
  authTry?: Limiter
  userMsgs?: Limiter
  userRcpts?: Limiter
  domainMsgs?: Limiter
  gauge?: Gauge
  slots: Map<string, Slot>
  /** Sessions whose last AUTH we refused for a lockout: that failure is not counted again. */
  lockoutRefused: Set<string>
  /** Sessions whose AUTH attempt holds a reserved point of `authTry` (session id → key), until its outcome is known. */
  authPending: Map<string, string>
  storeFailed(err: unknown, limit: string): void
  /** Torn down (reload, shutdown): a hook call still under way passes, as if the plugin were not there. */
  closed?: boolean
}

/** Undefined in 'check' mode (check-config, plugin commands): no hook runs there, so no store is made. */
type Ctx = PluginContext<RateLimitOptions, State | undefined>

const HOUR = 3_600_000
const minutes = (ms: number) => Math.max(1, Math.ceil(ms / 60_000))

/** Logs the refusal with the limit and the key that was hit, and gives the tempfail verdict. */
function refuse(ctx: Ctx, session: SessionInfo, limit: string, key: string, retryMs: number, reply: { code: number; status: string; message: string }): Verdict {
  ctx.log.warn({ limit, key, client: session.remoteAddress, session: session.id, retryInSec: Math.ceil(retryMs / 1000) }, `rate limit hit: ${limit}`)
  return tempfail(reply)
}

/** A store failure: logged (at most every 10 s), then the mail passes unless onStoreError is 'tempfail'. */
function storeFailure(ctx: Ctx, st: State, err: unknown, limit: string, reply: { code: number; status: string }): Verdict | undefined {
  st.storeFailed(err, limit)
  if (ctx.options.onStoreError !== 'tempfail') return undefined
  // A 421 names the host, as every 421 does (RFC 5321 §4.2: `421 <domain> Service not available`).
  return tempfail({ ...reply, message: `${reply.code === 421 ? `${ctx.hostname} ` : ''}Rate limit service unavailable, try again later` })
}

/** This generation's state (`ctx.state`), or undefined once it was torn down. */
function stateOf(ctx: Ctx): State | undefined {
  return ctx.state?.closed ? undefined : ctx.state
}

export default definePlugin<RateLimitOptions, State | undefined>({
  name: 'rate-limit',
  options: optionsSchema,

  async setup({ options, log, mode, processes }) {
    if (mode === 'check') return undefined
    const o = options
    let lastLog = 0
    let suppressed = 0
    const storeFailed = (err: unknown, limit: string) => {
      const now = Date.now()
      if (now - lastLog < 10_000) {
        suppressed++
        return
      }
      lastLog = now
      log.error({ err, limit, suppressed, onStoreError: o.onStoreError }, `rate-limit store failed: ${o.onStoreError === 'tempfail' ? 'refusing for now' : 'allowing (fail open)'}`)
      suppressed = 0
    }
    let store: Store
    // Under `workers`, one memory store in the primary for the whole relay (shared.ts).
    if (o.store === 'memory') store = processMemoryStore(o.keyPrefix, processes)
    else {
      const url = o.store.redis
      const redis = await redisStore(url, o.keyPrefix, o.store.timeout, o.perIp.concurrentTtl, (err) => storeFailed(err, 'redis'))
      if (await redis.ready) log.info({ redis: redactUrl(url), protocol: (redis.client as unknown as { condition?: { protocol?: number } }).condition?.protocol }, 'rate-limit store: Redis connected')
      else log.error({ redis: redactUrl(url) }, `rate-limit store: Redis not reachable at start; retrying in the background, meanwhile ${o.onStoreError === 'tempfail' ? 'refusing' : 'allowing'}`)
      store = redis
    }
    const ip = o.perIp
    const st: State = {
      store,
      exempt: networkMatcher(o.exempt),
      key: (addr) => clientKey(addr, o.ipv6Prefix),
      connRate: ip.connectionsPerMinute ? store.limiter('conn-rate', ip.connectionsPerMinute, 60_000) : undefined,
      authFail: ip.authFailures ? store.limiter('auth-fail', ip.authFailures.max, ip.authFailures.window) : undefined,
      authTry: ip.authFailures ? store.limiter('auth-try', ip.authFailures.max, ip.authFailures.window) : undefined,
      userMsgs: o.perUser.messagesPerHour ? store.limiter('user-msgs', o.perUser.messagesPerHour, HOUR) : undefined,
      userRcpts: o.perUser.recipientsPerHour ? store.limiter('user-rcpts', o.perUser.recipientsPerHour, HOUR) : undefined,
      domainMsgs: o.perSenderDomain.messagesPerHour ? store.limiter('domain-msgs', o.perSenderDomain.messagesPerHour, HOUR) : undefined,
      gauge: ip.concurrent ? store.gauge('concurrent') : undefined,
      slots: new Map(),
      lockoutRefused: new Set(),
      authPending: new Map(),
      storeFailed,
    }
    return st
  },

  async teardown({ state }) {
    if (!state) return
    state.closed = true
    await state.store.close()
  },

  hooks: {
    /** Per-minute connections, then concurrent connections, per client address: 421 4.7.0. */
    async connect(ctx) {
      const { session, options } = ctx
      const st = stateOf(ctx)
      const ip = session.remoteAddress
      if (!st || st.exempt(ip)) return undefined
      // Counted by client key (an IPv6 client's /ipv6Prefix network); replies name the address.
      const key = st.key(ip)
      const reply = { code: 421, status: '4.7.0' }
      if (st.connRate) {
        const r = await consume(st.connRate, key)
        if (r.kind === 'over') return refuse(ctx, session, 'perIp.connectionsPerMinute', key, r.res.msBeforeNext, { ...reply, message: `${ctx.hostname} Error: too many connections per minute from ${ip}` })
        if (r.kind === 'error') {
          const v = storeFailure(ctx, st, r.err, 'perIp.connectionsPerMinute', reply)
          if (v) return v
        }
      }
      if (st.gauge) {
        const max = options.perIp.concurrent!
        const slot: Slot = { key, phase: 'acquiring' }
        st.slots.set(session.id, slot)
        let result: { acquired: boolean; count: number }
        try {
          result = await st.gauge.acquire(key, max)
        } catch (err) {
          st.slots.delete(session.id)
          return storeFailure(ctx, st, err, 'perIp.concurrent', reply)
        }
        if (!result.acquired) {
          st.slots.delete(session.id)
          return refuse(ctx, session, 'perIp.concurrent', key, 0, { ...reply, message: `${ctx.hostname} Error: too many connections from ${ip}` })
        }
        if (slot.phase === 'closed') {
          // The client left while the slot was being taken: sessionClosed has come and gone.
          st.slots.delete(session.id)
          await st.gauge.release(key).catch((err: unknown) => st.storeFailed(err, 'perIp.concurrent'))
          return undefined
        }
        slot.phase = 'held'
      }
      return undefined
    },

    /** Frees the session's connection slot, once, and only if it holds one. */
    async sessionClosed({ session }, ctx) {
      const st = stateOf(ctx)
      if (!st) return
      st.lockoutRefused.delete(session.id)
      await settleAuth(st, session)
      const slot = st.slots.get(session.id)
      if (!slot) return
      if (slot.phase === 'acquiring') {
        slot.phase = 'closed' // the connect hook releases it when it gets the slot
        return
      }
      if (slot.phase !== 'held') return
      st.slots.delete(session.id)
      await st.gauge!.release(slot.key).catch((err: unknown) => st.storeFailed(err, 'perIp.concurrent'))
    },

    /**
     * A locked-out address gets 454 4.7.0 for every AUTH, even with the right password. Otherwise
     * the attempt takes a point of `authTry` before any backend checks the password, so parallel
     * guesses cannot all pass this check before the first failure is counted: at most `max`
     * passwords are checked per window. A success gives its point back at the session's next MAIL
     * or end (no event tells a plugin of a successful AUTH earlier): settleAuth.
     */
    async auth(ctx) {
      const { session, options } = ctx
      const st = stateOf(ctx)
      const ip = session.remoteAddress
      if (!st?.authFail || !st.authTry || st.exempt(ip)) return undefined
      const key = st.key(ip)
      const reply = { code: 454, status: '4.7.0' }
      const r = await peek(st.authFail, key)
      if (r.kind === 'error') return storeFailure(ctx, st, r.err, 'perIp.authFailures', reply)
      if (r.consumed > (options.perIp.authFailures as AuthFailureLimit).max) {
        st.lockoutRefused.add(session.id)
        return refuse(ctx, session, 'perIp.authFailures', key, r.msBeforeNext, { ...reply, message: `Error: too many failed authentications from ${ip}, try again in ${minutes(r.msBeforeNext)} minute(s)` })
      }
      const t = await consume(st.authTry, key)
      if (t.kind === 'error') return storeFailure(ctx, st, t.err, 'perIp.authFailures', reply)
      if (t.kind === 'over') {
        // Refused before any check: the point goes back (only attempts that were checked count).
        await st.authTry.reward(key, 1).catch((err: unknown) => st.storeFailed(err, 'perIp.authFailures'))
        st.lockoutRefused.add(session.id)
        return refuse(ctx, session, 'perIp.authFailures', key, t.res.msBeforeNext, { ...reply, message: `Error: too many authentication attempts from ${ip}, try again later` })
      }
      st.authPending.set(session.id, key)
      return undefined
    },

    /** Counts a failed AUTH; the `max`th failure within `window` locks the address out for `lockout`. */
    async authFailed(event, ctx) {
      const { session } = event
      const st = stateOf(ctx)
      const ip = session.remoteAddress
      if (!st?.authFail || st.exempt(ip)) return
      // A failure keeps its reserved point of authTry; a backend that could not check gives it back.
      const reserved = st.authPending.get(session.id)
      st.authPending.delete(session.id)
      // Our own refusal, or a backend that could not check (tempfail): not a wrong password.
      if (st.lockoutRefused.delete(session.id)) return
      if (event.temporary) {
        if (reserved !== undefined) await st.authTry!.reward(reserved, 1).catch((err: unknown) => st.storeFailed(err, 'perIp.authFailures'))
        return
      }
      const af = ctx.options.perIp.authFailures as AuthFailureLimit
      const key = st.key(ip)
      const r = await consume(st.authFail, key)
      if (r.kind === 'error') return st.storeFailed(r.err, 'perIp.authFailures')
      if (r.res.consumedPoints >= af.max) {
        try {
          // Both counters end with the lockout: then the address has `max` attempts again, as before.
          await Promise.all([st.authFail.block(key, Math.ceil(af.lockout / 1000)), st.authTry!.block(key, Math.ceil(af.lockout / 1000))])
        } catch (err) {
          return st.storeFailed(err, 'perIp.authFailures')
        }
        ctx.log.warn({ limit: 'perIp.authFailures', key, client: ip, session: session.id, failures: r.res.consumedPoints, lockoutSec: Math.ceil(af.lockout / 1000) }, `rate limit hit: perIp.authFailures (address locked out)`)
      }
    },

    /** Early refusal at MAIL when a per-user or per-domain message budget is already spent. */
    async mail(ctx) {
      const { session, sender, options } = ctx
      const st = stateOf(ctx)
      if (!st) return undefined
      await settleAuth(st, session)
      if (st.exempt(session.remoteAddress)) return undefined
      for (const c of checks(st, options, session, sender.address)) {
        const r = await peek(c.limiter, c.key)
        if (r.kind === 'error') {
          const v = storeFailure(ctx, st, r.err, c.limit, { code: 451, status: '4.7.1' })
          if (v) return v
          continue
        }
        if (r.consumed >= c.max) return refuse(ctx, session, c.limit, c.key, r.msBeforeNext, { code: 451, status: '4.7.1', message: c.message })
      }
      return undefined
    },

    /** Early refusal of a recipient past the user's hourly recipient budget: 450 4.7.1. */
    async rcpt(ctx) {
      const { session, envelope, options } = ctx
      const st = stateOf(ctx)
      if (!st?.userRcpts || !session.user || st.exempt(session.remoteAddress)) return undefined
      const key = userKey(session.user)
      const r = await peek(st.userRcpts, key)
      if (r.kind === 'error') return storeFailure(ctx, st, r.err, 'perUser.recipientsPerHour', { code: 450, status: '4.7.1' })
      if (r.consumed + envelope.recipients.length + 1 > options.perUser.recipientsPerHour!) {
        return refuse(ctx, session, 'perUser.recipientsPerHour', key, r.msBeforeNext, { code: 450, status: '4.7.1', message: `Error: too many recipients from ${session.user} this hour, try again later` })
      }
      return undefined
    },

    /**
     * The authoritative count, just before the message is written: messages and recipients per
     * user, messages per sender domain. A refused message counts for nothing: 451 4.7.1.
     */
    async queue(ctx) {
      const { session, envelope, options } = ctx
      const st = stateOf(ctx)
      if (!st || st.exempt(session.remoteAddress)) return undefined
      const list = checks(st, options, session, envelope.sender.address, envelope.recipients.length)
      if (!list.length) return undefined
      const results: Outcome[] = await Promise.all(list.map((c) => consume(c.limiter, c.key, c.points)))
      const over = list.findIndex((_, i) => results[i]!.kind === 'over')
      if (over >= 0) {
        // Give back what this message took, so only accepted mail uses the budgets.
        await Promise.all(list.map((c, i) => (results[i]!.kind === 'error' ? undefined : c.limiter.reward(c.key, c.points).catch(() => undefined))))
        const c = list[over]!
        return refuse(ctx, session, c.limit, c.key, (results[over] as { res: { msBeforeNext: number } }).res.msBeforeNext, { code: 451, status: '4.7.1', message: c.message })
      }
      const failed = list.findIndex((_, i) => results[i]!.kind === 'error')
      if (failed >= 0) return storeFailure(ctx, st, (results[failed] as { err: unknown }).err, list[failed]!.limit, { code: 451, status: '4.7.1' })
      return undefined
    },
  },
})

/**
 * The outcome of a reserved AUTH attempt that no authFailed settled: it succeeded when the session
 * has a user (seen at its next MAIL or its end), and the point goes back. Without a user (the client
 * left while its password was checked) the point stays: the attempt was made.
 */
async function settleAuth(st: State, session: SessionInfo): Promise<void> {
  const key = st.authPending.get(session.id)
  if (key === undefined) return
  st.authPending.delete(session.id)
  if (session.user) await st.authTry!.reward(key, 1).catch((err: unknown) => st.storeFailed(err, 'perIp.authFailures'))
}

interface Check {
  limit: string
  limiter: Limiter
  key: string
  max: number
  points: number
  message: string
}

/** One budget per user however the user name is spelt: `Dave@Bücher.example` is `dave@xn--bcher-kva.example`. */
const userKey = (user: string): string => addressKey(user) ?? user.toLowerCase()

/** The message budgets that apply to this session and sender. */
function checks(st: State, o: RateLimitOptions, session: SessionInfo, sender: string, recipients = 0): Check[] {
  const list: Check[] = []
  const user = session.user === undefined ? undefined : userKey(session.user)
  if (user && st.userMsgs) {
    list.push({ limit: 'perUser.messagesPerHour', limiter: st.userMsgs, key: user, max: o.perUser.messagesPerHour!, points: 1, message: `Error: too many messages from ${session.user} this hour, try again later` })
  }
  if (user && st.userRcpts) {
    // At MAIL (recipients = 0) this asks whether any recipient is left this hour.
    list.push({ limit: 'perUser.recipientsPerHour', limiter: st.userRcpts, key: user, max: o.perUser.recipientsPerHour!, points: recipients, message: `Error: too many recipients from ${session.user} this hour, try again later` })
  }
  const domain = sender ? parseAddress(sender)?.domain : undefined
  if (domain && st.domainMsgs && (user || !o.perSenderDomain.authenticatedOnly)) {
    list.push({ limit: 'perSenderDomain.messagesPerHour', limiter: st.domainMsgs, key: domain, max: o.perSenderDomain.messagesPerHour!, points: 1, message: `Error: too many messages from sender domain ${domain} this hour, try again later` })
  }
  return list.filter((c) => c.points > 0 || recipients === 0)
}
