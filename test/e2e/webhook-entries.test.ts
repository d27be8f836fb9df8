// Two webhook entries (two endpoints, each with its own `events`) shared one outbox file: one
// entry's sender took every event, so endpoint A got the `deferred` meant for B and B got nothing.
// Each url has its own outbox now; the single outbox of earlier versions is taken over, not lost.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { Outbox } from '../../plugins/webhook/outbox.js'

const SECRET = 'webhook-entries-secret-0123456789'
const TOKEN = 'webhook-entries-admin-token-0123456789'

/** An endpoint that answers 200 (`status`: another) and keeps the type and recipient(s) of every event it got. */
async function endpoint(status = 200): Promise<{ url: string; got: string[]; close(): Promise<void> }> {
  const got: string[] = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8').on('data', (c: string) => (body += c))
    req.on('end', () => {
      for (const e of (JSON.parse(body) as { events: { type: string; recipient?: string; recipients?: string[] }[] }).events) got.push(`${e.type} ${e.recipient ?? e.recipients?.join(',')}`)
      res.writeHead(status).end('ok')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/hook`,
    got,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

const webhook = (url: string, events: string[]) => ['webhook', { url, secret: SECRET, events, flushInterval: '50ms', retry: { base: '50ms', max: '100ms' } }]

describe('webhook entries', () => {
  const relays: RelayProcess[] = []
  const closers: (() => Promise<void>)[] = []
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()))
    await Promise.all(closers.map((c) => c()))
  })

  it('two entries send each its own events to its own endpoint; the outbox gauge counts both', async () => {
    const a = await endpoint()
    const b = await endpoint()
    closers.push(a.close, b.close)
    const relay = await startRelay({
      config: {
        localDomains: ['local.test'],
        dns: { servers: ['127.0.0.1:1'] },
        plugins: [['admin', { host: '127.0.0.1', port: 0, token: TOKEN }], webhook(a.url, ['accepted']), webhook(b.url, ['deferred'])],
      },
    })
    relays.push(relay)
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@local.test'], data: 'Subject: one\r\n\r\nhi\r\n' })
    await eventually(() => a.got.length > 0 && b.got.length > 0, 10_000, 'both endpoints to get their event')
    // Another message later: each endpoint still gets only its own.
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['carol@local.test'], data: 'Subject: two\r\n\r\nhi\r\n' })
    await eventually(() => a.got.length + b.got.length >= 4, 10_000, 'the second message\'s events')
    const { url } = JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }
    const scrape = async () => (await (await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text()).match(/^relay_plugin_webhook_outbox_events (\d+)$/m)?.[1]
    await eventually(async () => (await scrape()) === '0', 5000, 'both outboxes empty')
    expect(a.got).toEqual(['accepted bob@local.test', 'accepted carol@local.test'])
    expect(b.got).toEqual(['deferred bob@local.test', 'deferred carol@local.test'])
  }, 40_000)

  it('the one outbox of an earlier version (webhook-outbox.sqlite) is taken over: what waited in it is sent', async () => {
    const ep = await endpoint()
    closers.push(ep.close)
    const dir = tempDir()
    fs.mkdirSync(path.join(dir, 'data'))
    const legacy = new Outbox(path.join(dir, 'data', 'webhook-outbox.sqlite'))
    legacy.add('accepted', { queueId: 'OLD1', recipients: ['waiting@elsewhere.test'] })
    legacy.close()
    const relay = await startRelay({ dir, config: { plugins: [webhook(ep.url, ['accepted'])] } })
    relays.push(relay)
    await eventually(() => ep.got.length > 0, 10_000, 'the waiting event')
    expect(ep.got).toEqual(['accepted waiting@elsewhere.test'])
    expect(fs.existsSync(path.join(dir, 'data', 'webhook-outbox.sqlite'))).toBe(false)
  }, 30_000)

  // The url of an entry changed (a new endpoint) while events waited for the old one: they stayed in
  // the old url's outbox for good, no log line, no metric. Now they go to the entry that sends them.
  const config = (relay: RelayProcess) => JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as { plugins: unknown[] }
  const withPlugins = (relay: RelayProcess, plugins: unknown[]) => fs.writeFileSync(relay.configFile, JSON.stringify({ ...config(relay), plugins }, null, 2))
  const outboxes = (relay: RelayProcess) => fs.readdirSync(relay.dataDir).filter((f) => /^webhook-outbox.*\.sqlite$/.test(f))

  /** A relay whose webhook endpoint is down (503), with one `accepted` event waiting in its outbox. */
  async function withWaitingEvent(plugins: (downUrl: string) => unknown[]): Promise<RelayProcess> {
    const down = await endpoint(503)
    closers.push(down.close)
    const relay = await startRelay({ config: { localDomains: ['local.test'], dns: { servers: ['127.0.0.1:1'] }, plugins: plugins(down.url) } })
    relays.push(relay)
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@local.test'], data: 'Subject: waits\r\n\r\nhi\r\n' })
    await relay.waitForLog((l) => l.msg === 'webhook POST failed; will retry', 10_000)
    return relay
  }

  it('url changed by a reload: the events waiting for the old url go to the new one', async () => {
    const relay = await withWaitingEvent((down) => [webhook(down, ['accepted'])])
    const ep = await endpoint()
    closers.push(ep.close)
    withPlugins(relay, [webhook(ep.url, ['accepted'])])
    const r = runCli(['reload', '--config', relay.configFile])
    expect(r.stdout).toMatch(/^config reloaded/)
    await eventually(() => ep.got.length > 0, 10_000, 'the event that waited for the old url')
    expect(ep.got).toEqual(['accepted bob@local.test'])
    await eventually(() => outboxes(relay).length === 1, 5000, 'the old outbox removed')
    // The relay's log lines come in batches: wait for the line rather than read the ones arrived so far.
    expect(await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('webhook: took over the outbox'), 5000)).toMatchObject({ events: 1, adopted: 1 })
  }, 40_000)

  it('url changed while the relay was stopped: the next start sends what waited for the old url', async () => {
    const relay = await withWaitingEvent((down) => [webhook(down, ['accepted'])])
    await relay.stop()
    const ep = await endpoint()
    closers.push(ep.close)
    withPlugins(relay, [webhook(ep.url, ['accepted'])])
    await relay.restart()
    await eventually(() => ep.got.length > 0, 10_000, 'the event left by the previous run')
    expect(ep.got).toEqual(['accepted bob@local.test'])
    await eventually(() => outboxes(relay).length === 1, 5000, 'the old outbox removed')
  }, 40_000)

  it('no entry sends those events any more: they are dropped with a warning and counted on /metrics', async () => {
    const relay = await withWaitingEvent((down) => [['admin', { host: '127.0.0.1', port: 0, token: TOKEN }], webhook(down, ['accepted'])])
    const ep = await endpoint()
    closers.push(ep.close)
    withPlugins(relay, [config(relay).plugins[0], webhook(ep.url, ['delivered'])])
    expect(runCli(['reload', '--config', relay.configFile]).stdout).toMatch(/^config reloaded/)
    const line = await relay.waitForLog((l) => l.msg?.startsWith?.('webhook: events of an outbox no entry uses'), 10_000)
    expect(line).toMatchObject({ level: 40, dropped: 1, types: ['accepted'] })
    const { url } = JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }
    const metrics = await (await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text()
    expect(metrics).toMatch(/^relay_plugin_webhook_dropped_events_orphaned_total 1$/m)
    expect(outboxes(relay)).toHaveLength(1)
    expect(ep.got).toEqual([])
  }, 40_000)
})
