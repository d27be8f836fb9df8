// Options of the admin plugin and their defaults (see README.md).
import net from 'node:net'
import { hostPortString, size, timerAtLeast, z } from '../../core/index.js'

const port = z.number().int().min(0).max(65535)

/** Prometheus metrics (GET /metrics); the `domain` label's choice: metrics/domains.ts and README.md. */
const metricsOptions = z
  .object({
    /** At most this many destination domains get their own label value; the rest count as 'other'. */
    maxDomainLabels: z.number().int().min(0).default(50),
    /** These domains get their own label value, every other one is 'other'. */
    domains: z.array(z.string().min(1)).optional(),
    /** The N domains with the most delivery results lately get their own label value. */
    topDomains: z.number().int().min(1).optional(),
    /** How often the top domains are recomputed. */
    topDomainsInterval: timerAtLeast(1000, '1s').default(10 * 60_000),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.domains && m.topDomains !== undefined) ctx.addIssue({ code: 'custom', path: ['topDomains'], message: 'set either domains (an allowlist) or topDomains, not both' })
    if (m.domains && m.domains.length > m.maxDomainLabels) ctx.addIssue({ code: 'custom', path: ['domains'], message: `lists ${m.domains.length} domains, more than maxDomainLabels (${m.maxDomainLabels}); raise maxDomainLabels` })
    if (m.topDomains !== undefined && m.topDomains > m.maxDomainLabels) ctx.addIssue({ code: 'custom', path: ['topDomains'], message: `is more than maxDomainLabels (${m.maxDomainLabels}); raise maxDomainLabels` })
  })
  .prefault({})

export const optionsSchema = z
  .object({
    /** An IP address or host name, without a port (that is `port`), as a listener's `host`. */
    host: hostPortString({ port: 'none' }).transform((h) => h.replace(/^\[(.*)\]$/, '$1')).default('127.0.0.1'),
    port: port.default(8025),
    /** Sent as `Authorization: Bearer`; required unless `insecureNoToken` (loopback only). */
    token: z.string().min(16, { message: 'use a token of at least 16 characters' }).optional(),
    /** A second token that may only read (GET): for Prometheus, monitoring, a read-only dashboard. */
    readOnlyToken: z.string().min(16, { message: 'use a token of at least 16 characters' }).optional(),
    /** The largest message POST /api/inject takes ('25MB' = 25 MiB, or bytes); larger is a 413. */
    maxInjectSize: size.default(25 * 1024 * 1024),
    /** Further names the listener is reached by in the Host header (a reverse proxy's, a DNS name): any port. */
    hosts: z.array(z.string().min(1)).default([]),
    /**
     * Run without a token, on a loopback address only: every local user and program (a browser
     * included) can then control the queue. Logged as a warning at start.
     */
    insecureNoToken: z.boolean().default(false),
    /** Prometheus metrics (GET /metrics). */
    metrics: metricsOptions,
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.readOnlyToken !== undefined && o.readOnlyToken === o.token) {
      ctx.addIssue({ code: 'custom', path: ['readOnlyToken'], message: 'must differ from token (it would give full access)' })
    }
    if (o.readOnlyToken !== undefined && !o.token) {
      ctx.addIssue({ code: 'custom', path: ['readOnlyToken'], message: 'needs token too (without one every request has full access)' })
    }
    if (o.token) return
    if (!isLoopback(o.host)) {
      ctx.addIssue({ code: 'custom', path: ['token'], message: `required when the admin listener is bound to ${o.host} (not a loopback address)` })
    } else if (!o.insecureNoToken) {
      ctx.addIssue({
        code: 'custom',
        path: ['token'],
        message: 'required (16+ characters; `openssl rand -hex 24` makes one); insecureNoToken: true runs the listener without one, open to every local user',
      })
    }
  })

export type AdminOptions = z.output<typeof optionsSchema>

/** A loopback address (127.0.0.0/8, ::1) or `localhost`; a name like `127.attacker.example` is not. */
function isLoopback(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true
  const family = net.isIP(host)
  return family !== 0 && LOOPBACK.check(host, family === 6 ? 'ipv6' : 'ipv4')
}

const LOOPBACK = new net.BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')
