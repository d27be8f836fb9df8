// The admin listener against what a web page in the operator's browser can do (issue 12, point 4):
// cross-site form POSTs and foreign-Origin requests (CSRF), a foreign Host (DNS rebinding), and the
// token that is now required unless the admin plugin's `insecureNoToken` says otherwise. The relay here runs with
// that opt-out, so only the request checks stand between a web page and the queue. Requests are
// made with the headers a browser sends, and once by a real browser (Debian chromium) on an
// attacker's page.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { chromium } from 'playwright-core'
import { eventually, runCli, tempDir, type RelayProcess } from '../harness/relay.js'
import { startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

let fixture: ParkedRelay
let relay: RelayProcess
let port: number
let origin: string

/** One request with exactly these headers (fetch would not let us set Host). */
function request(method: string, p: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: { Host: `127.0.0.1:${port}`, ...headers, ...(body !== undefined ? { 'Content-Length': Buffer.byteLength(body) } : {}) } }, (res) => {
      let text = ''
      res.on('data', (d) => (text += d))
      res.on('end', () => {
        let json: any
        try {
          json = JSON.parse(text)
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode!, json })
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** What a browser sends for a form an attacker's page submits to the listener. */
const crossSiteForm = (type: string) => ({ 'Content-Type': type, Origin: 'http://evil.example', 'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'navigate' })

async function park(to: string): Promise<string> {
  const id = await fixture.submit(to)
  await eventually(async () => (await request('GET', `/api/queue/${id}`)).json?.recipients?.[0]?.state === 'deferred', 10_000, `${to} deferred`)
  return id
}

beforeAll(async () => {
  fixture = await startParkedRelay(undefined, { insecureNoToken: true, hosts: ['relay-admin.internal'] })
  relay = fixture.relay
  const url = (JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }).url
  port = Number(new URL(url).port)
  origin = `http://127.0.0.1:${port}`
})

afterAll(async () => {
  await fixture?.close()
})

describe('CSRF', () => {
  it('a cross-site form POST (urlencoded, text/plain, multipart) to delete or flush is refused; the mail stays queued and undelivered', async () => {
    const id = await park('csrf@park.test')
    fixture.parked.delete('csrf@park.test') // a flush that got through would now deliver it
    for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'multipart/form-data; boundary=x']) {
      const del = await request('POST', `/api/queue/${id}/delete`, crossSiteForm(type), 'a=1')
      expect(del.status).toBe(403)
      expect(del.json.error).toMatch(/cross-site request refused/)
      const flush = await request('POST', '/api/queue/flush', crossSiteForm(type), `id=${id}`)
      expect(flush.status).toBe(403)
    }
    // An old browser that sends no Sec-Fetch-Site nor Origin: the body type alone refuses it.
    for (const type of ['application/x-www-form-urlencoded', 'text/plain']) {
      const r = await request('POST', `/api/queue/${id}/delete`, { 'Content-Type': type }, 'a=1')
      expect([r.status, r.json.error]).toEqual([415, 'a request body must be JSON (Content-Type: application/json)'])
    }
    await new Promise((r) => setTimeout(r, 300))
    const shown = await request('GET', `/api/queue/${id}`)
    expect(shown.status).toBe(200)
    expect(shown.json.recipients[0].state).toBe('deferred')
    expect(fixture.delivered('csrf@park.test')).toHaveLength(0)
    await relay.waitForLog((l) => l.msg === 'admin request refused: cross-site request refused (Sec-Fetch-Site: cross-site)', 5000)
  })

  it('a JSON POST with a foreign Origin, or from the same site on another port, is refused; from its own origin it works', async () => {
    const id = await park('origin@park.test')
    const json = { 'Content-Type': 'application/json' }
    const foreign = await request('POST', `/api/queue/${id}/hold`, { ...json, Origin: 'http://evil.example' }, '{}')
    expect([foreign.status, foreign.json.error]).toEqual([403, 'cross-origin request refused (Origin: http://evil.example)'])
    expect((await request('POST', `/api/queue/${id}/hold`, { ...json, Origin: 'null' }, '{}')).status).toBe(403)
    // Another port of the same machine is "same-site" to a browser: another program's page.
    expect((await request('POST', `/api/queue/${id}/hold`, { ...json, Origin: `http://127.0.0.1:${port + 1}`, 'Sec-Fetch-Site': 'same-site' }, '{}')).status).toBe(403)
    expect((await request('POST', `/api/queue/${id}/hold`, { ...json, Origin: `http://127.0.0.1:${port + 1}` }, '{}')).status).toBe(403)
    expect((await request('DELETE', `/api/queue/${id}`, { Origin: 'http://evil.example' })).status).toBe(403)
    const shown = (await request('GET', `/api/queue/${id}`)).json
    expect([shown.heldAt ?? null, shown.recipients[0].state]).toEqual([null, 'deferred'])
    // The listener's own page (the dashboard): same origin, JSON.
    const own = await request('POST', `/api/queue/${id}/hold`, { ...json, Origin: origin, 'Sec-Fetch-Site': 'same-origin' }, '{}')
    expect([own.status, own.json]).toEqual([200, { id, held: true }])
    expect((await request('GET', `/api/queue/${id}`)).json.heldAt).toEqual(expect.any(Number))
    // The CLI and curl send neither header, and no body or a JSON one.
    expect((await request('POST', `/api/queue/${id}/release`)).status).toBe(200)
  })
})

describe('CSRF in a real browser', () => {
  it("an attacker's page (another origin) that posts a form and a no-cors fetch to delete and flush: both refused, the mail stays queued", async () => {
    const CHROMIUM = '/usr/bin/chromium'
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: this test needs Debian's chromium (apt-get install chromium; .ci/run installs it)`)
    const id = await park('browser@park.test')
    const logsBefore = relay.logs.length
    fixture.parked.delete('browser@park.test') // a flush that got through would now deliver it
    const admin = `http://127.0.0.1:${port}`
    // text/plain form whose body is JSON-shaped: the classic way around "JSON only" checks that trust the body.
    const page = `<!doctype html><form id="f" method="POST" enctype="text/plain" action="${admin}/api/queue/${id}/delete"><input name='{"x":"' value='"}'></form>
<script>fetch('${admin}/api/queue/flush', { method: 'POST', mode: 'no-cors', body: '{"id":"${id}"}' }).finally(() => document.getElementById('f').submit())</script>`
    const attacker = http.createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end(page))
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.5', resolve))
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
    try {
      const tab = await (await browser.newContext()).newPage()
      const landed = tab.waitForURL(`${admin}/api/queue/${id}/delete`, { timeout: 10_000 })
      await tab.goto(`http://127.0.0.5:${(attacker.address() as net.AddressInfo).port}/`)
      await landed // the form was submitted: the browser shows the listener's answer
      expect(await tab.textContent('body')).toContain('cross-site request refused (Sec-Fetch-Site: cross-site)')
    } finally {
      await browser.close()
      await new Promise((r) => attacker.close(r))
    }
    const refusals = relay.logs.slice(logsBefore).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('admin request refused: cross-site') && (l.path === '/api/queue/flush' || l.path === `/api/queue/${id}/delete`))
    expect(refusals.map((l) => l.path).sort()).toEqual(['/api/queue/flush', `/api/queue/${id}/delete`].sort())
    const shown = await request('GET', `/api/queue/${id}`)
    expect([shown.status, shown.json.recipients[0].state]).toEqual([200, 'deferred'])
    expect(fixture.delivered('browser@park.test')).toHaveLength(0)
  })
})

describe('DNS rebinding', () => {
  it('a request naming another host is refused (421), reads included; its own address, localhost and the admin plugin hosts are served', async () => {
    await park('rebind@park.test')
    for (const host of [`evil.example:${port}`, 'evil.example', `127.attacker.example:${port}`, `127.0.0.1:${port + 1}`, `10.1.2.3:${port}`]) {
      const r = await request('GET', '/api/queue', { Host: host })
      expect(r.status, host).toBe(421)
      expect(r.json.messages, host).toBeUndefined()
    }
    const evilFlush = await request('POST', '/api/queue/flush', { Host: `evil.example:${port}` })
    expect(evilFlush.status).toBe(421)
    expect((await request('GET', '/dashboard/', { Host: `evil.example:${port}` })).status).toBe(421)
    // Probes answer whatever Host a load balancer sends: they tell nothing but the relay's state.
    expect((await request('GET', '/healthz', { Host: 'lb-probe.example' })).status).toBe(200)
    expect((await request('GET', '/readyz', { Host: 'lb-probe.example' })).status).toBe(200)
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, 'relay-admin.internal', `relay-admin.internal:8443`]) {
      const r = await request('GET', '/api/queue', { Host: host })
      expect(r.status, host).toBe(200)
      expect(r.json.messages.length, host).toBeGreaterThan(0)
    }
  })
})

describe('the token', () => {
  const checkConfig = (admin: Record<string, unknown>) => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ plugins: [['admin', { port: 8025, ...admin }]], dataDir: path.join(dir, 'data') }))
    return runCli(['check-config', '--config', file])
  }

  it('is required on loopback too: no token and no opt-out is a config error naming the token option', () => {
    const r = checkConfig({ host: '127.0.0.1' })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/\(admin\) options\.token: required \(16\+ characters.*insecureNoToken: true/)
    expect(checkConfig({ host: '127.0.0.1', token: 'a-token-of-sixteen-or-more' }).code).toBe(0)
    expect(checkConfig({ host: '127.0.0.1', insecureNoToken: true }).code).toBe(0)
  })

  it('the opt-out holds for loopback addresses only: 127.attacker.example is a name, not a loopback address', () => {
    for (const host of ['127.attacker.example', '127.0.0.1.nip.io', '0.0.0.0']) {
      const r = checkConfig({ host, insecureNoToken: true })
      expect(r.code, host).toBe(2)
      expect(r.stderr, host).toContain(`(admin) options.token: required when the admin listener is bound to ${host} (not a loopback address)`)
    }
    expect(checkConfig({ host: '::1', insecureNoToken: true }).code).toBe(0)
    expect(checkConfig({ host: '127.5.6.7', insecureNoToken: true }).code).toBe(0)
  })

  it('running without a token is logged as a warning at start', () => {
    const line = relay.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener WITHOUT a token'))
    expect(line?.level).toBe(40)
  })
})
