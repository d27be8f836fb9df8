// What a hot reload does with a newly read config, as a pure function: which settings changed,
// which of those only a restart can apply, and the config the relay runs with from now on.
import { configSchema, type RelayConfig } from './schema.js'
import { restartOnlyPaths } from './restart-only.js'
import { freezeConfig } from './freeze.js'

/** Settings read once at start, marked `.register(restartOnly)` in the schema ('listen', 'smtp.maxClients', ...). */
export const RESTART_ONLY: readonly string[] = Object.freeze(restartOnlyPaths(configSchema))

export interface ReloadPlan {
  /** The config in force after the reload: the new one, with the running value of every restart-only setting that changed. Frozen. */
  effective: RelayConfig
  /** Settings that differ between the running and the new config (`smtp.maxRecipients`, `plugins`, ...), sorted. */
  changed: string[]
  /** Changed settings that keep their running value until a restart: restart-only ones in schema order, then `tls` if it was turned on or off. */
  restartNeeded: string[]
}

type Section = Record<string, unknown>

/** Compares the running config with a newly loaded one; neither is changed. */
export function planReload(running: RelayConfig, next: RelayConfig, restartOnly: readonly string[] = RESTART_ONLY): ReloadPlan {
  const changed = diff(running, next)
  const restartNeeded: string[] = []
  let effective = { ...next } as RelayConfig & Section
  for (const key of restartOnly) {
    const path = key.split('.')
    const parents = path.slice(0, -1).map((_, i) => path.slice(0, i + 1))
    // A setting whose section is absent on either side changes with its section (the `tls` rule below).
    if (!parents.every((p) => isSection(at(running, p)) && isSection(at(next, p)))) continue
    // `changed` goes two levels deep: a deeper setting is compared itself.
    const isChanged =
      changed.some((c) => c === key || c.startsWith(`${key}.`) || c.startsWith(`${key}[`)) ||
      (changed.some((c) => key.startsWith(`${c}.`)) && !same(at(running, path), at(next, path)))
    if (!isChanged) continue
    effective = withValue(effective, path, at(running, path))
    restartNeeded.push(key)
  }
  // TLS on or off changes how listeners are built.
  if (Boolean(running.tls) !== Boolean(next.tls)) {
    effective = { ...effective, tls: running.tls }
    restartNeeded.push('tls')
  }
  return { effective: freezeConfig(effective), changed, restartNeeded }
}

const at = (value: unknown, path: readonly string[]): unknown => path.reduce<unknown>((v, k) => (isSection(v) ? v[k] : undefined), value)

/** A copy of `obj` with `path` set to `value`: the sections along the path are copied, the rest shared. */
function withValue<T extends Section>(obj: T, path: readonly string[], value: unknown): T {
  const [head, ...rest] = path as [string, ...string[]]
  return { ...obj, [head]: rest.length ? withValue(obj[head] as Section, rest, value) : value }
}

/** Top-level keys that differ, as `section.key` for object sections. */
function diff(a: RelayConfig, b: RelayConfig): string[] {
  const out: string[] = []
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  keys.delete('configDir')
  keys.delete('configFile')
  for (const key of keys) {
    const x = (a as Section)[key]
    const y = (b as Section)[key]
    if (isSection(x) && isSection(y)) {
      for (const sub of new Set([...Object.keys(x), ...Object.keys(y)])) if (!same(x[sub], y[sub])) out.push(`${key}.${sub}`)
    } else if (!same(x, y)) out.push(key)
  }
  return out.sort()
}

const isSection = (v: unknown): v is Section => typeof v === 'object' && v !== null && !Array.isArray(v)

function same(x: unknown, y: unknown): boolean {
  try {
    return JSON.stringify(x) === JSON.stringify(y)
  } catch {
    return false // not serialisable (a plugin object with cycles): count it as changed
  }
}
