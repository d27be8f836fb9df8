// The config generation an SMTP worker runs: the primary's. A worker loads the config file itself
// (it cannot be handed a config: plugins are code); a replacement started after the file was
// edited but not reloaded ran the edit (other plugin options, a listener the running config never
// had), or, mid-edit, failed over and over. So the primary hands each new worker what it last
// loaded (a fingerprint) and the values it keeps until a restart; the worker refuses a file that
// is not what the primary loaded, and takes the primary's restart-only values.
import crypto from 'node:crypto'
import type { RelayConfig } from '../config/schema.js'
import { ConfigError } from '../config/load.js'
import { RESTART_ONLY } from '../config/reload-plan.js'
import { freezeConfig } from '../config/freeze.js'
import { plain } from './ipc.js'

const ENV = 'RELAY_WORKER_GENERATION'

interface Generation {
  /** What the primary read from the file at its last start or reload. */
  fingerprint: string
  /** The running value of each restart-only setting (and tls), which a reload keeps until a restart. */
  restartOnly: Record<string, unknown>
}

/** What two processes compare to know they read the same config. */
export const configFingerprint = (config: RelayConfig): string => crypto.createHash('sha256').update(JSON.stringify(plain(config)) ?? '').digest('hex')

const at = (value: unknown, path: readonly string[]): unknown => path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), value)

/** The environment of a new worker: the config as last loaded, and the running restart-only values. */
export function generationEnv(loaded: RelayConfig, running: RelayConfig): Record<string, string> {
  // Only the settings a reload kept at their running value: usually none.
  const restartOnly: Record<string, unknown> = {}
  for (const key of [...RESTART_ONLY, 'tls']) {
    const path = key.split('.')
    const value = JSON.stringify(plain(at(running, path)) ?? null)
    if (value !== JSON.stringify(plain(at(loaded, path)) ?? null)) restartOnly[key] = JSON.parse(value) as unknown
  }
  return { [ENV]: JSON.stringify({ fingerprint: configFingerprint(loaded), restartOnly } satisfies Generation) }
}

/**
 * In a worker: the config it loaded, as the primary runs it. Throws a ConfigError when the file is
 * no longer what the primary loaded (edited since the last reload).
 */
export function asPrimaryRuns(config: RelayConfig): RelayConfig {
  const raw = process.env[ENV]
  if (!raw) return config
  const generation = JSON.parse(raw) as Generation
  if (configFingerprint(config) !== generation.fingerprint) {
    throw new ConfigError(config.configFile, [{ path: '(config file)', message: 'the file changed since the relay last loaded it, so this SMTP worker would run another config than the rest of the relay; `relay reload` applies it to every process (or restore the file)' }])
  }
  let out = { ...config } as Record<string, unknown>
  for (const [key, value] of Object.entries(generation.restartOnly)) out = withValue(out, key.split('.'), value === null ? undefined : value)
  return freezeConfig(out as unknown as RelayConfig)
}

function withValue(obj: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  const [head, ...rest] = path as [string, ...string[]]
  if (!rest.length) return { ...obj, [head]: value }
  const inner = obj[head]
  if (!inner || typeof inner !== 'object') return obj // a section this config does not have
  return { ...obj, [head]: withValue(inner as Record<string, unknown>, rest, value) }
}
