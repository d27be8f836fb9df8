// auth-http: AUTH checked by an HTTP service. The relay POSTs
// {"username", "password", "method", "client"} as JSON to `url`; 200 {"ok": true, "senders": [...]}
// accepts (senders: the addresses and domains the user may send as), 401/403 or {"ok": false}
// refuses (535 5.7.8), and anything else — another status, a timeout, a refused connection, an
// answer that is not that JSON — is a temporary failure (454 4.7.0) with an error log line.
// Successful logins are remembered for `cacheTtl`; failures never are. See README.md.
//
//   plugins: [['auth-http', { url: 'https://auth.example.com/smtp', headers: { authorization: 'Bearer …' } }]]
import { accept, definePlugin, reject, tempfail, type Verdict } from '../../core/index.js'
import { LoginCache } from './cache.js'
import { check, safeUrl } from './client.js'
import { options, type AuthHttpOptions } from './options.js'

function authenticated(senders: string[] | undefined): Verdict {
  return senders ? { ...accept(), senders } : accept()
}

export default definePlugin<AuthHttpOptions, { cache: LoginCache }>({
  name: 'auth-http',
  options,
  // This generation's remembered logins (`ctx.state.cache`), forgotten at teardown.
  setup: ({ options }) => ({ cache: new LoginCache(options.cacheTtl, options.cacheSize) }),
  teardown({ state }) {
    state.cache.clear()
  },
  hooks: {
    async auth({ username, password, method, session, options, state, log }) {
      if (username === '') return reject()
      const { cache } = state
      const key = cache.enabled ? cache.key(username, password, session.remoteAddress) : ''
      const hit = cache.enabled ? cache.get(key) : undefined
      if (hit) {
        log.debug({ user: username }, 'login remembered')
        return authenticated(hit.senders)
      }
      const outcome = await check({
        url: options.url,
        headers: options.headers,
        timeoutMs: options.timeout,
        body: { username, password, method, client: session.remoteAddress },
      })
      switch (outcome.result) {
        case 'accept':
          cache.set(key, outcome.senders)
          return authenticated(outcome.senders)
        case 'reject':
          log.debug({ user: username, status: outcome.status }, 'credentials refused by the auth service')
          return reject()
        case 'fail':
          log.error({ user: username, url: safeUrl(options.url), status: outcome.status, reason: outcome.reason }, 'auth service failed: AUTH tempfailed')
          return tempfail()
      }
    },
  },
})
