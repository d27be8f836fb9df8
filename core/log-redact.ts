// Secrets never reach the log. Values under a secret-named key, at any of the first four levels of
// what a line logs (`{ password }`, `{ user: { pass } }`, `{ err: { config: { auth: { pass } } } }`)
// and of a child logger's bindings, are replaced before pino sees them; pino's own `redact` covers
// the fixed paths (REDACT_PATHS).
//
// Why not pino's `redact: ['*.password', …]`: a path starting with a wildcard makes pino run its
// redactor on every key of every line (strings and numbers too), parsing every path each time:
// about 80 KB of garbage and a tenth of the logging CPU per message at load (bench/RESULTS.md).
// This walks the logged object once and copies only what holds a secret.

export const CENSOR = '[redacted]'

/** Keys whose values are never written, whatever the level. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['password', 'pass', 'secret', 'token'])

/** Whole objects that are never written (pino `redact` paths; fixed paths cost nothing on other lines). */
export const REDACT_PATHS = ['auth.credentials', 'options.auth']

/** How deep a secret key is looked for: `password` to `*.*.*.password`. */
const DEPTH = 4

/** `value`, or a copy of it in which every secret-named key down to DEPTH holds CENSOR. */
export function redactSecrets(value: unknown, level = 1): unknown {
  if (!walkable(value)) return value
  let copy: object | undefined
  for (const key in value) {
    const v = (value as Record<string, unknown>)[key]
    if (v === undefined) continue
    const next = SECRET_KEYS.has(key) ? CENSOR : level < DEPTH ? redactSecrets(v, level + 1) : v
    if (next === v) continue
    copy ??= shallowCopy(value)
    Object.defineProperty(copy, key, { value: next, enumerable: true, writable: true, configurable: true })
  }
  return copy ?? value
}

/** Binary data, dates and collections hold no named keys (and a Buffer's for-in walks every byte). */
function walkable(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && !(value instanceof Date) && !(value instanceof Map) && !(value instanceof Set)
}

/**
 * A copy with the same prototype and own properties, so an Error stays an Error (message, stack).
 * An accessor is copied as the value it gives on the original: V8 (Node 22+) makes an Error's
 * `stack` an own accessor that reads the original's hidden state, and gives '' on a copy.
 */
function shallowCopy(value: object): object {
  if (Array.isArray(value)) return value.slice()
  const copy = Object.create(Object.getPrototypeOf(value) as object | null) as object
  const own = Object.getOwnPropertyDescriptors(value)
  for (const key of Reflect.ownKeys(own)) {
    const d = own[key as string]!
    if (d.get || d.set) {
      let v: unknown
      try {
        v = (value as Record<PropertyKey, unknown>)[key]
      } catch {
        continue // a getter that throws: left out, as pino would fail on it
      }
      Object.defineProperty(copy, key, { value: v, enumerable: d.enumerable, writable: true, configurable: true })
    } else Object.defineProperty(copy, key, { ...d, configurable: true })
  }
  return copy
}

/**
 * pino's `hooks.logMethod`: the objects of a log call (the merged object first, an Error as `err`,
 * and any interpolated into the message by `%j`/`%o`) with their secrets replaced.
 */
export function redactLogCall(this: unknown, args: unknown[], method: (...args: unknown[]) => void): void {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    // pino logs a bare Error under `err`: its keys are one level down.
    if (typeof arg === 'object' && arg !== null) args[i] = redactSecrets(arg, i === 0 && arg instanceof Error ? 2 : 1)
  }
  method.apply(this, args)
}
