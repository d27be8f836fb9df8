// The counters behind the limits: rate-limiter-flexible limiters (fixed windows) in memory or in
// Redis, and a gauge of open connections per address (a count that goes up and down, which a
// windowed rate limiter cannot keep exactly).
import crypto from 'node:crypto'
import type { Redis } from 'ioredis'
import { importOptional } from '../../core/index.js'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'

/** What the plugin uses of a limiter (a worker's stands in for the primary's: shared.ts). */
export type Limiter = Pick<RateLimiterAbstract, 'consume' | 'get' | 'block' | 'reward'>

/** What one counter operation came to. */
export type Outcome =
  | { kind: 'ok'; res: RateLimiterRes }
  | { kind: 'over'; res: RateLimiterRes }
  | { kind: 'error'; err: unknown }

/** Adds `points` to `key`; 'over' when that goes past the limit (the points stay counted). */
export async function consume(limiter: Limiter, key: string, points = 1): Promise<Outcome> {
  try {
    return { kind: 'ok', res: await limiter.consume(key, points) }
  } catch (err) {
    if (err instanceof RateLimiterRes) return { kind: 'over', res: err }
    return { kind: 'error', err }
  }
}

/** Reads `key` without counting; a missing key is 0 points. */
export async function peek(limiter: Limiter, key: string): Promise<{ kind: 'ok'; consumed: number; msBeforeNext: number } | { kind: 'error'; err: unknown }> {
  try {
    const res = await limiter.get(key)
    return { kind: 'ok', consumed: res?.consumedPoints ?? 0, msBeforeNext: res?.msBeforeNext ?? 0 }
  } catch (err) {
    return { kind: 'error', err }
  }
}

/** Open connections per key. `acquire` counts one only while under `max`. */
export interface Gauge {
  acquire(key: string, max: number): Promise<{ acquired: boolean; count: number }>
  release(key: string): Promise<void>
}

/**
 * In this process: exact, and a key disappears when its count is back to 0. Counts are kept per
 * owner (the primary's gauge under `workers` counts for each worker instance, shared.ts): when a
 * key is full, owners that `gone` says are dead give their slots back.
 */
export class MemoryGauge implements Gauge {
  private readonly counts = new Map<string, Map<string, number>>()

  constructor(private readonly gone: (owner: string) => boolean = () => false) {}

  async acquire(key: string, max: number, owner = '') {
    let owners = this.counts.get(key)
    if (owners && total(owners) >= max) {
      for (const o of owners.keys()) if (o && this.gone(o)) owners.delete(o)
    }
    const n = owners ? total(owners) : 0
    if (n >= max) return { acquired: false, count: n }
    if (!owners) this.counts.set(key, (owners = new Map()))
    owners.set(owner, (owners.get(owner) ?? 0) + 1)
    return { acquired: true, count: n + 1 }
  }

  /** A release by an owner that holds nothing here (a slot of an earlier generation) changes nothing. */
  async release(key: string, owner = '') {
    const owners = this.counts.get(key)
    const n = (owners?.get(owner) ?? 0) - 1
    if (!owners || n < 0) return
    if (n === 0) owners.delete(owner)
    else owners.set(owner, n)
    if (!owners.size) this.counts.delete(key)
  }
}

const total = (owners: Map<string, number>) => {
  let n = 0
  for (const c of owners.values()) n += c
  return n
}

// Atomic in Redis: each open connection is a member of the address's sorted set, its score the time
// it expires unless its relay renews it (RedisGauge does, three times per `ttl`, while the session
// lasts). A relay that died, or a slot taken by a command that timed out here (Redis ran it late),
// is forgotten after `ttl`, not held for an hour as a counter was.
const ACQUIRE = `
local now = tonumber(ARGV[3])
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local n = redis.call('zcard', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, n} end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
redis.call('pexpire', KEYS[1], ARGV[2])
return {1, n + 1}`

type GaugeCommands = {
  relayRlSlotAcquire(key: string, max: string, ttlMs: string, now: string, token: string): Promise<[number, number]>
}

/** Shared by every relay on the same Redis and key prefix. */
export class RedisGauge implements Gauge {
  private readonly client: Redis & GaugeCommands
  /** The slots this relay holds, per key (their tokens), renewed until released. */
  private readonly held = new Map<string, string[]>()
  private renewer?: NodeJS.Timeout

  constructor(
    client: Redis,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {
    client.defineCommand('relayRlSlotAcquire', { numberOfKeys: 1, lua: ACQUIRE })
    this.client = client as Redis & GaugeCommands
  }

  async acquire(key: string, max: number) {
    const slots = `${this.prefix}:slots:${key}`
    const token = crypto.randomBytes(8).toString('hex')
    let ok: number, n: number
    try {
      ;[ok, n] = await this.client.relayRlSlotAcquire(slots, String(max), String(this.ttlMs), String(Date.now()), token)
    } catch (err) {
      // Sent on the same connection after the script: should Redis run that late, this undoes it.
      this.client.zrem(slots, token).catch(() => undefined)
      throw err
    }
    if (Number(ok) !== 1) return { acquired: false, count: Number(n) }
    const tokens = this.held.get(key) ?? []
    tokens.push(token)
    this.held.set(key, tokens)
    if (!this.renewer) {
      this.renewer = setInterval(() => this.renew(), Math.max(100, Math.floor(this.ttlMs / 3)))
      this.renewer.unref()
    }
    return { acquired: true, count: Number(n) }
  }

  async release(key: string) {
    const tokens = this.held.get(key)
    const token = tokens?.pop()
    if (!token) return
    if (!tokens!.length) this.held.delete(key)
    if (!this.held.size) this.stop()
    // A release that fails leaves a slot nobody renews: it is gone after ttl.
    await this.client.zrem(`${this.prefix}:slots:${key}`, token)
  }

  stop(): void {
    clearInterval(this.renewer)
    this.renewer = undefined
  }

  private renew(): void {
    if (this.client.status !== 'ready' || !this.held.size) return
    const until = Date.now() + this.ttlMs
    const batch = this.client.pipeline()
    for (const [key, tokens] of this.held) {
      const slots = `${this.prefix}:slots:${key}`
      for (const token of tokens) batch.zadd(slots, 'XX', until, token)
      batch.pexpire(slots, this.ttlMs)
    }
    batch.exec().catch(() => undefined)
  }
}

export interface Store {
  /** A fixed-window counter: `points` per `windowMs`. */
  limiter(name: string, points: number, windowMs: number): Limiter
  gauge(name: string): Gauge
  close(): Promise<void>
}

export function memoryStore(prefix: string): Store {
  return {
    limiter: (name, points, windowMs) => new RateLimiterMemory({ keyPrefix: `${prefix}:${name}`, points, duration: Math.ceil(windowMs / 1000) }),
    gauge: () => new MemoryGauge(),
    close: async () => undefined,
  }
}

/**
 * Redis through ioredis. ioredis 6 speaks RESP3 by default (HELLO 3) with RESP2-shaped replies
 * ("legacy" reply mapping), which is what RateLimiterRedis parses: its Lua script returns an
 * array of two integers and MULTI/EXEC results come back as [err, value] pairs either way. It
 * must NOT get `useRedisPackage` (that is for node-redis and changes the call shapes); ioredis is
 * recognised by its `defineCommand`. Commands fail at once while Redis is unreachable (no offline
 * queue) and after `timeoutMs` when it is slow, so a Redis outage costs no waiting.
 */
export async function redisStore(url: string, prefix: string, timeoutMs: number, concurrentTtlMs: number, onError: (err: Error) => void): Promise<Store & { client: Redis; ready: Promise<boolean> }> {
  // Imported here: only `store: { redis }` needs ioredis.
  const { Redis } = await importOptional('ioredis', "rate-limit's store: { redis }", () => import('ioredis'))
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: timeoutMs,
    // A connection silent with commands waiting is dropped and made anew: with the command timeout
    // alone one whose path was lost (a firewall or NAT forgot it) stayed, every command timing out.
    socketTimeout: timeoutMs,
    // What was pending on a dropped connection failed (timed out): not sent again on the next one.
    autoResendUnfulfilledCommands: false,
    connectTimeout: Math.max(timeoutMs, 1000),
    // Keep trying in the background; limits fail open (or tempfail) meanwhile.
    retryStrategy: (times) => Math.min(times * 200, 2000),
  })
  client.on('error', onError)
  const ready = client.connect().then(
    () => true,
    () => false,
  )
  const gauges: RedisGauge[] = []
  return {
    client,
    ready,
    limiter: (name, points, windowMs) =>
      new RateLimiterRedis({
        storeClient: client,
        keyPrefix: `${prefix}:${name}`,
        points,
        duration: Math.ceil(windowMs / 1000),
        rejectIfRedisNotReady: true,
      }),
    gauge: (name) => {
      const gauge = new RedisGauge(client, `${prefix}:${name}`, concurrentTtlMs)
      gauges.push(gauge)
      return gauge
    },
    async close() {
      for (const g of gauges) g.stop()
      const quit = client.quit().then(
        () => undefined,
        () => undefined,
      )
      const timer = new Promise<void>((resolve) => setTimeout(resolve, 1000).unref())
      await Promise.race([quit, timer])
      client.disconnect()
    },
  }
}
