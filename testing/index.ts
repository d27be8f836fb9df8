/**
 * `relay-mta/testing`: what Relay's own tests use, for plugin authors. Everything runs for real on
 * loopback: the built relay as a child process, a DNS server, receiving SMTP servers, SMTP clients.
 *
 *   const t = await startTestRelay({ plugins: [[new URL('./index.ts', import.meta.url), { ... }]] })
 *   const r = await t.send({ from: 'a@sender.test', to: 'bob@example.test' })
 *   expect(r.rcpt).toEqual([250]); await t.receiver.waitForMessages(1)
 *   await t.close()
 *
 * When waitForMessages times out, its error lists the relay's last delivery events and errors (a
 * deferral with the receiver's reply, an NXDOMAIN bounce, ...).
 *
 * The building blocks are exported too: startRelay, startDns, startReceiver, sendMail, connectRaw,
 * makeCa, eventually, tempDir, runCli.
 */
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { ROOT, startRelay, type LogLine, type RelayProcess } from './relay.js'
import { startDns, type TestDns, type ZoneEntry } from './dns-server.js'
import { startReceiver, type Behaviour, type ReceiverUsers, type TestReceiver } from './smtp-receiver.js'
import { connectRaw, dotStuff, type RawSmtp } from './smtp-client.js'

export * from './relay.js'
export * from './dns-server.js'
export * from './smtp-receiver.js'
export * from './smtp-client.js'
export * from './tls.js'
export * from './run-hook.js'

/** A plugin: a file (absolute, `./relative` to the working directory, or a `file:` URL) or a name. */
export type PluginRef = string | URL
export type PluginEntry = PluginRef | [PluginRef, Record<string, unknown>?]

export interface TestRelayOptions {
  /** Your plugins, in order, with their options. */
  plugins?: PluginEntry[]
  /**
   * Config keys, merged over the test defaults (objects one level deep, e.g. `smtp: { maxRecipients: 2 }`
   * keeps the other `smtp` defaults). A `plugins` key here replaces the whole list, relay-acl included.
   */
  config?: Record<string, unknown>
  /**
   * Clients in these networks may relay (the bundled `relay-acl`, listed after your plugins so they
   * see every recipient first). Default `['127.0.0.0/8']`; `false` leaves relay-acl out.
   */
  trustedNetworks?: string[] | false
  /** More DNS names, added to the default `example.test` MX → the receiver. */
  zones?: Record<string, ZoneEntry>
  /**
   * Options for the receiving server (`behaviour`: custom replies, drop, stall; `users`: offer AUTH
   * to these user → password pairs, each message then records its `authUser`).
   */
  receiver?: { behaviour?: Behaviour; users?: ReceiverUsers }
  /** Extra environment for the relay process. */
  env?: Record<string, string>
  /**
   * The directory the config file is written to (default: a new temporary one): relative paths in
   * plugin options (`ctx.resolvePath`, `watchFile`) are taken from it. The data directory is `data/` in it.
   */
  dir?: string
}

export interface TestRelay {
  /** The relay's SMTP port (role mx, on 127.0.0.1). */
  port: number
  relay: RelayProcess
  dns: TestDns
  /** The MX of `example.test` (and of any domain you point at 127.0.0.1 in `zones`). */
  receiver: TestReceiver
  /** `send()` to this relay. */
  send(opts: Omit<SendOptions, 'port'> & { port?: number }): Promise<SendResult>
  /** Stops the relay, the DNS server and the receiver. */
  close(): Promise<void>
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

function mergeConfig(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base }
  for (const [k, v] of Object.entries(over)) out[k] = isObject(v) && isObject(out[k]) ? { ...out[k], ...v } : v
  return out
}

/**
 * Turns a plugin reference into what the relay's config needs. The relay runs with its config in a
 * temp directory, so paths become absolute and npm plugins (`relay-plugin-<name>`) are found from
 * the test's working directory; bundled plugins (`relay-acl`, ...) stay names.
 */
export function resolvePluginRef(ref: PluginRef, cwd = process.cwd()): string {
  if (ref instanceof URL) return fileURLToPath(ref)
  if (ref.startsWith('file:')) return fileURLToPath(ref)
  if (ref.startsWith('.')) return path.resolve(cwd, ref)
  if (path.isAbsolute(ref)) return ref
  const bundled = ['dist/plugins', 'plugins'].some((d) => fs.existsSync(path.join(ROOT, d, ref)))
  if (bundled) return ref
  const pkg = ref.startsWith('relay-plugin-') || ref.startsWith('@') ? ref : `relay-plugin-${ref}`
  try {
    return createRequire(path.join(cwd, 'package.json')).resolve(pkg)
  } catch {
    return ref // the relay reports it as an unknown plugin
  }
}

const DELIVERY_EVENTS = new Set(['accepted', 'delivered', 'deferred', 'bounced', 'suppressed', 'rejected'])

/** One log line for a test's failure message: the event, its recipient and the reply or error. */
function describeLine(l: LogLine): string {
  const err = l.err as { message?: string } | undefined
  const parts = [
    typeof l.event === 'string' ? l.event : l.level >= 50 ? 'error' : 'warning',
    l.recipient ?? l.recipients,
    l.route && `via ${String(l.route)}`,
    l.remoteHost && `at ${String(l.remoteHost)}`,
    l.response ?? l.text ?? (l.event ? undefined : l.msg),
    err?.message,
  ]
  return `  ${parts.filter((p) => p !== undefined && p !== '').map(String).join(' ')}`
}

/**
 * Why a test receiver got nothing: the relay's last delivery events (accepted, deferred with the
 * reply, bounced, ...) and its warnings and errors, from the log lines startRelay collects.
 */
export function recentDeliveryLog(logs: LogLine[], max = 10): string {
  const relevant = logs.filter((l) => (typeof l.event === 'string' && DELIVERY_EVENTS.has(l.event)) || l.level >= 40).slice(-max)
  if (relevant.length === 0) return 'the relay logged no delivery events, warnings or errors'
  return `the relay's last delivery events and errors:\n${relevant.map(describeLine).join('\n')}`
}

/**
 * Starts a DNS server, a receiving SMTP server and the relay, wired together: `example.test` has
 * its MX on the receiver, the relay delivers there at once (retries after 1 s), and clients on
 * 127.0.0.0/8 may relay. Call `close()` in `afterAll`.
 */
export async function startTestRelay(opts: TestRelayOptions = {}): Promise<TestRelay> {
  const receiver = await startReceiver({ host: '127.0.0.1', behaviour: opts.receiver?.behaviour, users: opts.receiver?.users })
  let dns: TestDns | undefined
  try {
    dns = await startDns({
      'example.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
      'mx.example.test': { A: ['127.0.0.1'] },
      ...opts.zones,
    })
    const plugins: unknown[] = (opts.plugins ?? []).map((entry) =>
      Array.isArray(entry) ? [resolvePluginRef(entry[0]), entry[1] ?? {}] : resolvePluginRef(entry),
    )
    const trusted = opts.trustedNetworks ?? ['127.0.0.0/8']
    if (trusted !== false) plugins.push(['relay-acl', { trustedNetworks: trusted }])
    const config = mergeConfig(
      {
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: receiver.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
        smtp: { reverseLookup: false, authFailureDelay: '10ms' },
        plugins,
      },
      opts.config ?? {},
    )
    const relay = await startRelay({ config, env: opts.env, dir: opts.dir })
    receiver.explainTimeout = () => recentDeliveryLog(relay.logs)
    const d = dns
    return {
      get port() {
        return relay.port
      },
      relay,
      dns: d,
      receiver,
      send: (o) => send({ ...o, port: o.port ?? relay.port }),
      async close() {
        await relay.stop().catch(() => relay.kill9())
        await Promise.all([d.close(), receiver.close()])
      },
    }
  } catch (err) {
    await Promise.all([dns?.close(), receiver.close()])
    throw err
  }
}

/** A small RFC 5322 message with CRLF line ends. */
export function buildMessage(opts: { from: string; to: string | string[]; subject?: string; body?: string; headers?: Record<string, string> }): string {
  const to = Array.isArray(opts.to) ? opts.to : [opts.to]
  const domain = opts.from.split('@')[1] || 'sender.test'
  const lines = [
    `From: ${opts.from}`,
    `To: ${to.join(', ')}`,
    `Subject: ${opts.subject ?? 'test'}`,
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}@${domain}>`,
    ...Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
  ]
  const body = (opts.body ?? 'Hello.\n').replace(/\r?\n/g, '\r\n')
  return `${lines.join('\r\n')}\r\n\r\n${body}`
}

export interface SendOptions {
  port: number
  from: string
  to: string | string[]
  /** The message (dot-stuffing is done here). Default: `buildMessage({ from, to, subject })`. */
  data?: string | Buffer
  subject?: string
  host?: string
  helo?: string
  /** Connect from this loopback address, e.g. `127.0.0.77`. */
  localAddress?: string
  /** STARTTLS after EHLO; `ca` verifies the relay's certificate. */
  starttls?: boolean | { ca?: Buffer; servername?: string }
  /** AUTH PLAIN. */
  auth?: { user: string; pass: string }
  timeoutMs?: number
}

export interface SendResult {
  /** Every reply's code in order: greeting, EHLO, [STARTTLS, EHLO], [AUTH], MAIL, each RCPT, DATA, end of data. */
  codes: number[]
  /** The replies themselves, same order (multi-line replies joined with CRLF). */
  replies: string[]
  /** Reply code to MAIL FROM (undefined when the session ended before it). */
  mail?: number
  /** Reply code to each RCPT TO, in order. Every recipient is tried, even after a refusal. */
  rcpt: number[]
  /** Reply code at the end of the message (or to DATA itself when that was refused). */
  data?: number
  /** The queue id from `250 2.0.0 Ok: queued as <id>`. */
  queueId?: string
  /** The last reply. */
  last: string
}

const codeOf = (reply: string): number => Number(reply.slice(0, 3)) || 0

/**
 * One SMTP transaction, like a real client: every recipient is tried, DATA is sent when at least
 * one was accepted. Stops (with QUIT) after a refused greeting, EHLO, STARTTLS, AUTH, MAIL or DATA.
 */
export async function send(opts: SendOptions): Promise<SendResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000
  const to = Array.isArray(opts.to) ? opts.to : [opts.to]
  const { client, greeting } = await connectRaw(opts.port, opts.host ?? '127.0.0.1', timeoutMs, undefined, opts.localAddress)
  const result: SendResult = { codes: [], replies: [], rcpt: [], last: '' }
  const note = (reply: string): number => {
    result.replies.push(reply)
    result.codes.push(codeOf(reply))
    result.last = reply
    return codeOf(reply)
  }
  const cmd = async (c: RawSmtp, line: string): Promise<number> => note(await c.command(line, timeoutMs))
  try {
    if (note(greeting) >= 400) return result
    const helo = `EHLO ${opts.helo ?? 'client.test'}`
    if ((await cmd(client, helo)) >= 400) return result
    if (opts.starttls) {
      if ((await cmd(client, 'STARTTLS')) >= 400) return result
      const t = typeof opts.starttls === 'object' ? opts.starttls : {}
      await client.startTls({ ca: t.ca, servername: t.servername, timeoutMs })
      if ((await cmd(client, helo)) >= 400) return result
    }
    if (opts.auth) {
      const token = Buffer.from(`\0${opts.auth.user}\0${opts.auth.pass}`).toString('base64')
      if ((await cmd(client, `AUTH PLAIN ${token}`)) >= 400) return result
    }
    result.mail = await cmd(client, `MAIL FROM:<${opts.from}>`)
    if (result.mail >= 400) return result
    for (const rcpt of to) result.rcpt.push(await cmd(client, `RCPT TO:<${rcpt}>`))
    if (!result.rcpt.some((c) => c < 400)) return result
    result.data = await cmd(client, 'DATA')
    if (result.data !== 354) return result
    const p = client.read(timeoutMs)
    client.send(dotStuff(opts.data ?? buildMessage({ from: opts.from, to, subject: opts.subject })))
    result.data = note(await p)
    result.queueId = /queued as (\S+)/.exec(result.last)?.[1]
    return result
  } finally {
    if (!client.isClosed()) await client.command('QUIT', 1000).catch(() => undefined)
    client.close()
  }
}
