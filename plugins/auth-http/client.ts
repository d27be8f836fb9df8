// One credentials check against the HTTP backend.
//
//   POST <url>  {"username","password","method","client"}  (application/json)
//   200 {"ok":true,"senders":[...]?}  → accepted         401 / 403 / 200 {"ok":false} → refused
//   anything else (other status, redirect, timeout, refused connection, bad JSON)  → failed
import { safeUrl, scrubUrls, z } from '../../core/index.js'

export type Outcome =
  | { result: 'accept'; senders?: string[] }
  | { result: 'reject'; status: number }
  | { result: 'fail'; reason: string; status?: number }

const MAX_BODY = 64 * 1024

const answer = z.object({
  ok: z.boolean(),
  senders: z.union([z.array(z.string()), z.string()]).nullish(),
})

export interface CheckRequest {
  url: string
  headers: Record<string, string>
  timeoutMs: number
  body: { username: string; password: string; method: string; client: string }
}

export async function check(req: CheckRequest): Promise<Outcome> {
  const signal = AbortSignal.timeout(req.timeoutMs)
  let res: Response
  let text: string
  try {
    const headers = new Headers(req.headers)
    headers.set('content-type', 'application/json')
    if (!headers.has('accept')) headers.set('accept', 'application/json')
    // No redirects: a POST with a password is not sent on to wherever a 3xx points.
    res = await fetch(req.url, { method: 'POST', headers, body: JSON.stringify(req.body), signal, redirect: 'manual' })
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined)
      if (res.status === 401 || res.status === 403) return { result: 'reject', status: res.status }
      return { result: 'fail', reason: `HTTP ${res.status}`, status: res.status }
    }
    // The timeout covers the body too: the signal aborts a body that trickles in.
    text = await readBody(res)
  } catch (err) {
    // fetch's messages may quote the URL (with what it holds: a password, a key in the query).
    return { result: 'fail', reason: scrubUrls(describe(err, req.timeoutMs)) }
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return { result: 'fail', reason: 'answer is not JSON', status: 200 }
  }
  const parsed = answer.safeParse(json)
  if (!parsed.success) return { result: 'fail', reason: "answer is not {\"ok\": true|false, \"senders\"?: [...]}", status: 200 }
  if (!parsed.data.ok) return { result: 'reject', status: 200 }
  const s = parsed.data.senders
  if (s === undefined || s === null) return { result: 'accept' }
  const list = (typeof s === 'string' ? s.split(/[\s,]+/) : s).map((x) => x.trim()).filter((x) => x !== '')
  return { result: 'accept', senders: [...new Set(list)] }
}

async function readBody(res: Response): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN)
  if (declared > MAX_BODY) {
    await res.body?.cancel().catch(() => undefined)
    throw new Error(`answer larger than ${MAX_BODY} bytes`)
  }
  if (!res.body) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > MAX_BODY) {
      await reader.cancel().catch(() => undefined)
      throw new Error(`answer larger than ${MAX_BODY} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function describe(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } }
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `no answer within ${timeoutMs} ms`
  const cause = e?.cause?.code ?? e?.cause?.message
  return cause ? `${e.message ?? 'request failed'} (${cause})` : (e?.message ?? String(err))
}

export { safeUrl, scrubUrls }
