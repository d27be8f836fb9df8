// npm run bench [-- --n 2000 --size 5120 --concurrency 20]
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

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '2000' },
    size: { type: 'string', default: '5120' },
    concurrency: { type: 'string', default: '20' },
    timeout: { type: 'string', default: '300' },
  },
})
const N = Number(args.n)
const SIZE = Number(args.size)
const C = Number(args.concurrency)
const DEADLINE = Date.now() + Number(args.timeout) * 1000

function ask<T>(child: ChildProcess, type: string, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { type: string }) => {
      if (m.type === reply) {
        child.off('message', on)
        resolve(m as T)
      }
    }
    child.on('message', on)
    if (type) child.send({ type })
  })
}

function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12]) // utime + stime
  return (ticks * 1000) / 100 // CLK_TCK = 100 on Linux
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
      'RCPT TO:<bench-rcpt@sink.test>\r\n',
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
        socket.write(steps[step]!)
      }
    })
    socket.on('error', reject)
  })
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-bench-'))
  const sink = fork(path.join(ROOT, 'bench/sink.ts'), ['0'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const { port: sinkPort } = await ask<{ port: number }>(sink, '', 'listening')

  const relayPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
  const config = {
    hostname: 'relay.bench.test',
    listen: [{ host: '127.0.0.1', port: relayPort, role: 'mx' }],
    dataDir: path.join(dir, 'data'),
    smtp: { reverseLookup: false },
    delivery: { concurrency: { global: 100, perDomain: 100 } },
    plugins: [
      ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      [path.join(ROOT, 'bench/route-to-sink.ts'), { host: '127.0.0.1', port: sinkPort }],
    ],
    log: { level: 'info' },
  }
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(configFile, JSON.stringify(config))
  const logFile = path.join(dir, 'relay.log')
  // RELAY_BENCH_NODE_ARGS, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof', profiles the relay.
  const nodeArgs = (process.env.RELAY_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const relay = spawn(process.execPath, [...nodeArgs, path.join(ROOT, 'bin/relay.js'), 'start', '--config', configFile], {
    stdio: ['ignore', fs.openSync(logFile, 'w'), 'inherit'],
  })
  for (;;) {
    if (fs.readFileSync(logFile, 'utf8').includes('"relay started"')) break
    if (relay.exitCode !== null) throw new Error('relay exited at start; see ' + logFile)
    await new Promise((r) => setTimeout(r, 50))
  }

  const body = ('x'.repeat(76) + '\r\n').repeat(Math.ceil(SIZE / 78)).slice(0, SIZE - 2) + '\r\n'
  const cpuBefore = cpuMs(relay.pid!)
  const latencies: number[] = []
  let failures = 0
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (next < N && Date.now() < DEADLINE) {
        const seq = next++
        try {
          latencies.push(await inject(relayPort, seq, body))
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
    if (stats.unique >= latencies.length || Date.now() > DEADLINE) break
    await new Promise((r) => setTimeout(r, 20))
  }
  const e2eS = (performance.now() - t0) / 1000
  await new Promise((r) => setTimeout(r, 500)) // late duplicates
  stats = await ask(sink, 'stats', 'stats')
  const cpu = cpuMs(relay.pid!) - cpuBefore
  const rss = peakRssMb(relay.pid!)
  relay.kill('SIGTERM')
  await new Promise((r) => relay.once('exit', r))
  const stopped = fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'relay stopped')
  sink.send({ type: 'exit' })

  latencies.sort((a, b) => a - b)
  const accepted = latencies.length
  const result = {
    messages: N,
    size: SIZE,
    sessions: C,
    accepted,
    failed: failures,
    accept_msgs_s: Math.round(accepted / acceptS),
    e2e_msgs_s: Math.round(stats.unique / e2eS),
    latency_ms: { p50: Number(percentile(latencies, 50).toFixed(2)), p99: Number(percentile(latencies, 99).toFixed(2)) },
    relay_cpu_ms_msg: Number((cpu / Math.max(1, accepted)).toFixed(2)),
    peak_rss_mb: rss,
    event_loop_delay_ms: stopped?.eventLoopDelayMs,
    delivered: stats.unique,
    lost: accepted - stats.unique,
    duplicates: stats.duplicates,
    sink_sessions: stats.sessions,
  }
  console.log(JSON.stringify(result, null, 2))
  fs.rmSync(dir, { recursive: true, force: true })
  if (result.lost > 0 || failures > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
