// npm run bench [-- --n 2000 --size 5120 --concurrency 20]
// npm run bench -- --bulk   (10,000 messages to 50 domains whose MX records, served by a DNS server
//                            on loopback, spread them over 5 receiving servers; connection reuse on)
// npm run bench -- --queue postgres --nodes 2
//                           (cluster mode: the same load on SQLite with one node, then on PostgreSQL
//                            with 1 and N nodes sharing one database, sessions spread round-robin;
//                            RELAY_BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/test)
// npm run bench -- --workers 2  (config workers: SMTP sessions in 2 processes; CPU per message split
//                           into the primary's and the SMTP workers')
// npm run bench -- --floor    (the same load through bench/floor.ts, the least a relay on smtp-server
//                           and nodemailer can do per message, instead of the relay)
// npm run bench -- --pipelining   (the injector sends MAIL, RCPT and DATA in one write, RFC 2920)
// npm run bench -- --hostile [--hostile-count 24]   (hostile messages beside normal traffic: see bench/hostile.ts)
// Starts the relay (built dist/, as users run it) routed to a local sink, injects N messages over
// C concurrent sessions, one message per connection, and prints accept and end-to-end rates,
// latency from end of DATA to 250, relay CPU per message, peak RSS, event-loop lag, losses, duplicates.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ask } from './ipc.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '2000' },
    size: { type: 'string', default: '5120' },
    concurrency: { type: 'string', default: '20' },
    timeout: { type: 'string', default: '300' },
    bulk: { type: 'boolean', default: false },
    domains: { type: 'string', default: '50' },
    receivers: { type: 'string', default: '5' },
    queue: { type: 'string', default: 'sqlite' },
    nodes: { type: 'string', default: '1' },
    hostile: { type: 'boolean', default: false },
    'hostile-count': { type: 'string', default: '24' },
    workers: { type: 'string', default: '1' },
    floor: { type: 'boolean', default: false },
    pipelining: { type: 'boolean', default: false },
  },
})
const PG_URL = process.env.RELAY_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
if (args.queue !== 'sqlite' && args.queue !== 'postgres') throw new Error(`--queue: expected sqlite or postgres, got ${args.queue}`)
// The floor is one process on one fixed next hop: nothing of the relay's configuration applies to it.
if (args.floor && (args.bulk || args.hostile || args.queue !== 'sqlite' || args.nodes !== '1' || args.workers !== '1')) {
  throw new Error('--floor runs alone: not with --bulk, --hostile, --queue postgres, --nodes or --workers')
}
const BULK = args.bulk
const N = BULK && !process.argv.includes('--n') ? 10_000 : Number(args.n)
const DOMAINS = BULK ? Number(args.domains) : 1
const RECEIVERS = BULK ? Number(args.receivers) : 1
/** The recipient of message `seq`: one fixed address, or spread over the bulk domains. */
const rcptOf = (seq: number) => (BULK ? `user${seq}@d${seq % DOMAINS}.bulk.test` : 'bench-rcpt@sink.test')
const SIZE = Number(args.size)
const C = Number(args.concurrency)

/** User and system CPU ms in a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line. */
function cpuSplitMs(stat: string): { user: number; sys: number } {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime, in ticks of 1/100 s (CLK_TCK = 100 on Linux)
  return { user: Number(fields[11]) * 10, sys: Number(fields[12]) * 10 }
}
/** CPU ms of a process (`/proc/<pid>/stat`) or of one thread (`/proc/<pid>/task/<tid>/stat`). */
function cpuMs(pid: number, stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')): number {
  const { user, sys } = cpuSplitMs(stat)
  return user + sys
}
/** CPU ms of each thread of a process, summed by thread name (main thread: 'node'; the queue's: its own name). */
function threadCpuMs(pid: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const key = tid === String(pid) ? 'main' : name
      if (process.env.RELAY_BENCH_THREADS) {
        // Every thread apart, user and system time apart (RELAY_BENCH_THREADS=1).
        const { user, sys } = cpuSplitMs(stat)
        out[`${key}:${tid}:user`] = user
        out[`${key}:${tid}:sys`] = sys
        continue
      }
      out[key] = (out[key] ?? 0) + cpuMs(pid, stat)
    } catch {
      // the thread ended
    }
  }
  return out
}
/** The relay's processes: the one started and, with config `workers`, its SMTP worker processes. */
function processTree(pid: number): number[] {
  let children: number[] = []
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
  } catch {
    // gone
  }
  return [pid, ...children.flatMap(processTree)]
}
/** CPU of the relay's processes, workers included (a worker that exited is missed: none should). */
function treeCpuMs(pid: number): number {
  return processTree(pid).reduce((sum, p) => {
    try {
      return sum + cpuMs(p)
    } catch {
      return sum
    }
  }, 0)
}
function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Math.round(Number(m[1]) / 1024) : NaN
}

/** One SMTP session, one message; resolves with ms from the end of DATA to the 250. */
function inject(port: number, seq: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.setNoDelay(true)
    const steps = [
      'EHLO bench-client.test\r\n',
      'MAIL FROM:<bench-sender@bench.test>\r\n',
      `RCPT TO:<${rcptOf(seq)}>\r\n`,
      'DATA\r\n',
      `From: <bench-sender@bench.test>\r\nTo: <bench-rcpt@sink.test>\r\nSubject: bench ${seq}\r\nMessage-ID: <bench-${seq}@bench.test>\r\nX-Bench-Seq: ${seq}\r\n\r\n${body}.\r\n`,
      'QUIT\r\n',
    ]
    let step = -1
    let buf = ''
    let sentDot = 0
    let latency = 0
    socket.on('data', (d) => {
      buf += d.toString('latin1')
      for (;;) {
        const nl = buf.indexOf('\r\n')
        if (nl < 0) return
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 2)
        if (line[3] === '-') continue
        const code = Number(line.slice(0, 3))
        if (step === 4) latency = performance.now() - sentDot
        if (code >= 400) {
          socket.destroy()
          return reject(new Error(`step ${step}: ${line}`))
        }
        step++
        if (step >= steps.length) {
          socket.end()
          return resolve(latency)
        }
        if (step === 4) sentDot = performance.now()
        // --pipelining: MAIL, RCPT and DATA in one write, as a client that saw PIPELINING sends them (RFC 2920).
        if (args.pipelining && (step === 2 || step === 3)) continue
        socket.write(args.pipelining && step === 1 ? steps[1]! + steps[2]! + steps[3]! : steps[step]!)
      }
    })
    socket.on('error', reject)
  })
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

async function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

interface Run {
  queue: 'sqlite' | 'postgres'
  nodes: number
}

async function runOnce(run: Run): Promise<Record<string, unknown>> {
  const deadline = Date.now() + Number(args.timeout) * 1000
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-bench-'))
  // Each PostgreSQL run gets a schema of its own, dropped at the end.
  const schema = `bench_${process.pid}_${run.nodes}_${Date.now() % 100000}`
  const sinkHosts = BULK ? Array.from({ length: RECEIVERS }, (_, i) => `127.0.0.${2 + i}`) : ['127.0.0.1']
  const sink = fork(path.join(ROOT, 'bench/sink.ts'), ['0', sinkHosts.join(',')], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const { port: sinkPort } = await ask<{ port: number }>(sink, '', 'listening')
  // Bulk: real MX resolution through a DNS server on loopback (the test harness's).
  let dns: { server: string; close(): Promise<void> } | undefined
  if (BULK) {
    const { startDns } = await import('../test/harness/dns-server.js')
    const zones: Record<string, { MX?: { exchange: string; priority: number }[]; A?: string[] }> = {}
    for (let d = 0; d < DOMAINS; d++) {
      zones[`d${d}.bulk.test`] = { MX: [{ exchange: `mx.d${d}.bulk.test`, priority: 10 }] }
      zones[`mx.d${d}.bulk.test`] = { A: [sinkHosts[d % RECEIVERS]!] }
    }
    dns = await startDns(zones)
  }

  const nodes: { port: number; child: ChildProcess; logFile: string }[] = []
  for (let i = 0; i < run.nodes; i++) {
    const relayPort = await freePort()
    const config = {
      // Unique per node: in cluster mode the host name is the node's id for queue leases.
      hostname: run.nodes > 1 ? `relay${i + 1}.bench.test` : 'relay.bench.test',
      listen: [{ host: '127.0.0.1', port: relayPort, role: 'mx' }],
      dataDir: path.join(dir, `data${i}`),
      ...(run.queue === 'postgres' ? { queue: { driver: 'postgres', url: PG_URL, schema } } : {}),
      // All bench sessions come from 127.0.0.1: lift the per-client cap (default 50) when more run at once.
      smtp: { reverseLookup: false, ...(C > 50 ? { maxConnectionsPerClient: C } : {}) },
      ...(Number(args.workers) > 1 ? { workers: Number(args.workers) } : {}),
      delivery: { concurrency: { global: 100, perDomain: BULK ? 10 : 100 }, ...(BULK ? { port: sinkPort } : {}) },
      ...(dns ? { dns: { servers: [dns.server] } } : {}),
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        ...(BULK ? [] : [[path.join(ROOT, 'bench/route-to-sink.ts'), { host: '127.0.0.1', port: sinkPort }]]),
      ],
      log: { level: 'info' },
    }
    const configFile = path.join(dir, `relay${i}.config.json`)
    fs.writeFileSync(configFile, JSON.stringify(config))
    const logFile = path.join(dir, `relay${i}.log`)
    // RELAY_BENCH_NODE_ARGS, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof', profiles the relay.
    const nodeArgs = (process.env.RELAY_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const argv = args.floor
      ? ['--import', 'tsx', path.join(ROOT, 'bench/floor.ts'), String(relayPort), '127.0.0.1', String(sinkPort), path.join(dir, 'journal')]
      : [path.join(ROOT, 'bin/relay.js'), 'start', '--config', configFile]
    const child = spawn(process.execPath, [...nodeArgs, ...argv], {
      stdio: ['ignore', fs.openSync(logFile, 'w'), 'inherit'],
    })
    nodes.push({ port: relayPort, child, logFile })
  }
  for (const { child, logFile } of nodes) {
    for (;;) {
      if (fs.readFileSync(logFile, 'utf8').includes('"relay started"')) break
      if (child.exitCode !== null) throw new Error('relay exited at start; see ' + logFile)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  const body = ('x'.repeat(76) + '\r\n').repeat(Math.ceil(SIZE / 78)).slice(0, SIZE - 2) + '\r\n'
  const cpuAll = () => nodes.reduce((sum, n) => sum + treeCpuMs(n.child.pid!), 0)
  const cpuBefore = cpuAll()
  // With workers: the primary's CPU apart from the SMTP workers' (per-process costs for sizing).
  const primaryCpu = () => nodes.reduce((sum, n) => sum + cpuMs(n.child.pid!), 0)
  const primaryBefore = primaryCpu()
  const threadsBefore = threadCpuMs(nodes[0]!.child.pid!)
  const latencies: number[] = []
  let failures = 0
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: C }, async (_, session) => {
      // Sessions spread over the nodes, as a TCP load balancer would.
      const port = nodes[session % nodes.length]!.port
      while (next < N && Date.now() < deadline) {
        const seq = next++
        try {
          latencies.push(await inject(port, seq, body))
        } catch {
          failures++
        }
      }
    }),
  )
  const acceptS = (performance.now() - t0) / 1000
  let stats: { messages: number; unique: number; duplicates: number; sessions: number }
  for (;;) {
    stats = await ask(sink, 'stats', 'stats')
    if (stats.unique >= latencies.length || Date.now() > deadline) break
    await new Promise((r) => setTimeout(r, 20))
  }
  const e2eS = (performance.now() - t0) / 1000
  await new Promise((r) => setTimeout(r, 500)) // late duplicates
  stats = await ask(sink, 'stats', 'stats')
  const cpu = cpuAll() - cpuBefore
  const cpuPrimary = primaryCpu() - primaryBefore
  const threadsAfter = threadCpuMs(nodes[0]!.child.pid!)
  const perThread = Object.fromEntries(
    Object.entries(threadsAfter)
      .map(([k, v]) => [k, Number(((v - (threadsBefore[k] ?? 0)) / Math.max(1, latencies.length)).toFixed(2))] as const)
      .filter(([, v]) => v >= 0.05),
  )
  const rss = Math.max(...nodes.map((n) => peakRssMb(n.child.pid!)))
  for (const { child } of nodes) child.kill('SIGTERM')
  await Promise.all(nodes.map(({ child }) => new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))))
  const stopped = fs.readFileSync(nodes[0]!.logFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'relay stopped')
  sink.send({ type: 'exit' })
  await dns?.close()
  if (run.queue === 'postgres') await dropSchema(schema)

  latencies.sort((a, b) => a - b)
  const accepted = latencies.length
  const result = {
    queue: run.queue,
    nodes: run.nodes,
    messages: N,
    size: SIZE,
    sessions: C,
    accepted,
    failed: failures,
    accept_msgs_s: Math.round(accepted / acceptS),
    e2e_msgs_s: Math.round(stats.unique / e2eS),
    latency_ms: { p50: Number(percentile(latencies, 50).toFixed(2)), p99: Number(percentile(latencies, 99).toFixed(2)) },
    // Summed over all nodes.
    relay_cpu_ms_msg: Number((cpu / Math.max(1, accepted)).toFixed(2)),
    ...(Number(args.workers) > 1
      ? { workers: Number(args.workers), cpu_ms_msg_primary: Number((cpuPrimary / Math.max(1, accepted)).toFixed(2)), cpu_ms_msg_smtp_workers: Number(((cpu - cpuPrimary) / Math.max(1, accepted)).toFixed(2)) }
      : {}),
    // The first node's threads (main thread, the queue's thread, libuv's pool), ms per message.
    cpu_ms_msg_by_thread: perThread,
    peak_rss_mb: rss,
    event_loop_delay_ms: stopped?.eventLoopDelayMs,
    delivered: stats.unique,
    lost: accepted - stats.unique,
    duplicates: stats.duplicates,
    sink_sessions: stats.sessions,
    connections_per_message: Number((stats.sessions / Math.max(1, stats.unique)).toFixed(3)),
    ...(BULK ? { domains: DOMAINS, receivers: RECEIVERS, last_delivered_after_s: Number(e2eS.toFixed(2)) } : {}),
  }
  // RELAY_BENCH_KEEP_LOG=<file>: the relay's stdout (its log, and any V8 trace asked for in RELAY_BENCH_NODE_ARGS) is kept there.
  if (process.env.RELAY_BENCH_KEEP_LOG) fs.copyFileSync(nodes[0]!.logFile, process.env.RELAY_BENCH_KEEP_LOG)
  fs.rmSync(dir, { recursive: true, force: true })
  if (result.lost > 0 || failures > 0) process.exitCode = 1
  return result
}

async function dropSchema(schema: string): Promise<void> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: PG_URL })
  await client.connect()
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await client.end()
}

async function main() {
  if (args.hostile) {
    const { runHostile } = await import('./hostile.js')
    const given = (flag: string) => process.argv.includes(flag)
    await runHostile({ n: given('--n') ? N : 300, concurrency: given('--concurrency') ? C : 10, hostileCount: Number(args['hostile-count']), timeoutS: Number(args.timeout) })
    return
  }
  if (args.queue === 'sqlite') {
    console.log(JSON.stringify(await runOnce({ queue: 'sqlite', nodes: Number(args.nodes) }), null, 2))
    return
  }
  // Cluster mode: the SQLite figure, then PostgreSQL with one node and with N, in one sitting.
  const runs: Run[] = [
    { queue: 'sqlite', nodes: 1 },
    { queue: 'postgres', nodes: 1 },
    ...(Number(args.nodes) > 1 ? [{ queue: 'postgres' as const, nodes: Number(args.nodes) }] : []),
  ]
  const results = []
  for (const run of runs) results.push(await runOnce(run))
  console.log(JSON.stringify(results, null, 2))
  console.log('\nqueue     nodes  e2e msg/s  accept msg/s  DATA→250 p50/p99 ms  CPU ms/msg (all nodes)  lost  duplicates')
  for (const r of results as Record<string, any>[]) {
    console.log(
      `${String(r.queue).padEnd(9)} ${String(r.nodes).padStart(5)}  ${String(r.e2e_msgs_s).padStart(9)}  ${String(r.accept_msgs_s).padStart(12)}  ${`${r.latency_ms.p50}/${r.latency_ms.p99}`.padStart(19)}  ${String(r.relay_cpu_ms_msg).padStart(22)}  ${String(r.lost).padStart(4)}  ${String(r.duplicates).padStart(10)}`,
    )
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
