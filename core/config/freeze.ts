// A parsed config is one immutable generation: hot reload builds a new one instead of editing the
// running one, so whatever holds a config can trust it not to change under it.
import type { RelayConfig } from './schema.js'

/** Plain data only: class instances, Buffers, Maps and functions may need to stay mutable. */
function isPlainData(value: unknown): value is object {
  if (Array.isArray(value)) return true
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value) as unknown
  return proto === Object.prototype || proto === null
}

/** Freezes `value` and every plain object and array under it; returns it. */
export function deepFreeze<T>(value: T, seen = new WeakSet<object>()): T {
  if (!isPlainData(value) || seen.has(value)) return value
  seen.add(value)
  Object.freeze(value)
  for (const child of Object.values(value)) deepFreeze(child, seen)
  return value
}

/**
 * Deep-freezes a config, but not the plugin objects given inline in `plugins`: a plugin is its
 * author's object (it may keep state on itself). Their options are config data, frozen too.
 */
export function freezeConfig<T extends RelayConfig>(config: T): T {
  const seen = new WeakSet<object>()
  for (const entry of config.plugins) {
    if (typeof entry === 'object' && !Array.isArray(entry)) seen.add(entry)
    else if (Array.isArray(entry) && typeof entry[0] === 'object') seen.add(entry[0])
  }
  return deepFreeze(config, seen)
}
