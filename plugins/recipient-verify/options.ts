// Options of the recipient-verify plugin: a static list (inline and/or a file) and call-ahead
// routes, shaped like the routing plugin's `smarthost`/`lmtp` routes.
import { domainKey, duration, hostPortString, parseAddress, parseHostPort, timerAtLeast, z } from '../../core/index.js'
import { parseEntry } from './static-list.js'

// As the relay compares recipients' domains: lower case, an internationalized one in A-labels.
const domainName = z
  .string()
  .transform((d) => domainKey(d.replace(/\.$/, '')) ?? '')
  .refine((d) => d !== '' && !d.startsWith('['), { message: 'expected a domain name like example.com' })

/** 'host', 'host:port', '[host]:port', '[v6]:port' (checked by the schema) → host and port. */
export function hostPort(s: string): { host: string; port?: number } {
  const parsed = parseHostPort(s)
  return 'error' in parsed ? { host: s } : { host: parsed.host, port: parsed.port }
}

const port = z.number().int().min(1).max(65535)
const hosts = z.union([hostPortString(), z.array(hostPortString()).min(1)]).transform((h) => (Array.isArray(h) ? h : [h]))

const match = z
  .object({
    /** Recipient domain: 'example.com' (exactly) or '*.example.com' (its subdomains); one or a list. */
    domain: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).transform((d) => (Array.isArray(d) ? d : [d])).optional(),
  })
  .strict()

const common = { name: z.string().min(1).optional(), match: match.default({}) }

const smtpRoute = z
  .object({
    ...common,
    kind: z.literal('smtp'),
    /** 'host', 'host:port', or several tried in order (a host that cannot be reached: the next). */
    host: hosts,
    /** Default 25, unless `host` has a port. */
    port: port.optional(),
  })
  .strict()

const lmtpRoute = z
  .object({
    ...common,
    kind: z.literal('lmtp'),
    /** 'host:port' (default port 24), or several tried in order ... */
    host: hosts.optional(),
    port: port.optional(),
    /** ... or a unix socket path. */
    socket: z.string().min(1).optional(),
  })
  .strict()
  .refine((r) => (r.host === undefined) !== (r.socket === undefined), { message: 'an lmtp route needs either host or socket' })

const route = z.discriminatedUnion('kind', [smtpRoute, lmtpRoute], { error: "expected kind: 'smtp' or 'lmtp'" })

const callAhead = z
  .object({
    /** Where each local domain's mail goes next (its mail store); the first whose `match` fits is asked. */
    routes: z.array(route).min(1),
    /** MAIL FROM of the probe; '' is the null sender `<>` (as Postfix's `address_verify_sender`). */
    probeSender: z.string().default('').refine((s) => s === '' || parseAddress(s) !== undefined, { message: "expected an address or '' (the null sender)" }),
    /** Name sent in EHLO/LHLO (default: config `hostname`). */
    helo: z.string().min(1).optional(),
    connectTimeout: timerAtLeast(10, '10ms').default(5_000),
    /** Each reply of the next hop. */
    commandTimeout: timerAtLeast(10, '10ms').default(10_000),
    /** The whole probe, every host tried (keep it under the config's `hookTimeout`). */
    timeout: timerAtLeast(10, '10ms').default(20_000),
    /** How long "the next hop accepts this address" is remembered (Postfix: address_verify_positive_refresh_time 7d). */
    positiveTtl: duration.default(7 * 86_400_000),
    /** How long "the next hop refuses this address" is remembered (Postfix: address_verify_negative_refresh_time 3h). */
    negativeTtl: duration.default(3 * 3_600_000),
    /** Most addresses remembered; beyond that the oldest are forgotten. */
    cacheSize: z.number().int().positive().default(10_000),
    /**
     * Most probes running at once, for all clients together (under config `workers` too: places.ts): past it a new address gets
     * `450 4.1.1` at once, so a dead or slow next hop cannot be made to hold a connection per RCPT.
     */
    maxConcurrent: z.number().int().positive().default(20),
    /** Most of those one client (an IP address; an IPv6 /64) may have running at once; past it `450 4.7.1`. */
    perClient: z.number().int().positive().default(5),
    /**
     * Most new probes (answers not cached) one SMTP session may cause; past it `450 4.7.1` to each
     * further unverified recipient (the client sends those later), so a session of RCPTs to random
     * addresses cannot make the relay open a connection per RCPT without end. 0: no limit.
     */
    perSession: z.number().int().nonnegative().default(50),
  })
  .strict()

export const options = z
  .object({
    /** The local domains to verify (default: every one of config `localDomains`). */
    domains: z.array(domainName).min(1).optional(),
    /** Valid recipients: 'user@example.com', '@example.com' (the whole domain), 'sales-*@example.com'. */
    recipients: z
      .array(
        z.string().superRefine((e, ctx) => {
          const parsed = parseEntry(e)
          if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed })
        }),
      )
      .default([]),
    /**
     * A file of valid recipients, one a line (same forms; '#' starts a comment), read again when it
     * changes. A relative path is taken from the config file's directory.
     */
    file: z.string().min(1).optional(),
    /** No longer used (the file is watched for changes); still accepted so older configs load. */
    checkInterval: timerAtLeast(50, '50ms').default(1000),
    /** Ask the next hop (RCPT probe, cached) about addresses the static list does not name. */
    callAhead: callAhead.optional(),
  })
  .strict()
  .refine((o) => o.recipients.length > 0 || o.file !== undefined || o.callAhead !== undefined, {
    message: 'give recipients, file or callAhead (else nothing is verified)',
  })

export type Options = z.output<typeof options>
export type CallAhead = NonNullable<Options['callAhead']>
export type ProbeRoute = CallAhead['routes'][number]
