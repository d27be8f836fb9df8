// routing: a transport map. Routes are tried in order; the first whose `match` fits the message
// (recipient domain and/or envelope sender) decides where it goes:
//   kind 'mx' (default)   the recipient domain's MX hosts, with a TLS policy (may/encrypt/verify)
//   kind 'smarthost'      a relay such as SendGrid, SES or Mailgun: implicit TLS or STARTTLS
//                         (required), certificate verified by default, AUTH user + password
//   kind 'lmtp'           a local mail store over LMTP (host:port or a unix socket), one reply
//                         per recipient after the message
// Each route may send from a given local address and EHLO name, or from a pool of addresses taken
// in turn (round-robin or weighted). No route fits: the plugin passes, and the core uses the MX.
// Passwords are never logged (the core's logs redact `pass`, and this plugin logs none).
import { definePlugin, route, tempfail, type Route } from '../../core/index.js'
import { compileMatch, type CompiledMatch } from './match.js'
import { hostPort, options, type Options, type RouteOption } from './options.js'
import { picker, type Picker } from './pool.js'

interface Compiled {
  route: RouteOption
  label: string
  matches: CompiledMatch
  pick?: Picker
}

/** The routes compiled once per generation (at setup): `ctx.state`. Relative socket paths resolved. */
function compile(opts: Options, resolvePath: (file: string) => string): Compiled[] {
  return opts.routes.map((r) => ({
    route: r.kind === 'lmtp' && r.socket ? { ...r, socket: resolvePath(r.socket) } : r,
    label: r.name,
    matches: compileMatch(r),
    pick: r.pool ? picker(r.pool.strategy, r.pool.addresses) : undefined,
  }))
}

/** The core Route for a matching route option (a fresh pool pick on every call). */
function toRoute(c: Compiled): Route | string {
  const r = c.route
  const from = c.pick?.()
  const source = { localAddress: from?.address ?? r.localAddress, helo: from?.helo ?? r.helo, name: r.name, limits: r.limits }
  switch (r.kind) {
    case 'mx':
      return { kind: 'mx', tls: r.tls, ...source }
    case 'smarthost': {
      const hosts = r.host.map(hostPort)
      const port = r.port ?? hosts.find((h) => h.port)?.port ?? (r.tls === 'implicit' ? 465 : 587)
      let auth: Route['auth']
      if (r.auth) {
        const pass = r.auth.pass ?? process.env[r.auth.passEnv!]
        if (!pass) return `the password variable ${r.auth.passEnv} is not set`
        auth = { user: r.auth.user, pass }
      }
      return { kind: 'smtp', hosts: hosts.map((h) => h.host), port, implicitTls: r.tls === 'implicit', tls: r.verify ? 'verify' : 'encrypt', auth, ...source }
    }
    case 'lmtp': {
      if (r.socket) return { kind: 'lmtp', socketPath: r.socket, tls: r.tls, ...source }
      const { host, port } = hostPort(r.host!)
      return { kind: 'lmtp', hosts: [host], port: r.port ?? port ?? 24, tls: r.tls, ...source }
    }
  }
}

export default definePlugin({
  name: 'routing',
  options,
  setup: ({ options, resolvePath }) => compile(options, resolvePath),
  hooks: {
    deliver({ message, domain, state, log }) {
      for (const c of state) {
        if (!c.matches(domain, message.sender)) continue
        const r = toRoute(c)
        if (typeof r === 'string') {
          log.error({ route: c.label, domain }, `route unusable: ${r}`)
          return tempfail('4.3.5', `Route ${c.label} unusable: ${r}`)
        }
        log.debug({ route: c.label, domain, kind: r.kind, hosts: r.hosts, socketPath: r.socketPath, localAddress: r.localAddress }, 'route chosen')
        return route(r)
      }
      return undefined
    },
  },
})
