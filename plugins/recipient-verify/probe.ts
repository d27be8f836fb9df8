// The call-ahead probe: asks the next hop whether it would take a recipient, as Postfix's verify(8)
// does: connect, EHLO (LHLO for LMTP), MAIL FROM:<probe sender>, RCPT TO:<address>, QUIT. Never
// DATA, so nothing is ever delivered. Every step is bounded in time; the socket is always closed.
import net from 'node:net'
import { hostPort, type CallAhead, type ProbeRoute } from './options.js'

export interface ProbeResult {
  /** 'accepted' (2xx at RCPT), 'refused' (5xx at RCPT), 'unknown' (no host answered RCPT with 2xx/5xx). */
  outcome: 'accepted' | 'refused' | 'unknown'
  /** The RCPT reply, or why there was none. */
  reply: string
  /** The host that answered, as `host:port` or the socket path. */
  host?: string
}

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

function connect(t: Target, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = 'path' in t ? net.connect({ path: t.path }) : net.connect({ host: t.host, port: t.port })
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

/** Probes one host: a final answer ('accepted' / 'refused'), or 'unknown' with why (then the next host is tried). */
async function probeHost(t: Target, address: string, lmtp: boolean, opts: CallAhead & { heloName: string }, deadline: number): Promise<ProbeResult> {
  const left = (ms: number) => Math.min(ms, deadline - Date.now())
  const host = label(t)
  let socket: net.Socket | undefined
  try {
    socket = await connect(t, left(opts.connectTimeout))
    const c = new Conversation(socket)
    const step = async (line: string | undefined, what: string): Promise<string> => {
      const reply = line === undefined ? await c.read(left(opts.commandTimeout)) : await c.command(line, left(opts.commandTimeout))
      if (code(reply) >= 200 && code(reply) < 400) return reply
      throw Object.assign(new Error(`${oneLine(reply)} (in reply to ${what})`), { reply })
    }
    await step(undefined, 'the greeting')
    await step(`${lmtp ? 'LHLO' : 'EHLO'} ${opts.heloName}`, lmtp ? 'LHLO' : 'EHLO')
    await step(`MAIL FROM:<${opts.probeSender}>`, 'MAIL FROM')
    const rcpt = await c.command(`RCPT TO:<${address}>`, left(opts.commandTimeout))
    socket.write('QUIT\r\n')
    const n = code(rcpt)
    const reply = `${oneLine(rcpt)} (in reply to RCPT TO)`
    if (n >= 200 && n < 300) return { outcome: 'accepted', reply, host }
    if (n >= 500 && n < 600) return { outcome: 'refused', reply, host }
    return { outcome: 'unknown', reply, host }
  } catch (err) {
    return { outcome: 'unknown', reply: oneLine((err as Error).message), host }
  } finally {
    socket?.end()
    // A next hop that does not close after QUIT is not waited for.
    const s = socket
    if (s) setTimeout(() => s.destroy(), 1000).unref()
  }
}

/**
 * Asks the route's hosts in order until one answers RCPT with 2xx or 5xx. A 4xx at RCPT is an
 * answer too (the next hop cannot tell now): it ends the probe as 'unknown'.
 */
export async function probe(route: ProbeRoute, address: string, opts: CallAhead & { heloName: string }): Promise<ProbeResult> {
  if (/[\r\n<>]/.test(address)) return { outcome: 'unknown', reply: 'address not probed: bad characters' }
  const deadline = Date.now() + opts.timeout
  let last: ProbeResult = { outcome: 'unknown', reply: 'no host to ask' }
  for (const t of targetsOf(route)) {
    if (Date.now() >= deadline) break
    last = await probeHost(t, address, route.kind === 'lmtp', opts, deadline)
    if (last.outcome !== 'unknown' || /\(in reply to RCPT TO\)$/.test(last.reply)) return last
  }
  return last
}
