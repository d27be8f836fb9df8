// Options of the rate-limit plugin: durations, CIDR lists, and the zod schema (see README.md).
import net from 'node:net'
import { z } from '../../core/index.js'

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** '90s', '15m', '1h', '1d' or a number of seconds, to milliseconds; undefined when not a duration. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhd])?\s*$/.exec(value)
  return m ? Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!) : undefined
}

/** A duration of at least one second (the counters work in whole seconds), in milliseconds. */
const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value)
  if (ms === undefined || ms < 1000) {
    ctx.addIssue({ code: 'custom', message: `expected a duration of 1s or more, like '90s', '15m', '1h' or a number of seconds, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return ms
})

const cidr = z.string().refine(
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

const count = z.number().int().positive()

export const optionsSchema = z
  .object({
    /** Where counters live: this process ('memory') or a Redis shared by several relays. */
    store: z
      .union([
        z.literal('memory'),
        z
          .object({
            redis: z.string().regex(/^rediss?:\/\//, { message: "expected a Redis URL like 'redis://127.0.0.1:6379'" }),
            /** Per-command timeout; a slower answer counts as a store error. */
            timeout: duration.default(1000),
          })
          .strict(),
      ])
      .default('memory'),
    keyPrefix: z.string().min(1).default('relay-rl'),
    perIp: z
      .object({
        /** Open connections from one address. */
        concurrent: count.optional(),
        /** New connections from one address per minute. */
        connectionsPerMinute: count.optional(),
        /** Failed AUTH from one address: `max` within `window` locks the address out for `lockout`. */
        authFailures: z
          .object({ max: count, window: duration.default(900_000), lockout: duration.default(900_000) })
          .strict()
          .optional(),
        /** Redis only: a connection slot left behind by a relay that died is forgotten after this long without connections from that address. */
        concurrentTtl: duration.default(3_600_000),
      })
      .strict()
      .prefault({}),
    perUser: z
      .object({ messagesPerHour: count.optional(), recipientsPerHour: count.optional() })
      .strict()
      .prefault({}),
    perSenderDomain: z
      .object({
        messagesPerHour: count.optional(),
        /** Count only mail from authenticated sessions (submission); false counts every client. */
        authenticatedOnly: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    /** Clients in these networks are never limited. */
    exempt: z.array(cidr).default([]),
    /** When the store fails (Redis down, slow): 'allow' the mail (and log), or 'tempfail' it. */
    onStoreError: z.enum(['allow', 'tempfail']).default('allow'),
  })
  .strict()

export type RateLimitOptions = z.output<typeof optionsSchema>

/** A matcher for a list of CIDR blocks; IPv4-mapped IPv6 addresses match their IPv4 block. */
export function networkMatcher(blocks: string[]): (ip: string) => boolean {
  if (blocks.length === 0) return () => false
  const list = new net.BlockList()
  for (const block of blocks) {
    const [ip, bits] = block.split('/') as [string, string | undefined]
    const family = net.isIP(ip) === 6 ? 'ipv6' : 'ipv4'
    list.addSubnet(ip, bits === undefined ? (family === 'ipv4' ? 32 : 128) : Number(bits), family)
  }
  return (ip) => {
    const plain = ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : ip
    const family = net.isIP(plain)
    return family !== 0 && list.check(plain, family === 4 ? 'ipv4' : 'ipv6')
  }
}
