import { domainToASCII } from 'node:url'
import os from 'node:os'
import net from 'node:net'
import { z } from 'zod'
import { cidr, duration, durationAtLeast, hostPortString, ownHostName, pemFilePath, serviceUrl, size, timeout, timer, timerAtLeast } from './fields.js'
import { restartOnly } from './restart-only.js'
import { smtpSection } from './schema-smtp.js'
import { formatDuration } from './duration.js'
import type { Plugin } from '../hooks/types.js'

/** A domain as compared everywhere: lower case, no trailing dot, an IDN in its xn-- form; undefined when it is none. */
const asDomain = (d: string): string | undefined => {
  const name = (/[^\x00-\x7f]/.test(d) ? domainToASCII(d) || d : d).toLowerCase().replace(/\.$/, '')
  return /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name) ? name : undefined
}

const domain = z
  .string()
  .min(1)
  // An internationalized name in its ASCII form (xn--…), as addresses are compared (core/mail/address.ts).
  .transform((d) => asDomain(d) ?? d)
  .refine((d) => asDomain(d) === d, { message: 'expected a domain name like example.com' })

/**
 * The shortest delivery retry delay. Postfix's minimal_backoff_time has a floor of 1s; a few hundred
 * ms is still no loop, and lets tests retry quickly.
 */
const MIN_RETRY_MS = 250
/** How long each plugin's module load and its setup may take (config setupTimeout), before the config is read too. */
export const DEFAULT_SETUP_TIMEOUT = 30_000
const MIN_RETRY = '250ms'

/** A port to connect to. */
const port = z.number().int().min(1, { message: 'expected a port from 1 to 65535' }).max(65535, { message: 'expected a port from 1 to 65535' })
/** A port to listen on: 0 takes a free one (tests). */
const listenPort = z.number().int().min(0, { message: 'expected a port from 0 to 65535' }).max(65535, { message: 'expected a port from 0 to 65535' })

const listener = z
  .object({
    /** An IP address or host name to listen on, without a port (that is `port`). */
    // '[::1]' is '::1': listen() takes no brackets.
    host: hostPortString({ port: 'none' }).transform((h) => h.replace(/^\[(.*)\]$/, '$1')).default('0.0.0.0'),
    port: listenPort,
    role: z.enum(['mx', 'submission']),
    /** 'starttls' (25/587), 'implicit' (465), 'none'. Default: 'starttls' when `tls` is configured. */
    tls: z.enum(['starttls', 'implicit', 'none']).optional(),
    /** Offer AUTH without TLS. Off unless you accept passwords in clear text on this listener. */
    allowPlaintextAuth: z.boolean().default(false),
    /**
     * Offer AUTH on this listener (with an auth plugin). false on an mx listener keeps password
     * guessing off port 25 (Postfix's default); a submission listener always offers it.
     */
    auth: z.boolean().default(true),
    /**
     * PROXY protocol (v1 and v2) from these load balancers (IP addresses or CIDR ranges): a
     * connection from one of them must start with a PROXY header, whose client address then
     * counts everywhere (rate limits, SPF, Received). Connections from other addresses are served
     * as they are and may not send a PROXY header.
     */
    proxyProtocol: z.array(cidr).optional(),
  })
  .strict()

const throttleLimits = z
  .object({
    /** Concurrent connections (jobs in flight). */
    concurrency: z.number().int().positive().optional(),
    /** Messages started per sliding minute. */
    perMinute: z.number().int().positive().optional(),
    /** Messages per connection before it is closed (overrides delivery.reuse.maxMessages). */
    messagesPerConnection: z.number().int().positive().optional(),
  })
  .strict()

const certPair = z.object({ cert: pemFilePath, key: pemFilePath }).strict()

/**
 * A record keyed by domain (or, `ip`, IP address), its keys as lookups compare them: 'Example.COM.'
 * was a throttle that never applied (lookups use the lower-case name without its dot). `wildcard`:
 * '*.example.net' stands for the subdomains.
 */
const byName = <T extends z.ZodType>(value: T, o: { wildcard?: boolean; ip?: boolean; what: string }) =>
  z.record(z.string(), value).transform((record, ctx) => {
    const out: Record<string, z.output<T>> = {}
    for (const [key, v] of Object.entries(record)) {
      const wild = o.wildcard && key.startsWith('*.')
      const bare = wild ? key.slice(2) : key
      const ip = bare.replace(/^\[(.*)\]$/, '$1')
      // An IPv6 address in its canonical form (2001:db8::1), as a resolver gives it.
      const name = o.ip && net.isIP(ip) ? (net.isIPv6(ip) ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip) : asDomain(bare)
      if (name === undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${JSON.stringify(key)} is not ${o.what}` })
      else out[wild ? `*.${name}` : name] = v as z.output<T>
    }
    return out
  })

/** 'ip', 'ip:port' or '[ipv6]:port' (port 1-65535: Node would take 70000 as 4464). */
const dnsServer = hostPortString({ names: false })

const pluginObject = z.custom<Plugin>(
  (v) => typeof v === 'object' && v !== null && typeof (v as { name?: unknown }).name === 'string',
  { message: 'expected a plugin object made by definePlugin()' },
)
const pluginRef = z.union([z.string().min(1), pluginObject], {
  error: "expected a plugin name, a path, or a plugin object, alone or as [plugin, options]",
})
const pluginEntry = z.union([pluginRef, z.tuple([pluginRef]), z.tuple([pluginRef, z.unknown()])], {
  error: "expected a plugin name, a path, or a plugin object, alone or as [plugin, options]",
})

/** How long the queue keeps its reputation counters and its sent log (for matching complaints). */
const queueRetention = duration.default(30 * 86_400_000)

const REPUTATION_MOVED =
  "moved: feedback addresses are an option of the bundled plugin 'reputation', " +
  "plugins: [['reputation', { feedbackAddresses }], ...], listed before content scanners such as spam " +
  '(a feedback report carries the reported spam); the warning thresholds (minVolume, bounceRateWarning, ' +
  'complaintRateWarning) are now under stats; reputation.retention is now queue.retention'

export const configSchema = z
  .object({
    hostname: ownHostName.default(() => os.hostname()).register(restartOnly),
    listen: z.array(listener).min(1).prefault([{ host: '127.0.0.1', port: 2525, role: 'mx' }]).register(restartOnly),
    localDomains: z.array(domain).default([]),
    /**
     * Where mail for the relay's postmaster goes (RFC 5321 §4.5.1): `RCPT TO:<postmaster>` (no
     * domain), `<postmaster@hostname>` and `<postmaster@[the listener's address]>`. Default: postmaster@ the first local domain, or with none
     * postmaster@`hostname`, delivered by its MX (as Postfix appends $myorigin).
     */
    postmaster: z
      .string()
      .regex(/^[^\s@<>"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/, { message: 'expected an address like ops@example.com' })
      .optional(),
    dataDir: z.string().min(1).default('./data').register(restartOnly),
    /** Certificate for STARTTLS and implicit TLS (PEM file paths); `sni` adds names with their own. */
    tls: z
      .object({
        cert: pemFilePath,
        key: pemFilePath,
        // Matched exactly (lower case, no trailing dot): a wildcard name never matches, and '*' would be the default certificate's.
        sni: byName(certPair, { what: "a host name the client asks for (a wildcard such as '*.example.com' is not matched: list each name)" }).default({}),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').register(restartOnly),
      })
      .strict()
      .optional(),
    dns: z
      .object({
        servers: z.array(dnsServer).min(1).optional(),
        timeout: timeout.default(5000),
      })
      .strict()
      .prefault({})
      .register(restartOnly),
    smtp: smtpSection,
    delivery: z
      .object({
        port: port.default(25),
        // Floors: a zero (or a few ms) retried a failing message in a loop, hundreds of attempts a second.
        retry: z
          .object({ base: durationAtLeast(MIN_RETRY_MS, MIN_RETRY).default(300_000), factor: z.number().min(1).default(2), max: durationAtLeast(MIN_RETRY_MS, MIN_RETRY).optional() })
          .strict()
          // The delay is capped at max: a max under base would be the delay, whatever base says.
          .superRefine((r, ctx) => {
            if (r.max !== undefined && r.max < r.base) ctx.addIssue({ code: 'custom', path: ['max'], message: `must be at least base (${formatDuration(r.base)}): every retry waits at most max` })
          })
          // Unset, max is 4h, or base when base is longer (a config giving only base: '6h' stays valid).
          .transform((r) => ({ ...r, max: r.max ?? Math.max(r.base, 14_400_000) }))
          .prefault({}),
        // 0 would bounce mail at its first temporary failure (not 'never', as 0 is elsewhere).
        maxQueueLifetime: duration.refine((ms) => ms > 0, { message: 'expected more than 0: mail still undelivered after this long is bounced (0 would bounce it at its first temporary failure)' }).default(5 * 86_400_000),
        concurrency: z
          .object({ global: z.number().int().positive().default(100), perDomain: z.number().int().positive().default(20) })
          .strict()
          .prefault({})
          .register(restartOnly),
        connectTimeout: timeout.default(30_000),
        /** Per-command reply timeout on outbound connections. */
        commandTimeout: timeout.default(300_000),
        /**
         * The wait for the reply to the message's final dot (RFC 5321 §4.5.3.2.6: at least 10
         * minutes; Postfix's smtp_data_done_timeout): a server may scan the message first, and a
         * shorter wait sends it again while the server is still taking it.
         */
        dataDoneTimeout: timeout.default(600_000),
        /**
         * One attempt, every host it tries included, ends after this long: a host that answers a byte
         * at a time cannot hold a message (and its slot) for hours. What is unanswered then waits for a retry.
         */
        attemptTimeout: timeout.default(1_200_000),
        /** At most this many addresses (MX or route hosts) are tried in one attempt, best first (Postfix's smtp_mx_address_limit); 0: all. */
        maxHostsPerAttempt: z.number().int().min(0).default(5),
        /**
         * Recipients of one domain go in transactions of at most this many, one after another (RFC 5321
         * §4.5.3.1.8: a server need take only 100; Postfix sends 50): a 452 "too many recipients" after 100 would defer the rest for hours.
         */
        maxRecipientsPerTransaction: z.number().int().min(1).max(1000).default(50),
        /**
         * How long a claimed job stays leased before it counts as abandoned. At least 300 ms: leases
         * are renewed every lease/3 but 100 ms apart at least (leases.ts); a shorter one runs out under
         * its attempt, and the queue scan finds it due again and again (a loop).
         */
        lease: timerAtLeast(300, '300ms').default(900_000).register(restartOnly),
        /** Public addresses this relay sends from (relay doctor checks SPF and reverse DNS for them). */
        outboundAddresses: z.array(z.string().refine((a) => net.isIP(a) !== 0, { message: 'expected an IP address' })).default([]),
        /** Outbound connections stay open for further messages to the same host. */
        reuse: z
          .object({ maxMessages: z.number().int().min(1).default(100), idleTimeout: timer.default(5000) })
          .strict()
          .prefault({})
          .register(restartOnly),
        /** Per-destination throttles (core/delivery/throttle.ts); `redis` shares the counters between nodes. */
        throttle: z
          .object({
            default: throttleLimits.prefault({}),
            /** By destination domain: 'example.com', or '*.example.net' for its subdomains. */
            domains: byName(throttleLimits, { wildcard: true, what: "a domain name like example.com or '*.example.net'" }).default({}),
            /** By MX host name or IP address. */
            hosts: byName(throttleLimits, { ip: true, what: 'a host name or IP address' }).default({}),
            /** After 421 / 4.7.x "slow down": pause base, doubling to max; one connection back per `recoverAfter` deliveries. */
            backoff: z
              .object({ base: timer.default(5_000), max: timer.default(300_000), recoverAfter: z.number().int().positive().default(5) })
              .strict()
              .prefault({}),
            /** How long an attempt waits for a slot with a throttled MX host before it tries the next host (or defers). */
            hostWait: timer.default(30_000),
            redis: serviceUrl(['redis:', 'rediss:'], 'redis://127.0.0.1:6379').optional(),
            keyPrefix: z.string().default('relay:throttle:'),
          })
          .strict()
          .prefault({})
          .register(restartOnly),
        /** A warning DSN (Action: delayed) to the sender once a message has waited this long, once; 0 or false: never. */
        delayWarning: z
          .union([z.literal(false), duration])
          .default(14_400_000)
          .transform((v) => (v === false ? 0 : v)),
        /** Hard-bounced addresses (5xx, bad mailbox) are refused at RCPT for `ttl` (0: until removed). */
        suppression: z
          .object({ enabled: z.boolean().default(true), ttl: duration.default(30 * 86_400_000) })
          .strict()
          .prefault({}),
        /**
         * DSNs (bounces, delay warnings) for mail from untrusted clients (no AUTH, not in
         * smtp.trustedNetworks, and only local recipients: a message a plugin such as relay-acl let
         * through to another domain is trusted), whose sender may be forged: always headers only (RET=FULL is not
         * honoured), and at most one per sender address per `interval` (0: no limit); the rest are
         * dropped with a log line. Remembered per node, in memory, for up to `maxSenders` addresses.
         */
        untrustedDsn: z
          .object({ interval: duration.default(3_600_000), maxSenders: z.number().int().positive().default(100_000) })
          .strict()
          .prefault({}),
        /** Extra CA certificates (PEM file, relative to the config file) trusted besides the system's, for tls 'verify' and MTA-STS. */
        tlsCa: pemFilePath.optional().register(restartOnly),
        /** MTA-STS (RFC 8461) on MX deliveries; policies are cached in memory until their max_age. */
        mtaSts: z
          .object({
            enabled: z.boolean().default(true),
            /** Time limit for fetching a policy over HTTPS. */
            timeout: timeout.default(20_000),
            /** For tests and staging: fetch every policy from this 'host:port' instead of mta-sts.<domain>:443 (the certificate is still checked for mta-sts.<domain>). */
            connectTo: hostPortString({ port: 'required' }).optional(),
          })
          .strict()
          .prefault({})
          .register(restartOnly),
      })
      .strict()
      .prefault({}),
    /**
     * The queue: 'sqlite' (embedded, one machine: `<dataDir>/queue.sqlite`) or 'postgres' (cluster
     * mode: every node on the same database).
     */
    queue: z
      // Without a driver, the embedded one: `queue: { retention: '7d' }` alone is a whole setting.
      .preprocess((v) => (v && typeof v === 'object' && !Array.isArray(v) && !('driver' in v) ? { driver: 'sqlite', ...v } : v), z.discriminatedUnion('driver', [
        z.object({ driver: z.literal('sqlite'), retention: queueRetention }).strict(),
        z
          .object({
            driver: z.literal('postgres'),
            retention: queueRetention,
            url: serviceUrl(['postgres:', 'postgresql:'], 'postgres://relay@127.0.0.1:5432/relay'),
            /** Connections in this node's pool. */
            poolSize: z.number().int().positive().default(10),
            /** Schema holding the queue tables (created if missing). */
            schema: z.string().regex(/^[a-z_][a-z0-9_]*$/, { message: 'expected a lower-case SQL identifier' }).default('relay'),
            /**
             * How long one statement may take before it is given up and its connection dropped:
             * a database that stops answering (lost network, hung server) then costs an SMTP client
             * a 451 after this long, not a session that hangs, and delivery scans resume.
             */
            queryTimeout: timerAtLeast(1000, '1s').default(20_000),
            /**
             * Node liveness (core/queue/heartbeat.ts): every node records a heartbeat in the queue
             * each `interval`, on a connection of its own; a node whose last one is older than
             * `deadAfter` (on the database's clock) is dead, and its leased work is taken over at
             * once instead of after `delivery.lease`. `deadAfter` must be at least 3 × `interval`, so
             * a node that is only slow (a GC pause, a busy database) is not taken for dead.
             */
            heartbeat: z
              // A beat is a database write: a few ms apart would keep the database busy with nothing else.
              .object({ interval: timerAtLeast(100, '100ms').default(5_000), deadAfter: timer.default(30_000) })
              .strict()
              .superRefine((h, ctx) => {
                if (h.deadAfter < 3 * h.interval) {
                  ctx.addIssue({ code: 'custom', path: ['deadAfter'], message: `must be at least 3 × interval (${h.interval / 1000}s), so a node that is only slow is not taken for dead` })
                }
              })
              .prefault({}),
          })
          .strict(),
      ]))
      .prefault({ driver: 'sqlite' })
      .register(restartOnly),
    // Moved to the bundled admin plugin (plugins/admin): a clear error names the new place.
    admin: z
      .never({ error: "moved to the admin plugin: plugins: [['admin', { host, port, token, hosts, insecureNoToken }]] (see plugins/admin/README.md)" })
      .optional(),
    metrics: z
      .never({ error: "moved to the admin plugin: plugins: [['admin', { ..., metrics: { maxDomainLabels } }]] (see plugins/admin/README.md)" })
      .optional(),
    /** When `relay stats`, the admin API and the reputation plugin warn about a sending domain's rates. */
    stats: z
      .object({
        /** A bounce rate over the period above this (0.05 = 5%). */
        bounceRateWarning: z.number().min(0).max(1).default(0.05),
        /** A complaint rate above this (0.003 = 0.3%). */
        complaintRateWarning: z.number().min(0).max(1).default(0.003),
        /** Rates are judged only for domains that sent at least this many messages in the period. */
        minVolume: z.number().int().min(1).default(20),
      })
      .strict()
      .prefault({}),
    /** Moved (the reputation plugin, stats and queue.retention): a clear error instead of "unknown key". */
    reputation: z.never({ error: REPUTATION_MOVED }).optional(),
    hookTimeout: timeout.default(30_000).register(restartOnly),
    /** How long a plugin's setup may take at start, reload and check-config before it fails, naming the plugin. */
    setupTimeout: timeout.default(DEFAULT_SETUP_TIMEOUT),
    shutdownTimeout: timer.default(30_000),
    /**
     * SMTP worker processes: 1 runs everything in one process; N (or 'auto': one per core) runs the
     * SMTP sessions in N processes sharing the listening ports, beside a primary process with the
     * queue, delivery and operations plugins (docs/workers.md).
     */
    workers: z
      .union([z.literal('auto'), z.number().int().min(1).max(256)])
      .default(1)
      .register(restartOnly),
    plugins: z.array(pluginEntry).default([]),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** 'json': pino JSON lines; 'line': one Postfix-like maillog line per event (docs/logging.md). */
        format: z.enum(['json', 'line']).default('json').register(restartOnly),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    c.listen.forEach((l, i) => {
      if ((l.tls === 'starttls' || l.tls === 'implicit') && !c.tls) {
        ctx.addIssue({
          code: 'custom',
          path: ['listen', i, 'tls'],
          message: `'${l.tls}' needs a certificate: set tls: { cert, key } (for development, \`relay tls selfsigned\` makes one)`,
        })
      } else if (l.role === 'submission' && !l.auth) {
        ctx.addIssue({ code: 'custom', path: ['listen', i, 'auth'], message: 'a submission listener takes mail only after AUTH: auth: false is for mx listeners' })
      } else if (l.role === 'submission' && !l.allowPlaintextAuth && (!c.tls || l.tls === 'none')) {
        // AUTH before MAIL, AUTH only inside TLS: such a listener would answer every MAIL with 530.
        ctx.addIssue({
          code: 'custom',
          path: ['listen', i],
          message:
            'a submission listener takes mail only after AUTH, and AUTH only inside TLS: set tls: { cert, key } ' +
            '(for development, `relay tls selfsigned` makes one), or allowPlaintextAuth: true on this listener',
        })
      }
    })
  })

/** What a user writes in relay.config.ts (every key with a default is optional). */
export type RelayConfigInput = z.input<typeof configSchema>
/** The validated config with defaults applied; durations in ms, sizes in bytes. */
export type RelayConfig = z.output<typeof configSchema> & { configDir: string; configFile?: string }

/** Gives completion and type checking in relay.config.ts; returns its argument unchanged. */
export function defineConfig(config: RelayConfigInput): RelayConfigInput {
  return config
}
