// Options of the routing plugin: an ordered list of routes, each with what it matches and where
// (and how) the mail goes.
import net from 'node:net'
import { addressKey, domainKey, hostPortString, parseHostPort, z } from '../../core/index.js'

const ip = z.string().refine((s) => net.isIP(s) !== 0, { message: 'expected an IP address' })

/** '/regex/flags' → a RegExp; anything else is not a regex. */
export function regexOf(pattern: string): RegExp | undefined {
  const m = /^\/(.+)\/([a-z]*)$/s.exec(pattern)
  if (!m) return undefined
  // 'g' and 'y' make test() start where the last match ended: every other message would miss its route.
  return new RegExp(m[1]!, m[2]!.replace(/[gy]/g, ''))
}

/** A domain (or address literal) as the relay compares domains: core's domainKey, a trailing dot allowed. */
const asciiDomain = (name: string): string | undefined => domainKey(name.replace(/\.$/, ''))

const DOMAIN_FORMS = "expected a domain like 'example.com', '*.example.com' (its subdomains) or a '/regex/'"

/** 'example.com', '*.example.com' in their ASCII form; else a reason. A pattern left as written would never match. */
function domainPattern(p: string): string | { error: string } {
  if (p.startsWith('.')) return { error: `'${p}' is not a domain: for the subdomains of ${p.slice(1) || 'a domain'} write '*${p}'` }
  const wildcard = p.startsWith('*.')
  const ascii = asciiDomain(wildcard ? p.slice(2) : p)
  if (!ascii || (wildcard && ascii.startsWith('['))) return { error: `'${p}' is not a domain name: ${DOMAIN_FORMS}` }
  return wildcard ? `*.${ascii}` : ascii
}

/** '/regex/flags' checked, or `plain` applied; each refusal is a config error at the pattern. */
const pattern = (plain: (p: string, ctx: z.RefinementCtx) => string) =>
  z
    .string()
    .min(1)
    .transform((p, ctx) => {
      let re: RegExp | undefined
      try {
        re = regexOf(p)
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `invalid regular expression ${p}: ${(err as Error).message}` })
        return p
      }
      return re ? p : plain(p, ctx)
    })
const orFail = (r: string | { error: string }, ctx: z.RefinementCtx, p: string) => {
  if (typeof r === 'string') return r
  ctx.addIssue({ code: 'custom', message: r.error })
  return p
}
const domainPatternSchema = pattern((p, ctx) => orFail(domainPattern(p), ctx, p)).superRefine((p, ctx) => {
  // A recipient domain is matched in its ASCII form: a regex with 'ü' in it would never fit.
  if (regexOf(p) && /[^\x00-\x7f]/.test(p)) ctx.addIssue({ code: 'custom', message: `the regular expression ${p} is matched against the domain in its ASCII form (xn--…): write it so` })
})
const senderPatternSchema = pattern((p, ctx) => {
  if (p === '<>') return p
  if (!p.includes('@')) return orFail(domainPattern(p), ctx, p)
  return orFail(addressKey(p) ?? { error: `'${p}' is not an address like 'alice@example.com'` }, ctx, p)
})
// One pattern or a list: taken as a list (not a union, whose error would only say "Invalid input").
const listOf = (one: z.ZodType<string, string>) => z.preprocess((p) => (typeof p === 'string' ? [p] : p), z.array(one, { error: 'expected a pattern or a list of patterns' }).min(1))

const match = z
  .object({
    /**
     * Recipient domain: 'example.com' (exactly), '*.example.com' (any subdomain, not example.com
     * itself), '/regex/i' (on the domain's ASCII form). 'bücher.example' and 'xn--bcher-kva.example' are one.
     */
    domain: listOf(domainPatternSchema).optional(),
    /** Envelope sender: 'alice@example.com', a domain as above, '/regex/' (on the whole address), '<>' (null sender). */
    sender: listOf(senderPatternSchema).optional(),
  })
  .strict()

/** An EHLO name: an internationalized one goes out in its ASCII form (EHLO takes no UTF-8, RFC 6531 §3.7.1). */
const helo = z
  .string()
  .min(1)
  .transform((h, ctx) => {
    // A space, a port or a URL would get the EHLO refused (501) by every next hop.
    const ascii = asciiDomain(h)
    if (!ascii) ctx.addIssue({ code: 'custom', message: `'${h}' is not a domain name (EHLO takes a domain or an address literal)` })
    return /[^\x00-\x7f]/.test(h) ? (ascii ?? h) : h
  })

// An address alone, or with its EHLO name and weight (a preprocess, not a union: its errors name the key).
const poolAddress = z.preprocess((a) => (typeof a === 'string' ? { address: a } : a), z.object({ address: ip, helo: helo.optional(), weight: z.number().int().positive().default(1) }).strict())

/** Where the connection comes from: one address, or a pool to take turns with. */
const source = {
  /** EHLO name (default: config `hostname`). */
  helo: helo.optional(),
  /** Local IP address to connect from. */
  localAddress: ip.optional(),
  /** Several local addresses, each with its own EHLO name if given; 'round-robin' or 'weighted' (smooth weighted round robin). */
  pool: z
    .object({ strategy: z.enum(['round-robin', 'weighted']).default('round-robin'), addresses: z.array(poolAddress).min(1) })
    .strict()
    .optional(),
}

/** 'host', 'host:port', '[host]:port', '[v6]:port' (checked by the schema) → host and port. */
export function hostPort(s: string): { host: string; port?: number } {
  const parsed = parseHostPort(s)
  return 'error' in parsed ? { host: s } : { host: parsed.host, port: parsed.port }
}

const port = z.number().int().min(1).max(65535)

/** 'name', 'name:port', an IP address, '[v6]:port': checked now, not at the first delivery (EBADNAME until expiry). */
const hostString = hostPortString()

const envSet = (name: string) => typeof process.env[name] === 'string' && process.env[name] !== ''

const auth = z
  .object({
    user: z.string().min(1),
    /** The password, or the name of an environment variable holding it (`passEnv`). Never logged. */
    pass: z.string().min(1).optional(),
    // A name, never echoed when it is none: a password put here by mistake would be printed.
    passEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: 'expected the name of an environment variable (letters, digits, _), not the password itself' }).optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if ((a.pass === undefined) === (a.passEnv === undefined)) ctx.addIssue({ code: 'custom', message: 'give either pass or passEnv' })
    else if (a.passEnv !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(a.passEnv) && !envSet(a.passEnv)) ctx.addIssue({ code: 'custom', path: ['passEnv'], message: `environment variable ${a.passEnv} is not set` })
  })

/** Sending caps for the route as a whole (core Route.limits): in flight, started per second / minute. */
const limits = z
  .object({ concurrency: z.number().int().positive().optional(), perSecond: z.number().int().positive().optional(), perMinute: z.number().int().positive().optional() })
  .strict()

/** A route name is a metric label and a Redis key: short, no spaces. */
const routeName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/, { message: 'expected a route name of 1-64 letters, digits, . _ : @ - (starting with a letter or digit)' })

const common = { name: routeName.optional(), limits: limits.optional(), match: match.default({}), ...source }

const mxRoute = z
  .object({
    ...common,
    kind: z.literal('mx'),
    /** 'may' (STARTTLS when offered), 'encrypt' (TLS required), 'verify' (TLS with a certificate valid for the MX name). */
    tls: z.enum(['may', 'encrypt', 'verify']).default('may'),
  })
  .strict()

const smarthostRoute = z
  .object({
    ...common,
    kind: z.literal('smarthost'),
    /** 'smtp.sendgrid.net', 'host:port', or several tried in order. */
    host: z.union([hostString, z.array(hostString).min(1)]).transform((h) => (Array.isArray(h) ? h : [h])),
    /** Default 587 (starttls) or 465 (implicit), unless `host` has a port. */
    port: port.optional(),
    /** Required: 'implicit' (TLS from the first byte, 465) or 'starttls' (587). */
    tls: z.enum(['implicit', 'starttls'], { error: "expected tls: 'implicit' or 'starttls' (a smarthost is always reached over TLS)" }),
    /** The certificate must be valid for the host name (off: encrypted, not checked — for internal hosts only). */
    verify: z.boolean().default(true),
    auth: auth.optional(),
  })
  .strict()
  // One route has one port (core Route.port): 'a:587' with 'b:2525' would quietly send both to 587.
  // (`host` may still be the string as written when it failed its own check: that is reported there.)
  .refine((r) => new Set([r.port, ...([] as string[]).concat(r.host).map((h) => hostPort(h).port)].filter((p) => p !== undefined)).size <= 1, {
    message: 'the hosts of a smarthost route are all reached on one port: give different ports in different routes',
    path: ['host'],
  })

const lmtpRoute = z
  .object({
    ...common,
    kind: z.literal('lmtp'),
    /** 'host:port' (default port 24) ... */
    host: hostString.optional(),
    port: port.optional(),
    /** ... or a unix socket path. */
    socket: z.string().min(1).optional(),
    tls: z.enum(['may', 'encrypt', 'verify']).default('may'),
  })
  .strict()
  .refine((r) => (r.host === undefined) !== (r.socket === undefined), { message: 'an lmtp route needs either host or socket' })

const route = z.preprocess(
  (v) => (typeof v === 'object' && v !== null && !Array.isArray(v) && !('kind' in v) ? { ...v, kind: 'mx' } : v),
  z.discriminatedUnion('kind', [mxRoute, smarthostRoute, lmtpRoute], { error: "expected kind: 'mx', 'smarthost' or 'lmtp'" }),
)

export const options = z
  .object({
    /** Tried in order; the first whose `match` fits decides. None fits: the core's default (the domain's MX). */
    routes: z.array(route).default([]),
  })
  .strict()
  // Every route has a name (default 'route-<index>'), unique: it keys the route's caps and metrics.
  .transform((o) => ({ ...o, routes: o.routes.map((r, i) => ({ ...r, name: r.name ?? `route-${i}` })) }))
  .superRefine((o, ctx) => {
    const seen = new Map<string, number>()
    o.routes.forEach((r, i) => {
      const first = seen.get(r.name)
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['routes', i, 'name'], message: `route name '${r.name}' is already used by routes[${first}]; names must be unique` })
      else seen.set(r.name, i)
    })
  })

export type Options = z.output<typeof options>
export type RouteOption = Options['routes'][number]
