// The admin listener: /healthz, /readyz, the bearer token, admin.json, and the queue API (list, show,
// hold, release, delete, bounce, flush, summary) on a running relay with parked messages.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import type { TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw } from '../harness/smtp-client.js'
import { eventually, runCli, tempDir, type RelayProcess } from '../harness/relay.js'
import { messageText as text, startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

const TOKEN = 'admin-test-token-0123456789abcdef'
let fixture: ParkedRelay
let relay: RelayProcess
let senderRx: TestReceiver // sender.test: where DSNs go
let parked: Set<string> // addresses park.test answers 451 at RCPT
let url: string

async function api(method: string, p: string, o: { token?: string | null; body?: unknown } = {}) {
  const token = o.token === undefined ? TOKEN : o.token
  const res = await fetch(url + p, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(o.body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: o.body !== undefined ? JSON.stringify(o.body) : undefined,
  })
  const text = await res.text()
  let json: any
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, text, json, headers: res.headers }
}

/** Queues a message to `to` (parked there: the first attempt defers); resolves with its queue id once deferred. */
async function park(to: string, from = 'alice@sender.test'): Promise<string> {
  const id = await fixture.submit(to, from)
  await eventually(async () => (await api('GET', `/api/queue/${id}`)).json?.recipients?.[0]?.state === 'deferred', 10_000, `${to} deferred`)
  return id
}

const delivered = (to: string) => fixture.delivered(to)

beforeAll(async () => {
  fixture = await startParkedRelay(TOKEN)
  ;({ relay, senderRx, parked } = fixture)
  const file = JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string; pid: number }
  url = file.url
})

afterAll(async () => {
  await fixture?.close()
})

describe('admin listener', () => {
  it('writes admin.json (0600: url, pid and the token the CLI needs) and logs the bound address without the token', async () => {
    const file = path.join(relay.dataDir, 'admin.json')
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    const content = fs.readFileSync(file, 'utf8')
    expect(JSON.parse(content)).toEqual({ url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/), pid: relay.child.pid, token: TOKEN })
    const line = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on 127.0.0.1:'))
    expect(url).toBe(`http://127.0.0.1:${line.port as number}`)
    expect(JSON.stringify(relay.logs)).not.toContain(TOKEN)
  })

  it('answers /healthz and /readyz without a token (load balancer probes); /api needs the bearer token (401 without, 403 wrong, 200 right)', async () => {
    const health = await api('GET', '/healthz', { token: null })
    expect([health.status, health.text]).toEqual([200, 'ok\n'])
    const probe = await api('GET', '/readyz', { token: null })
    expect([probe.status, probe.json]).toEqual([200, { ready: true, state: 'running' }])

    const noToken = await api('GET', '/api/queue', { token: null })
    expect(noToken.status).toBe(401)
    expect(noToken.headers.get('www-authenticate')).toMatch(/^Bearer/)
    expect(noToken.json.error).toMatch(/bearer token is required/)
    expect((await api('GET', '/api/queue', { token: null })).status).toBe(401)
    expect((await api('POST', '/api/reload', { token: null })).status).toBe(401)
    const began = Date.now()
    const wrong = await api('GET', '/api/queue', { token: 'not-the-token-0123456789' })
    expect([wrong.status, wrong.json]).toEqual([403, { error: 'wrong token' }])
    // Guessing costs time (the 403 comes after a pause), and it is logged with the client, at most once a minute.
    expect(Date.now() - began).toBeGreaterThanOrEqual(900)
    await Promise.all([1, 2, 3].map(() => api('GET', '/api/queue', { token: 'still-not-the-token-0123' })))
    const warned = relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('admin request refused: wrong token from '))
    expect(warned).toHaveLength(1)
    expect(warned[0]).toMatchObject({ level: 40, client: '127.0.0.1', path: '/api/queue' })
    expect(JSON.stringify(warned)).not.toContain('not-the-token')

    const ready = await api('GET', '/readyz')
    expect([ready.status, ready.json]).toEqual([200, { ready: true, state: 'running' }])
    expect((await api('GET', '/api/queue')).status).toBe(200)
  })

  it('answers unknown routes with 404 and wrong methods with 405, as JSON', async () => {
    const r = await api('GET', '/api/nothing-here')
    expect([r.status, r.json]).toEqual([404, { error: 'no such route: /api/nothing-here' }])
    const m = await api('GET', '/api/reload')
    expect(m.status).toBe(405)
    expect(m.headers.get('allow')).toBe('POST')
  })

  it('check-config refuses an admin listener bound beyond loopback without a token, naming the token option', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ plugins: [['admin', { host: '0.0.0.0', port: 8025 }]], dataDir: path.join(dir, 'data') }))
    const r = runCli(['check-config', '--config', file])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/plugins\[0\] \(admin\) options\.token: required when the admin listener is bound to 0\.0\.0\.0/)
    fs.writeFileSync(file, JSON.stringify({ plugins: [['admin', { host: '0.0.0.0', port: 8025, token: TOKEN }]], dataDir: path.join(dir, 'data') }))
    expect(runCli(['check-config', '--config', file]).code).toBe(0)
    // The old top-level keys name the new place.
    fs.writeFileSync(file, JSON.stringify({ admin: { host: '127.0.0.1', port: 8025, token: TOKEN }, metrics: { maxDomainLabels: 5 }, dataDir: path.join(dir, 'data') }))
    const moved = runCli(['check-config', '--config', file])
    expect(moved.code).toBe(2)
    expect(moved.stderr).toMatch(/admin: moved to the admin plugin: plugins: \[\['admin'/)
    expect(moved.stderr).toMatch(/metrics: moved to the admin plugin: .*maxDomainLabels/)
  })
})

describe('queue API', () => {
  it('lists with filters, shows a message with its attempt history and headers, and says 400/404 clearly', async () => {
    const id = await park('list@park.test')
    const other = await park('other@park.test', 'bob@elsewhere.test')

    const all = await api('GET', '/api/queue')
    expect(all.status).toBe(200)
    expect(all.json.messages.map((m: { id: string }) => m.id)).toEqual(expect.arrayContaining([id, other]))
    const byState = await api('GET', '/api/queue?state=deferred')
    expect(byState.json.messages.map((m: { id: string }) => m.id)).toEqual(expect.arrayContaining([id, other]))
    expect((await api('GET', '/api/queue?state=held')).json.messages.map((m: { id: string }) => m.id)).not.toContain(id)
    const bySender = await api('GET', '/api/queue?sender=bob@elsewhere.test')
    expect(bySender.json.messages.map((m: { id: string }) => m.id)).toEqual([other])
    expect((await api('GET', '/api/queue?domain=nowhere.test')).json.messages).toEqual([])
    expect((await api('GET', '/api/queue?domain=park.test&limit=1')).json.messages).toHaveLength(1)

    const shown = await api('GET', `/api/queue/${id}`)
    expect(shown.status).toBe(200)
    expect(shown.json).toMatchObject({ id, sender: 'alice@sender.test' })
    expect(shown.json.headers).toContain('Subject: parked for list@park.test')
    expect(shown.json.recipients[0]).toMatchObject({ address: 'list@park.test', state: 'deferred', attempts: 1, domain: 'park.test' })
    expect(shown.json.recipients[0].history).toEqual([expect.objectContaining({ state: 'deferred', response: expect.stringMatching(/^451 4\.2\.0 parked/) })])

    const bad = await api('GET', '/api/queue?state=bogus')
    expect(bad.status).toBe(400)
    expect(bad.json.error).toMatch(/^state: expected one of queued, deferred, held/)
    expect((await api('GET', '/api/queue?limit=0')).json.error).toMatch(/^limit: /)
    const missing = await api('GET', '/api/queue/0000000000000000')
    expect([missing.status, missing.json]).toEqual([404, { error: 'no message 0000000000000000 in the queue' }])
    expect((await api('GET', '/api/queue/not%20an%20id')).status).toBe(400)
    expect((await api('POST', '/api/queue/0000000000000000/hold')).status).toBe(404)
    // Both delivered in the end, so the later tests see only their own mail.
    parked.delete('list@park.test')
    parked.delete('other@park.test')
    expect((await api('POST', '/api/queue/flush', { body: { domain: 'park.test' } })).json.flushed).toBeGreaterThanOrEqual(2)
    await eventually(() => delivered('list@park.test').length && delivered('other@park.test').length, 10_000, 'flushed mail delivered')
  })

  it('hold: a held message is not delivered by a flush; release delivers it at once', async () => {
    const id = await park('held@park.test')
    expect((await api('POST', `/api/queue/${id}/hold`)).json).toEqual({ id, held: true })
    expect((await api('GET', '/api/queue?state=held')).json.messages.map((m: { id: string }) => m.id)).toEqual([id])
    const held = (await api('GET', `/api/queue/${id}`)).json
    expect(held.heldAt).toEqual(expect.any(Number))

    parked.delete('held@park.test') // the receiver would take it now
    const flush = await api('POST', '/api/queue/flush', { body: { id } })
    expect([flush.status, flush.json]).toEqual([409, { error: `message ${id} is held: nothing flushed (release it to deliver it)` }])
    await new Promise((r) => setTimeout(r, 1500))
    expect(delivered('held@park.test')).toHaveLength(0)
    expect((await api('GET', `/api/queue/${id}`)).json.recipients[0].state).toBe('deferred')

    expect((await api('POST', `/api/queue/${id}/release`)).json).toEqual({ id, released: true })
    // Retries are an hour apart: only the scheduler woken by the release delivers it this soon.
    await eventually(() => delivered('held@park.test').length === 1, 5000, 'released message delivered')
    await eventually(async () => (await api('GET', `/api/queue/${id}`)).status === 404, 5000, 'message left the queue')
    const again = await api('POST', `/api/queue/${id}/release`)
    expect(again.status).toBe(404)
  })

  it('release of a message that is not held is a 409', async () => {
    const id = await park('notheld@park.test')
    const r = await api('POST', `/api/queue/${id}/release`)
    expect([r.status, r.json]).toEqual([409, { error: `message ${id} is not held` }])
    expect((await api('POST', `/api/queue/${id}/delete`)).status).toBe(200)
  })

  it('flush by domain (query or body) retries now and delivers', async () => {
    const id = await park('flush@park.test')
    parked.delete('flush@park.test')
    await new Promise((r) => setTimeout(r, 500))
    expect(delivered('flush@park.test')).toHaveLength(0) // not on its own: the next retry is an hour away
    const r = await api('POST', '/api/queue/flush?domain=park.test')
    expect(r.status).toBe(200)
    expect(r.json.flushed).toBeGreaterThanOrEqual(1)
    await eventually(() => delivered('flush@park.test').length === 1, 5000, 'flushed message delivered')
    await eventually(async () => (await api('GET', `/api/queue/${id}`)).status === 404, 5000, 'message left the queue')
    expect((await api('POST', '/api/queue/flush', { body: { domain: 42 } })).status).toBe(400)
    expect((await api('POST', '/api/queue/flush', { body: { id: '0000000000000000' } })).status).toBe(404)
  })

  it('bounce: pending recipients bounce and the sender gets a DSN; none for the null sender', async () => {
    const id = await park('bounce@park.test')
    const r = await api('POST', `/api/queue/${id}/bounce`)
    expect(r.status).toBe(200)
    expect(r.json).toEqual({ id, bounced: ['bounce@park.test'], dsn: expect.any(String) })
    const dsn = await eventually(() => senderRx.messages.find((m) => text(m).includes('Final-Recipient: rfc822; bounce@park.test')), 10_000, 'DSN at the sender')
    expect(dsn.from).toBe('')
    expect(dsn.to).toEqual(['alice@sender.test'])
    expect(text(dsn)).toContain('Action: failed\r\n')
    expect(text(dsn)).toContain('Status: 5.0.0\r\n')
    expect(text(dsn)).toContain('Diagnostic-Code: x-local; 5.0.0 Bounced by the administrator')
    expect(text(dsn)).toContain(`X-Relay-Queue-ID: ${id}`)
    expect((await api('GET', `/api/queue/${id}`)).status).toBe(404)
    await relay.waitForLog((l) => l.msg === 'message bounced by the administrator' && l.queueId === id)

    const before = senderRx.messages.length
    const nul = await park('nullsender@park.test', '')
    const n = await api('POST', `/api/queue/${nul}/bounce`)
    expect(n.json).toEqual({ id: nul, bounced: ['nullsender@park.test'] })
    expect((await api('GET', `/api/queue/${nul}`)).status).toBe(404)
    await new Promise((r) => setTimeout(r, 1000))
    expect(senderRx.messages.length).toBe(before)
    expect(delivered('nullsender@park.test')).toHaveLength(0)
  })

  it('delete removes a message without a bounce; a second delete is a 404', async () => {
    const id = await park('delete@park.test')
    const before = senderRx.messages.length
    expect((await api('POST', `/api/queue/${id}/delete`)).json).toEqual({ id, deleted: true })
    expect((await api('GET', `/api/queue/${id}`)).status).toBe(404)
    expect((await api('GET', '/api/queue')).json.messages.map((m: { id: string }) => m.id)).not.toContain(id)
    expect((await api('POST', `/api/queue/${id}/delete`)).status).toBe(404)
    parked.delete('delete@park.test')
    await api('POST', '/api/queue/flush', { body: { domain: 'park.test' } })
    await new Promise((r) => setTimeout(r, 1000))
    expect(delivered('delete@park.test')).toHaveLength(0)
    expect(senderRx.messages.length).toBe(before)
  })

  it('summarises the queue by state and domain', async () => {
    const id = await park('summary@park.test')
    await api('POST', `/api/queue/${id}/hold`)
    const s = await api('GET', '/api/queue-summary')
    expect(s.status).toBe(200)
    expect(s.json.messages).toBeGreaterThanOrEqual(1)
    expect(s.json.recipients.held).toBeGreaterThanOrEqual(1)
    expect(s.json.domains).toEqual(expect.arrayContaining([expect.objectContaining({ domain: 'park.test', held: 1 })]))
    await api('POST', `/api/queue/${id}/delete`)
  })
})

describe('shutdown', () => {
  it('answers /readyz 503 while stopping, then removes admin.json and relay.pid', async () => {
    // An open session keeps the relay draining for a while.
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    relay.child.kill('SIGTERM')
    const r = await eventually(async () => {
      const res = await api('GET', '/readyz')
      return res.status === 503 ? res : undefined
    }, 5000, '/readyz 503')
    expect(r.json).toEqual({ ready: false, state: 'stopping', reason: 'the relay is stopping' })
    expect((await api('GET', '/api/queue')).status).toBe(503)
    client.close()
    await eventually(() => relay.exited(), 10_000, 'relay exited')
    expect(await relay.stop()).toBe(0)
    expect(fs.existsSync(path.join(relay.dataDir, 'admin.json'))).toBe(false)
    expect(fs.existsSync(path.join(relay.dataDir, 'relay.pid'))).toBe(false)
  })
})
