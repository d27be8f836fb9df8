// The operator API a running relay hands to operations plugins (ctx.relay): queue verbs through
// QueueControl (so the admin API, the CLI and plugins do the same thing), counters and control.
import type { Logger } from 'pino'
import type { RelayConfig } from './config/schema.js'
import type { HookBus } from './hooks/bus.js'
import type { QueueOperations, Readiness, RelayOperations, ReloadResult, SessionCounts } from './hooks/operator.js'
import type { ListenerRole } from './hooks/types.js'
import { DeliveryDsns } from './delivery/dsn.js'
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
  /** Queues a message as SMTP submission would (core/smtp/inject.ts); rejects while the relay is not up. */
  inject: RelayOperations['inject']
  tlsCertificates: () => { file: string; subject: string; notAfter: number }[]
  deliveryStatus: () => { openConnections: number; pausedDestinations: number }
}

type PluginGauge = ReturnType<RelayOperations['gauges']>[number]
/** A metric name part: what Prometheus allows after the `relay_plugin_` prefix the admin plugin adds. */
const GAUGE_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/

/**
 * The queue verbs on a queue: for a running relay (with `wake` and the bus), and for CLI verbs on a
 * stopped data directory or a shared PostgreSQL queue (without them).
 */
export function queueOperations(env: Pick<OperationsEnv, 'queue' | 'log' | 'config'> & Partial<Pick<OperationsEnv, 'wake' | 'hooks'>> & { generated?: () => Promise<HookBus | undefined> }): QueueOperations {
  const { queue } = env
  // An operator's bounce sends the message's one DSN as delivery does (not limited per sender),
  // through the plugins' generated hook (a CLI verb's own set of plugins: `generated`).
  const dsns = new DeliveryDsns(env.config, queue, env.log, undefined, env.generated ?? (() => env.hooks?.()))
  const sendOwedDsn = (id: string) => dsns.flush(id, undefined, true)
  const control = () => new QueueControl({ queue, config: env.config(), log: env.log, wake: env.wake, hooks: env.hooks?.(), sendOwedDsn })
  // Frozen, as every plugin gets the same object: none can replace a verb under the others.
  return Object.freeze({
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
    suppressions: Object.freeze({
      list: () => queue.listSuppressed(),
      add: (entries) => queue.suppress(entries),
      remove: (address) => queue.unsuppress(address),
    }),
    bulk: (action, filter, opts) => control().bulk(action, filter, opts),
    raw: (id) => control().raw(id),
    recentAttempts: (opts) => queue.recentAttempts(opts),
  } satisfies QueueOperations)
}

export function relayOperations(env: OperationsEnv): RelayOperations {
  // Plugins' figures, by name; a plugin set up again at a reload registers its name again (replacing it).
  const gauges = new Map<string, PluginGauge>()
  return Object.freeze({
    queue: queueOperations(env),
    reload: env.reload,
    reloadTls: env.reloadTls,
    readiness: env.readiness,
    listeners: env.listeners,
    sessionCounts: env.sessionCounts,
    eventLoopDelay: env.eventLoopDelay,
    warningThresholds: () => configuredThresholds(env.config()),
    inject: env.inject,
    tlsCertificates: env.tlsCertificates,
    deliveryStatus: env.deliveryStatus,
    registerGauge: (name, help, read) => {
      if (!GAUGE_NAME.test(name)) throw new Error(`registerGauge: '${name}' is not a metric name (letters, digits, _; not starting with a digit)`)
      gauges.set(name, { name, help, read })
    },
    gauges: () => [...gauges.values()],
  } satisfies RelayOperations)
}
