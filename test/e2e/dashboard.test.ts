// The admin dashboard in a real browser (Debian chromium driven by playwright-core): the page loads
// under its strict CSP without errors, shows a message the test queued (deferred by a receiver that
// answers 451), and its buttons hold, release and delete it, as the queue API confirms. With an
// admin token the page works from `#token=…` while the API refuses calls without it.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chromium, type Browser, type Page } from 'playwright-core'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

const CHROMIUM = '/usr/bin/chromium'
const TOKEN = 'dashboard-test-token-0123456789'

let dns: TestDns
let rx: TestReceiver // 127.0.0.3 slow.test: 451 to every RCPT, so mail stays deferred
let browser: Browser
let open: RelayProcess
let guarded: RelayProcess

/** The admin URL the relay wrote for the CLI. */
const adminUrl = (relay: RelayProcess) => (JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }).url

async function api<T>(relay: RelayProcess, method: string, p: string, token?: string): Promise<{ status: number; body: T }> {
  const res = await fetch(adminUrl(relay) + p, { method, headers: token ? { Authorization: `Bearer ${token}` } : {} })
  return { status: res.status, body: (await res.json()) as T }
}

async function queueDeferred(relay: RelayProcess, subject: string, token?: string): Promise<string> {
  const { lastReply } = await sendMail(relay.port, {
    from: 'alice@sender.test',
    to: ['bob@slow.test'],
    data: `From: <alice@sender.test>\r\nTo: <bob@slow.test>\r\nSubject: ${subject}\r\n\r\nHello.\r\n`,
    helo: 'client.test',
  })
  const id = /queued as (\w+)/.exec(lastReply)?.[1]
  if (!id) throw new Error(`not queued: ${lastReply}`)
  await eventually(
    async () => (await api<{ recipients: { state: string }[] }>(relay, 'GET', `/api/queue/${id}`, token)).body.recipients?.[0]?.state === 'deferred',
    15_000,
    `message ${id} deferred`,
  )
  return id
}

const relayConfig = (admin: Record<string, unknown>) => ({
  dns: { servers: [dns.server], timeout: '1s' },
  // One attempt, then an hour's wait: the message stays deferred while the browser looks at it.
  delivery: { port: rx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s' },
  plugins: [
    ['admin', { port: 0, ...admin }],
    ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
  ],
})

/** A page that records console errors, page errors and CSP violations. */
async function newPage(): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext()
  const page = await context.newPage()
  const problems: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`)
  })
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  return { page, problems }
}

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: the dashboard test needs Debian's chromium (apt-get install chromium; .ci/run installs it)`)
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  rx = await startReceiver({ host: '127.0.0.3', behaviour: { noStartTls: true, reply: { rcpt: () => ({ code: 451, message: '4.3.0 Try again later' }) } } })
  dns = await startDns({ 'slow.test': { A: ['127.0.0.3'] }, 'sender.test': { A: ['127.0.0.3'] } })
  ;[open, guarded] = await Promise.all([startRelay({ config: relayConfig({ insecureNoToken: true }) }), startRelay({ config: relayConfig({ token: TOKEN }) })])
}, 60_000)

afterAll(async () => {
  await browser?.close()
  await Promise.all([open?.stop(), guarded?.stop()])
  await Promise.all([dns?.close(), rx?.close()])
})

describe('dashboard', () => {
  it('is served with a strict CSP, no inline code, and makes no request outside the admin listener', async () => {
    const res = await fetch(adminUrl(open) + '/')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8')
    const csp = res.headers.get('content-security-policy')!
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).not.toContain('unsafe')
    const html = await res.text()
    expect(html).not.toMatch(/<script>|<style|\son[a-z]+=|style=|https?:\/\//)
    expect((await fetch(adminUrl(open) + '/dashboard')).status).toBe(200)
  })

  it('shows a deferred message; Hold, Release and Delete act on it', async () => {
    const id = await queueDeferred(open, 'dashboard hold')
    const { page, problems } = await newPage()
    const outside: string[] = []
    const base = adminUrl(open)
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) outside.push(r.url())
    })
    await page.goto(base + '/')

    // The deferred list shows it, with the reason; the overview and the events know it too.
    const deferredRow = page.locator('#deferred tbody tr', { hasText: id })
    await deferredRow.waitFor({ timeout: 10_000 })
    expect(await deferredRow.textContent()).toContain('bob@slow.test (deferred, 1 attempt)')
    await page.locator('#destinations-queue tbody tr', { hasText: 'slow.test' }).waitFor({ timeout: 5000 })
    await page.locator('#events tbody tr[data-type="deferred"]', { hasText: id }).waitFor({ timeout: 5000 })
    expect(Number(await page.locator('#summary [data-kind="deferred"] b').textContent())).toBeGreaterThanOrEqual(1)
    // The volume chart has a bar for the deferral of this hour.
    expect(await page.locator('#chart-volume svg rect.deferred').count()).toBeGreaterThanOrEqual(1)

    // Hold: the API says held, the page moves it to the held list.
    await deferredRow.getByRole('button', { name: 'Hold' }).click()
    await eventually(async () => (await api<{ heldAt?: number }>(open, 'GET', `/api/queue/${id}`)).body.heldAt !== undefined, 5000, 'held through the API')
    const heldRow = page.locator('#held tbody tr', { hasText: id })
    await heldRow.waitFor({ timeout: 5000 })
    await deferredRow.waitFor({ state: 'detached', timeout: 5000 })
    expect(await page.locator('#notice').textContent()).toBe(`${id} held`)

    // Release: back in the deferred list (its retry is made due, the receiver defers it again).
    await heldRow.getByRole('button', { name: 'Release' }).click()
    await eventually(async () => (await api<{ heldAt?: number }>(open, 'GET', `/api/queue/${id}`)).body.heldAt === undefined, 5000, 'released through the API')
    await heldRow.waitFor({ state: 'detached', timeout: 5000 })
    await deferredRow.waitFor({ timeout: 10_000 })

    // Delete asks first; once confirmed the message is gone from the queue and the page.
    page.once('dialog', (d) => void d.accept())
    await deferredRow.getByRole('button', { name: 'Delete' }).click()
    await eventually(async () => (await api(open, 'GET', `/api/queue/${id}`)).status === 404, 5000, 'deleted through the API')
    await deferredRow.waitFor({ state: 'detached', timeout: 5000 })
    expect(await page.locator('#deferred tbody').textContent()).toContain('no deferred messages')

    expect(problems).toEqual([])
    expect(outside).toEqual([])
    await page.context().close()
  }, 60_000)

  it('recent events filter by type, domain and text', async () => {
    const { page, problems } = await newPage()
    await page.goto(adminUrl(open) + '/')
    await page.locator('#events tbody tr[data-type="accepted"]').first().waitFor({ timeout: 10_000 })
    await page.selectOption('#event-type', 'deferred')
    await eventually(async () => (await page.locator('#events tbody tr[data-type]').count()) > 0 && (await page.locator('#events tbody tr:not([data-type="deferred"])').count()) === 0, 5000, 'only deferred events')
    await page.fill('#event-domain', 'nowhere.example')
    await page.locator('#events tbody td.empty').waitFor({ timeout: 5000 })
    await page.fill('#event-domain', 'slow.test')
    await page.locator('#events tbody tr[data-type="deferred"]').first().waitFor({ timeout: 5000 })
    await page.fill('#event-text', 'no such text anywhere')
    await page.locator('#events tbody td.empty').waitFor({ timeout: 5000 })
    expect(problems).toEqual([])
    await page.context().close()
  }, 30_000)

  it('with an admin token: the API refuses calls without it, the page works from #token=…', async () => {
    const id = await queueDeferred(guarded, 'dashboard token', TOKEN)
    const base = adminUrl(guarded)
    expect((await api(guarded, 'GET', '/api/stats')).status).toBe(401)
    expect((await api(guarded, 'GET', '/api/queue?state=deferred')).status).toBe(401)
    expect((await api(guarded, 'GET', '/api/events')).status).toBe(401)
    expect((await api(guarded, 'GET', '/api/stats', 'wrong-token-0123456789')).status).toBe(403)
    expect((await api(guarded, 'GET', '/api/stats', TOKEN)).status).toBe(200)
    // The page itself holds no data and needs no token.
    expect((await fetch(base + '/')).status).toBe(200)

    // Without the token the page says what to do.
    const bare = await newPage()
    await bare.page.goto(base + '/')
    await bare.page.locator('#notice', { hasText: 'needs its admin token' }).waitFor({ timeout: 10_000 })
    expect(await bare.page.locator('#deferred tbody tr', { hasText: id }).count()).toBe(0)
    await bare.page.context().close()

    const { page, problems } = await newPage()
    await page.goto(`${base}/#token=${TOKEN}`)
    const row = page.locator('#deferred tbody tr', { hasText: id })
    await row.waitFor({ timeout: 10_000 })
    // The token left the address bar (kept in sessionStorage), and a reload still works.
    expect(new URL(page.url()).hash).toBe('')
    await page.reload()
    await row.waitFor({ timeout: 10_000 })
    await row.getByRole('button', { name: 'Hold' }).click()
    await page.locator('#held tbody tr', { hasText: id }).waitFor({ timeout: 5000 })
    expect((await api<{ heldAt?: number }>(guarded, 'GET', `/api/queue/${id}`, TOKEN)).body.heldAt).toBeGreaterThan(0)
    expect(problems).toEqual([])
    await page.context().close()
  }, 60_000)
})
