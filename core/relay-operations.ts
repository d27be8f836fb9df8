// The operator API a running relay hands to operations plugins (ctx.relay): queue verbs through
// QueueControl (so the admin API, the CLI and plugins do the same thing), counters and control.
import type { Logger } from 'pino'
import type { RelayConfig } from './config/schema.js'
import type { HookBus } from './hooks/bus.js'
import type { QueueOperations, Readiness, RelayOperations, ReloadResult, SessionCounts } from './hooks/operator.js'
import type { ListenerRole } from './hooks/types.js'
import { QueueControl } from './queue/control.js'
import { configuredThresholds } from './queue/figures.js'
import type { Queue } from './queue/types.js'

export interface OperationsEnv {
  queue: Queue
  log: Logger
  /** The bus, once it is up (operator bounces emit `bounced`). */
  hooks: () => HookBus | undefined
  /** The config of the running generation (it changes at each reload). */
  config: () => RelayConfig
  /** Work became due now: the scheduler scans. */
  wake: () => void
  reload: () => Promise<ReloadResult>
  reloadTls: () => boolean
  readiness: () => Readiness
  listeners: () => readonly { host: string; port: number; role: ListenerRole }[]
  sessionCounts: () => SessionCounts
  eventLoopDelay: () => { p50: number; p99: number; max: number }
}

/**
 * The queue verbs on a queue: for a running relay (with `wake` and the bus), and for CLI verbs on a
 * stopped data directory or a shared PostgreSQL queue (without them).
 */
export function queueOperations(env: Pick<OperationsEnv, 'queue' | 'log' | 'config'> & Partial<Pick<OperationsEnv, 'wake' | 'hooks'>>): QueueOperations {
  const { queue } = env
  const control = () => new QueueControl({ queue, config: env.config(), log: env.log, wake: env.wake, hooks: env.hooks?.() })
  return {
    list: (filter) => control().list(filter),
    show: (id) => control().show(id),
    hold: (id) => control().hold(id),
    release: (id) => control().release(id),
    remove: (id) => control().remove(id),
    flush: (filter) => control().flush(filter),
    bounce: (id) => control().bounce(id),
    summary: () => control().summary(),
    stats: (since) => queue.stats(since),
    recordComplaint: async (complaint) => {
      const r = await queue.recordComplaint(complaint)
      // Observers (the dashboard's recent events) and plugins hear of it; they never fail the caller.
      const destDomain = complaint.originalRcptTo?.split('@').pop()?.toLowerCase()
      void env.hooks?.()?.emit('complaint', { matched: r.matched, queueId: r.queueId, sender: r.sender, senderDomain: r.senderDomain, destDomain, feedbackType: complaint.feedbackType, messageId: complaint.messageId, userAgent: complaint.userAgent })
      return r
    },
    suppressions: {
      list: () => queue.listSuppressed(),
      add: (entries) => queue.suppress(entries),
      remove: (address) => queue.unsuppress(address),
    },
    // TODO(issue 14 §4, queue parity): bulk, raw
    bulk: () => Promise.reject(new Error('not implemented yet: bulk')),
    raw: () => Promise.reject(new Error('not implemented yet: raw')),
    // TODO(issue 14 §5, dashboard): recentAttempts
    recentAttempts: () => Promise.reject(new Error('not implemented yet: recentAttempts')),
  }
}

export function relayOperations(env: OperationsEnv): RelayOperations {
  return {
    queue: queueOperations(env),
    reload: env.reload,
    reloadTls: env.reloadTls,
    readiness: env.readiness,
    listeners: env.listeners,
    sessionCounts: env.sessionCounts,
    eventLoopDelay: env.eventLoopDelay,
    warningThresholds: () => configuredThresholds(env.config()),
    // TODO(issue 14 §4): inject — one function shared with `relay sendmail`
    inject: () => Promise.reject(new Error('not implemented yet: inject')),
    // TODO(issue 14 §6, metrics): tlsCertificates, deliveryStatus, registerGauge, gauges
    tlsCertificates: () => [],
    deliveryStatus: () => ({ openConnections: 0, pausedDestinations: 0 }),
    registerGauge: () => undefined,
    gauges: () => [],
  }
}
