// The container's HEALTHCHECK (deploy/Dockerfile): exit 0 healthy, 1 not.
// With the admin plugin: GET /readyz at the URL it writes to <dataDir>/admin.json, healthy on 200
// only (503 while the relay starts or drains on SIGTERM). Without the plugin there is no
// readiness to ask: healthy while the process named in <dataDir>/relay.pid lives.
// RELAY_DATA_DIR names the data directory (the image sets /var/lib/relay).
import fs from 'node:fs'
import path from 'node:path'

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

const admin = read('admin.json')
if (admin !== undefined) {
  let url
  try {
    url = JSON.parse(admin).url
  } catch {
    unhealthy('admin.json is not JSON')
  }
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(4000) })
    if (res.status !== 200) unhealthy(`/readyz answered ${res.status}: ${(await res.text()).slice(0, 200)}`)
    process.stdout.write('ready\n')
    process.exit(0)
  } catch (err) {
    unhealthy(`/readyz: ${err.message}`)
  }
}

const pid = Number(read('relay.pid')?.trim())
if (!Number.isInteger(pid) || pid <= 0) unhealthy(`no relay.pid in ${dataDir} (not started, or stopped)`)
try {
  process.kill(pid, 0)
} catch (err) {
  if (err.code !== 'EPERM') unhealthy(`relay.pid names ${pid}, which is not running`)
}
process.stdout.write('running (no admin plugin: liveness only)\n')
