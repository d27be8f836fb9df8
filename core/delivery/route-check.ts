// What a deliver hook's route() must hold to be followed. A key nothing reads (`host` for `hosts`,
// `tsl`) or a value of the wrong kind would silently send the mail some other way: straight to the
// MX instead of the smarthost, without the TLS or the port asked for. Such a route defers the
// attempt instead (4.3.5, naming the plugin and the key): the message waits for the plugin to be
// fixed. No value is quoted back (a route carries the smarthost's password).
import type { Route } from '../hooks/types.js'
import { checkRouteLimits } from './route-throttle.js'

const KEYS = ['kind', 'hosts', 'port', 'socketPath', 'helo', 'tls', 'implicitTls', 'auth', 'localAddress', 'name', 'limits']
const KINDS = ['mx', 'smtp', 'lmtp']
const TLS_POLICIES = ['may', 'encrypt', 'verify']
const LIMITS = ['concurrency', 'perSecond', 'perMinute']
const TEXT = ['socketPath', 'helo', 'localAddress', 'name'] as const

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const unknownKey = (v: Record<string, unknown>, known: string[], prefix = ''): string | undefined => {
  const key = Object.keys(v).find((k) => !known.includes(k))
  return key === undefined ? undefined : `unknown key '${prefix}${key}' (${prefix ? prefix.slice(0, -1) : 'a route'} has: ${known.join(', ')})`
}

/** Why this route cannot be followed as given, or undefined. */
const LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
const HELO = new RegExp(`^(?=.{1,255}$)(?:${LABEL}(?:\\.${LABEL})*\\.?|\\[(?:IPv6:)?[0-9A-Fa-f:.]+\\])$`)
const HOST = /^[^\s\x00-\x1f\x7f]{1,255}$/

export function routeProblem(route: unknown): string | undefined {
  if (!isObject(route)) return 'route() takes an object'
  const r = route
  const unknown = unknownKey(r, KEYS)
  if (unknown) return unknown
  if (r.kind !== undefined && !KINDS.includes(r.kind as string)) return `kind must be one of ${KINDS.join(', ')}`
  if (r.tls !== undefined && !TLS_POLICIES.includes(r.tls as string)) return `tls must be one of ${TLS_POLICIES.join(', ')}`
  if (r.hosts !== undefined && (!Array.isArray(r.hosts) || r.hosts.some((h) => typeof h !== 'string' || h === ''))) return 'hosts must be a list of host names or IP addresses'
  if (r.port !== undefined && (!Number.isInteger(r.port) || (r.port as number) < 1 || (r.port as number) > 65535)) return 'port must be a whole number from 1 to 65535'
  for (const key of TEXT) if (r[key] !== undefined && (typeof r[key] !== 'string' || r[key] === '')) return `${key} must be a non-empty string`
  // Both go into SMTP commands and the socket's peer: a CR or LF would end one command and begin another.
  if (typeof r.helo === 'string' && !HELO.test(r.helo)) return 'helo must be a host name (letters, digits, hyphens, dots) or an address literal such as [192.0.2.1], at most 255 characters'
  if (Array.isArray(r.hosts) && r.hosts.some((h) => typeof h === 'string' && !HOST.test(h))) return 'hosts must be a list of host names or IP addresses (no spaces or control characters)'
  if (r.implicitTls !== undefined && typeof r.implicitTls !== 'boolean') return 'implicitTls must be true or false'
  if (r.auth !== undefined) {
    if (!isObject(r.auth) || typeof r.auth.user !== 'string' || typeof r.auth.pass !== 'string') return 'auth must be { user, pass }, both strings'
    const bad = unknownKey(r.auth, ['user', 'pass'], 'auth.')
    if (bad) return bad
  }
  if (r.limits !== undefined) {
    if (!isObject(r.limits)) return 'limits must be an object'
    const bad = unknownKey(r.limits, LIMITS, 'limits.')
    if (bad) return bad
  }
  return checkRouteLimits(r as Route)
}
