// What each SMTP worker takes of the relay's settings, and what it tells the primary.
import os from 'node:os'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import { hasSessionHooks } from '../hooks/load-plugins.js'
import { EVENT_NAMES } from '../hooks/names.js'

/** Config `workers` as a number: 'auto' is one per core. */
export function workerCount(config: Pick<RelayConfig, 'workers'>): number {
  return config.workers === 'auto' ? Math.max(1, os.availableParallelism()) : config.workers
}

/**
 * A worker's share of `smtp.maxClients`: connections are handed to the workers round-robin, so each
 * takes 1/N (rounded up) and the relay as a whole keeps the configured limit.
 * (`smtp.maxConnectionsPerClient` is counted by the primary for all workers: client-counts.ts.)
 */
export function workerShare(config: RelayConfig, workers: number): RelayConfig {
  return { ...config, smtp: { ...config.smtp, maxClients: Math.max(1, Math.ceil(config.smtp.maxClients / workers)) } }
}

/** The events the primary needs from workers: the event log's, and those of plugins no worker runs. */
export function primaryOnlyEvents(bus: Pick<HookBus, 'plugins' | 'observes'>): string[] {
  return EVENT_NAMES.filter((e) => bus.observes(e) || bus.plugins.some((p) => !hasSessionHooks(p.plugin) && typeof p.plugin.hooks?.[e] === 'function'))
}

/** Set by the primary at fork (RELAY_FORWARD_EVENTS), and again with each reload. */
export function forwardedEvents(): Set<string> {
  return new Set((process.env.RELAY_FORWARD_EVENTS ?? '').split(',').filter(Boolean))
}
