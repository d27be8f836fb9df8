import crypto from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { makeDirs, type PluginContext } from '../../core/index.js'
import type { AdminOptions } from './options.js'
import { AdminRequestGuard } from './request-guard.js'
import { ADMIN_FILE, type AdminFile } from './admin-file.js'

type Logger = PluginContext<unknown>['log']

export interface AdminRequest {
  method: string
  /** The path without the query string, e.g. `/api/queue/abc`. */
  path: string
  /** `:name` segments of the route pattern; a trailing `*` is `params['*']`. */
  params: Record<string, string>
  query: URLSearchParams
  /**
   * The body as an object: JSON only (no form: request-guard.ts); {} when empty. Bad JSON is a 400,
   * more than `limit` bytes (default 1 MiB) a 413.
   */
  body(o?: { limit?: number }): Promise<Record<string, unknown>>
  /** The body as sent (a route with `bodyTypes`); more than `limit` bytes is a 413. */
  rawBody(o: { limit: number }): Promise<Buffer>
  raw: http.IncomingMessage
  /** Which token came: 'read-only' reads no message content (a handler leaves it out). */
  access: 'full' | 'read-only'
}

/** What a handler returns; `undefined` means it wrote to `res` itself (e.g. a stream). */
export type AdminResponse =
  | { status?: number; json: unknown; headers?: Record<string, string> }
  | { status?: number; body: string | Buffer; contentType: string; headers?: Record<string, string> }

export type AdminHandler = (req: AdminRequest, res: http.ServerResponse) => AdminResponse | undefined | Promise<AdminResponse | undefined>

export interface RouteOptions {
  /** Served without the bearer token (only /healthz is). */
  public?: boolean
  /** Served whatever the Host header says (probes: /healthz, /readyz; load balancers send their own). */
  anyHost?: boolean
  /**
   * Answers with message content (a body, the whole header section): not monitoring data, so the
   * read-only token gets a 403 here, GET included.
   */
  content?: boolean
  /** Body types taken besides JSON (POST /api/inject: `message/rfc822`); none a browser sends cross-site unasked. */
  bodyTypes?: string[]
}

/** A registered route as the OpenAPI test sees it: `pattern` as given to `route()`. */
export interface RouteInfo {
  method: string
  pattern: string
  public: boolean
}

/** An error a handler throws to answer with this status and `{ error: message }`. */
export class AdminError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
    this.name = 'AdminError'
  }
}

interface Route {
  method: string
  segments: string[]
  handler: AdminHandler
  options: RouteOptions
  /** Literal segments count: the most specific match wins (`/api/queue/flush` over `/api/queue/:id`). */
  literal: number
}

const MAX_BODY = 1024 * 1024
const DEFAULT_MAX_INJECT = 25 * 1024 * 1024

/**
 * The admin HTTP listener (node:http): routes registered with `route()`, a bearer token checked on
 * every route but the public ones, JSON errors.
 */
/** How long a request with a wrong token waits for its 403. */
const WRONG_TOKEN_DELAY_MS = 1000

export class AdminServer {
  private readonly routes: Route[] = []
  private server: http.Server | undefined
  private tokenDigest: Buffer | undefined
  private readOnlyDigest: Buffer | undefined
  private guard: AdminRequestGuard | undefined
  /** Set once listening, e.g. `http://127.0.0.1:8025`. */
  url: string | undefined

  constructor(
    private readonly options: Pick<AdminOptions, 'host' | 'port' | 'token' | 'hosts'> & Partial<Pick<AdminOptions, 'readOnlyToken' | 'maxInjectSize'>>,
    /** Where admin.json goes (config `dataDir`). */
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {}

  /** The largest message POST /api/inject takes (the plugin's `maxInjectSize`). */
  get maxInjectSize(): number {
    return this.options.maxInjectSize ?? DEFAULT_MAX_INJECT
  }

  /** Registers a handler for `method` and a path pattern such as `/api/queue/:id/hold` or `/dashboard/*`. */
  route(method: 'GET' | 'POST' | 'PUT' | 'DELETE', pattern: string, handler: AdminHandler, options: RouteOptions = {}): void {
    const segments = split(pattern)
    this.routes.push({ method, segments, handler, options, literal: segments.filter((s) => !s.startsWith(':') && s !== '*').length })
  }

  /** Every route registered, in order (the OpenAPI document is checked against it). */
  routeTable(): RouteInfo[] {
    return this.routes.map((r) => ({ method: r.method, pattern: '/' + r.segments.join('/'), public: r.options.public === true }))
  }

  /** Listens on the plugin's host and port, then writes `<dataDir>/admin.json` (mode 0600) for the CLI. */
  async start(): Promise<string> {
    const admin = this.options
    const token = admin.token
    this.tokenDigest = token ? digest(token) : undefined
    this.readOnlyDigest = token && admin.readOnlyToken ? digest(admin.readOnlyToken) : undefined
    const server = http.createServer((req, res) => void this.handle(req, res))
    server.keepAliveTimeout = 5000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(admin.port, admin.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    server.on('error', (err) => this.log.error({ err }, 'admin listener error'))
    this.server = server
    const address = server.address() as net.AddressInfo
    this.url = `http://${urlHost(admin.host)}:${address.port}`
    this.guard = new AdminRequestGuard(admin.host, address.port, admin.hosts)
    makeDirs(this.dataDir)
    const file: AdminFile = { url: this.url, pid: process.pid, ...(token ? { token } : {}) }
    writePrivate(path.join(this.dataDir, ADMIN_FILE), JSON.stringify(file) + '\n')
    this.log.info({ host: admin.host, port: address.port, url: this.url, auth: token ? (this.readOnlyDigest ? 'bearer token, and a read-only one' : 'bearer token') : 'none' }, `admin listener on ${admin.host}:${address.port}`)
    if (!token) {
      this.log.warn(
        { host: admin.host, port: address.port },
        'admin listener WITHOUT a token (insecureNoToken): every local user and program can read, delete and flush the queue; set the admin plugin\'s token',
      )
    }
    return this.url
  }

  /** Stops listening (open requests get a moment to finish) and removes admin.json. */
  async stop(): Promise<void> {
    const server = this.server
    if (!server) return
    this.server = undefined
    const file = path.join(this.dataDir, ADMIN_FILE)
    try {
      // Only our own: another relay on this data directory may have written it since.
      if ((JSON.parse(fs.readFileSync(file, 'utf8')) as AdminFile).pid === process.pid) fs.rmSync(file, { force: true })
    } catch {
      // already gone
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeIdleConnections()
    const timer = setTimeout(() => server.closeAllConnections(), 1000)
    await closed
    clearTimeout(timer)
  }

  /** 'ok': the full token (or none configured); 'read-only': the read-only token. */
  /** Wrong tokens per client address since its last log line (bounded: the oldest forgotten). */
  private readonly wrongTokens = new Map<string, { count: number; loggedAt: number }>()

  private wrongToken(client: string, method: string, pathname: string): void {
    const now = Date.now()
    const seen = this.wrongTokens.get(client) ?? { count: 0, loggedAt: 0 }
    seen.count++
    if (now - seen.loggedAt >= 60_000) {
      this.log.warn({ client, method, path: pathname, wrongTokens: seen.count }, `admin request refused: wrong token from ${client}`)
      seen.count = 0
      seen.loggedAt = now
    }
    this.wrongTokens.delete(client)
    if (this.wrongTokens.size >= 10_000) this.wrongTokens.delete(this.wrongTokens.keys().next().value!)
    this.wrongTokens.set(client, seen)
  }

  private authorized(req: http.IncomingMessage): 'ok' | 'read-only' | 'missing' | 'wrong' {
    if (!this.tokenDigest) return 'ok'
    const header = req.headers.authorization ?? ''
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (!m) return 'missing'
    // Digests are the same length whatever was sent: the comparison tells nothing about the tokens.
    const sent = digest(m[1]!)
    const full = crypto.timingSafeEqual(sent, this.tokenDigest)
    const readOnly = this.readOnlyDigest !== undefined && crypto.timingSafeEqual(sent, this.readOnlyDigest)
    return full ? 'ok' : readOnly ? 'read-only' : 'wrong'
  }

  private match(method: string, pathname: string): { route?: Route; params: Record<string, string>; allowed: string[] } {
    const parts = split(pathname)
    let best: { route: Route; params: Record<string, string> } | undefined
    const allowed = new Set<string>()
    for (const route of this.routes) {
      const params = matchSegments(route.segments, parts)
      if (!params) continue
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) {
        allowed.add(route.method)
        continue
      }
      if (!best || route.literal > best.route.literal) best = { route, params }
    }
    return { route: best?.route, params: best?.params ?? {}, allowed: [...allowed] }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now()
    const method = req.method ?? 'GET'
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://admin')
    } catch {
      return this.send(res, { status: 400, json: { error: 'bad request URL' } }, method, '?', started)
    }
    const { route, params, allowed } = this.match(method, url.pathname)
    // DNS rebinding and cross-site requests (request-guard.ts), before any handler.
    const refused = this.guard?.check(req, { anyHost: route?.options.anyHost === true, bodyTypes: route?.options.bodyTypes })
    if (refused) {
      this.log.warn({ method, path: url.pathname, host: req.headers.host, origin: req.headers.origin, status: refused.status }, `admin request refused: ${refused.error}`)
      return this.send(res, { status: refused.status, json: { error: refused.error } }, method, url.pathname, started)
    }
    if (!route) {
      if (allowed.length) return this.send(res, { status: 405, json: { error: `method ${method} not allowed here` }, headers: { Allow: allowed.join(', ') } }, method, url.pathname, started)
      return this.send(res, { status: 404, json: { error: `no such route: ${url.pathname}` } }, method, url.pathname, started)
    }
    let access: AdminRequest['access'] = 'full'
    if (!route.options.public) {
      const auth = this.authorized(req)
      if (auth === 'read-only') access = 'read-only'
      if (auth === 'missing') {
        return this.send(res, { status: 401, json: { error: 'a bearer token is required (Authorization: Bearer <token>)' }, headers: { 'WWW-Authenticate': 'Bearer realm="relay"' } }, method, url.pathname, started)
      }
      if (auth === 'wrong') {
        // Said in the log (fail2ban, an operator), at most once a minute per client, and answered
        // after a pause: guessing a token costs time (as a failed SMTP AUTH does).
        this.wrongToken(req.socket.remoteAddress ?? '?', method, url.pathname)
        await new Promise((resolve) => setTimeout(resolve, WRONG_TOKEN_DELAY_MS))
        return this.send(res, { status: 403, json: { error: 'wrong token' } }, method, url.pathname, started)
      }
      // The read-only token reads (GET, HEAD) and changes nothing.
      if (auth === 'read-only' && method !== 'GET' && method !== 'HEAD') {
        return this.send(res, { status: 403, json: { error: `the read-only token may only read (GET); ${method} ${url.pathname} needs the full token` } }, method, url.pathname, started)
      }
      if (auth === 'read-only' && route.options.content) {
        return this.send(res, { status: 403, json: { error: `the read-only token reads no message content (header section, body); ${method} ${url.pathname} needs the full token` } }, method, url.pathname, started)
      }
    }
    const request: AdminRequest = {
      method,
      path: url.pathname,
      params,
      query: url.searchParams,
      body: (o) => readBody(req, o?.limit ?? MAX_BODY).then(parseJsonObject),
      rawBody: (o) => readBody(req, o.limit),
      raw: req,
      access,
    }
    let response: AdminResponse | undefined
    try {
      response = await route.handler(request, res)
    } catch (err) {
      // A body refused unread is not drained: the connection closes after the answer.
      if (err instanceof AdminError) response = { status: err.status, json: { error: err.message }, ...(err.status === 413 ? { headers: { Connection: 'close' } } : {}) }
      // The queue's database cannot be reached (a PostgreSQL queue, down or cut off): the service is
      // unavailable for now, not broken; clients retry a 503.
      else if ((err as { kind?: unknown } | null)?.kind === 'unavailable') {
        this.log.warn({ method, path: url.pathname, error: (err as Error).message }, 'admin request: the queue is unavailable')
        response = { status: 503, json: { error: `the queue is unavailable: ${(err as Error).message}` }, headers: { 'Retry-After': '5' } }
      } else {
        this.log.error({ err, method, path: url.pathname }, 'admin request failed')
        response = { status: 500, json: { error: `internal error: ${(err as Error).message}` } }
      }
    }
    if (response === undefined) {
      this.log.debug({ method, path: url.pathname, ms: Date.now() - started }, 'admin request')
      return
    }
    this.send(res, response, method, url.pathname, started)
  }

  private send(res: http.ServerResponse, r: AdminResponse, method: string, pathname: string, started: number): void {
    const status = r.status ?? 200
    const body = 'json' in r ? JSON.stringify(r.json) + '\n' : r.body
    const type = 'json' in r ? 'application/json; charset=utf-8' : r.contentType
    if (!res.headersSent) {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...r.headers })
    }
    res.end(method === 'HEAD' ? undefined : body)
    this.log.debug({ method, path: pathname, status, ms: Date.now() - started }, 'admin request')
  }
}

const split = (p: string) => p.split('/').filter(Boolean)

function matchSegments(pattern: string[], parts: string[]): Record<string, string> | undefined {
  const params: Record<string, string> = {}
  for (let i = 0; i < pattern.length; i++) {
    const seg = pattern[i]!
    if (seg === '*' && i === pattern.length - 1) {
      params['*'] = parts.slice(i).map(decode).join('/')
      return params
    }
    const part = parts[i]
    if (part === undefined) return undefined
    if (seg.startsWith(':')) params[seg.slice(1)] = decode(part)
    else if (seg !== part) return undefined
  }
  return parts.length === pattern.length ? params : undefined
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

const digest = (s: string) => crypto.createHash('sha256').update(s).digest()

/** The host to put in a URL a local client can use: a wildcard address means this machine. */
function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1'
  if (host === '::') return '[::1]'
  return net.isIPv6(host) ? `[${host}]` : host
}

/** Written whole (temp file, rename), readable by the owner only. */
function writePrivate(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text, { mode: 0o600 })
  fs.chmodSync(tmp, 0o600)
  fs.renameSync(tmp, file)
}

/** The body, refused (413) as soon as it passes `limit` bytes: by Content-Length before reading any of it. */
async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new AdminError(413, `request body too large (at most ${limit} bytes)`)
  if (Number(req.headers['content-length'] ?? 0) > limit) throw tooLarge()
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limit) throw tooLarge()
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

function parseJsonObject(body: Buffer): Record<string, unknown> {
  const text = body.toString('utf8').trim()
  if (!text) return {}
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new AdminError(400, 'the request body is not valid JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AdminError(400, 'the request body must be a JSON object')
  return value as Record<string, unknown>
}
