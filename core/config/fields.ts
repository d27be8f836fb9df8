// Option types shared by the core config and plugin option schemas (exported in core/index.ts),
// so that every duration, size and network block in relay.config.ts reads and fails the same way.
import net from 'node:net'
import { z } from 'zod'
import { parseDuration, parseSize } from './duration.js'

/** A duration ('250ms', '90s', '5m', '4h', '5d', or seconds as a number), parsed to milliseconds. */
export const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value)
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like '90s', '5m', '4h', '5d' or a number of seconds, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return ms
})

/** A duration of at least `minMs` milliseconds. */
export const durationAtLeast = (minMs: number, hint = `${minMs} ms`) =>
  duration.refine((ms) => ms >= minMs, { message: `expected a duration of at least ${hint}` })

/** A size ('25MB', '512KB', or bytes as a number), parsed to bytes. */
export const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value)
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size like '25MB', '512KB' or a number of bytes, got ${JSON.stringify(value)}` })
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

/** An http:// or https:// URL. */
export const httpUrl = z.string().refine(
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
