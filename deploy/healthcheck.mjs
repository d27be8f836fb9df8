// The container's HEALTHCHECK (deploy/Dockerfile): exit 0 healthy, 1 not.
// With the admin plugin: GET /readyz at the URL it writes to <dataDir>/admin.json, healthy on 200
// only (503 while the relay starts or drains on SIGTERM). Without the plugin there is no
// readiness to ask: healthy while the relay named in <dataDir>/relay.pid runs (and holds the data
// directory's lock).
// RELAY_DATA_DIR names the data directory (the image sets /var/lib/relay).
import fs from 'node:fs'
import path from 'node:path'
// The relay's own check (the pid in relay.pid, alive, holding <dataDir>/relay.lock): files a relay
// killed with -9 left behind are not taken for a running relay, whatever has their pid by now.
import { livePid } from '../dist/core/pid-file.js'

const dataDir = process.env.RELAY_DATA_DIR || '/var/lib/relay'

function read(name) {
  try {
    return fs.readFileSync(path.join(dataDir, name), 'utf8')
  } catch {
    return undefined
  }
}

function unhealthy(why) {
  process.stderr.write(`unhealthy: ${why}\n`)
  process.exit(1)
}

const pid = livePid(dataDir)
if (pid === undefined) unhealthy(`no relay running on ${dataDir} (not started, or stopped)`)

// admin.json only as this run wrote it (an earlier run's, with or without the plugin since, is stale).
const admin = read('admin.json')
let file
try {
  file = admin === undefined ? undefined : JSON.parse(admin)
} catch {
  unhealthy('admin.json is not JSON')
}
if (file && file.pid === pid) {
  try {
    const res = await fetch(`${file.url}/readyz`, { signal: AbortSignal.timeout(4000) })
    if (res.status !== 200) unhealthy(`/readyz answered ${res.status}: ${(await res.text()).slice(0, 200)}`)
    process.stdout.write('ready\n')
    process.exit(0)
  } catch (err) {
    unhealthy(`/readyz: ${err.message}`)
  }
}
process.stdout.write('running (no admin plugin: liveness only)\n')
