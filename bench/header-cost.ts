// node --import tsx bench/header-cost.ts [--rounds 20] [--chunk 16384]
// Main-thread cost of a large header section (the shapes of the hostile-headers probe): a ~1 MB
// header of 9,900 fields, and 9,900 forged Authentication-Results fields. Times, per message, what
// runs on the event loop for it: readMessage (chunked as a socket delivers it), the toBuffer calls
// accept.ts makes, and the header edits mail-auth and spam make (stripForged, remove, get).
// RELAY_BENCH_ROOT=<dir> times the built dist/ of another checkout (e.g. main) for a before/after.
import path from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const RELAY_ROOT = process.env.RELAY_BENCH_ROOT ? path.resolve(process.env.RELAY_BENCH_ROOT) : ROOT
const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '20' }, chunk: { type: 'string', default: '16384' } } })
const rounds = Number(args.rounds)
const chunkSize = Number(args.chunk)

const data: typeof import('../core/smtp/data.js') = await import(path.join(RELAY_ROOT, 'dist/core/smtp/data.js'))
const received: typeof import('../core/mail/received.js') = await import(path.join(RELAY_ROOT, 'dist/core/mail/received.js'))
const authResults: typeof import('../plugins/mail-auth/auth-results.js') = await import(path.join(RELAY_ROOT, 'dist/plugins/mail-auth/auth-results.js'))

const top = 'From: a@sender.test\r\nTo: bob@local.test\r\nSubject: test\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n'
const fields = (line: (i: number) => string) => Array.from({ length: 9900 }, (_, i) => line(i)).join('')
const messages = {
  big1: Buffer.from(`${top}${fields((i) => `X-H${i}: ${'v'.repeat(90)}\r\n`)}\r\nbody\r\n`, 'latin1'),
  ar: Buffer.from(`${top}${fields((i) => `Authentication-Results: mx.local.test; spf=pass smtp.mailfrom=x${i}\r\n`)}\r\nbody\r\n`, 'latin1'),
}
const limits = { maxBytes: 1024 * 1024, maxLines: 10_000, maxFieldLines: 1_000 }
const spool = { create: () => Promise.reject(new Error('inline only')) } as unknown as import('../core/queue/spool.js').Spool

const chunks = (buf: Buffer) => {
  const out: Buffer[] = []
  for (let i = 0; i < buf.length; i += chunkSize) out.push(buf.subarray(i, i + chunkSize))
  return out
}

async function once(msg: Buffer) {
  const parts = chunks(msg)
  const t0 = performance.now()
  const got = await data.readMessage(Readable.from(parts), { spool, id: 'b', lineEndings: 'reject', headerLimits: limits, wrap: false })
  const t1 = performance.now()
  const h = got.headers
  // accept.ts: size() for the data hook, hopCount, size() for the queue hook, the queued bytes.
  let n = h.toBuffer().length
  n += received.hopCount(h.toBuffer().toString('latin1'))
  n += h.toBuffer().length
  const t2 = performance.now()
  // mail-auth (data hook) and spam (queue hook) edits.
  n += authResults.stripForged(h, ['mx.local.test']).length
  n += h.remove('X-Relay-Quarantine')
  for (const name of ['X-Spam-Status', 'X-Spam-Score', 'X-Spam-Flag']) n += h.remove(name)
  n += h.get('Message-ID')?.length ?? 0
  n += h.has('Date') ? 1 : 0
  h.prepend('Received', 'from x by y; now')
  n += h.toBuffer().length
  const t3 = performance.now()
  return { read: t1 - t0, serialize: t2 - t1, edit: t3 - t2, total: t3 - t0, n }
}

for (const [name, msg] of Object.entries(messages)) {
  for (let i = 0; i < 3; i++) await once(msg) // warm up
  const runs = []
  for (let i = 0; i < rounds; i++) runs.push(await once(msg))
  const med = (k: "read" | "serialize" | "edit" | "total") => { const v = runs.map((r) => r[k]).sort((a, b) => a - b); return `${v[0]!.toFixed(1)}/${v[Math.floor(v.length / 2)]!.toFixed(1)}` }
  console.log(`${name} (${msg.length} bytes, ${chunkSize}-byte chunks): min/median ms: read ${med('read')}, toBuffer+hopCount ${med('serialize')}, edits ${med('edit')}, total ${med('total')}`)
}
