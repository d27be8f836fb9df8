// Option types shared by the core config and plugin option schemas (exported in core/index.ts),
// so that every duration, size and network block in relay.config.ts reads and fails the same way.
import net from 'node:net'
import { z } from 'zod'
import { parseDuration, parseSize } from './duration.js'

const DURATION = "expected a duration like '90s', '5m', '4h', '5d' or a number of seconds"
const SIZE = "expected a size like '25MB', '512KB' or a number of bytes"

/** A duration parsed to milliseconds; `tooLong` is said of one written right but over 100 years (or a timer's limit). */
const durationSaying = (tooLong: string) =>
  z.union([z.string(), z.number()], { error: DURATION }).transform((value, ctx) => {
    const ms = parseDuration(value)
    if (ms === undefined) {
      // Written as a duration (the same with 1 in place of the number parses), but too long.
      const long = typeof value === 'number' ? Number.isFinite(value) && value >= 0 : parseDuration(value.replace(/\d+(?:\.\d+)?/, '1')) !== undefined
      ctx.addIssue({ code: 'custom', message: `${long ? tooLong : DURATION}, got ${JSON.stringify(value)}` })
      return z.NEVER
    }
    return ms
  })

/** A duration ('250ms', '90s', '5m', '4h', '5d', or seconds as a number), parsed to milliseconds: at most 100 years. */
export const duration = durationSaying('expected a duration of at most 100 years')

/** A duration of at least `minMs` milliseconds. */
export const durationAtLeast = (minMs: number, hint = `${minMs} ms`) =>
  duration.refine((ms) => ms >= minMs, { message: `expected a duration of at least ${hint}` })

/** setTimeout's limit (2^31 - 1 ms, about 24.8 days): a longer timer fires at once (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2_147_483_647
const TOO_LONG = { message: 'expected at most 24 days: a timer cannot wait longer (Node would fire it at once)' }
const timerDuration = durationSaying(TOO_LONG.message)

/** A duration a timer waits (a timeout, a delay, an interval): at most 24 days. */
export const timer = timerDuration.refine((ms) => ms <= MAX_TIMER_MS, TOO_LONG)

const NOT_ZERO = { message: 'expected more than 0: this cannot be switched off (0 would end it at once)' }

/** A timeout that cannot be switched off: more than 0 (which would end every wait at once), at most 24 days. */
export const timeout = timerDuration.refine((ms) => ms > 0, NOT_ZERO).refine((ms) => ms <= MAX_TIMER_MS, TOO_LONG)

/** A timer's duration of at least `minMs` milliseconds (and at most 24 days). */
export const timerAtLeast = (minMs: number, hint = `${minMs} ms`) =>
  timerDuration.refine((ms) => ms >= minMs, { message: `expected a duration of at least ${hint}` }).refine((ms) => ms <= MAX_TIMER_MS, TOO_LONG)

/** A size ('25MB', '512KB', or bytes as a number), parsed to bytes. */
export const size = z.union([z.string(), z.number()], { error: SIZE }).transform((value, ctx) => {
  const bytes = parseSize(value)
  if (bytes === undefined) {
    const outOfRange = typeof value === 'number' ? Number.isInteger(value) : parseSize(value.replace(/\d+(?:\.\d+)?/, '1')) !== undefined
    ctx.addIssue({ code: 'custom', message: outOfRange ? `expected a size from 1 byte to 1 TB, got ${JSON.stringify(value)}` : `${SIZE}, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return bytes
})

/** An IP address or CIDR block ('10.0.0.0/8', '2001:db8::/32'). */
export const cidr = z.string().refine(
  (s) => {
    const [ip, bits, extra] = s.split('/')
    const family = net.isIP(ip ?? '')
    if (!family || extra !== undefined) return false
    if (bits === undefined) return true
    const n = Number(bits)
    return /^\d+$/.test(bits) && n >= 0 && n <= (family === 4 ? 32 : 128)
  },
  { message: "expected an IP address or CIDR block, like '10.0.0.0/8' or '2001:db8::/32'" },
)

/**
 * An http:// or https:// URL that fetch will send: none with a user name or password in it (fetch
 * refuses those, and they would end up in logs). `credentials` says where they go instead. Neither
 * message repeats the text.
 */
export const httpUrlWith = (credentials = "give the credential in the plugin's header or secret option instead") =>
  z.string().superRefine((s, ctx) => {
    let u: URL
    try {
      u = new URL(s)
    } catch {
      u = new URL('about:blank')
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      ctx.addIssue({ code: 'custom', message: "expected an http:// or https:// URL, like 'https://auth.example.com/smtp'" })
    } else if (u.username || u.password) {
      ctx.addIssue({ code: 'custom', message: `must not hold a user name or password ('user:pass@'): fetch refuses such a URL; ${credentials}` })
    }
  })

/** httpUrlWith's schema with the general advice. */
export const httpUrl = httpUrlWith()

/** A TCP/UDP port a connection can be made to: 1-65535. */
export const PORT_RANGE = 'from 1 to 65535'
export function validPort(text: string): boolean {
  if (!/^\d{1,5}$/.test(text)) return false
  const n = Number(text)
  return n >= 1 && n <= 65535
}

/**
 * The relay's own name: the EHLO name next hops judge, the banner, Received `by`, Message-IDs. A host
 * name (a trailing dot dropped); a port, a URL or a space would get EHLO refused everywhere.
 */
export const ownHostName = z
  .string()
  .transform((s) => s.replace(/\.$/, ''))
  .refine(isHostName, { message: 'expected a fully qualified host name like mail.example.com (the EHLO name, in Received and Message-IDs)' })

/** A host name (RFC 1123 labels, underscores tolerated), not an address: what a resolver takes. */
export function isHostName(s: string): boolean {
  const name = s.endsWith('.') ? s.slice(0, -1) : s
  if (name.length === 0 || name.length > 253) return false
  // All digits and dots is an IPv4 address or nothing ('999.1.1.1', '10.1'): not a name.
  if (/^[\d.]+$/.test(name)) return false
  return name.split('.').every((label) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label))
}

export interface HostPort {
  host: string
  port?: number
  /** 4 or 6 for an IP address, 0 for a host name. */
  family: 0 | 4 | 6
}

/**
 * Parses 'name', 'name:port', 'ipv4', 'ipv4:port', 'ipv6', '[ipv6]' or '[ipv6]:port'. A string that
 * is none of these gives the reason, which never repeats the text itself (it may hold a password).
 */
export function parseHostPort(s: string, opts: { names?: boolean; port?: 'optional' | 'required' | 'none' } = {}): HostPort | { error: string } {
  const names = opts.names ?? true
  const portRule = opts.port ?? 'optional'
  const what = names ? 'a host name or IP address' : 'an IP address'
  const form =
    portRule === 'none' ? what
    : portRule === 'required' ? `${what} with a port, like '127.0.0.1:8443'`
    : names ? `${what}, optionally with ':port'`
    : "an IP address or 'ip:port', like '127.0.0.1:5353'"
  if (s.length === 0) return { error: `expected ${form}, got an empty string` }
  if (s.includes('://')) return { error: `expected ${form}, not a URL: leave out the scheme (like 'smtp.example.com' or '192.0.2.1:587')` }
  if (s.includes('@')) return { error: `expected ${form}: it contains '@' (user names and passwords do not go in a host)` }
  if (/\s/.test(s)) return { error: `expected ${form}: it contains a space` }
  if (s.includes('/')) return { error: `expected ${form}: it contains '/'` }
  let host = s
  let portText: string | undefined
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(s)
  if (bracketed) {
    host = bracketed[1]!
    portText = bracketed[2]
    if (/^ipv6:/i.test(host) && net.isIPv6(host.slice(5))) return { error: `expected ${form}: an IPv6 address is written without 'IPv6:' (that is the form in mail addresses), like '[${host.slice(5)}]'` }
    // Postfix's relayhost form: '[smtp.example.com]:587', '[192.0.2.1]' (no MX lookup there; a
    // host here is never looked up as MX anyway). A name inside only where names are taken.
    if (!net.isIP(host) && !(names && isHostName(host))) return { error: `expected ${form}: '[${host}]' is not ${names ? 'a host name or IP address' : 'an IP address'} in [brackets]` }
  } else if (!net.isIPv6(s)) {
    const parts = s.split(':')
    if (parts.length > 2 && (s.includes('::') || parts.every((p) => /^[0-9a-f]{0,4}$/i.test(p)))) return { error: `expected ${form}: '${s}' is not a valid IPv6 address` }
    if (parts.length > 2) return { error: `expected ${form}: more than one ':' (an IPv6 address with a port is written '[2001:db8::1]:25')` }
    host = parts[0]!
    portText = parts[1]
  }
  const family = net.isIP(host) as 0 | 4 | 6
  if (family === 0) {
    if (/^[\d.]+$/.test(host)) return { error: `expected ${form}: '${host}' is not a valid IPv4 address` }
    if (!names) return { error: `expected ${form}` }
    if (!isHostName(host)) return { error: `expected ${form}: '${host}' is not a valid host name (letters, digits and '-' in dot-separated labels)` }
  }
  if (portText !== undefined) {
    if (portRule === 'none') return { error: `expected ${form}, without a port` }
    if (!validPort(portText)) return { error: `port '${portText}' is not a port number ${PORT_RANGE}` }
    return { host, port: Number(portText), family }
  }
  if (portRule === 'required') return { error: `expected ${form}: the port is missing` }
  return { host, family }
}

/** A string checked by parseHostPort (kept as written). */
export const hostPortString = (opts: Parameters<typeof parseHostPort>[1] = {}) =>
  z.string().superRefine((s, ctx) => {
    const parsed = parseHostPort(s, opts)
    if ('error' in parsed) ctx.addIssue({ code: 'custom', message: parsed.error })
  })

/** A URL with one of `protocols` ('redis:'), whose port (if any) is 1-65535 and which has a host. */
export const serviceUrl = (protocols: string[], example: string) =>
  z.string().superRefine((s, ctx) => {
    const scheme = /^([a-z][a-z0-9+.-]*:)\/\//i.exec(s)?.[1]?.toLowerCase()
    if (!scheme || !protocols.includes(scheme)) {
      ctx.addIssue({ code: 'custom', message: `expected a URL like '${example}'` })
      return
    }
    // The port as written (new URL() refuses an out-of-range one with no word of why).
    const authority = s.slice(scheme.length + 2).split(/[/?#]/)[0]!
    const hostPart = authority.slice(authority.lastIndexOf('@') + 1)
    const port = /^(?:\[[^\]]*\]|[^:]*):(.*)$/.exec(hostPart)?.[1]
    if (port !== undefined && port !== '' && !validPort(port)) {
      ctx.addIssue({ code: 'custom', message: `port '${port}' is not a port number ${PORT_RANGE} (expected a URL like '${example}')` })
      return
    }
    try {
      // libpq's unix-socket form names no host: `postgresql://relay:pw@/relay?host=/run/postgresql`
      // (pg takes it; new URL() does once it has a host in the empty place).
      new URL(scheme.startsWith('postgres') ? s.replace(/^([^/]*\/\/[^/?#]*@)(?=[/?#]|$)/, '$1localhost') : s)
    } catch {
      ctx.addIssue({ code: 'custom', message: `not a valid URL (expected one like '${example}')` })
    }
  })

/**
 * A path to a PEM file (a certificate, a key, CA certificates), resolved against the config's
 * directory. A PEM block pasted in its place is refused without being echoed: the error (on the
 * terminal, in the log, in a reload's answer) would otherwise print the private key.
 */
export const pemFilePath = z
  .string()
  .min(1)
  .refine((v) => !/-----BEGIN|[\r\n]/.test(v), { message: 'holds PEM text (or a line break), not a file path: write it to a file and name the file here' })
