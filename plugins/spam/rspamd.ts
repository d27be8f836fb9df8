// rspamd's HTTP protocol: `POST /checkv2` with the message as the body and what the relay knows
// about it in request headers (IP, Helo, Hostname, From, one Rcpt per recipient, User); the answer
// is JSON: {"score": 6.2, "required_score": 15, "action": "add header", "symbols": {"NAME": {...}},
// "subject"?: "..."}. node:http rather than fetch: rspamd reads one address per `Rcpt` header line,
// and fetch joins repeated headers into one.
import http from 'node:http'
import https from 'node:https'
import { z } from '../../core/index.js'
import { deadline, ScanError, type ScanEnvelope, type ScanResult } from './scanner.js'

const MAX_ANSWER = 1024 * 1024

const ACTIONS = ['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject'] as const

const answer = z.object({
  score: z.number(),
  required_score: z.number(),
  action: z.string(),
  symbols: z.record(z.string(), z.object({ name: z.string().optional(), score: z.number().optional() }).passthrough()).optional(),
  subject: z.string().optional(),
})

export interface RspamdTarget {
  url: string
  password?: string
}

/** `/checkv2` on the given host unless the URL names another path. */
export function checkUrl(url: string): URL {
  const u = new URL(url)
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/checkv2'
  return u
}

export function checkRspamd(target: RspamdTarget, message: Buffer, envelope: ScanEnvelope, timeoutMs: number): Promise<ScanResult> {
  return deadline(timeoutMs, (signal) => post(target, message, envelope, signal)).then(parseAnswer)
}

function post(target: RspamdTarget, message: Buffer, env: ScanEnvelope, signal: AbortSignal): Promise<{ status: number; body: string }> {
  const url = checkUrl(target.url)
  const headers: http.OutgoingHttpHeaders = {
    'content-type': 'message/rfc822',
    'content-length': message.length,
    IP: env.ip,
    Hostname: headerValue(env.clientHostname.startsWith('[') ? 'unknown' : env.clientHostname),
    From: headerValue(`<${env.sender}>`),
    Rcpt: env.recipients.map((r) => headerValue(`<${r}>`)),
    MTA: headerValue(env.hostname),
  }
  if (env.helo) headers.Helo = headerValue(env.helo)
  if (env.user) headers.User = headerValue(env.user)
  if (target.password) headers.Password = headerValue(target.password)
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(url, { method: 'POST', headers, signal }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > MAX_ANSWER) req.destroy(new ScanError(`answer longer than ${MAX_ANSWER} bytes`))
        else chunks.push(c)
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', (err) => reject(err instanceof ScanError ? err : new ScanError(err.message)))
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof ScanError) return reject(err)
      if (err.name === 'AbortError') return reject(new ScanError('aborted'))
      reject(new ScanError(`${url.host}: ${err.code ?? err.message}`))
    })
    req.end(message)
  })
}

/**
 * What the client said, as an HTTP header value rspamd reads as UTF-8: its UTF-8 bytes (node:http
 * sends a string's characters as single bytes, and refuses a character above U+00FF, which made a
 * non-ASCII HELO or address a failed scan: passed with onError 'accept'), control characters as '?'.
 */
export function headerValue(s: string): string {
  return Buffer.from(s, 'utf8').toString('latin1').replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '?')
}

function parseAnswer({ status, body }: { status: number; body: string }): ScanResult {
  if (status !== 200) throw new ScanError(`rspamd answered HTTP ${status}${body ? `: ${body.slice(0, 120)}` : ''}`)
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    throw new ScanError('rspamd answer is not JSON')
  }
  const parsed = answer.safeParse(json)
  if (!parsed.success) throw new ScanError('rspamd answer lacks score, required_score or action')
  const a = parsed.data
  const action = a.action.toLowerCase()
  if (!(ACTIONS as readonly string[]).includes(action)) throw new ScanError(`rspamd answered an unknown action ${JSON.stringify(a.action)}`)
  // Matched rules, strongest first; rspamd lists every symbol it inserted, scored 0 or not.
  const symbols = Object.entries(a.symbols ?? {})
    .map(([key, s]) => ({ name: s.name ?? key, score: s.score ?? 0 }))
    .sort((x, y) => Math.abs(y.score) - Math.abs(x.score) || x.name.localeCompare(y.name))
    .map((s) => s.name)
    .filter((s) => /^[A-Za-z0-9_.:-]+$/.test(s))
  return {
    backend: 'rspamd',
    score: a.score,
    required: a.required_score,
    spam: action !== 'no action',
    symbols,
    action,
    subject: a.subject,
  }
}
