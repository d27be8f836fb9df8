// npm run bench:queue -- --messages 20000,100000,300000,1000000 [--drain 20] [--domains 4] [--spool-every 20]
// Builds a queue of N messages the fast way (the queue's own store, batches of one transaction,
// every 20th body a spool file, a tenth of the recipients deferred, a few messages held), then:
// `relay queue summary` on the stopped queue; relay start (the built dist, as users run it) to the
// first delivery at a loopback sink; `relay queue summary` while it drains; RSS while it drains.
// --root DIR runs another build (DIR/bin, DIR/dist), e.g. a copy of dist made before a change.
import { spawn, fork, execFileSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { ask } from './ipc.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '20000' },
    drain: { type: 'string', default: '20' },
    domains: { type: 'string', default: '4' },
    'spool-every': { type: 'string', default: '20' },
    'body-size': { type: 'string', default: '600' },
    root: { type: 'string', default: path.resolve(HERE, '..') },
    keep: { type: 'boolean', default: false },
    /** Time budget for the whole curve (s): larger sizes are skipped once it is spent. */
    budget: { type: 'string', default: '3000' },
  },
})
const ROOT = path.resolve(args.root)
const DOMAINS = Number(args.domains)
const SPOOL_EVERY = Number(args['spool-every'])
const DRAIN_S = Number(args.drain)
const BODY = Buffer.from(('x'.repeat(76) + '\r\n').repeat(Math.ceil(Number(args['body-size']) / 78)).slice(0, Number(args['body-size'])))
/** Bytes on disk per message, measured at 20k (database with WAL checkpointed, plus its share of spool files), with margin. */
const BYTES_PER_MESSAGE = 2500 + (BODY.length + 4096) / SPOOL_EVERY

const rssMb = (pid: number) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Math.round(Number(m[1]) / 1024) : NaN
}
const freeBytes = (dir: string) => {
  const s = fs.statfsSync(dir)
  return s.bavail * s.bsize
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

/** Fills `<dataDir>/queue.sqlite` through the store the relay itself uses (the build under test). */
async function buildQueue(dataDir: string, n: number): Promise<number> {
  const t0 = performance.now()
  const { SqliteStore } = (await import(pathToFileURL(path.join(ROOT, 'dist/core/queue/sqlite/store.js')).href)) as typeof import('../core/queue/sqlite/store.js')
  const spoolDir = path.join(dataDir, 'spool')
  fs.mkdirSync(spoolDir, { recursive: true })
  const store = new SqliteStore(path.join(dataDir, 'queue.sqlite'))
  // Building only: a crash here loses nothing anyone was promised.
  store.db.pragma('synchronous = OFF')
  const start = Date.now() - n // one ms apart, oldest first, all due now
  const BATCH = 5000
  for (let from = 0; from < n; from += BATCH) {
    store.db.transaction(() => {
      for (let seq = from; seq < Math.min(n, from + BATCH); seq++) {
        const id = `QS${String(seq).padStart(12, '0')}`
        const receivedAt = start + seq
        const headers = Buffer.from(`From: <sender@bench.test>\r\nTo: <user${seq}@d${seq % DOMAINS}.bulk.test>\r\nSubject: queue scale ${seq}\r\nMessage-ID: <qs-${seq}@bench.test>\r\nX-Bench-Seq: ${seq}\r\n\r\n`)
        let body: { inline: Buffer } | { file: string } = { inline: BODY }
        if (seq % SPOOL_EVERY === 0) {
          const file = path.join(spoolDir, id)
          fs.writeFileSync(file, BODY)
          body = { file }
        }
        const rows = store.enqueue({
          id, sender: 'sender@bench.test', recipients: [{ address: `user${seq}@d${seq % DOMAINS}.bulk.test`, domain: `d${seq % DOMAINS}.bulk.test` }],
          headers, body, size: headers.length + BODY.length, messageId: `<qs-${seq}@bench.test>`, receivedAt, expiresAt: receivedAt + 5 * 86_400_000,
          meta: { clientAddress: '127.0.0.1', helo: 'bench-client.test', trusted: true },
        })
        // A tenth deferred (due in an hour: not delivered during the run), one in a thousand held.
        if (seq % 10 === 5) store.complete(id, [{ rowId: rows[0]!, state: 'deferred', response: '451 4.7.1 try later', nextAttemptAt: Date.now() + 3_600_000, category: 'policy' }], undefined, receivedAt + 1)
        if (seq % 1000 === 7) store.hold(id, receivedAt + 2)
      }
    })()
  }
  store.db.pragma('wal_checkpoint(TRUNCATE)')
  store.close()
  return (performance.now() - t0) / 1000
}

/** `relay queue summary` as an operator runs it; wall time in ms and the first line it printed. */
function summary(configFile: string): { ms: number; line: string } {
  const t0 = performance.now()
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin/relay.js'), 'queue', 'summary', '--config', configFile], { encoding: 'utf8', timeout: 120_000 })
  return { ms: Math.round(performance.now() - t0), line: out.split('\n')[0] ?? '' }
}

async function runOne(n: number): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-qscale-'))
  const need = n * BYTES_PER_MESSAGE * 1.5
  if (freeBytes(dir) < need + 5e9) throw new Error(`not enough disk for ${n} messages: ${Math.round(need / 1e9)} GB needed, ${Math.round(freeBytes(dir) / 1e9)} GB free`)
  const dataDir = path.join(dir, 'data')
  const buildS = await buildQueue(dataDir, n)
  const dbMb = Math.round(fs.statSync(path.join(dataDir, 'queue.sqlite')).size / 1e6)

  const sink = fork(path.join(HERE, 'sink.ts'), ['0'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const { port: sinkPort } = await ask<{ port: number }>(sink, '', 'listening')
  const config = {
    hostname: 'relay.bench.test',
    listen: [{ host: '127.0.0.1', port: await freePort(), role: 'mx' }],
    dataDir,
    smtp: { reverseLookup: false },
    // Default concurrency (global 100, 20 per domain): with few domains, each is full before the global cap.
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }], [path.join(HERE, 'route-to-sink.ts'), { host: '127.0.0.1', port: sinkPort }]],
    log: { level: 'info' },
  }
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(configFile, JSON.stringify(config))
  const stopped = summary(configFile)

  const logFile = path.join(dir, 'relay.log')
  const t0 = performance.now()
  const relay = spawn(process.execPath, [path.join(ROOT, 'bin/relay.js'), 'start', '--config', configFile], { stdio: ['ignore', fs.openSync(logFile, 'w'), 'inherit'] })
  let firstMs = NaN
  let startedMs = NaN
  const samples: number[] = []
  const deadline = Date.now() + 120_000
  while (Number.isNaN(firstMs) && Date.now() < deadline) {
    if (relay.exitCode !== null) throw new Error(`relay exited at start; see ${logFile}`)
    if (Number.isNaN(startedMs) && fs.readFileSync(logFile, 'utf8').includes('"relay started"')) startedMs = performance.now() - t0
    const s = await ask<{ messages: number }>(sink, 'stats', 'stats')
    if (s.messages > 0) firstMs = performance.now() - t0
    else await sleep(10)
  }
  const drainFrom = performance.now()
  const before = (await ask<{ messages: number }>(sink, 'stats', 'stats')).messages
  let running: { ms: number; line: string } | undefined
  while (performance.now() - drainFrom < DRAIN_S * 1000) {
    samples.push(rssMb(relay.pid!))
    // Halfway through the drain, an operator looks at the queue (the relay has no admin listener: the CLI opens the queue).
    if (!running && performance.now() - drainFrom > (DRAIN_S * 1000) / 2) running = summary(configFile)
    await sleep(250)
  }
  const drained = (await ask<{ messages: number; duplicates: number }>(sink, 'stats', 'stats'))
  const drainS = (performance.now() - drainFrom) / 1000
  relay.kill('SIGTERM')
  await new Promise((r) => (relay.exitCode !== null ? r(null) : relay.once('exit', r)))
  sink.send({ type: 'exit' })
  if (!args.keep) fs.rmSync(dir, { recursive: true, force: true })
  const third = Math.max(1, Math.floor(samples.length / 3))
  const avg = (a: number[]) => Math.round(a.reduce((s, x) => s + x, 0) / Math.max(1, a.length))
  return {
    messages: n,
    build_s: Number(buildS.toFixed(1)),
    db_mb: dbMb,
    summary_stopped_ms: stopped.ms,
    summary_line: stopped.line,
    relay_started_ms: Math.round(startedMs),
    first_delivery_ms: Math.round(firstMs),
    summary_running_ms: running?.ms,
    drained_msgs_s: Math.round((drained.messages - before) / drainS),
    duplicates: drained.duplicates,
    rss_mb: { first_third: avg(samples.slice(0, third)), last_third: avg(samples.slice(-third)), max: Math.max(...samples) },
    ...(args.keep ? { dir } : {}),
  }
}

async function main() {
  const sizes = args.messages.split(',').map(Number)
  const budgetEnd = Date.now() + Number(args.budget) * 1000
  const results: Record<string, unknown>[] = []
  for (const n of sizes) {
    if (Date.now() > budgetEnd) {
      console.log(`skipped ${n}: time budget spent`)
      continue
    }
    try {
      const r = await runOne(n)
      results.push(r)
      console.log(JSON.stringify(r))
    } catch (err) {
      console.log(`stopped at ${n}: ${(err as Error).message}`)
      break
    }
  }
  console.log('\n| messages | build s | DB MB | summary (stopped) ms | relay started ms | first delivery ms | summary (draining) ms | drain msg/s | RSS MB first/last third, max |')
  console.log('|---|---|---|---|---|---|---|---|---|')
  for (const r of results as Record<string, any>[]) {
    console.log(`| ${r.messages} | ${r.build_s} | ${r.db_mb} | ${r.summary_stopped_ms} | ${r.relay_started_ms} | ${r.first_delivery_ms} | ${r.summary_running_ms} | ${r.drained_msgs_s} | ${r.rss_mb.first_third}/${r.rss_mb.last_third}, ${r.rss_mb.max} |`)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
