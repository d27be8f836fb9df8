// The spool sweep after an unclean stop: body files no queued message refers to (a crash between
// the spool write and the queue write) are removed once the relay runs; queued bodies and the body
// of a message received while the sweep runs are kept and delivered.
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
beforeAll(async () => {
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.2'] } })
})
afterAll(async () => {
  await dns?.close()
})
const relays: RelayProcess[] = []
const receivers: TestReceiver[] = []
afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  await Promise.all(receivers.splice(0).map((r) => r.close()))
})

/** A relay retrying every second, and its MX, which defers everything until told otherwise. */
async function deferringRelay(prefix?: string[]) {
  const mx = await startReceiver({ host: '127.0.0.2', behaviour: { reply: { rcpt: () => ({ code: 451, message: '4.3.0 later' }) } } })
  receivers.push(mx)
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
    ...(prefix && { prefix }),
  })
  relays.push(relay)
  return { mx, relay }
}

/** Past the inline limit (128 KB): the body goes to a spool file. */
const big = (n: number) => `Subject: big ${n}\r\nMessage-ID: <sweep-${process.pid}-${n}@sender.test>\r\n\r\n${('y'.repeat(78) + '\r\n').repeat(2000)}`

it('removes orphaned spool files after a kill -9, keeps queued bodies and new ones, delivers them all', async () => {
  // The MX defers everything at first: the messages stay queued with their spool files.
  const { mx, relay } = await deferringRelay()
  const spool = path.join(relay.dataDir, 'spool')
  for (const n of [1, 2]) expect((await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big(n) })).lastReply).toMatch(/^250 /)
  await eventually(() => fs.readdirSync(spool).length === 2, 5000, 'two queued bodies in the spool')
  await relay.kill9()
  // What a crash between the spool write and the queue write leaves: bodies nobody queued.
  const orphans = ['ORPHAN1', 'ORPHAN2', 'ORPHAN3'].map((name) => path.join(spool, name))
  for (const f of orphans) fs.writeFileSync(f, 'half a message')
  mx.setBehaviour({})
  await relay.restart()
  // A message right after the start: its body file appears while the sweep may still be running.
  expect((await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big(3) })).lastReply).toMatch(/^250 /)
  const swept = await relay.waitForLog((l) => l.msg === 'removed spool files no queued message refers to (an unclean stop)', 10_000)
  expect(swept.swept).toBe(3)
  for (const f of orphans) expect(fs.existsSync(f), f).toBe(false)
  await eventually(() => mx.messages.length >= 3, 15_000, 'all three messages at the next hop')
  const subjects = mx.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString('latin1'))?.[1]?.trim()).sort()
  expect(subjects).toEqual(['big 1', 'big 2', 'big 3'])
  await eventually(() => fs.readdirSync(spool).length === 0, 10_000, 'the spool empty once everything is delivered')
})

it('a missing or empty queue database beside spooled bodies stops the start with what to do; the bodies stay', async () => {
  const mx = await startReceiver({ host: '127.0.0.2', behaviour: { reply: { rcpt: () => ({ code: 451, message: '4.3.0 later' }) } } })
  receivers.push(mx)
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h' } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
  const spool = path.join(relay.dataDir, 'spool')
  for (const n of [4, 5]) expect((await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big(n) })).lastReply).toMatch(/^250 /)
  await eventually(() => fs.readdirSync(spool).length === 2, 5000, 'two queued bodies in the spool')
  expect(await relay.stop()).toBe(0)
  const db = path.join(relay.dataDir, 'queue.sqlite')
  for (const [state, damage] of [['empty', () => fs.truncateSync(db, 0)], ['missing', () => fs.rmSync(db)]] as const) {
    damage()
    const started = await runCliAsync(['start', '--config', relay.configFile])
    expect(started.code, started.stderr).not.toBe(0)
    expect(started.stderr).toContain(`queue database ${db} is ${state} but ${spool} holds 2 message bodies`)
    expect(started.stderr).toMatch(/relay queue restore/)
    expect(fs.readdirSync(spool).length).toBe(2)
    expect(fs.existsSync(db) ? fs.statSync(db).size : 0).toBe(0)
  }
})

it('a queued message whose spool file is gone or cut short is held with the reason, never sent short or retried for days; other mail flows', async () => {
  const { mx, relay } = await deferringRelay()
  const spool = path.join(relay.dataDir, 'spool')
  const ids: string[] = []
  for (const n of [6, 7]) {
    const reply = (await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big(n) })).lastReply
    expect(reply).toMatch(/^250 /)
    ids.push(/queued as (\S+)/.exec(reply)![1]!)
  }
  await eventually(() => fs.readdirSync(spool).length === 2, 5000, 'two queued bodies in the spool')
  await eventually(() => ids.every((id) => relay.logs.some((l) => l.event === 'deferred' && l.queueId === id)), 10_000, 'the first attempts over')
  // An operator's slip, a cleanup job, a damaged disk: one body gone, one cut short.
  fs.rmSync(path.join(spool, ids[0]!))
  fs.truncateSync(path.join(spool, ids[1]!), 1000)
  mx.setBehaviour({})
  const held = async () => {
    const r = await runCliAsync(['queue', 'list', '--state', 'held', '--json', '--config', relay.configFile])
    return (JSON.parse(r.stdout) as { id: string; recipients: { lastResponse?: string }[] }[]).filter((m) => m.recipients.every((r) => /^4\.3\.0 Message held: its spool file /.test(r.lastResponse ?? '')))
  }
  await eventually(async () => (await held()).length === 2, 15_000, 'both messages held with the reason')
  const [gone, short] = ids.map(async (id) => (await held()).find((m) => m.id === id)!.recipients[0]!.lastResponse)
  expect(await gone).toMatch(/cannot be read \(ENOENT\)/)
  expect(await short).toMatch(/has 1000 bytes, not the \d+ of the body queued/)
  // The next hop never got either (no message cut short); new mail is delivered as before.
  expect((await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big(8) })).lastReply).toMatch(/^250 /)
  await eventually(() => mx.messages.length === 1, 10_000, 'the new message at the MX')
  expect(mx.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString('latin1'))?.[1]?.trim())).toEqual(['big 8'])
  expect(relay.logs.filter((l) => l.msg === 'message held: its body is lost from the spool').map((l) => l.queueId).sort()).toEqual([...ids].sort())
})

it('a spool file the relay may not read (its mode changed under it: EACCES) is held with the reason, as a lost one, not offered to the next hop on every retry', async () => {
  // Root reads any file whatever its mode: as root, the relay runs without that capability
  // (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as root still (its node binary may be under /root).
  const { mx, relay } = await deferringRelay(process.getuid?.() === 0 ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--'] : undefined)
  const spool = path.join(relay.dataDir, 'spool')
  const reply = (await sendMail(relay.port, { from: 'a@sender.test', to: ['b@dest.test'], data: big(9) })).lastReply
  expect(reply).toMatch(/^250 /)
  const id = /queued as (\S+)/.exec(reply)![1]!
  await eventually(() => relay.logs.some((l) => l.event === 'deferred' && l.queueId === id), 10_000, 'the first attempt over')
  fs.chmodSync(path.join(spool, id), 0)
  const transactions = mx.connections
  mx.setBehaviour({})
  const held = await relay.waitForLog((l) => l.msg === 'message held: its body is lost from the spool' && l.queueId === id, 15_000)
  expect(held.problem).toBe(`its spool file ${path.join(spool, id)} cannot be read (EACCES)`)
  const r = await runCliAsync(['queue', 'list', '--state', 'held', '--json', '--config', relay.configFile])
  const [m] = JSON.parse(r.stdout) as { id: string; recipients: { lastResponse?: string }[] }[]
  expect(m?.id).toBe(id)
  expect(m?.recipients[0]?.lastResponse).toMatch(/^4\.3\.0 Message held: its spool file .* cannot be read \(EACCES\)/)
  // No attempt reached the next hop once the file could not be read.
  expect(mx.connections).toBe(transactions)
  expect(mx.messages).toHaveLength(0)
})

