// POST /api/inject, as KumoMTA's: a message handed to the relay over HTTP for apps that would rather
// not speak SMTP. It goes through relay.inject, the same path (hooks, checks, Received, durable
// write) as SMTP submission, as a trusted local submission (the full token is the credential).
//   JSON { from, to, raw }                      a whole RFC 5322 message
//   JSON { from, to, subject, text, headers? }  a plain-text message built here (compose-message.ts)
//   message/rfc822 body, ?from=&to=             the message as it is (8-bit text in any charset)
// 202 { queueId }; a refusal is its SMTP reply: 5xx → 422 (413 for 552), 4xx → 503, as
// { error, code, status }. The body is bounded by the plugin's maxInjectSize.
import type { InjectMessage } from '../../../core/index.js'
import { describeIssues, InjectCompose, InjectRaw } from '../api-schemas.js'
import { composeMessage } from '../compose-message.js'
import type { AdminContext } from '../context.js'
import { AdminError, type AdminRequest, type AdminResponse, type AdminServer } from '../server.js'

const RFC822 = 'message/rfc822'

export function registerInjectRoute(server: AdminServer, { relay, hostname }: AdminContext): void {
  server.route(
    'POST',
    '/api/inject',
    async (req) => {
      const r = relay.readiness()
      if (r.state === 'stopping' || r.state === 'stopped') throw new AdminError(503, `the relay is ${r.state}`)
      const message = await injectMessage(req, server.maxInjectSize, hostname)
      try {
        return { status: 202, json: await relay.inject(message) }
      } catch (err) {
        const refusal = smtpRefusal(err)
        if (!refusal) throw err
        return refusal
      }
    },
    { bodyTypes: [RFC822] },
  )
}

async function injectMessage(req: AdminRequest, limit: number, hostname: string): Promise<InjectMessage> {
  const type = (req.raw.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
  if (type === RFC822) {
    const raw = await req.rawBody({ limit })
    if (!raw.length) throw new AdminError(400, 'the message is empty')
    const from = req.query.get('from')
    if (from === null) throw new AdminError(400, "from: the envelope sender is required in the query (?from=; '' for the null sender)")
    return { sender: sender(from), recipients: recipients(req.query.getAll('to').flatMap((t) => t.split(','))), raw }
  }
  // JSON escapes can make the text longer than the message: the message itself is checked below.
  const body = await req.body({ limit: limit * 2 + 64 * 1024 })
  if ('raw' in body) {
    const parsed = InjectRaw.safeParse(body)
    if (!parsed.success) throw new AdminError(400, describeIssues(parsed.error))
    const raw = Buffer.from(parsed.data.raw, 'utf8')
    if (raw.length > limit) throw new AdminError(413, `the message is larger than ${limit} bytes (the admin plugin's maxInjectSize)`)
    return { sender: sender(parsed.data.from), recipients: recipients(parsed.data.to), raw }
  }
  const parsed = InjectCompose.safeParse(body)
  if (!parsed.success) throw new AdminError(400, describeIssues(parsed.error))
  const to = recipients(parsed.data.to)
  const raw = composeMessage({ ...parsed.data, from: sender(parsed.data.from), to }, hostname)
  if (raw.length > limit) throw new AdminError(413, `the message is larger than ${limit} bytes (the admin plugin's maxInjectSize)`)
  return { sender: sender(parsed.data.from), recipients: to, raw }
}

/** An address as given, `<...>` taken off; no spaces or line breaks (the core checks the rest). */
function address(value: string, field: string): string {
  const a = value.trim().replace(/^<(.*)>$/, '$1')
  if (/[\s<>]/.test(a)) throw new AdminError(400, `${field}: '${value.slice(0, 100)}' is not an address`)
  return a
}

const sender = (value: string) => address(value, 'from')

function recipients(value: string | string[]): string[] {
  const list = (Array.isArray(value) ? value : [value]).map((v) => v.trim()).filter(Boolean)
  if (!list.length) throw new AdminError(400, 'to: at least one recipient is required')
  return list.map((v) => address(v, 'to'))
}

/** The refusal's SMTP reply as HTTP: permanent (5xx) → 422, or 413 for a size refusal (552); temporary (4xx) → 503. */
function smtpRefusal(err: unknown): AdminResponse | undefined {
  const e = err as { responseCode?: unknown; message?: unknown } | null
  const code = typeof e?.responseCode === 'number' ? e.responseCode : undefined
  if (code === undefined || code < 400 || code > 599) return undefined
  const text = String(e?.message ?? '').replace(/^\d{3}[ -]/, '')
  const status = /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1]
  const http = code >= 500 ? (code === 552 ? 413 : 422) : 503
  return { status: http, json: { error: text.replace(/^[245]\.\d{1,3}\.\d{1,3}\s*/, '') || `refused (${code})`, code, ...(status ? { status } : {}) } }
}
