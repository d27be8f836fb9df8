// The admin API's issue-14 half (§4): the OpenAPI document (served, and checked against the routes
// the server registers), cursor paging of GET /api/queue, POST /api/queue/bulk, the read-only token,
// and POST /api/inject (JSON raw, JSON composed, message/rfc822), all over HTTP on a running relay.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import type { z } from 'zod'
import { eventually, runCli, tempDir } from '../harness/relay.js'
import { connectRaw } from '../harness/smtp-client.js'
import { messageText as text, startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'
import { AdminServer } from '../../plugins/admin/server.js'
import { registerAdminRoutes } from '../../plugins/admin/routes/index.js'
import { openApiDocument } from '../../plugins/admin/openapi.js'
import * as S from '../../plugins/admin/api-schemas.js'
import type { AdminContext } from '../../plugins/admin/context.js'

const TOKEN = 'admin-api-full-token-0123456789abcdef'
const READ_ONLY = 'admin-api-read-only-token-0123456789'
let fixture: ParkedRelay
let url: string

async function api(method: string, p: string, o: { token?: string | null; body?: unknown; raw?: string | Buffer; type?: string } = {}) {
  const token = o.token === undefined ? TOKEN : o.token
  const type = o.type ?? (o.body !== undefined ? 'application/json' : undefined)
  const res = await fetch(url + p, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(type ? { 'Content-Type': type } : {}) },
    body: o.raw ?? (o.body !== undefined ? JSON.stringify(o.body) : undefined),
  })
  const body = await res.text()
  let json: any
  try {
    json = JSON.parse(body)
  } catch {
    json = undefined
  }
  return { status: res.status, text: body, json, headers: res.headers }
}

/** The body matches the schema exactly: nothing missing, nothing undocumented. */
function conforms(schema: z.ZodType, value: unknown): void {
  expect(schema.parse(value)).toEqual(value)
}

const ids = (r: { json: { messages: { id: string }[] } }) => r.json.messages.map((m) => m.id)

beforeAll(async () => {
  fixture = await startParkedRelay(TOKEN, { readOnlyToken: READ_ONLY, maxInjectSize: '64KB' })
  url = (JSON.parse(fs.readFileSync(path.join(fixture.relay.dataDir, 'admin.json'), 'utf8')) as { url: string }).url
})

afterAll(async () => {
  await fixture?.close()
})

describe('OpenAPI document', () => {
  it('has a path and method for every route the server registers, and nothing else; public routes say security: []', () => {
    const server = new AdminServer({ host: '127.0.0.1', port: 0, hosts: [] }, tempDir(), undefined as never)
    // Registration only: no handler runs, so the context is never read.
    registerAdminRoutes(server, {} as AdminContext)
    const doc = openApiDocument() as { paths: Record<string, Record<string, { security?: unknown[] }>> }
    const registered = server.routeTable().map((r) => `${r.method} ${r.pattern.replace(/:(\w+)/g, '{$1}')}`)
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
    expect([...new Set(registered)].sort()).toEqual(documented.sort())
    expect(registered).toHaveLength(new Set(registered).size)
    for (const r of server.routeTable()) {
      const operation = doc.paths[r.pattern.replace(/:(\w+)/g, '{$1}')]![r.method.toLowerCase()]!
      expect([r.method, r.pattern, operation.security]).toEqual([r.method, r.pattern, r.public ? [] : undefined])
    }
  })

  it('every $ref names a component schema; the main request and response bodies are there', () => {
    const doc = openApiDocument() as { components: { schemas: Record<string, unknown> } }
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)].map((m) => m[1]!)
    for (const ref of refs) expect(doc.components.schemas, ref).toHaveProperty(ref)
    for (const id of ['QueuePage', 'MessageDetail', 'BulkRequest', 'BulkResult', 'InjectRaw', 'InjectCompose', 'InjectResult', 'InjectRefusal', 'Error']) {
      expect(doc.components.schemas, id).toHaveProperty(id)
    }
    expect(doc.components.schemas.BulkRequest).toMatchObject({ required: ['action', 'filter'], additionalProperties: false })
    // Each templated path's operations declare its parameters; each operation answers something.
    const paths = (doc as unknown as { paths: Record<string, Record<string, { parameters?: { name: string; in: string }[]; responses: object }>> }).paths
    for (const [p, ops] of Object.entries(paths)) {
      const names = [...p.matchAll(/\{(\w+)\}/g)].map((m) => m[1])
      for (const [method, operation] of Object.entries(ops)) {
        expect([p, method, operation.parameters?.filter((x) => x.in === 'path').map((x) => x.name) ?? []]).toEqual([p, method, names])
        expect(Object.keys(operation.responses).length, `${method} ${p}`).toBeGreaterThan(0)
      }
    }
  })

  it('is served at GET /api/openapi.json without a token (it holds no data), but only to the listener\'s own Host', async () => {
    const r = await api('GET', '/api/openapi.json', { token: null })
    expect(r.status).toBe(200)
    expect(r.json).toEqual(JSON.parse(JSON.stringify(openApiDocument())))
    expect(r.json.openapi).toBe('3.1.0')
    expect(r.text).not.toContain(TOKEN)
    expect(r.text).not.toContain(READ_ONLY)
  })
})

describe('responses as documented', () => {
  it('the main routes answer with the bodies their schemas describe', async () => {
    const deferred = async (to: string) => {
      const id = await fixture.submit(to, 'documented@sender.test')
      await eventually(async () => (await api('GET', `/api/queue/${id}`)).json.recipients[0].state === 'deferred', 10_000, 'deferred')
      return id
    }
    const id = await deferred('documented@park.test')
    conforms(S.MessageDetail, (await api('GET', `/api/queue/${id}`)).json)
    conforms(S.QueueSummary, (await api('GET', '/api/queue-summary')).json)
    conforms(S.Readiness, (await api('GET', '/readyz', { token: null })).json)
    conforms(S.BounceResult, (await api('POST', `/api/queue/${id}/bounce`)).json)
    conforms(S.ErrorBody, (await api('GET', `/api/queue/${id}`)).json)
    // Release and flush make it due: a delivery then runs (and defers again).
    const other = await deferred('documented2@park.test')
    conforms(S.HoldResult, (await api('POST', `/api/queue/${other}/hold`)).json)
    conforms(S.ReleaseResult, (await api('POST', `/api/queue/${other}/release`)).json)
    conforms(S.FlushResult, (await api('POST', '/api/queue/flush', { body: { id: other } })).json)
    // The flushed attempt may be running: delete then answers 409 (documented) and is tried again.
    let deleted: { status: number; json: any } | undefined
    await eventually(async () => {
      const r = await api('DELETE', `/api/queue/${other}`)
      if (r.status === 409) conforms(S.ErrorBody, r.json)
      else deleted = r
      return r.status !== 409
    }, 10_000, 'deleted once the attempt has ended')
    expect(deleted!.status).toBe(200)
    conforms(S.DeleteResult, deleted!.json)
    S.StatsResponse.parse((await api('GET', '/api/stats')).json)
    S.EventsResponse.parse((await api('GET', '/api/events')).json)
  })
})

describe('GET /api/queue paging', () => {
  it('pages oldest first with limit and an opaque cursor; the pages together are the whole list; old clients get every message', async () => {
    const from = 'pager@sender.test'
    const queued: string[] = []
    for (let i = 0; i < 5; i++) queued.push(await fixture.submit(`page${i}@park.test`, from))
    const all = await api('GET', `/api/queue?sender=${from}`)
    expect(all.json).toEqual({ messages: expect.any(Array) })
    expect(ids(all)).toEqual(queued)
    conforms(S.QueuePage, all.json)

    const seen: string[] = []
    let cursor: string | undefined
    let pages = 0
    do {
      const page = await api('GET', `/api/queue?sender=${from}&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
      expect(page.status).toBe(200)
      conforms(S.QueuePage, page.json)
      seen.push(...ids(page))
      cursor = page.json.nextCursor
      pages++
    } while (cursor)
    expect([seen, pages]).toEqual([queued, 3])
    const times = all.json.messages.map((m: { receivedAt: number }) => m.receivedAt)
    expect([...times].sort((a, b) => a - b)).toEqual(times)
  })

  it('goes on after the cursor when messages leave or arrive between pages (no repeats, none skipped)', async () => {
    const from = 'stable@sender.test'
    const queued: string[] = []
    for (let i = 0; i < 4; i++) queued.push(await fixture.submit(`stable${i}@park.test`, from))
    const first = await api('GET', `/api/queue?sender=${from}&limit=2`)
    expect(ids(first)).toEqual(queued.slice(0, 2))
    expect((await api('DELETE', `/api/queue/${queued[2]}`)).status).toBe(200)
    const late = await fixture.submit('stable-late@park.test', from)
    const rest = await api('GET', `/api/queue?sender=${from}&limit=10&cursor=${first.json.nextCursor}`)
    expect(rest.json).toEqual({ messages: expect.any(Array) })
    expect(ids(rest)).toEqual([queued[3], late])
  })

  it('refuses a limit out of range with 400 naming it (not a 500 from the database)', async () => {
    for (const limit of ['99999999999999999999', '9007199254740993', '100001', '0', '-1', '1.5']) {
      const r = await api('GET', `/api/queue?limit=${limit}`)
      expect([limit, r.status]).toEqual([limit, 400])
      expect(r.json.error).toMatch(/^limit: expected a whole number from 1 to 100000/)
    }
    expect((await api('GET', '/api/queue?limit=100000')).status).toBe(200)
    const events = await api('GET', '/api/events?limit=99999999999999999999')
    expect([events.status, events.json.error]).toEqual([400, expect.stringMatching(/^limit: expected a whole number from 0 to 10000/)])
  })

  it('a refused MAIL FROM is a rejected event with the sender as sender (not as a recipient, nor its domain as a destination)', async () => {
    const { client } = await connectRaw(fixture.relay.port)
    try {
      await client.command('EHLO client.test')
      expect(await client.command('MAIL FROM:<"a<b>"@evil-sender.test>')).toMatch(/^5\d\d /)
    } finally {
      client.close()
    }
    const ev = await eventually(async () => (await api('GET', '/api/events?type=rejected&text=evil-sender')).json.events.find((e: { sender?: string }) => e.sender === '"a<b>"@evil-sender.test'), 10_000, 'the rejected event')
    expect(ev.recipient).toBeUndefined()
    expect(ev.domain).toBeUndefined()
  })

  it('flush refuses a field it does not know (a typo must not flush the whole queue) and a null', async () => {
    const id = await fixture.submit('flush-typo@park.test', 'typo@sender.test')
    await eventually(async () => (await api('GET', `/api/queue/${id}`)).json.recipients[0].state === 'deferred', 10_000, 'deferred')
    const attempts = (await api('GET', `/api/queue/${id}`)).json.recipients[0].attempts
    for (const [body, query] of [[{ domian: 'nomatch.example' }, ''], [{ domain: null }, ''], [{}, '?domian=nomatch.example']] as const) {
      const r = await api('POST', `/api/queue/flush${query}`, { body })
      expect([JSON.stringify(body) + query, r.status]).toEqual([JSON.stringify(body) + query, 400])
      conforms(S.ErrorBody, r.json)
    }
    expect((await api('POST', '/api/queue/flush', { body: { domain: 'nomatch.example' } })).json).toEqual({ flushed: 0 })
    await new Promise((r) => setTimeout(r, 500))
    // Nothing was made due: the message was not tried again.
    expect((await api('GET', `/api/queue/${id}`)).json.recipients[0].attempts).toBe(attempts)
    expect((await api('DELETE', `/api/queue/${id}`)).status).toBe(200)
  })

  it('refuses a cursor it did not hand out', async () => {
    for (const bad of ['garbage', Buffer.from('{"a":1}').toString('base64url'), Buffer.from('[1]').toString('base64url')]) {
      const r = await api('GET', `/api/queue?limit=1&cursor=${bad}`)
      expect(r.status).toBe(400)
      conforms(S.ErrorBody, r.json)
      expect(r.json.error).toMatch(/^cursor: /)
    }
  })
})

describe('POST /api/queue/bulk', () => {
  it('dry run counts; hold, release, delete and flush act on what the filter selects', async () => {
    const from = 'bulk@sender.test'
    const queued = [await fixture.submit('bulk0@park.test', from), await fixture.submit('bulk1@park.test', from), await fixture.submit('bulk2@park.test', from)]
    const dry = await api('POST', '/api/queue/bulk', { body: { action: 'hold', filter: { sender: from }, dryRun: true } })
    expect(dry.status).toBe(200)
    conforms(S.BulkResult, dry.json)
    expect(dry.json).toEqual({ action: 'hold', dryRun: true, matched: queued, done: 0, skipped: [] })
    expect(ids(await api('GET', `/api/queue?sender=${from}&state=held`))).toEqual([])

    expect((await api('POST', '/api/queue/bulk', { body: { action: 'hold', filter: { sender: `<${from}>` } } })).json).toEqual({ action: 'hold', dryRun: false, matched: queued, done: 3, skipped: [] })
    expect(ids(await api('GET', `/api/queue?sender=${from}&state=held`))).toEqual(queued)
    const release = await api('POST', '/api/queue/bulk', { body: { action: 'release', filter: { ids: [queued[0]] } } })
    expect(release.json).toMatchObject({ matched: [queued[0]], done: 1 })
    // Nothing was received an hour ago; everything was a moment ago.
    expect((await api('POST', '/api/queue/bulk', { body: { action: 'delete', filter: { sender: from, olderThan: '1h' }, dryRun: true } })).json.matched).toEqual([])
    expect((await api('POST', '/api/queue/bulk', { body: { action: 'delete', filter: { sender: from, olderThan: 0 }, dryRun: true } })).json.matched).toEqual(queued)
    const del = await api('POST', '/api/queue/bulk', { body: { action: 'delete', filter: { sender: from, state: 'held' } } })
    expect(del.json).toEqual({ action: 'delete', dryRun: false, matched: queued.slice(1), done: 2, skipped: [] })
    expect(ids(await api('GET', `/api/queue?sender=${from}`))).toEqual([queued[0]])

    fixture.parked.delete('bulk0@park.test')
    const flush = await api('POST', '/api/queue/bulk', { body: { action: 'flush', filter: { ids: [queued[0]], domain: 'park.test' } } })
    expect(flush.json).toMatchObject({ matched: [queued[0]], done: 1 })
    await eventually(() => fixture.delivered('bulk0@park.test').length === 1, 10_000, 'flushed by bulk')
  })

  it('bounce by filter: a DSN to the sender', async () => {
    const id = await fixture.submit('bulkbounce@park.test', 'bulkbounce@sender.test')
    const r = await api('POST', '/api/queue/bulk', { body: { action: 'bounce', filter: { sender: 'bulkbounce@sender.test' } } })
    expect(r.json).toEqual({ action: 'bounce', dryRun: false, matched: [id], done: 1, skipped: [] })
    await eventually(() => fixture.senderRx.messages.find((m) => text(m).includes('Final-Recipient: rfc822; bulkbounce@park.test')), 10_000, 'DSN')
  })

  it('400 for a bad action or filter, and for a filter that selects nothing in particular', async () => {
    const bad = async (body: unknown, error: RegExp) => {
      const r = await api('POST', '/api/queue/bulk', { body })
      expect([r.status, r.json.error]).toEqual([400, expect.stringMatching(error)])
    }
    await bad({ action: 'explode', filter: { all: true } }, /^action: /)
    await bad({ action: 'hold', filter: {} }, /^filter: give ids, all: true, or at least one of/)
    await bad({ action: 'hold' }, /^filter: /)
    await bad({ action: 'hold', filter: { all: true, domain: 'park.test' } }, /^filter\.all: /)
    await bad({ action: 'hold', filter: { state: 'bogus' } }, /^filter\.state: /)
    await bad({ action: 'hold', filter: { olderThan: 'soon' } }, /^filter\.olderThan: /)
    await bad({ action: 'hold', filter: { olderThan: '90' } }, /^filter\.olderThan: /)
    await bad({ action: 'hold', filter: { domain: 'x.test', colour: 'red' } }, /^filter: /)
  })
})

describe('read-only token', () => {
  it('reads (GET) and changes nothing: every other method is a 403 that says why', async () => {
    const id = await fixture.submit('readonly@park.test', 'readonly@sender.test')
    for (const p of ['/api/queue', '/api/queue-summary', '/api/stats', '/api/events', '/metrics']) {
      expect([p, (await api('GET', p, { token: READ_ONLY })).status]).toEqual([p, 200])
    }
    const refused = [
      ['POST', `/api/queue/${id}/hold`],
      ['POST', `/api/queue/${id}/delete`],
      ['DELETE', `/api/queue/${id}`],
      ['POST', '/api/queue/flush'],
      ['POST', '/api/queue/bulk'],
      ['POST', '/api/inject'],
      ['POST', '/api/reload'],
    ]
    for (const [method, p] of refused) {
      const r = await api(method!, p!, { token: READ_ONLY, body: {} })
      expect([method, p, r.status]).toEqual([method, p, 403])
      expect(r.json.error).toBe(`the read-only token may only read (GET); ${method} ${p} needs the full token`)
    }
    expect((await api('GET', `/api/queue/${id}`)).json.heldAt).toBeUndefined()
    expect((await api('GET', '/api/queue', { token: 'not-either-token-0123456789' })).status).toBe(403)
    expect((await api('POST', `/api/queue/${id}/delete`)).status).toBe(200)
    expect(JSON.stringify(fixture.relay.logs)).not.toContain(READ_ONLY)
  })

  it('reads no message content: the raw message is a 403 that says why, the detail comes without its header section; the full token reads both', async () => {
    const marker = 'X-Private-Note: content-marker-7f3a'
    const id = await fixture.submit('content@park.test', 'content@sender.test', marker + '\r\n')
    for (const [method, p] of [
      ['GET', `/api/queue/${id}/raw`],
      ['HEAD', `/api/queue/${id}/raw`],
    ] as const) {
      const r = await api(method, p, { token: READ_ONLY })
      expect([method, p, r.status]).toEqual([method, p, 403])
      if (method === 'GET') expect(r.json.error).toBe(`the read-only token reads no message content (header section, body); GET ${p} needs the full token`)
      expect(r.text).not.toContain('content-marker-7f3a')
    }
    // The detail view's data: envelope, recipients and attempts, and no header section.
    const detail = await api('GET', `/api/queue/${id}`, { token: READ_ONLY })
    expect(detail.status).toBe(200)
    expect(detail.json).toMatchObject({ id, sender: 'content@sender.test', headers: null })
    expect(detail.json.recipients.map((r: { address: string }) => r.address)).toEqual(['content@park.test'])
    expect(detail.text).not.toContain('content-marker-7f3a')
    const raw = await api('GET', `/api/queue/${id}/raw`)
    expect(raw.status).toBe(200)
    expect(raw.text).toContain(marker)
    expect((await api('GET', `/api/queue/${id}`)).json.headers).toContain(marker)
    // The queue list (envelope and state, no content) stays readable.
    expect(ids(await api('GET', '/api/queue?sender=content@sender.test', { token: READ_ONLY }))).toEqual([id])
  })

  it('check-config refuses a read-only token equal to the token, or without one', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    const check = (admin: Record<string, unknown>) => {
      fs.writeFileSync(file, JSON.stringify({ plugins: [['admin', { host: '127.0.0.1', port: 0, ...admin }]], dataDir: path.join(dir, 'data') }))
      return runCli(['check-config', '--config', file])
    }
    expect(check({ token: TOKEN, readOnlyToken: TOKEN }).stderr).toMatch(/options\.readOnlyToken: must differ from token/)
    expect(check({ insecureNoToken: true, readOnlyToken: READ_ONLY }).stderr).toMatch(/options\.readOnlyToken: needs token too/)
    expect(check({ token: TOKEN, readOnlyToken: 'short' }).stderr).toMatch(/options\.readOnlyToken: use a token of at least 16 characters/)
    expect(check({ token: TOKEN, readOnlyToken: READ_ONLY, maxInjectSize: '10MB' }).code).toBe(0)
  })
})

describe('GET /api/queue/:id/raw', () => {
  it('is the message as queued (message/rfc822); 404 for an unknown id', async () => {
    const id = await fixture.submit('raw@park.test', 'raw@sender.test', 'X-Raw-Test: yes\r\n')
    const r = await api('GET', `/api/queue/${id}/raw`)
    expect(r.status).toBe(200)
    expect(r.headers.get('content-type')).toBe('message/rfc822')
    expect(r.text).toMatch(/X-Raw-Test: yes\r\n/)
    expect(r.text).toMatch(/\r\n\r\nHello\.\r\n$/)
    expect((await api('GET', '/api/queue/0000000000000000/raw')).status).toBe(404)
    await api('DELETE', `/api/queue/${id}`)
  })
})

describe('POST /api/inject', () => {
  const delivered = (to: string) => eventually(() => fixture.delivered(to)[0], 10_000, `${to} delivered`)

  it('JSON { from, to, raw }: queued (202 { queueId }) through the same path as SMTP, and delivered', async () => {
    const raw = 'From: App <app@sender.test>\r\nTo: <inject-raw@park.test>\r\nSubject: injected raw\r\nMessage-ID: <raw-1@sender.test>\r\n\r\nHello from HTTP.\r\n'
    const r = await api('POST', '/api/inject', { body: { from: 'app@sender.test', to: ['inject-raw@park.test'], raw } })
    expect(r.status).toBe(202)
    conforms(S.InjectResult, r.json)
    const m = await delivered('inject-raw@park.test')
    expect(m.from).toBe('app@sender.test')
    expect(text(m)).toContain('Subject: injected raw\r\n')
    expect(text(m)).toContain(`id ${r.json.queueId}`)
    expect(text(m)).toMatch(/\r\n\r\nHello from HTTP\.\r\n$/)
  })

  it('JSON { from, to, subject, text, headers }: a message built with Date, Message-ID, UTF-8 subject and body', async () => {
    const r = await api('POST', '/api/inject', {
      body: { from: 'app@sender.test', to: 'inject-built@park.test', subject: 'Grüße aus der API', text: 'Héllo\nsecond line', headers: { 'Reply-To': 'help@sender.test', 'X-App': 'billing' } },
    })
    expect(r.status).toBe(202)
    const m = text(await delivered('inject-built@park.test'))
    expect(m).toContain('From: app@sender.test\r\n')
    expect(m).toContain('To: inject-built@park.test\r\n')
    expect(m).toContain('Reply-To: help@sender.test\r\nX-App: billing\r\n')
    expect(m).toMatch(/\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/)
    // Its right side is the relay's configured hostname, never the machine's own name.
    expect(m).toMatch(/\r\nMessage-ID: <[^>@]+@relay\.test>\r\n/)
    const subject = /\r\nSubject: (.*(?:\r\n .*)*)\r\n/.exec(m)![1]!
    const words = [...subject.matchAll(/=\?UTF-8\?B\?([^?]+)\?=/g)].map((w) => Buffer.from(w[1]!, 'base64').toString('utf8'))
    expect(words.join('')).toBe('Grüße aus der API')
    expect(m).toContain('Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n')
    expect(Buffer.from(m.split('\r\n\r\n').slice(1).join('').replace(/\r\n/g, ''), 'base64').toString('utf8')).toBe('Héllo\r\nsecond line')
  })

  it('message/rfc822 with ?from=&to= (repeated or comma-separated): the bytes as sent', async () => {
    const raw = Buffer.from('From: <app@sender.test>\r\nSubject: rfc822 body\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9\r\n', 'latin1')
    const r = await api('POST', '/api/inject?from=app@sender.test&to=inject-822a@park.test,inject-822b@park.test&to=inject-822c@park.test', { raw, type: 'message/rfc822' })
    expect([r.status, r.json]).toEqual([202, { queueId: expect.any(String) }])
    for (const to of ['inject-822a@park.test', 'inject-822b@park.test', 'inject-822c@park.test']) {
      const m = await delivered(to)
      expect(m.raw.includes(Buffer.from('\r\n\r\nCaf\xe9\r\n', 'latin1'))).toBe(true)
    }
  })

  it("a refusal by the relay's checks is its SMTP reply as JSON: 5xx → 422, 4xx → 503, as { error, code, status }", async () => {
    const r = await api('POST', '/api/inject', { body: { from: 'app@sender.test', to: ['no-domain@'], raw: 'Subject: x\r\n\r\nx\r\n' } })
    expect(r.status).toBe(422)
    conforms(S.InjectRefusal, r.json)
    expect(r.json).toEqual({ error: expect.stringMatching(/^Bad recipient address syntax/), code: 553, status: '5.1.3' })
    // More than smtp.maxRecipients (1000): SMTP says try the rest later.
    const many = Array.from({ length: 1001 }, (_, i) => `many${i}@park.test`)
    const later = await api('POST', '/api/inject', { body: { from: 'app@sender.test', to: many, raw: 'Subject: x\r\n\r\nx\r\n' } })
    expect([later.status, later.json]).toEqual([503, { error: 'Too many recipients', code: 452, status: '4.5.3' }])
  })

  it('400 for a bad body, 413 past maxInjectSize, 415 for other body types; 401 without a token', async () => {
    const bad = async (body: unknown, error: RegExp) => {
      const r = await api('POST', '/api/inject', { body })
      expect([r.status, r.json.error]).toEqual([400, expect.stringMatching(error)])
    }
    await bad({ from: 'a@sender.test', raw: 'x' }, /^to: /)
    await bad({ from: 'a@sender.test', to: [], raw: 'x' }, /^to: /)
    await bad({ from: 'a@sender.test', to: 'b@park.test' }, /^subject: |^text: /)
    await bad({ from: 'a@sender.test', to: 'b@park.test', subject: 'x\r\nBcc: evil@x.test', text: 'x' }, /^subject: no line breaks/)
    await bad({ from: 'a@sender.test', to: 'b@park.test', subject: 'x', text: 'x', headers: { 'Content-Type': 'text/html' } }, /^headers: Content-Type is set by the relay/)
    await bad({ from: 'a b@sender.test', to: 'b@park.test', raw: 'x' }, /^from: /)
    const noFrom = await api('POST', '/api/inject?to=b@park.test', { raw: 'Subject: x\r\n\r\nx\r\n', type: 'message/rfc822' })
    expect([noFrom.status, noFrom.json.error]).toEqual([400, expect.stringMatching(/^from: /)])

    const big = 'Subject: big\r\n\r\n' + 'x'.repeat(70 * 1024) + '\r\n'
    const tooBig = await api('POST', '/api/inject?from=a@sender.test&to=b@park.test', { raw: big, type: 'message/rfc822' })
    expect([tooBig.status, tooBig.json.error]).toEqual([413, expect.stringMatching(/too large \(at most 65536 bytes\)/)])
    const tooBigJson = await api('POST', '/api/inject', { body: { from: 'a@sender.test', to: 'b@park.test', raw: big } })
    expect([tooBigJson.status, tooBigJson.json.error]).toEqual([413, expect.stringMatching(/maxInjectSize/)])
    const plain = await api('POST', '/api/inject?from=a@sender.test&to=b@park.test', { raw: 'Subject: x\r\n\r\nx\r\n', type: 'text/plain' })
    expect([plain.status, plain.json.error]).toEqual([415, 'a request body must be of Content-Type application/json or message/rfc822'])
    expect((await api('POST', '/api/inject', { token: null, body: { from: 'a@sender.test', to: 'b@park.test', raw: 'x' } })).status).toBe(401)
    expect(fixture.delivered('b@park.test')).toHaveLength(0)
  })

  it('a message/rfc822 POST from a web page is refused like any other cross-site request', async () => {
    const r = await fetch(url + '/api/inject?from=a@sender.test&to=b@park.test', {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'message/rfc822', Origin: 'http://attacker.example', 'Sec-Fetch-Site': 'cross-site' },
      body: 'Subject: x\r\n\r\nx\r\n',
    })
    expect(r.status).toBe(403)
  })
})
