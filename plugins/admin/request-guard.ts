// Browser attacks on the admin listener, refused before any route runs:
// - DNS rebinding: a web page whose name now resolves to 127.0.0.1 reaches the listener with its
//   own name in `Host`; only the listener's address, `localhost` and the plugin's `hosts` are served
//   (the probes /healthz and /readyz excepted: they answer any Host and tell nothing).
// - CSRF: a state-changing request (POST, PUT, PATCH, DELETE) must come from the listener's own
//   origin (`Origin`, `Sec-Fetch-Site`) and may carry only a JSON body, which no HTML form and no
//   "simple" cross-site fetch can send without a CORS preflight (which the listener never grants).
// Clients that are not browsers (the CLI, curl, probes) send neither Origin nor Sec-Fetch-Site.
import type http from 'node:http'
import net from 'node:net'

export interface GuardRefusal {
  status: number
  error: string
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])
const WILDCARDS = new Set(['0.0.0.0', '::', ''])
/** Body types a web page can send cross-site without a preflight (never taken, whatever a route says). */
const SIMPLE_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain'])
/** `host[:port]` as in a Host header: a name or IPv4 address, or a bracketed IPv6 address. */
const HOST_HEADER = /^(\[[0-9a-f:.]+\]|[^\s:[\]/@?#]+)(?::(\d{1,5}))?$/i

export class AdminRequestGuard {
  private readonly bound: string
  private readonly names: Set<string>

  /** `host`: the address the listener is bound to; `port`: its port; `names`: the plugin's `hosts`. */
  constructor(
    host: string,
    private readonly port: number,
    names: string[],
  ) {
    this.bound = host.toLowerCase()
    this.names = new Set(names.map((n) => n.toLowerCase().replace(/\.$/, '')))
  }

  /**
   * The refusal for this request, or undefined when it may go on; `anyHost`: a probe route, any Host;
   * `bodyTypes`: types the route takes besides JSON (none of them one a cross-site form or a simple
   * fetch can send: such a request needs a CORS preflight, which the listener never grants).
   */
  check(req: http.IncomingMessage, o: { anyHost?: boolean; bodyTypes?: string[] } = {}): GuardRefusal | undefined {
    const host = req.headers.host ?? ''
    if (!o.anyHost && !this.hostAllowed(host)) {
      return { status: 421, error: `this admin listener does not serve the host '${host.slice(0, 100)}' (add the name to the admin plugin's hosts if it is yours)` }
    }
    if (!STATE_CHANGING.has(req.method ?? 'GET')) return undefined
    const site = header(req, 'sec-fetch-site')
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      return { status: 403, error: `cross-site request refused (Sec-Fetch-Site: ${site.slice(0, 40)})` }
    }
    const origin = header(req, 'origin')
    if (origin !== undefined && !(this.hostAllowed(host) && sameOrigin(origin, host))) {
      return { status: 403, error: `cross-origin request refused (Origin: ${origin.slice(0, 100)})` }
    }
    const type = header(req, 'content-type')
    const hasBody = (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'] !== undefined
    const mediaType = type?.split(';')[0]!.trim().toLowerCase()
    if ((type !== undefined || hasBody) && mediaType !== 'application/json' && !(mediaType && o.bodyTypes?.includes(mediaType) && !SIMPLE_TYPES.has(mediaType))) {
      const taken = ['application/json', ...(o.bodyTypes ?? [])].join(' or ')
      return { status: 415, error: `a request body must be ${taken === 'application/json' ? 'JSON (Content-Type: application/json)' : `of Content-Type ${taken}`}` }
    }
    return undefined
  }

  private hostAllowed(value: string): boolean {
    const m = HOST_HEADER.exec(value)
    if (!m) return false
    const name = m[1]!.toLowerCase().replace(/\.$/, '')
    // A name of the operator's (a reverse proxy's): any port.
    if (this.names.has(name)) return true
    const port = m[2] === undefined ? 80 : Number(m[2])
    if (port !== this.port) return false
    if (name === 'localhost' || name === this.bound) return true
    // An address, not a name, cannot be rebound: the bound one, or any when bound to all.
    const ip = name.startsWith('[') ? name.slice(1, -1) : name
    if (net.isIP(ip) === 0) return false
    return WILDCARDS.has(this.bound) || ip === this.bound
  }
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v.join(',') : v
}

/** The Origin names the host the request was sent to (http or, behind a TLS proxy, https). */
function sameOrigin(origin: string, host: string): boolean {
  const m = /^(https?):\/\/([^/]+)$/i.exec(origin.trim())
  if (!m) return false // 'null' (sandboxed frames, file: pages) and anything odd
  const defaultPort = m[1]!.toLowerCase() === 'https' ? ':443' : ':80'
  const strip = (h: string) => h.toLowerCase().replace(new RegExp(`${defaultPort}$`), '')
  return strip(m[2]!) === strip(host)
}
