// Options of the admin plugin and their defaults (see README.md).
import net from 'node:net'
import { z } from '../../core/index.js'

const port = z.number().int().min(0).max(65535)

export const optionsSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: port.default(8025),
    /** Sent as `Authorization: Bearer`; required unless `insecureNoToken` (loopback only). */
    token: z.string().min(16, { message: 'use a token of at least 16 characters' }).optional(),
    /** Further names the listener is reached by in the Host header (a reverse proxy's, a DNS name): any port. */
    hosts: z.array(z.string().min(1)).default([]),
    /**
     * Run without a token, on a loopback address only: every local user and program (a browser
     * included) can then control the queue. Logged as a warning at start.
     */
    insecureNoToken: z.boolean().default(false),
    /** Prometheus metrics (GET /metrics). */
    metrics: z
      .object({
        /** Destination domains that get their own label value; the rest count as 'other' (bounded label sets). */
        maxDomainLabels: z.number().int().min(0).default(50),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((o, ctx) => {
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
