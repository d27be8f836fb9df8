// npm run bench -- --hostile [--n 300 --concurrency 10 --hostile-count 24 --timeout 300]
// Hostile messages beside normal traffic (issue 12 §2): the relay (built dist/, mail-auth on,
// routed to the bench sink) gets N normal messages over C sessions while two hostile sessions send
// --hostile-count messages of the shapes that used to freeze it (a field folded over 60,000
// lines; 9,000 DKIM-Signature fields over a 2 MB body; just-under-limit shapes; a 1.4 MB header),
// and a third session sends NOOP every 10 ms. Prints the NOOP round trip (p50/p99/max), the normal
// traffic's DATA→250 (p50/p99), the relay's event-loop delay (p50/p99/max, from its own
// monitorEventLoopDelay, logged at stop) and the hostile replies by code.
// RELAY_BENCH_ROOT=<dir> runs the relay of another checkout (e.g. the commit before the fix) for a
// before/after comparison; it must be built (dist/) and have node_modules.
import { fork, spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startDns } from '../test/harness/dns-server.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const RELAY_ROOT = process.env.RELAY_BENCH_ROOT ? path.resolve(process.env.RELAY_BENCH_ROOT) : ROOT

export interface HostileOptions {
  n: number
  concurrency: number
  hostileCount: number
  timeoutS: number
}

const head = (subject: string, extra = '') =>
  `From: <alice@dkim.test>\r\nTo: <bench-rcpt@sink.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@dkim.test>\r\n${extra}`
const folded = (name: string, lines: number) => `${name}: start\r\n${' a\r\n'.repeat(lines)}`
function signatures(n: number, long: boolean): string {
  const bh = long ? crypto.randomBytes(32).toString('base64') : 'AAAA'
  const b = long ? crypto.randomBytes(256).toString('base64') : 'AAAA'
  let out = ''
  for (let i = 0; i < n; i++) out += `DKIM-Signature: v=1; a=rsa-sha256; d=dkim.test; s=sel; l=${2_000_000 - i}; h=from:to:subject; bh=${bh}; b=${b}\r\n`
  return out
}
const BIG_BODY = 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n'.repeat(28_000)

/** The hostile shapes, sent in turn. */
const SHAPES: { name: string; data: () => string }[] = [
  { name: 'folded 60,000 lines', data: () => `${head('h-folded')}${folded('X-Folded', 60_000)}\r\nbody\r\n` },
  { name: '9,000 DKIM signatures + 2 MB', data: () => `${signatures(9000, false)}${head('h-dkim')}\r\n${BIG_BODY}` },
  { name: 'folded 9 × 1,000 lines', data: () => `${head('h-folded-under')}${Array.from({ length: 9 }, (_, i) => folded(`X-F${i}`, 999)).join('')}\r\nbody\r\n` },
  { name: '3,000 long DKIM signatures (1.4 MB header)', data: () => `${signatures(3000, true)}${head('h-dkim-over')}\r\n${BIG_BODY}` },
]

/** Line-based SMTP client on a raw socket: `reply()` resolves with the next final reply line. */
function smtp(port: number): Promise<{ send(s: string): void; reply(): Promise<string>; close(): void }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.setNoDelay(true)
    let buf = ''
    const replies: string[] = []
    const waiters: ((r: string) => void)[] = []
    socket.on('data', (d) => {
      buf += d.toString('latin1')
      for (let nl; (nl = buf.indexOf('\r\n')) >= 0; ) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 2)
        if (line[3] === '-') continue
        const w = waiters.shift()
        if (w) w(line)
        else replies.push(line)
      }
    })
    socket.on('error', (err) => {
      for (const w of waiters.splice(0)) w(`000 ${err.message}`)
    })
    socket.on('close', () => {
      for (const w of waiters.splice(0)) w('000 connection closed')
    })
    const client = {
      send: (s: string) => void socket.write(s),
      reply: () => new Promise<string>((r) => (replies.length ? r(replies.shift()!) : waiters.push(r))),
      close: () => socket.destroy(),
    }
    socket.once('connect', () => void client.reply().then(() => resolve(client)))
    socket.once('error', reject)
  })
}

/** One session, one message; resolves with the reply to the final dot and the ms from the dot to it. */
async function sendOne(port: number, data: string, from: string): Promise<{ reply: string; ms: number }> {
  const c = await smtp(port)
  try {
    for (const cmd of ['EHLO bench-client.test', `MAIL FROM:<${from}>`, 'RCPT TO:<bench-rcpt@sink.test>', 'DATA']) {
      c.send(`${cmd}\r\n`)
      const r = await c.reply()
      if (!/^[23]/.test(r)) return { reply: r, ms: NaN }
    }
    const t = performance.now()
    c.send(`${data.replace(/\r\n\./g, '\r\n..')}.\r\n`)
    const reply = await c.reply()
    const ms = performance.now() - t
    c.send('QUIT\r\n')
    return { reply, ms }
  } finally {
    c.close()
  }
}

const pct = (sorted: number[], p: number) => Number((sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN).toFixed(1))
const summary = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b)
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), max: Number((s[s.length - 1] ?? NaN).toFixed(1)) }
}

export async function runHostile(o: HostileOptions): Promise<void> {
  const deadline = Date.now() + o.timeoutS * 1000
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-bench-hostile-'))
  const sink = fork(path.join(ROOT, 'bench/sink.ts'), ['0'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const sinkPort = await new Promise<number>((r) => sink.once('message', (m: { port: number }) => r(m.port)))
  const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
  const dns = await startDns({ 'sel._domainkey.dkim.test': { TXT: [`v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`] } })

  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
  const config = {
    hostname: 'relay.bench.test',
    listen: [{ host: '127.0.0.1', port, role: 'mx' }],
    dataDir: path.join(dir, 'data'),
    smtp: { reverseLookup: false },
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { concurrency: { global: 100, perDomain: 100 } },
    plugins: [
      ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      [path.join(ROOT, 'bench/route-to-sink.ts'), { host: '127.0.0.1', port: sinkPort }],
      ['mail-auth', {}],
    ],
    log: { level: 'info' },
  }
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(configFile, JSON.stringify(config))
  const logFile = path.join(dir, 'relay.log')
  // RELAY_BENCH_NODE_ARGS, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof', profiles the relay.
  const nodeArgs = (process.env.RELAY_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const child = spawn(process.execPath, [...nodeArgs, path.join(RELAY_ROOT, 'bin/relay.js'), 'start', '--config', configFile], { stdio: ['ignore', fs.openSync(logFile, 'w'), 'inherit'] })
  while (!fs.readFileSync(logFile, 'utf8').includes('"relay started"')) {
    if (child.exitCode !== null) throw new Error(`relay exited at start; see ${logFile}`)
    await new Promise((r) => setTimeout(r, 50))
  }

  let running = true
  const noop: number[] = []
  const prober = (async () => {
    const c = await smtp(port)
    c.send('EHLO prober.bench.test\r\n')
    await c.reply()
    for (let i = 0; running && i < 100_000 && Date.now() < deadline; i++) {
      const t = performance.now()
      c.send('NOOP\r\n')
      await c.reply()
      noop.push(performance.now() - t)
      await new Promise((r) => setTimeout(r, 10))
    }
    c.close()
  })()

  const hostileReplies: Record<string, Record<string, number>> = {}
  let hostileSent = 0
  const hostile = Promise.all(
    [0, 1].map(async () => {
      while (hostileSent < o.hostileCount && Date.now() < deadline) {
        const shape = SHAPES[hostileSent++ % SHAPES.length]!
        const { reply } = await sendOne(port, shape.data(), 'mallory@bench.test').catch((err: Error) => ({ reply: `000 ${err.message}` }))
        const code = reply.slice(0, 9)
        hostileReplies[shape.name] ??= {}
        hostileReplies[shape.name]![code] = (hostileReplies[shape.name]![code] ?? 0) + 1
      }
    }),
  )

  const latencies: number[] = []
  const bySeq: { seq: number; ms: number }[] = []
  let failures = 0
  let next = 0
  const body = ('x'.repeat(76) + '\r\n').repeat(64)
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      while (next < o.n && Date.now() < deadline) {
        const seq = next++
        const r = await sendOne(port, `${head(`bench ${seq}`, `X-Bench-Seq: ${seq}\r\n`)}\r\n${body}`, 'bench-sender@bench.test').catch(() => ({ reply: '000', ms: NaN }))
        if (r.reply.startsWith('250')) {
          latencies.push(r.ms)
          bySeq.push({ seq, ms: Math.round(r.ms) })
        }
        else failures++
      }
    }),
  )
  const normalS = (performance.now() - t0) / 1000
  await hostile
  running = false
  await prober
  let delivered = 0
  for (;;) {
    sink.send({ type: 'stats' })
    delivered = await new Promise<number>((r) => sink.once('message', (m: { unique: number }) => r(m.unique)))
    if (delivered >= latencies.length || Date.now() > deadline) break
    await new Promise((r) => setTimeout(r, 50))
  }

  child.kill('SIGTERM')
  await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))
  const stopped = fs
    .readFileSync(logFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { msg?: string; eventLoopDelayMs?: unknown })
    .find((l) => l.msg === 'relay stopped')
  sink.send({ type: 'exit' })
  await dns.close()
  fs.rmSync(dir, { recursive: true, force: true })

  const result = {
    relay: RELAY_ROOT,
    normal: { sent: o.n, accepted: latencies.length, failed: failures, delivered, seconds: Number(normalS.toFixed(1)), data_to_250_ms: summary(latencies), slowest: bySeq.sort((a, b) => b.ms - a.ms).slice(0, 5) },
    hostile: { sent: hostileSent, replies: hostileReplies },
    noop_rtt_ms: summary(noop),
    event_loop_delay_ms: stopped?.eventLoopDelayMs,
  }
  console.log(JSON.stringify(result, null, 2))
  const d = summary(latencies)
  const n = summary(noop)
  const loop = stopped?.eventLoopDelayMs as { p50: number; p99: number; max: number } | undefined
  console.log(`\nevent-loop delay p99 ${loop?.p99} ms (max ${loop?.max});  NOOP rtt p99 ${n.p99} ms (max ${n.max});  normal DATA→250 p99 ${d.p99} ms (p50 ${d.p50});  normal relayed ${delivered}/${latencies.length}`)
  if (failures > 0 || delivered < latencies.length) process.exitCode = 1
}
