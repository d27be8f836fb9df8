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

// Setup and hooks see the same options object: it keys this plugin instance's cache.
const caches = new WeakMap<object, LoginCache>()

function authenticated(senders: string[] | undefined): Verdict {
  return senders ? { ...accept(), senders } : accept()
}

export default definePlugin<AuthHttpOptions>({
  name: 'auth-http',
  options,
  setup({ options }) {
    const cache = new LoginCache(options.cacheTtl, options.cacheSize)
    caches.set(options, cache)
    return () => {
      cache.clear()
      caches.delete(options)
    }
  },
  hooks: {
    async auth({ username, password, method, session, options, log }) {
      if (username === '') return reject()
      const cache = caches.get(options) ?? caches.set(options, new LoginCache(options.cacheTtl, options.cacheSize)).get(options)!
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
