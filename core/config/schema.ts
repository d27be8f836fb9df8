import os from 'node:os'
import net from 'node:net'
import { z } from 'zod'
import { parseDuration, parseSize } from './duration.js'
import type { Plugin } from '../hooks/types.js'

/** A duration ('90s', '5m', '4h', '5d', or seconds as a number), parsed to milliseconds. */
const duration = z
  .union([z.string(), z.number()])
  .transform((value, ctx) => {
    const ms = parseDuration(value)
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a duration like '90s', '5m', '4h', '5d' or a number of seconds, got ${JSON.stringify(value)}` })
      return z.NEVER
    }
    return ms
  })

const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value)
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size like '25MB', '512KB' or a number of bytes, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return bytes
})

const domain = z
  .string()
  .min(1)
  .transform((d) => d.toLowerCase().replace(/\.$/, ''))
  .refine((d) => /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(d), { message: 'expected a domain name like example.com' })

const port = z.number().int().min(0).max(65535)

const listener = z.object({
  host: z.string().default('0.0.0.0'),
  port,
  role: z.enum(['mx', 'submission']),
})

const dnsServer = z.string().refine((s) => net.isIP(s) !== 0 || /^(\d{1,3}(\.\d{1,3}){3}:\d+|\[[0-9a-f:]+\]:\d+)$/i.test(s), {
  message: "expected an IP address or 'ip:port', like '127.0.0.1:5353'",
})

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

export const configSchema = z
  .object({
    hostname: z.string().min(1).default(() => os.hostname()),
    listen: z.array(listener).min(1).default([{ host: '127.0.0.1', port: 2525, role: 'mx' }]),
    localDomains: z.array(domain).default([]),
    dataDir: z.string().min(1).default('./data'),
    dns: z
      .object({
        servers: z.array(dnsServer).min(1).optional(),
        timeout: duration.default(5000),
      })
      .strict()
      .prefault({}),
    smtp: z
      .object({
        maxMessageSize: size.default(50 * 1024 * 1024),
        maxRecipients: z.number().int().positive().default(1000),
        /** Postfix's smtpd_forbid_bare_newline: 'reject' (550 5.6.0) or 'normalize' to CRLF. */
        bareLineEndings: z.enum(['reject', 'normalize']).default('reject'),
        socketTimeout: duration.default(300_000),
        maxClients: z.number().int().positive().default(1000),
        /** Look up the client's reverse DNS name (for Received headers and plugins). */
        reverseLookup: z.boolean().default(true),
        /** Pause before the greeting; a client that talks first is refused (early talker). */
        greetingDelay: duration.default(0),
      })
      .strict()
      .prefault({}),
    delivery: z
      .object({
        port: port.default(25),
        retry: z
          .object({ base: duration.default(300_000), factor: z.number().min(1).default(2), max: duration.default(14_400_000) })
          .strict()
          .prefault({}),
        maxQueueLifetime: duration.default(5 * 86_400_000),
        concurrency: z
          .object({ global: z.number().int().positive().default(100), perDomain: z.number().int().positive().default(20) })
          .strict()
          .prefault({}),
        connectTimeout: duration.default(30_000),
        /** Per-command reply timeout on outbound connections. */
        commandTimeout: duration.default(300_000),
        /** How long a claimed job stays leased before it counts as abandoned. */
        lease: duration.default(900_000),
        /** Outbound connections stay open for further messages to the same host. */
        reuse: z
          .object({ maxMessages: z.number().int().min(1).default(100), idleTimeout: duration.default(5000) })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    hookTimeout: duration.default(30_000),
    shutdownTimeout: duration.default(30_000),
    plugins: z.array(pluginEntry).default([]),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .prefault({}),
  })
  .strict()

/** What a user writes in relay.config.ts (every key with a default is optional). */
export type RelayConfigInput = z.input<typeof configSchema>
/** The validated config with defaults applied; durations in ms, sizes in bytes. */
export type RelayConfig = z.output<typeof configSchema> & { configDir: string; configFile?: string }

/** Gives completion and type checking in relay.config.ts; returns its argument unchanged. */
export function defineConfig(config: RelayConfigInput): RelayConfigInput {
  return config
}
