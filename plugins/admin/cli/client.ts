// How the plugin's CLI verbs talk to a running relay: `<dataDir>/admin.json` (admin-file.ts) names
// its admin listener and the token it requires; without a token there, RELAY_ADMIN_TOKEN.
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { ADMIN_FILE, type AdminFile } from '../admin-file.js'

export interface AdminTarget {
  url: string
  pid: number
  token?: string
}

/**
 * The running relay's admin listener, or undefined when none runs for this data directory. The file
 * counts only when its pid is the relay that holds the data directory now (`runningRelay`, from the
 * lock and relay.pid): a relay killed with -9 leaves admin.json behind, and its pid may be another
 * program's by now, perhaps listening on that URL. The token is never sent to such a listener.
 */
export function findAdmin(dataDir: string, runningRelay: (dataDir: string) => number | undefined): AdminTarget | undefined {
  let file: AdminFile
  try {
    file = JSON.parse(fs.readFileSync(path.join(dataDir, ADMIN_FILE), 'utf8')) as AdminFile
  } catch {
    return undefined
  }
  if (typeof file.url !== 'string' || !Number.isInteger(file.pid) || file.pid !== runningRelay(dataDir)) return undefined
  const token = typeof file.token === 'string' && file.token ? file.token : process.env.RELAY_ADMIN_TOKEN || undefined
  return { url: file.url, pid: file.pid, token }
}

/** The listener did not answer at all (a stale admin.json): the caller may work on the data directory. */
export class AdminUnreachable extends Error {}

/** A JSON answer with a status that is not 2xx. */
export class AdminFailed extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: unknown,
  ) {
    super(message)
  }
}

/**
 * One request to the admin listener (plain HTTP on loopback, admin-file.ts). node:http, not fetch:
 * fetch loads undici, about 40 ms of CPU on each CLI run.
 */
function request(target: AdminTarget, method: 'GET' | 'POST', pathAndQuery: string, body?: unknown): Promise<{ status: number; body: Buffer }> {
  const payload = body !== undefined ? JSON.stringify(body) : undefined
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(pathAndQuery, target.url), {
      method,
      headers: {
        ...(target.token ? { Authorization: `Bearer ${target.token}` } : {}),
        ...(payload !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } : {}),
      },
    })
    // One deadline for the whole exchange, as fetch's AbortSignal.timeout gave: a listener that
    // answers a byte at a time cannot hold the command.
    const deadline = setTimeout(() => req.destroy(new Error('no answer within 60 s')), 60_000)
    req.on('close', () => clearTimeout(deadline))
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(deadline)
      if (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET') reject(new AdminUnreachable(`the admin listener at ${target.url} does not answer (${err.code})`))
      else reject(new Error(`admin API ${method} ${pathAndQuery}: ${err.message}`))
    })
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        clearTimeout(deadline)
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) })
      })
      res.on('error', (err) => reject(new Error(`admin API ${method} ${pathAndQuery}: ${err.message}`)))
    })
    req.end(payload)
  })
}

const ok = (status: number) => status >= 200 && status < 300

/** One API call; resolves with the JSON body of a 2xx answer. */
/** What an answer without a JSON error body means to the operator (Node's HTTP server answers some itself). */
function statusText(status: number): string {
  if (status === 431 || status === 414) return `the admin listener refused the request as too long (HTTP ${status}): a filter value (--sender, --domain) is too long`
  if (status === 413) return `the admin listener refused the request as too large (HTTP 413)`
  return `HTTP ${status}`
}

export async function adminCall<T>(target: AdminTarget, method: 'GET' | 'POST', pathAndQuery: string, body?: unknown): Promise<T> {
  const res = await request(target, method, pathAndQuery, body)
  const text = res.body.toString('utf8')
  let json: unknown
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {
    json = undefined
  }
  if (ok(res.status)) return json as T
  const reason = (json as { error?: string } | undefined)?.error ?? statusText(res.status)
  if (res.status === 401) throw new AdminFailed(401, `${reason}; set RELAY_ADMIN_TOKEN to the admin plugin's token`, json)
  if (res.status === 403) throw new AdminFailed(403, `the admin listener refused the token (${reason}); check RELAY_ADMIN_TOKEN and the admin plugin's token`, json)
  throw new AdminFailed(res.status, reason, json)
}

/** A GET whose 2xx answer is not JSON (the message as queued); errors as adminCall's. */
export async function adminRaw(target: AdminTarget, pathAndQuery: string): Promise<Buffer> {
  const { status, body } = await request(target, 'GET', pathAndQuery)
  if (ok(status)) return body
  let reason = statusText(status)
  try {
    reason = (JSON.parse(body.toString('utf8')) as { error?: string }).error ?? reason
  } catch {
    // not JSON: the status says it
  }
  if (status === 401 || status === 403) throw new AdminFailed(status, `${reason}; check RELAY_ADMIN_TOKEN and the admin plugin's token`, undefined)
  throw new AdminFailed(status, reason, undefined)
}
