import { z } from '../../core/index.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** '5s', '500ms', '1m', or a number of seconds → milliseconds (>= 0; 0 only where allowed). */
const durationMs = (allowZero: boolean) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const m = typeof value === 'number' ? [String(value), String(value), 's'] : /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value)
    const ms = m ? Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!) : NaN
    if (!Number.isFinite(ms) || ms < 0 || (!allowZero && ms === 0)) {
      ctx.addIssue({ code: 'custom', message: `expected a ${allowZero ? '' : 'positive '}duration like '5s' or '500ms', got ${JSON.stringify(value)}` })
      return z.NEVER
    }
    return ms
  })

const httpUrl = z.string().refine(
  (s) => {
    try {
      const u = new URL(s)
      return u.protocol === 'http:' || u.protocol === 'https:'
    } catch {
      return false
    }
  },
  { message: "expected an http:// or https:// URL, like 'https://auth.example.com/smtp'" },
)

export const options = z
  .object({
    /** Where the credentials are POSTed as JSON. */
    url: httpUrl,
    /** Longest wait for the whole answer (connect, headers, body); then AUTH gets 454 4.7.0. */
    timeout: durationMs(false).default(5000),
    /** How long a successful login is remembered (0: not at all). Failures are never remembered. */
    cacheTtl: durationMs(true).default(60_000),
    /** Most remembered logins; the oldest are dropped first. */
    cacheSize: z.number().int().min(1).default(10_000),
    /** Extra request headers, e.g. { authorization: 'Bearer …' } (never logged). */
    headers: z.record(z.string(), z.string()).default({}),
  })
  .strict()

export type AuthHttpOptions = z.output<typeof options>
