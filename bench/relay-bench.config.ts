// Config for ../shared/bench/relay-bench.sh: listen on 127.0.0.1:2528, relay for 127.0.0.0/8,
// every message to the bench sink at 127.0.0.1:2626 (a fixed next hop, no DNS).
import { defineConfig } from '../core/index.js'

export default defineConfig({
  hostname: 'relay.bench.test',
  listen: [{ host: '127.0.0.1', port: 2528, role: 'mx' }],
  dataDir: process.env.RELAY_BENCH_DATA ?? '/tmp/peers/relay-data',
  smtp: { reverseLookup: false },
  delivery: { concurrency: { global: 100, perDomain: 100 } },
  plugins: [
    ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
    ['./route-to-sink.ts', { host: '127.0.0.1', port: 2626 }],
  ],
  log: { level: 'info' },
  // bench/peers.sh -w N: SMTP sessions in N worker processes (docs/workers.md).
  workers: Number(process.env.RELAY_BENCH_WORKERS ?? 1),
})
