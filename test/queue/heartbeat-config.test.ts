// queue.heartbeat: its defaults keep the promise "a dead node's mail flows again within 60 s", and a
// setting that would take slow nodes for dead is refused naming the key (through the real CLI).
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { configSchema } from '../../core/config/schema.js'
import { runCli, tempDir } from '../harness/relay.js'

const PG = { driver: 'postgres', url: 'postgres://relay@127.0.0.1:5432/relay' }

describe('queue.heartbeat', () => {
  it('defaults to a beat every 5 s and death after 30 s: takeover well within 60 s, lease untouched', () => {
    const config = configSchema.parse({ queue: PG })
    if (config.queue.driver !== 'postgres') throw new Error('expected the postgres queue')
    expect(config.queue.heartbeat).toEqual({ interval: 5_000, deadAfter: 30_000 })
    // Worst case after a kill: the dead node's last beat was just before it (its silence counts
    // from there), and the next beat of a live node may come one interval after deadAfter; the
    // taking node claims at once (it is notified) and a delivery then starts.
    expect(config.queue.heartbeat.deadAfter + config.queue.heartbeat.interval).toBeLessThanOrEqual(35_000)
    // A slow node gets six missed beats before it is taken for dead.
    expect(config.queue.heartbeat.deadAfter / config.queue.heartbeat.interval).toBe(6)
    expect(config.delivery.lease).toBe(900_000)
  })

  it('check-config refuses deadAfter under 3 × interval, naming the key', () => {
    const dir = tempDir('relay-heartbeat-config-')
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({
      hostname: 'config.test', dataDir: path.join(dir, 'data'), log: { level: 'silent' },
      queue: { ...PG, heartbeat: { interval: '5s', deadAfter: '10s' } },
    }))
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}queue\.heartbeat\.deadAfter: must be at least 3 × interval \(5s\)/m)
    fs.rmSync(dir, { recursive: true, force: true })
  })
})
