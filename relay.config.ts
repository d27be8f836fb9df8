// The relay's config. `npm start` runs with this file; README.md describes every key.
import { defineConfig } from './core/index.js'

export default defineConfig({
  hostname: 'relay.localhost',
  listen: [
    { host: '127.0.0.1', port: 2525, role: 'mx' },
    // Authenticated submission needs a certificate and an auth plugin, e.g.:
    //   { host: '0.0.0.0', port: 587, role: 'submission' }   with
    //   tls: { cert: './tls/relay.localhost.crt', key: './tls/relay.localhost.key' }  (relay tls selfsigned --name relay.localhost)
    //   plugins: [['auth-file', { file: './users.json' }], ...]                        (relay user add you@example.com)
  ],
  // Domains this relay receives mail for from anyone.
  localDomains: [],
  dataDir: './data',
  delivery: {
    retry: { base: '5m', factor: 2, max: '4h' },
    maxQueueLifetime: '5d',
  },
  plugins: [
    // Clients on these networks may relay to any domain; everyone else only to localDomains.
    // Only this machine's own address: 127.0.0.2 and the rest of 127/8 are clients like any other.
    ['relay-acl', { trustedNetworks: ['127.0.0.1/32', '::1/128'] }],
  ],
  log: { level: 'info' },
})
