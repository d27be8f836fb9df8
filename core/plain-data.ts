// Data as it crosses a process boundary (config `workers`): plain values only. The same copy is
// made in one process, so a plugin's code behaves alike with and without workers.
import { errorText } from './error-text.js'

export interface SerializedError {
  message: string
  name?: string
  code?: string
  responseCode?: number
}

export function serializeError(err: unknown): SerializedError {
  const e = err as { message?: unknown; name?: unknown; code?: unknown; responseCode?: unknown }
  return {
    message: typeof e?.message === 'string' ? e.message : errorText(err),
    name: typeof e?.name === 'string' ? e.name : undefined,
    code: typeof e?.code === 'string' ? e.code : undefined,
    responseCode: typeof e?.responseCode === 'number' ? e.responseCode : undefined,
  }
}

export function deserializeError(s: SerializedError): Error {
  return Object.assign(new Error(s.message), { name: s.name ?? 'Error', code: s.code, responseCode: s.responseCode })
}

/**
 * Data for the other process: structured clone refuses functions and class instances with
 * private state, so anything that is not plain data is dropped (a plugin's event data may carry
 * a stream or a callback; what another process could not use anyway).
 */
export function plain(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return typeof value === 'function' || typeof value === 'symbol' ? undefined : value
  if (value instanceof Uint8Array || value instanceof Date || value instanceof RegExp) return value
  if (depth > 8) return undefined
  if (Array.isArray(value)) return value.map((v) => plain(v, depth + 1))
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [k, plain(v, depth + 1)]))
  if (value instanceof Set) return new Set([...value].map((v) => plain(v, depth + 1)))
  if (value instanceof Error) return serializeError(value)
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return undefined
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) {
    const p = plain(v, depth + 1)
    if (p !== undefined) out[k] = p
  }
  return out
}

