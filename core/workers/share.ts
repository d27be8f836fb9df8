// What each SMTP worker takes of the relay's settings, and what it tells the primary.
import os from 'node:os'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import { runsInWorkers } from '../hooks/load-plugins.js'
import { EVENT_NAMES } from '../hooks/names.js'

/** Config `workers` as a number: 'auto' is one per core. */
export function workerCount(config: Pick<RelayConfig, 'workers'>): number {
  return config.workers === 'auto' ? Math.max(1, os.availableParallelism()) : config.workers
}

/**
 * A worker's share of the relay's limits: each takes 1/N (rounded up) of `delivery.concurrency`
 * (global and per domain) for the new mail it delivers itself. `smtp.maxClients`,
 * `smtp.maxConnectionsPerClient` and route caps are counted by the primary for all workers
 * (client-counts.ts, DeliveryScheduler.routeCounts): a worker whose half is taken still serves
 * while the relay has room.
 */
export function workerShare(config: RelayConfig, workers: number): RelayConfig {
  const share = (n: number) => Math.max(1, Math.ceil(n / workers))
  const { concurrency } = config.delivery
  return {
    ...config,
    delivery: { ...config.delivery, concurrency: { ...concurrency, global: share(concurrency.global), perDomain: share(concurrency.perDomain) } },
  }
}

/** The events the primary needs from workers: the event log's, and those of plugins no worker runs. */
export function primaryOnlyEvents(bus: Pick<HookBus, 'plugins' | 'observes'>): string[] {
  return EVENT_NAMES.filter((e) => bus.observes(e) || bus.plugins.some((p) => !runsInWorkers(p.plugin) && typeof p.plugin.hooks?.[e] === 'function'))
}

/** Set by the primary at fork (RELAY_FORWARD_EVENTS), and again with each reload. */
export function forwardedEvents(): Set<string> {
  return new Set((process.env.RELAY_FORWARD_EVENTS ?? '').split(',').filter(Boolean))
}
