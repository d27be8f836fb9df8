// The queue refusing writes for a while: its database locked by another process (a long sqlite3
// session, a maintenance script), its disk full (a tmpfs, where it can be mounted). A client gets a 4xx for what cannot be made
// durable, never a 250; a delivery that finishes meanwhile has its result written once the queue
// takes writes again (not left to the 15-minute lease: no second copy, no stuck deferral); the
// relay stays up and takes mail again as soon as it can.
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import { SMTPServer } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
const relays: RelayProcess[] = []
const closers: (() => Promise<void>)[] = []

beforeAll(async () => {
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.2'] } })
})
afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  await Promise.all(closers.splice(0).map((c) => c()))
})
afterAll(async () => {
  await dns?.close()
})

/**
 * The MX of dest.test: it reads each message whole, then answers only when `open()` is called
 * (250, or `reply` when given). `received` counts the messages read, `taken` those answered 250.
 * Closed by the afterEach, or by `cleanup` when given.
 */
async function gatedMx(cleanup: (close: () => Promise<void>) => void = (c) => closers.push(c)) {
  type Reply = { code: number; text: string } | undefined
  let open!: (reply: Reply) => void
  const state = { received: 0, taken: [] as string[], gate: new Promise<Reply>((resolve) => (open = resolve)) }
  const server = new SMTPServer({
    authOptional: true,
    disableReverseLookup: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, _session, cb) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        state.received++
        void state.gate.then((reply) => {
          if (reply) return cb(Object.assign(new Error(reply.text), { responseCode: reply.code }))
          state.taken.push(/^Message-ID: (.*)$/im.exec(Buffer.concat(chunks).toString('latin1'))?.[1]?.trim() ?? '')
          cb()
        })
      })
    },
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', resolve))
  cleanup(() => new Promise((resolve) => server.close(() => resolve())))
  return {
    port: (server.server.address() as net.AddressInfo).port,
    state,
    /** Answers the messages read (250, or `reply`); later ones get `then` at once (250 by default). */
    open(reply?: Reply, then?: Reply) {
      open(reply)
      state.gate = state.gate.then(() => then)
    },
  }
}

/** `onEnd`: given the relay's stop, to call when the test ends (else the afterEach stops it). */
async function relayTo(port: number, onEnd?: (stop: () => Promise<void>) => void): Promise<RelayProcess> {
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      // The deferred message is retried as soon as the config allows (250 ms): the wait is not what is tested.
      delivery: { port, retry: { base: '250ms', factor: 1, max: '250ms' } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
  if (onEnd) onEnd(async () => void (await relay.stop()))
  else relays.push(relay)
  return relay
}

/** Another process's write transaction on the relay's queue database, held until `release()`. */
function lockQueue(relay: RelayProcess) {
  const db = new Database(path.join(relay.dataDir, 'queue.sqlite'))
  db.pragma('busy_timeout = 5000')
  db.prepare('BEGIN IMMEDIATE').run()
  return {
    release() {
      db.prepare('ROLLBACK').run()
      db.close()
    },
  }
}

const mail = (n: string) => `From: a@sender.test\r\nTo: b@dest.test\r\nSubject: ${n}\r\nMessage-ID: <${n}@sender.test>\r\n\r\nbody ${n}\r\n`

// Each of these two waits out the relay's 5 s busy timeout: they run side by side, each with its own
// MX and relay (stopped when that test ends, not by the other's afterEach).
for (const outcome of ['taken', 'deferred'] as const) {
  it.concurrent(`a delivery ${outcome} by the MX while another process holds the queue locked: the result is written once the lock goes; delivered once, queue empty without waiting for the lease`, async ({ expect, onTestFinished }) => {
    const mx = await gatedMx((close) => onTestFinished(close))
    const relay = await relayTo(mx.port, (stop) => onTestFinished(stop))
    const id = `locked-${outcome}`
    expect((await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: mail(id) })).lastReply).toMatch(/^250 /)
    await eventually(() => mx.state.received === 1, 10_000, 'the message read by the MX, its reply held back')
    const lock = lockQueue(relay)
    const logged = relay.logs.length
    mx.open(outcome === 'taken' ? undefined : { code: 451, text: '4.3.0 try later' }, undefined)
    // The relay's write of the result waits out its busy timeout (5 s), and fails.
    await eventually(() => relay.logs.slice(logged).some((l) => l.level >= 40 && /locked|busy/i.test(JSON.stringify(l.err ?? ''))), 15_000, 'the write of the result refused')
    lock.release()
    // Waited for in the relay's log, not by polling `relay queue list` (a CLI process each time,
    // blocking this process and the MX in it); then the queue itself is looked at.
    await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'b@dest.test', 20_000)
    const queued = async () => {
      // Not runCli: it would block this process, and the other test's MX in it.
      const r = await runCliAsync(['queue', 'list', '--json', '--config', relay.configFile])
      expect(r.code, r.stderr).toBe(0)
      return JSON.parse(r.stdout) as unknown[]
    }
    await eventually(async () => (await queued()).length === 0, 20_000, 'the queue empty (the result written, the deferred message retried)')
    expect(mx.state.taken).toEqual([`<${id}@sender.test>`])
    expect(relay.exited()).toBe(false)
  })
}

/** A 16 MB tmpfs (root only); undefined, with the reason printed, where none can be mounted. */
function smallDisk(): string | undefined {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-full-'))
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', dir], { encoding: 'utf8' })
  if (r.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true })
    console.warn(`skipped: no tmpfs could be mounted for a full disk (${(r.stderr || r.error?.message || '').trim() || 'mount failed'}); needs root`)
    return undefined
  }
  closers.push(async () => {
    spawnSync('umount', ['-l', dir])
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** Writes zeros into `file` until the file system is full. */
function fill(file: string): void {
  const fd = fs.openSync(file, 'w')
  const block = Buffer.alloc(64 * 1024)
  try {
    for (;;) fs.writeSync(fd, block)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    fs.closeSync(fd)
  }
}

for (const workers of [1, 2]) {
  it(`workers ${workers}: a full disk under the queue gets 452 4.3.1 for small messages (in the database) and large ones (spool files), never 250; with space back, mail flows again`, async () => {
    const disk = smallDisk()
    if (!disk) return
    const mx = await gatedMx()
    mx.open(undefined, undefined)
    const relay = await startRelay({
      config: {
        dataDir: path.join(disk, 'data'),
        workers,
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' } },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    relays.push(relay)
    const send = async (n: string, lines = 1) => (await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: mail(n) + 'x'.repeat(70).concat('\r\n').repeat(lines) })).lastReply
    expect(await send(`before-full-${workers}`)).toMatch(/^250 /)
    const filler = path.join(disk, 'filler')
    fill(filler)
    expect(await send(`small-full-${workers}`)).toMatch(/^452 4\.3\.1 /)
    expect(await send(`large-full-${workers}`, 3000)).toMatch(/^452 4\.3\.1 /)
    expect(relay.exited()).toBe(false)
    fs.rmSync(filler)
    expect(await send(`after-full-${workers}`)).toMatch(/^250 /)
    await eventually(() => mx.state.taken.length === 2, 15_000, 'both acknowledged messages at the MX')
    expect(mx.state.taken.sort()).toEqual([`<after-full-${workers}@sender.test>`, `<before-full-${workers}@sender.test>`])
  })
}

it('a spool file the relay cannot write (its directory gone, replaced by a file): 451 4.3.0 "queue file write error" (the relay\'s fault, not the client\'s), never 250; small messages still queued; fixed, large ones are taken again', async () => {
  const relay = await startRelay({ config: { dns: { servers: [dns.server], timeout: '1s' }, delivery: { port: 1, retry: { base: '1h', factor: 1, max: '1h' } }, plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]] } })
  relays.push(relay)
  const spool = path.join(relay.dataDir, 'spool')
  const big = `From: a@sender.test\r\nTo: b@dest.test\r\nSubject: big\r\n\r\n${'x'.repeat(76).concat('\r\n').repeat(3000)}`
  fs.rmSync(spool, { recursive: true, force: true })
  fs.writeFileSync(spool, 'not a directory\n')
  try {
    const refused = await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big }).catch((err: { response?: string; message: string }) => ({ lastReply: err.response ?? err.message }))
    expect(refused.lastReply).toMatch(/^451 4\.3\.0 Error: queue file write error, try again later/)
    const small = await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: 'Subject: small\r\n\r\nhello\r\n' })
    expect(small.lastReply).toMatch(/^250 /)
  } finally {
    fs.rmSync(spool, { force: true })
    fs.mkdirSync(spool, { recursive: true })
  }
  const again = await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big })
  expect(again.lastReply).toMatch(/^250 /)
  expect(relay.exited()).toBe(false)
})
