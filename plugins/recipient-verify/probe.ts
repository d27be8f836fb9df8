// The call-ahead probe: asks the next hop whether it would take a recipient, as Postfix's verify(8)
// does: connect, EHLO (LHLO for LMTP), MAIL FROM:<probe sender>, RCPT TO:<address>, QUIT. Never
// DATA, so nothing is ever delivered. Every step is bounded in time; the socket is always closed.
import net from 'node:net'
import type { Resolver } from 'node:dns/promises'
import { hostPort, type CallAhead, type ProbeRoute } from './options.js'

export interface ProbeResult {
  /** 'accepted' (2xx at RCPT), 'refused' (5xx at RCPT), 'unknown' (no host answered RCPT with 2xx/5xx). */
  outcome: 'accepted' | 'refused' | 'unknown'
  /** The RCPT reply, or why there was none. */
  reply: string
  /** The host that answered, as `host:port` or the socket path. */
  host?: string
  /** No host was reached because a host name could not be looked up (the reply says which). */
  dnsFailure?: boolean
}

/** The DNS lookups a probe makes: the relay's resolver (config `dns.servers`), as hooks get it. */
export type ProbeResolver = Pick<Resolver, 'resolve4' | 'resolve6'>

type Target = { host: string; port: number } | { path: string }

function targetsOf(route: ProbeRoute): Target[] {
  if (route.kind === 'lmtp' && route.socket) return [{ path: route.socket }]
  const fallback = route.kind === 'lmtp' ? 24 : 25
  return (route.host ?? []).map((h) => {
    const { host, port } = hostPort(h)
    return { host, port: route.port ?? port ?? fallback }
  })
}

const label = (t: Target) => ('path' in t ? t.path : `${t.host}:${t.port}`)
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').replace(/[\x00-\x1f\x7f]/g, ' ').trim().slice(0, 300)

/** One SMTP/LMTP conversation on a socket: send a line, read a (multi-line) reply, with a deadline each. */
class Conversation {
  private buf = ''
  private lines: string[] = []
  private replies: string[] = []
  private waiter: ((r: string | Error) => void) | undefined
  private failure: Error | undefined

  constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      this.buf += chunk
      // A next hop that sends endless text without a line end is not waited for.
      if (this.buf.length > 65_536) return this.fail(new Error('reply line too long'))
      let nl: number
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '')
        this.buf = this.buf.slice(nl + 1)
        this.lines.push(line)
        if (this.lines.length > 100) return this.fail(new Error('reply too long'))
        if (!/^\d{3}-/.test(line)) {
          this.replies.push(this.lines.join(' / '))
          this.lines = []
        }
      }
      this.wake()
    })
    socket.on('error', (err) => this.fail(err))
    socket.on('close', () => this.fail(new Error('connection closed')))
  }

  private fail(err: Error): void {
    this.failure ??= err
    this.socket.destroy()
    this.wake()
  }

  private wake(): void {
    if (!this.waiter) return
    const next = this.replies.shift() ?? this.failure
    if (next === undefined) return
    const w = this.waiter
    this.waiter = undefined
    w(next)
  }

  read(timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined
        reject(new Error(`no reply within ${timeoutMs} ms`))
      }, Math.max(1, timeoutMs))
      this.waiter = (r) => {
        clearTimeout(timer)
        if (typeof r === 'string') resolve(r)
        else reject(r)
      }
      this.wake()
    })
  }

  command(line: string, timeoutMs: number): Promise<string> {
    this.socket.write(`${line}\r\n`)
    return this.read(timeoutMs)
  }
}

const notFound = (err: unknown) => ['ENOTFOUND', 'ENODATA'].includes((err as { code?: string }).code ?? '')

/**
 * The addresses of a host name through the relay's resolver: A, then AAAA (also when the A lookup
 * failed but AAAA answers). An IP address is its own. Throws (naming the host) when none is found.
 */
async function addressesOf(resolver: ProbeResolver, host: string, timeoutMs: number): Promise<string[]> {
  if (net.isIP(host)) return [host]
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEOUT' })), Math.max(1, timeoutMs))
  })
  try {
    let failure: unknown
    let missing = 'no A or AAAA record'
    for (const lookup of [() => resolver.resolve4(host), () => resolver.resolve6(host)]) {
      try {
        const found = await Promise.race([lookup(), deadline])
        if (found.length) return found
      } catch (err) {
        if (!notFound(err)) failure ??= err
        else if ((err as { code?: string }).code === 'ENOTFOUND') missing = 'ENOTFOUND (no such name)'
      }
    }
    const why = failure === undefined ? missing : ((failure as { code?: string }).code ?? (failure as Error).message)
    throw new Error(`cannot look up host ${host}: ${why}`)
  } finally {
    clearTimeout(timer)
  }
}

/** Connects to the target (a socket path, or `address` for the target's host name). */
function connect(t: Target, address: string | undefined, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = 'path' in t ? net.connect({ path: t.path }) : net.connect({ host: address ?? t.host, port: t.port })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`connect timed out after ${timeoutMs} ms`))
    }, Math.max(1, timeoutMs))
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.removeAllListeners('error')
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    })
  })
}

const code = (reply: string) => Number(reply.slice(0, 3)) || 0

/**
 * Probes one host at one of its addresses (none for a socket path): a final answer ('accepted' /
 * 'refused'), or 'unknown' with why (then the next address or host is tried).
 */
async function probeHost(t: Target, address: string | undefined, rcpt: string, lmtp: boolean, opts: CallAhead & { heloName: string }, deadline: number): Promise<ProbeResult> {
  const left = (ms: number) => Math.min(ms, deadline - Date.now())
  const host = label(t)
  let socket: net.Socket | undefined
  try {
    socket = await connect(t, address, left(opts.connectTimeout))
    const c = new Conversation(socket)
    const step = async (line: string | undefined, what: string): Promise<string> => {
      const reply = line === undefined ? await c.read(left(opts.commandTimeout)) : await c.command(line, left(opts.commandTimeout))
      if (code(reply) >= 200 && code(reply) < 400) return reply
      throw Object.assign(new Error(`${oneLine(reply)} (in reply to ${what})`), { reply })
    }
    await step(undefined, 'the greeting')
    await step(`${lmtp ? 'LHLO' : 'EHLO'} ${opts.heloName}`, lmtp ? 'LHLO' : 'EHLO')
    await step(`MAIL FROM:<${opts.probeSender}>`, 'MAIL FROM')
    const answer = await c.command(`RCPT TO:<${rcpt}>`, left(opts.commandTimeout))
    socket.write('QUIT\r\n')
    const n = code(answer)
    const reply = `${oneLine(answer)} (in reply to RCPT TO)`
    if (n >= 200 && n < 300) return { outcome: 'accepted', reply, host }
    if (n >= 500 && n < 600) return { outcome: 'refused', reply, host }
    return { outcome: 'unknown', reply, host }
  } catch (err) {
    const where = address && address !== (t as { host: string }).host ? ` (${address})` : ''
    return { outcome: 'unknown', reply: `${oneLine((err as Error).message)}${where}`, host }
  } finally {
    socket?.end()
    // A next hop that does not close after QUIT is not waited for.
    const s = socket
    if (s) setTimeout(() => s.destroy(), 1000).unref()
  }
}

/**
 * Asks the route's hosts in order until one answers RCPT with 2xx or 5xx. A 4xx at RCPT is an
 * answer too (the next hop cannot tell now): it ends the probe as 'unknown'. A host name is looked
 * up with the relay's resolver (config `dns.servers`, failures counted as `dnsFailed` events), not
 * the system's, and each of its addresses is tried in turn; the name stays the host's label.
 */
export async function probe(route: ProbeRoute, address: string, opts: CallAhead & { heloName: string }, resolver: ProbeResolver): Promise<ProbeResult> {
  if (/[\r\n<>]/.test(address)) return { outcome: 'unknown', reply: 'address not probed: bad characters' }
  const deadline = Date.now() + opts.timeout
  let last: ProbeResult = { outcome: 'unknown', reply: 'no host to ask' }
  for (const t of targetsOf(route)) {
    if (Date.now() >= deadline) break
    let addresses: (string | undefined)[]
    try {
      addresses = 'path' in t ? [undefined] : await addressesOf(resolver, t.host, Math.min(opts.connectTimeout, deadline - Date.now()))
    } catch (err) {
      last = { outcome: 'unknown', reply: oneLine((err as Error).message), host: label(t), dnsFailure: true }
      continue
    }
    for (const ip of addresses) {
      if (Date.now() >= deadline) break
      last = await probeHost(t, ip, address, route.kind === 'lmtp', opts, deadline)
      if (last.outcome !== 'unknown' || /\(in reply to RCPT TO\)$/.test(last.reply)) return last
    }
  }
  return last
}
