// How the plugin's CLI verbs talk to a running relay: `<dataDir>/admin.json` (admin-file.ts) names
// its admin listener and the token it requires; without a token there, RELAY_ADMIN_TOKEN.
import fs from 'node:fs'
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

/** One API call; resolves with the JSON body of a 2xx answer. */
export async function adminCall<T>(target: AdminTarget, method: 'GET' | 'POST', pathAndQuery: string, body?: unknown): Promise<T> {
  let res: Response
  try {
    res = await fetch(new URL(pathAndQuery, target.url), {
      method,
      headers: {
        ...(target.token ? { Authorization: `Bearer ${target.token}` } : {}),
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(60_000),
    })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'ECONNREFUSED' || cause?.code === 'ECONNRESET') throw new AdminUnreachable(`the admin listener at ${target.url} does not answer (${cause.code})`)
    throw new Error(`admin API ${method} ${pathAndQuery}: ${(err as Error).message}`)
  }
  const text = await res.text()
  let json: unknown
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {
    json = undefined
  }
  if (res.ok) return json as T
  const reason = (json as { error?: string } | undefined)?.error ?? `HTTP ${res.status}`
  if (res.status === 401) throw new AdminFailed(401, `${reason}; set RELAY_ADMIN_TOKEN to the admin plugin's token`, json)
  if (res.status === 403) throw new AdminFailed(403, `the admin listener refused the token (${reason}); check RELAY_ADMIN_TOKEN and the admin plugin's token`, json)
  throw new AdminFailed(res.status, reason, json)
}

/** A GET whose 2xx answer is not JSON (the message as queued); errors as adminCall's. */
export async function adminRaw(target: AdminTarget, pathAndQuery: string): Promise<Buffer> {
  let res: Response
  try {
    res = await fetch(new URL(pathAndQuery, target.url), { headers: target.token ? { Authorization: `Bearer ${target.token}` } : {}, signal: AbortSignal.timeout(60_000) })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'ECONNREFUSED' || cause?.code === 'ECONNRESET') throw new AdminUnreachable(`the admin listener at ${target.url} does not answer (${cause.code})`)
    throw new Error(`admin API GET ${pathAndQuery}: ${(err as Error).message}`)
  }
  const body = Buffer.from(await res.arrayBuffer())
  if (res.ok) return body
  let reason = `HTTP ${res.status}`
  try {
    reason = (JSON.parse(body.toString('utf8')) as { error?: string }).error ?? reason
  } catch {
    // not JSON: the status says it
  }
  if (res.status === 401 || res.status === 403) throw new AdminFailed(res.status, `${reason}; check RELAY_ADMIN_TOKEN and the admin plugin's token`, undefined)
  throw new AdminFailed(res.status, reason, undefined)
}
