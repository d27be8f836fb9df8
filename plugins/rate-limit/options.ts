// Options of the rate-limit plugin: durations, CIDR lists, and the zod schema (see README.md).
import { cidr, durationAtLeast, timer, z } from '../../core/index.js'

/** A duration of at least one second (the counters work in whole seconds), in milliseconds. */
const duration = durationAtLeast(1000, '1s')

const count = z.number().int().positive()

/**
 * A limit that is on by default: `false` turns it off, anything else (or nothing: its default) is
 * checked by `schema`. (A zod union would report a bad value without the path of the bad field.)
 */
function orOff<T extends z.ZodType>(schema: T) {
  return z
    .unknown()
    .optional()
    .transform((v, ctx): false | z.output<T> => {
      if (v === false) return false
      const r = schema.safeParse(v)
      if (r.success) return r.data
      for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path as (string | number)[] })
      return z.NEVER
    })
}

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
            timeout: timer.default(1000),
          })
          .strict(),
      ])
      .default('memory'),
    keyPrefix: z.string().min(1).default('relay-rl'),
    perIp: z
      .object({
        /** Open connections from one address (the core caps it at smtp.maxConnectionsPerClient anyway). */
        concurrent: count.optional(),
        /** New connections from one address per minute. On by default (60); false turns it off. */
        connectionsPerMinute: orOff(count.default(60)),
        /**
         * Failed AUTH from one address: `max` within `window` locks the address out for `lockout`.
         * On by default (10 in 15 min lock out for 15 min); false turns it off.
         */
        authFailures: orOff(z.object({ max: count.default(10), window: duration.default(900_000), lockout: duration.default(900_000) }).strict().prefault({})),
        /**
         * Redis only: how long a connection slot lives unless its relay renews it (every third of
         * this while the session lasts): the slots of a relay that died, or that Redis took after a
         * command timed out, are free after it.
         */
        concurrentTtl: duration.default(60_000),
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
    /**
     * The per-IP limits count an IPv6 client with its whole /ipv6Prefix network (one customer's
     * /64), an IPv4 client by its address: clientKey(). Keep it equal to smtp.clientIpv6Prefix.
     */
    ipv6Prefix: z.number().int().min(1).max(128).default(64),
    /** Clients in these networks are never limited. */
    exempt: z.array(cidr).default([]),
    /** When the store fails (Redis down, slow): 'allow' the mail (and log), or 'tempfail' it. */
    onStoreError: z.enum(['allow', 'tempfail']).default('allow'),
  })
  .strict()

export type RateLimitOptions = z.output<typeof optionsSchema>
export type AuthFailureLimit = Exclude<RateLimitOptions['perIp']['authFailures'], false>
