// npm run bench:idle [-- --n 20000 --steps 5000,10000,20000 --per-ip 50 --heap-snapshot]
// Starts the built relay (dist/, as users run it) routed to the bench sink, opens N idle inbound
// SMTP sessions from loopback (spread over 127.1.x.y source addresses, `--per-ip` each, so the
// per-client limit and ephemeral ports are not what is measured; held by child processes,
// bench/idle-clients.ts), each reading the greeting, sending EHLO and then staying silent.
// Where the descriptor limit cannot be raised, the top step is what fits under it (said why).
// At each step it reads the relay's RSS (/proc/<pid>/status VmRSS) and its heap split
// (bench/mem-probe.mjs); then a trusted client (127.0.0.1, in smtp.trustedNetworks and relay-acl's)
// sends three messages: time from connect to the 250 after DATA, and until the sink has each.
// Everything is closed at the end.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { onReplies } from './idle-clients.js'
import { ask } from './ipc.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
// RELAY_BENCH_ROOT runs another checkout's build (a before/after comparison) with this script.
const RELAY_ROOT = process.env.RELAY_BENCH_ROOT ?? ROOT
const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '20000' },
    steps: { type: 'string', default: '5000,10000,20000' },
    'per-ip': { type: 'string', default: '50' },
    // Connections being set up at once (connect, greeting, EHLO).
    parallel: { type: 'string', default: '200' },
    // Seconds to let the relay settle before each reading.
    settle: { type: 'string', default: '3' },
    timeout: { type: 'string', default: '280' },
    'heap-snapshot': { type: 'boolean', default: false },
  },
})
const N = Number(args.n)
const STEPS = [...new Set([...args.steps!.split(',').map(Number).filter((s) => s > 0 && s < N), N])].sort((a, b) => a - b)
const PER_IP = Number(args['per-ip'])
const PARALLEL = Number(args.parallel)
const SETTLE_MS = Number(args.settle) * 1000
const deadline = Date.now() + Number(args.timeout) * 1000
// Idle sessions must outlive the run: socketTimeout stays at its default (300 s).
if (Number(args.timeout) >= 300) throw new Error('--timeout must stay under smtp.socketTimeout (300 s)')
const FDS = N + 4096
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const mb = (bytes: number) => Number((bytes / 1048576).toFixed(1))

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}
function fdLimit(pid: number | 'self'): number {
  const m = /Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))
  return m ? Number(m[1]) : NaN
}

/** Can this process raise a child's descriptor limit to `want` (root with CAP_SYS_RESOURCE)? */
function canRaiseFdLimit(want: number): boolean {
  try {
    execFileSync('prlimit', [`--nofile=${want}:${want}`, 'true'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}
const openFds = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length

async function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

/** One message from the trusted client: ms from connect to the 250 after DATA. */
function trustedMessage(port: number, seq: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.1' })
    socket.setNoDelay(true)
    const steps = [
      'EHLO trusted.bench.test\r\n',
      'MAIL FROM:<app@bench.test>\r\n',
      'RCPT TO:<someone@sink.test>\r\n',
      'DATA\r\n',
      `From: <app@bench.test>\r\nTo: <someone@sink.test>\r\nSubject: trusted ${seq}\r\nMessage-ID: <trusted-${seq}@bench.test>\r\nX-Bench-Seq: ${seq}\r\n\r\nhello\r\n.\r\n`,
    ]
    let step = 0
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`trusted message ${seq}: no reply within 30 s (step ${step})`))
    }, 30_000)
    onReplies(socket, (code, line) => {
      if (code >= 400) {
        clearTimeout(timer)
        socket.destroy()
        return reject(new Error(`trusted message ${seq}: ${line}`))
      }
      if (step === steps.length) {
        clearTimeout(timer)
        socket.end('QUIT\r\n')
        return resolve(performance.now() - t0)
      }
      socket.write(steps[step++]!)
    })
    socket.on('error', reject)
  })
}

interface Reading {
  sessions: number
  rss_mb: number
  heap_used_mb?: number
  external_mb?: number
  array_buffers_mb?: number
}

/** The idle sessions' holders: child processes, at most PER_CHILD sessions each. */
const PER_CHILD = 8000
interface Holder {
  child: ChildProcess
  open: number
}
async function startHolder(): Promise<Holder> {
  const child = fork(path.join(ROOT, 'bench/idle-clients.ts'), ['--child'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  await ask(child, '', 'ready')
  return { child, open: 0 }
}
interface Opened {
  open: number
  failures: string[]
  dropped: number
  lastDropReply: string
}

async function main() {
  const raise = canRaiseFdLimit(FDS)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-idle-'))
  const sink = fork(path.join(ROOT, 'bench/sink.ts'), ['0'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const { port: sinkPort } = await ask<{ port: number }>(sink, '', 'listening')
  const relayPort = await freePort()
  const config = {
    hostname: 'relay.bench.test',
    listen: [{ host: '127.0.0.1', port: relayPort, role: 'mx' }],
    dataDir: path.join(dir, 'data'),
    // maxClients raised so that N idle sessions stay under 80 % of it (beyond, the listener is under
    // stress and idle clients get smtp.stressTimeout); the idle clients keep the default per-client cap (50).
    smtp: { reverseLookup: false, maxClients: Math.ceil(N / 0.75) + 500, trustedNetworks: ['127.0.0.1/32'] },
    delivery: { concurrency: { global: 10, perDomain: 10 } },
    plugins: [
      ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
      [path.join(ROOT, 'bench/route-to-sink.ts'), { host: '127.0.0.1', port: sinkPort }],
    ],
    log: { level: 'info' },
  }
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(configFile, JSON.stringify(config))
  const logFile = path.join(dir, 'relay.log')
  const probeFile = path.join(dir, 'memory.json')
  const nodeArgs = ['--import', path.join(ROOT, 'bench/mem-probe.mjs'), ...(args['heap-snapshot'] ? ['--heapsnapshot-signal=SIGUSR2'] : [])]
  nodeArgs.push(...(process.env.RELAY_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean))
  const command = [process.execPath, ...nodeArgs, path.join(RELAY_ROOT, 'bin/relay.js'), 'start', '--config', configFile]
  // Where allowed, the relay's descriptor limit is raised for N sessions (prlimit execs node: same pid).
  const relay = spawn(raise ? 'prlimit' : command[0]!, raise ? [`--nofile=${FDS}:${FDS}`, ...command] : command.slice(1), {
    cwd: dir,
    env: { ...process.env, RELAY_MEM_PROBE_FILE: probeFile },
    stdio: ['ignore', fs.openSync(logFile, 'w'), 'inherit'],
  })
  const holders: Holder[] = []
  let dropped = 0
  let lastDropReply = ''
  const readings: Reading[] = []
  const trusted: { sessions: number; connect_to_250_ms: number; delivered_ms: number }[] = []
  const failures: string[] = []
  let open = 0
  let seq = 0
  let cap: string | undefined
  let top = N
  try {
    while (!fs.readFileSync(logFile, 'utf8').includes('"relay started"')) {
      if (relay.exitCode !== null) throw new Error('relay exited at start; see ' + logFile)
      if (Date.now() > deadline) throw new Error('relay did not start')
      await sleep(50)
    }

    const read = async (sessions: number) => {
      await sleep(SETTLE_MS)
      const r: Reading = { sessions, rss_mb: mb(rssBytes(relay.pid!)) }
      try {
        const m = JSON.parse(fs.readFileSync(probeFile, 'utf8')) as NodeJS.MemoryUsage
        Object.assign(r, { heap_used_mb: mb(m.heapUsed), external_mb: mb(m.external), array_buffers_mb: mb(m.arrayBuffers) })
      } catch {
        // the probe has not written yet
      }
      readings.push(r)
      console.error(JSON.stringify(r))
    }
    /** A trusted message now: its latency, and how long until the sink has it. */
    const relayOne = async (sessions: number) => {
      const n = ++seq
      const t0 = performance.now()
      const latency = await trustedMessage(relayPort, n)
      for (;;) {
        const stats = await ask<{ unique: number }>(sink, 'stats', 'stats')
        if (stats.unique >= n) break
        if (performance.now() - t0 > 30_000) throw new Error(`trusted message ${n} not delivered within 30 s`)
        await sleep(5)
      }
      trusted.push({ sessions, connect_to_250_ms: Number(latency.toFixed(1)), delivered_ms: Math.round(performance.now() - t0) })
      console.error(JSON.stringify(trusted.at(-1)))
    }

    // Warm-up: the code paths of a full relay loaded, then the baseline.
    await relayOne(0)
    await relayOne(0)
    // Descriptors the relay holds at rest, plus room for the trusted client, the sink and the spool.
    const limit = fdLimit(relay.pid!)
    const room = limit - openFds(relay.pid!) - 64
    console.error(`relay pid ${relay.pid}: descriptor limit ${limit}, ${openFds(relay.pid!)} open at rest`)
    if (room < N) {
      cap = `the relay's descriptor limit is ${limit} (hard limit; raising it needs CAP_SYS_RESOURCE, which ${raise ? 'was' : 'this process does not have'}), and it holds ${openFds(relay.pid!)} at rest: at most ${room} idle sessions, with room left for the trusted client, the sink and the spool`
      console.error(cap)
    }
    top = Math.min(N, room)
    const steps = [...new Set(STEPS.map((s) => Math.min(s, top)))]
    await read(0)
    const t0 = performance.now()
    for (const step of steps) {
      // Each holder gets up to PER_CHILD sessions; more holders as needed.
      while (open < step && Date.now() < deadline && failures.length < 20) {
        let h = holders.find((x) => x.open < PER_CHILD)
        if (!h) holders.push((h = await startHolder()))
        const from = open
        const to = Math.min(step, from + (PER_CHILD - h.open))
        h.child.send({ type: 'open', port: relayPort, from, to, perIp: PER_IP, parallel: PARALLEL })
        const r = await ask<Opened>(h.child, '', 'opened')
        const got = r.open - h.open
        h.open = r.open
        open += got
        failures.push(...r.failures)
        if (got < to - from) break
      }
      console.error(`${open} idle sessions open after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
      if (open < step) break
      await read(open)
      for (let k = 0; k < 3; k++) await relayOne(open)
    }
    for (const h of holders) {
      const st = await ask<Opened>(h.child, 'status', 'status')
      dropped += st.dropped
      if (st.dropped) lastDropReply = st.lastDropReply
    }
    if (args['heap-snapshot']) {
      relay.kill('SIGUSR2')
      await sleep(30_000)
      console.error('heap snapshot(s) in', dir, fs.readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')))
    }
  } finally {
    for (const h of holders) h.child.send({ type: 'exit' })
    relay.kill('SIGTERM')
    await new Promise((r) => (relay.exitCode !== null ? r(null) : relay.once('exit', r)))
    sink.send({ type: 'exit' })
  }
  const base = readings[0]!
  const last = readings.at(-1)!
  const result = {
    sessions_opened: open,
    sessions_wanted: N,
    capped_because: cap,
    failures: failures.slice(0, 5),
    dropped_by_relay: dropped,
    dropped_last_reply: lastDropReply || undefined,
    readings,
    kb_per_session: last.sessions ? Math.round(((last.rss_mb - base.rss_mb) * 1024) / last.sessions) : undefined,
    trusted,
  }
  console.log(JSON.stringify(result, null, 2))
  console.log('\nsessions  RSS MB  heap MB  external MB  KB/session (RSS over baseline)')
  for (const r of readings) {
    const per = r.sessions ? Math.round(((r.rss_mb - base.rss_mb) * 1024) / r.sessions) : '-'
    console.log(`${String(r.sessions).padStart(8)}  ${String(r.rss_mb).padStart(6)}  ${String(r.heap_used_mb).padStart(7)}  ${String(r.external_mb).padStart(11)}  ${String(per).padStart(10)}`)
  }
  if (!args['heap-snapshot']) fs.rmSync(dir, { recursive: true, force: true })
  if (open < top || failures.length || dropped) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
