// The memory store under config `workers`: one set of counters for the whole relay. The primary's
// instance holds the real limiters and gauges and answers calls (ctx.processes); a worker's
// instance gets stand-ins that ask the primary, so N workers do not each allow the full limit.
import fs from 'node:fs'
import { RateLimiterRes } from 'rate-limiter-flexible'
import type { SetupContext } from '../../core/index.js'
import { MemoryGauge, memoryStore, type Gauge, type Limiter, type Store } from './store.js'

type Processes = SetupContext<unknown>['processes']

/** A RateLimiterRes as plain data (what crosses between processes). */
interface ResData {
  remainingPoints: number
  msBeforeNext: number
  consumedPoints: number
  isFirstInDuration: boolean
}

/** A limiter call's answer: 'over' is the rejection with a RateLimiterRes (the limit was hit). */
type Reply = { ok: ResData | null } | { over: ResData }

type LimiterOp = 'consume' | 'get' | 'block' | 'reward'

const toData = (r: RateLimiterRes): ResData => ({ remainingPoints: r.remainingPoints, msBeforeNext: r.msBeforeNext, consumedPoints: r.consumedPoints, isFirstInDuration: r.isFirstInDuration })
const toRes = (d: ResData) => new RateLimiterRes(d.remainingPoints, d.msBeforeNext, d.consumedPoints, d.isFirstInDuration)

/** The memory store for this process's role: the real one ('single', 'primary') or the primary's, by call ('worker'). */
export function processMemoryStore(prefix: string, processes: Processes): Store {
  return processes.role === 'worker' ? remoteStore(processes) : primaryStore(prefix, processes)
}

/** Real counters, answering the workers' calls by limiter/gauge name. */
function primaryStore(prefix: string, processes: Processes): Store {
  const local = memoryStore(prefix)
  const limiters = new Map<string, Limiter>()
  const gauges = new Map<string, MemoryGauge>()
  const find = <T>(map: Map<string, T>, name: string): T => {
    const found = map.get(name)
    if (!found) throw new Error(`rate-limit: no counter '${name}' in the primary (its configuration differs)`)
    return found
  }
  processes.handle('limiter', async (name: string, op: LimiterOp, key: string, arg?: number): Promise<Reply> => {
    const limiter = find(limiters, name)
    try {
      const res = op === 'get' ? await limiter.get(key) : await limiter[op](key, arg as number)
      return { ok: res ? toData(res) : null }
    } catch (err) {
      if (err instanceof RateLimiterRes) return { over: toData(err) }
      throw err
    }
  })
  processes.handle('gauge', (name: string, op: 'acquire' | 'release', key: string, owner: string, max?: number) =>
    op === 'acquire' ? find(gauges, name).acquire(key, max!, owner) : find(gauges, name).release(key, owner),
  )
  return {
    limiter(name, points, windowMs) {
      const limiter = local.limiter(name, points, windowMs)
      limiters.set(name, limiter)
      return limiter
    },
    gauge(name) {
      const gauge = new MemoryGauge(ownerGone)
      gauges.set(name, gauge)
      return gauge
    },
    close: local.close,
  }
}

/**
 * Stand-ins in a worker. A failed call (the primary gone or restarting) rejects with an Error, so
 * store.ts's consume/peek see a store error (onStoreError), never 'over'.
 */
function remoteStore(processes: Processes): Store {
  // Owner of this instance's connection slots: the primary gives them back once this process is
  // dead, and ignores releases from an earlier generation (reload) of this worker's plugin.
  const owner = `${process.pid}:${Math.random().toString(36).slice(2, 10)}`
  const limiterCall = async (name: string, op: LimiterOp, key: string, arg?: number) => {
    const reply = await processes.call<Reply>('limiter', name, op, key, arg)
    if ('over' in reply) throw toRes(reply.over)
    return reply.ok ? toRes(reply.ok) : null
  }
  return {
    limiter: (name) => ({
      consume: async (key, points) => (await limiterCall(name, 'consume', String(key), points))!,
      get: (key) => limiterCall(name, 'get', String(key)),
      block: async (key, secDuration) => (await limiterCall(name, 'block', String(key), secDuration))!,
      reward: async (key, points) => (await limiterCall(name, 'reward', String(key), points))!,
    }),
    gauge: (name): Gauge => ({
      acquire: (key, max) => processes.call('gauge', name, 'acquire', key, owner, max),
      release: async (key) => void (await processes.call('gauge', name, 'release', key, owner)),
    }),
    close: async () => undefined,
  }
}

/** Whether the worker process that owns `owner`'s slots has exited (signal 0 only checks it exists). */
function ownerGone(owner: string): boolean {
  const pid = Number(owner.split(':')[0])
  if (!pid || pid === process.pid) return false
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
  // Exited but not yet reaped (a zombie) still takes signal 0; Linux shows its state in /proc.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z'
  } catch {
    return false
  }
}
