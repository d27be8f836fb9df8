import { duration, httpUrlWith, timerAtLeast, z } from '../../core/index.js'

/** `url`: credentials in it are refused, naming the option that carries them instead. */
const url = httpUrlWith("(every AUTH would get 454); send the credential in `headers` instead, e.g. { authorization: 'Basic …' } (never logged)")

export const options = z
  .object({
    /** Where the credentials are POSTed as JSON. */
    url,
    /** Longest wait for the whole answer (connect, headers, body); then AUTH gets 454 4.7.0. */
    timeout: timerAtLeast(1, '1ms').default(5000),
    /** How long a successful login is remembered (0: not at all). Failures are never remembered. */
    cacheTtl: duration.default(60_000),
    /** Most remembered logins; the oldest are dropped first. */
    cacheSize: z.number().int().min(1).default(10_000),
    /** Extra request headers, e.g. { authorization: 'Bearer …' } (never logged). */
    headers: z.record(z.string(), z.string()).default({}),
  })
  .strict()

export type AuthHttpOptions = z.output<typeof options>
