// /etc/relay/relay.config.ts: one production node (deploy/relay.service) or a cluster node
// (deploy/compose.yaml). What differs between machines comes from the environment
// (/etc/relay/relay.env under systemd, `environment:` in compose), so every node runs this file.
// `relay check-config` before a (re)start; README.md describes every key.
import { defineConfig } from 'relay-mta'

const env = process.env
/**
 * Per node: its EHLO name, in Received headers and the queue's node identity (docs/cluster.md).
 * Under systemd write this machine's name here (docs/deploy.md): `sendmail` run by local users and
 * cron reads this file too, without relay.env.
 */
const hostname = env.RELAY_HOSTNAME ?? 'mx1.example.com'
/** certbot's live/ directory: links the relay follows across renewals (docs/deploy.md, "Certificates"). */
const certDir = env.RELAY_TLS_DIR ?? `/etc/letsencrypt/live/${hostname}`
/** Set both to run as a cluster node: the queue in PostgreSQL, limits and throttles in Redis. */
const postgres = env.RELAY_POSTGRES_URL
const redis = env.RELAY_REDIS_URL

export default defineConfig({
  hostname,
  listen: [
    // STARTTLS offered (tls below); no AUTH on 25 (Postfix's default): users submit on 587/465.
    { host: '0.0.0.0', port: 25, role: 'mx', auth: false },
    { host: '0.0.0.0', port: 587, role: 'submission' },                       // AUTH only after STARTTLS
    { host: '0.0.0.0', port: 465, role: 'submission', tls: 'implicit' },
  ],
  tls: {
    cert: env.RELAY_TLS_CERT ?? `${certDir}/fullchain.pem`,                   // the chain too, not cert.pem
    key: env.RELAY_TLS_KEY ?? `${certDir}/privkey.pem`,
  },
  localDomains: ['example.com'],
  // StateDirectory=relay (systemd), the volume (Docker): queue, spool, relay.pid, admin.json.
  dataDir: env.RELAY_DATA_DIR ?? '/var/lib/relay',
  queue: postgres ? { driver: 'postgres', url: postgres, schema: 'relay' } : { driver: 'sqlite' },
  delivery: {
    retry: { base: '5m', factor: 2, max: '4h' },
    maxQueueLifetime: '5d',
    ...(redis ? { throttle: { redis, keyPrefix: 'relay:throttle:' } } : {}),
  },
  // SIGTERM waits this long for sessions and deliveries; keep TimeoutStopSec= (systemd) and
  // stop_grace_period (compose) above it.
  shutdownTimeout: '30s',
  log: { level: 'info' },
  plugins: [
    // /healthz and /readyz for the Docker HEALTHCHECK and load balancers, metrics, the admin API.
    // The token (16+ characters, `openssl rand -hex 24`) lives in relay.env, never in this file.
    ['admin', { host: env.RELAY_ADMIN_HOST ?? '127.0.0.1', port: 8025, token: env.RELAY_ADMIN_TOKEN }],
    ['rate-limit', { store: redis ? { redis } : 'memory', keyPrefix: 'relay-rl' }],
    // Users for submission (587/465): `sudo -u relay /opt/relay/bin/relay.js user add alice@example.com` (docs/deploy.md).
    ['auth-file', { file: 'users/users.json' }],                            // beside this file
    // Clients on these networks may relay anywhere; everyone else only to localDomains.
    // Only this machine's own address: every other local address (127.0.0.2, ...) is as any client.
    ['relay-acl', { trustedNetworks: ['127.0.0.1/32', '::1/128'] }],
  ],
})
