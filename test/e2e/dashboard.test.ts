// The admin dashboard in a real browser (Debian chromium driven by playwright-core): the page loads
// under its strict CSP without errors, shows a message the test queued (deferred by a receiver that
// answers 451) with its last reply, category, attempts and next attempt, and its buttons hold,
// release and delete it, as the queue API confirms. A message opens a detail view (envelope,
// headers, attempt history, actions); the search finds messages by address, domain or queue id;
// a destination's messages are held, released and bounced at once; recent events come from the
// queue's attempt log, so a restart does not blank them; at 400 px wide the page does not overflow.
// With an admin token the page works from `#token=…` while the API refuses calls without it.
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
let rx: TestReceiver // 127.0.0.3 (every test domain): 451 to every RCPT but ok@…, so mail stays deferred
let browser: Browser
let open: RelayProcess
let guarded: RelayProcess

/** The admin URL the relay wrote for the CLI. */
const adminUrl = (relay: RelayProcess) => (JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }).url

async function api<T>(relay: RelayProcess, method: string, p: string, token?: string): Promise<{ status: number; body: T }> {
  const res = await fetch(adminUrl(relay) + p, { method, headers: token ? { Authorization: `Bearer ${token}` } : {} })
  return { status: res.status, body: (await res.json()) as T }
}

async function submit(relay: RelayProcess, subject: string, o: { from?: string; to?: string } = {}): Promise<string> {
  const from = o.from ?? 'alice@sender.test'
  const to = o.to ?? 'bob@slow.test'
  const { lastReply } = await sendMail(relay.port, {
    from,
    to: [to],
    data: `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\nHello.\r\n`,
    helo: 'client.test',
  })
  const id = /queued as (\w+)/.exec(lastReply)?.[1]
  if (!id) throw new Error(`not queued: ${lastReply}`)
  return id
}

async function queueDeferred(relay: RelayProcess, subject: string, token?: string, o: { from?: string; to?: string } = {}): Promise<string> {
  const id = await submit(relay, subject, o)
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
async function newPage(viewport?: { width: number; height: number }): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext(viewport ? { viewport } : {})
  const page = await context.newPage()
  const problems: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`)
  })
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`)
  })
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
  rx = await startReceiver({
    host: '127.0.0.3',
    behaviour: {
      noStartTls: true,
      reply: {
        // rlo@: a reply with a right-to-left override, which would show '…gnp.exe' as '…exe.png'.
        rcpt: ({ address }) => (address?.startsWith('ok@') ? undefined : address?.startsWith('rlo@') ? { code: 451, message: '4.3.0 see invoice\u202Egnp.exe' } : { code: 451, message: '4.3.0 Try again later' }),
      },
    },
  })
  const a = { A: ['127.0.0.3'] }
  dns = await startDns({ 'slow.test': a, 'sender.test': a, 'hold.test': a, 'other-sender.test': a, 'restart.test': a })
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

    // The deferred list shows it, with the last reply, category, attempts and next attempt; the
    // overview and the events know it too.
    const deferredRow = page.locator('#deferred tbody tr', { hasText: id })
    await deferredRow.waitFor({ timeout: 10_000 })
    const cell = (label: string) => deferredRow.locator(`td[data-label="${label}"]`)
    expect(await cell('From').textContent()).toBe('alice@sender.test')
    expect(await cell('Recipients').textContent()).toBe('bob@slow.test')
    expect(await cell('Last reply').textContent()).toContain('451 4.3.0 Try again later')
    expect(await cell('Category').textContent()).toMatch(/^[a-z-]+$/)
    expect(await cell('Attempts').textContent()).toBe('1')
    expect(await cell('Next attempt').textContent()).toMatch(/^in \d+ min$/)
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

  it('a message opens a detail view: envelope, headers, attempt history; its actions hold, release and bounce it', async () => {
    const id = await queueDeferred(open, 'dashboard detail')
    const { page, problems } = await newPage()
    await page.goto(adminUrl(open) + '/')
    // The queue id in the deferred list opens it.
    await page.locator('#deferred tbody tr', { hasText: id }).getByRole('button', { name: id }).click()
    const detail = page.locator('dialog#detail')
    await detail.waitFor({ state: 'visible', timeout: 5000 })
    expect(await page.locator('#detail-id').textContent()).toBe(id)
    const field = (name: string) => page.locator(`#detail-envelope dd[data-field="${name}"]`).textContent()
    expect(await field('queue-id')).toBe(id)
    expect(await field('sender')).toBe('alice@sender.test')
    expect(await field('client')).toContain('[127.0.0.1], HELO client.test')
    expect(await field('state')).toBe('in delivery')
    expect(await page.locator('#detail-headers').textContent()).toContain('Subject: dashboard detail')
    const recipient = page.locator('#detail-recipients tbody tr[data-address="bob@slow.test"]')
    expect(await recipient.textContent()).toContain('deferred')
    expect(await recipient.textContent()).toContain('451 4.3.0 Try again later')
    const history = page.locator('#detail-history tbody tr[data-state="deferred"]')
    expect(await history.count()).toBe(1)
    expect(await history.first().textContent()).toContain('451 4.3.0 Try again later')

    // Hold from the detail view: the API says held, the view offers Release.
    await detail.getByRole('button', { name: 'Hold' }).click()
    await eventually(async () => (await api<{ heldAt?: number }>(open, 'GET', `/api/queue/${id}`)).body.heldAt !== undefined, 5000, 'held through the API')
    await detail.getByRole('button', { name: 'Release' }).waitFor({ timeout: 5000 })
    expect(await field('state')).toMatch(/^held since /)
    await detail.getByRole('button', { name: 'Release' }).click()
    await detail.getByRole('button', { name: 'Hold' }).waitFor({ timeout: 5000 })
    expect((await api<{ heldAt?: number }>(open, 'GET', `/api/queue/${id}`)).body.heldAt).toBeUndefined()

    // Bounce asks first; the message leaves the queue, the view closes and says so.
    page.once('dialog', (d) => void d.accept())
    await detail.getByRole('button', { name: 'Bounce' }).click()
    await eventually(async () => (await api(open, 'GET', `/api/queue/${id}`)).status === 404, 5000, 'bounced through the API')
    await detail.waitFor({ state: 'hidden', timeout: 5000 })
    await page.locator('#events tbody tr[data-type="bounced"]', { hasText: id }).waitFor({ timeout: 10_000 })
    // Closing with the button works too (a queue id in the events opens the view again).
    const other = await queueDeferred(open, 'dashboard detail close')
    await page.locator('#events tbody tr', { hasText: other }).first().getByRole('button', { name: other }).click()
    await detail.waitFor({ state: 'visible', timeout: 5000 })
    await page.locator('#detail-close').click()
    await detail.waitFor({ state: 'hidden', timeout: 5000 })
    expect(problems).toEqual([])
    await page.context().close()
  }, 60_000)

  it('searches the queue by address, domain or queue id', async () => {
    const fromAlice = await queueDeferred(open, 'search one', undefined, { to: 'dave@slow.test' })
    const fromCarol = await queueDeferred(open, 'search two', undefined, { from: 'carol@other-sender.test', to: 'erin@slow.test' })
    const { page, problems } = await newPage()
    await page.goto(adminUrl(open) + '/')
    await page.locator('#deferred tbody tr', { hasText: fromCarol }).waitFor({ timeout: 10_000 })
    const results = page.locator('#search-results tbody')
    const found = async (term: string, expected: string[], absent: string[] = []) => {
      await page.fill('#search', term)
      await eventually(async () => {
        if (await page.locator('#search-box').isHidden()) return false
        const text = (await results.textContent()) ?? ''
        return expected.every((id) => text.includes(id)) && absent.every((id) => !text.includes(id))
      }, 5000, `search for ${term}`)
    }
    await found('erin@slow.test', [fromCarol], [fromAlice]) // a recipient
    await found('CAROL@other-sender.test', [fromCarol], [fromAlice]) // a sender, any case
    await found('<dave@slow.test>', [fromAlice], [fromCarol])
    await found('slow.test', [fromAlice, fromCarol]) // a recipient domain
    await found(fromAlice.toLowerCase(), [fromAlice], [fromCarol]) // a queue id
    expect(await page.locator('#search-status').textContent()).toBe(`1 message matches "${fromAlice.toLowerCase()}"`)
    // The results carry the same actions, and a queue id opens the detail view.
    await results.getByRole('button', { name: fromAlice }).click()
    await page.locator('dialog#detail').waitFor({ state: 'visible', timeout: 5000 })
    expect(await page.locator('#detail-id').textContent()).toBe(fromAlice)
    await page.locator('#detail-close').click()
    await page.fill('#search', 'nobody@nowhere.test')
    await results.locator('td.empty', { hasText: 'nothing in the queue matches' }).waitFor({ timeout: 5000 })
    await page.fill('#search', '')
    await page.locator('#search-box').waitFor({ state: 'hidden', timeout: 5000 })
    expect(problems).toEqual([])
    await page.context().close()
  }, 60_000)

  it('holds, releases and bounces every message to one destination (POST /api/queue/bulk)', async (ctx) => {
    const probe = await fetch(adminUrl(open) + '/api/queue/bulk', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ action: 'hold', filter: { domain: 'none.test' }, dryRun: true }) })
    if (probe.status !== 200) ctx.skip(`POST /api/queue/bulk is not there yet (HTTP ${probe.status}: ${await probe.text()})`)
    const ids = [await queueDeferred(open, 'bulk one', undefined, { to: 'one@hold.test' }), await queueDeferred(open, 'bulk two', undefined, { to: 'two@hold.test' })]
    const elsewhere = await queueDeferred(open, 'bulk elsewhere', undefined, { to: 'frank@slow.test' })
    const held = async (id: string) => (await api<{ heldAt?: number }>(open, 'GET', `/api/queue/${id}`)).body.heldAt !== undefined
    const { page, problems } = await newPage()
    await page.goto(adminUrl(open) + '/')
    const row = page.locator('#destinations-queue tbody tr[data-domain="hold.test"]')
    await row.waitFor({ timeout: 10_000 })

    await row.getByRole('button', { name: 'Hold' }).click()
    await page.locator('#notice', { hasText: 'hold.test: 2 messages held' }).waitFor({ timeout: 5000 })
    expect([await held(ids[0]!), await held(ids[1]!), await held(elsewhere)]).toEqual([true, true, false])
    for (const id of ids) await page.locator('#held tbody tr', { hasText: id }).waitFor({ timeout: 5000 })

    await row.getByRole('button', { name: 'Release' }).click()
    await page.locator('#notice', { hasText: 'hold.test: 2 messages released' }).waitFor({ timeout: 5000 })
    expect([await held(ids[0]!), await held(ids[1]!)]).toEqual([false, false])
    // Released means due now: wait until that retry is over (deferred again, no longer leased), or
    // the bounce would find them in flight and leave them (a 'conflict', as it should).
    const settled = async (id: string) => {
      const m = (await api<{ recipients: { leased: boolean; attempts: number }[] }>(open, 'GET', `/api/queue/${id}`)).body
      return m.recipients.every((r) => !r.leased && r.attempts >= 2)
    }
    await eventually(async () => (await settled(ids[0]!)) && (await settled(ids[1]!)), 20_000, 'released messages deferred again')

    // Bounce counts first and asks; then the messages leave the queue, the other one stays.
    let question = ''
    page.once('dialog', (d) => void d.accept().then(() => (question = d.message())))
    await row.getByRole('button', { name: 'Bounce' }).click()
    await page.locator('#notice', { hasText: 'hold.test: 2 messages bounced' }).waitFor({ timeout: 10_000 })
    expect(question).toContain('Bounce 2 messages with recipients at hold.test?')
    for (const id of ids) expect((await api(open, 'GET', `/api/queue/${id}`)).status).toBe(404)
    expect((await api(open, 'GET', `/api/queue/${elsewhere}`)).status).toBe(200)
    await row.waitFor({ state: 'detached', timeout: 10_000 })
    expect(problems).toEqual([])
    await page.context().close()
  }, 60_000)

  it('at 400 px wide the page does not overflow and the deferred list stays usable', async () => {
    const id = await queueDeferred(open, 'dashboard narrow', undefined, { to: 'narrow@slow.test' })
    const { page, problems } = await newPage({ width: 400, height: 800 })
    await page.goto(adminUrl(open) + '/')
    const row = page.locator('#deferred tbody tr', { hasText: id })
    await row.waitFor({ timeout: 10_000 })
    await page.locator('#chart-volume svg').waitFor({ timeout: 5000 })
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
    expect(await overflow()).toBeLessThanOrEqual(0)
    // One card per message: each cell labelled with its column, within the screen.
    const reply = row.locator('td[data-label="Last reply"]')
    expect(await reply.evaluate((td) => getComputedStyle(td, '::before').content)).toContain('Last reply')
    for (const target of [reply, row.getByRole('button', { name: 'Hold' }), row.getByRole('button', { name: 'Delete' })]) {
      const box = (await target.boundingBox())!
      expect(box.x).toBeGreaterThanOrEqual(0)
      expect(box.x + box.width).toBeLessThanOrEqual(400)
    }
    // Its buttons work at this size, and so does the detail view.
    await row.getByRole('button', { name: 'Hold' }).click()
    await page.locator('#held tbody tr', { hasText: id }).waitFor({ timeout: 5000 })
    await page.locator('#held tbody tr', { hasText: id }).getByRole('button', { name: id }).click()
    const detail = page.locator('dialog#detail')
    await detail.waitFor({ state: 'visible', timeout: 5000 })
    const box = (await detail.boundingBox())!
    expect(box.x + box.width).toBeLessThanOrEqual(400)
    expect(await detail.evaluate((d) => d.scrollWidth - d.clientWidth)).toBeLessThanOrEqual(0)
    await page.locator('#detail-close').click()
    expect(await overflow()).toBeLessThanOrEqual(0)
    expect(problems).toEqual([])
    await page.context().close()
  }, 60_000)

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

  it('text from outside shows its bidirectional overrides and control characters as ?, and a malformed #token does not break the page', async () => {
    const id = await queueDeferred(guarded, 'rlo \u202Eevil', TOKEN, { to: 'rlo@slow.test' })
    const { page, problems } = await newPage()
    // %zz is no valid escape: taken as written (a wrong token), the page still loads and says so.
    await page.goto(`${adminUrl(guarded)}/#token=%zz`)
    await page.locator('#notice', { hasText: /token/ }).waitFor({ timeout: 10_000 })
    expect(new URL(page.url()).hash).toBe('')
    expect(problems.filter((p) => !/403/.test(p))).toEqual([])
    await page.context().close()
    const good = await newPage()
    await good.page.goto(`${adminUrl(guarded)}/#token=${TOKEN}`)
    const row = good.page.locator('#deferred tbody tr', { hasText: id })
    await row.waitFor({ timeout: 10_000 })
    const text = await row.innerText()
    expect(text).toContain('see invoice?gnp.exe')
    expect(text).not.toMatch(/[\u202a-\u202e\u2066-\u2069]/)
    expect(good.problems).toEqual([])
    await good.page.context().close()
  }, 60_000)

  it('recent events come from the queue: a restart does not blank deliveries or deferrals', async () => {
    const delivered = await submit(open, 'restart delivered', { to: 'ok@restart.test' })
    const deferred = await queueDeferred(open, 'restart deferred', undefined, { to: 'bob@restart.test' })
    await eventually(async () => (await api(open, 'GET', `/api/queue/${delivered}`)).status === 404, 15_000, 'delivered and gone from the queue')
    const events = (p: Page, type: string, id: string) => p.locator(`#events tbody tr[data-type="${type}"]`, { hasText: id })
    const before = await newPage()
    await before.page.goto(adminUrl(open) + '/')
    await events(before.page, 'delivered', delivered).waitFor({ timeout: 10_000 })
    await events(before.page, 'deferred', deferred).waitFor({ timeout: 5000 })
    await before.page.context().close()

    await open.stop()
    await open.restart()
    await eventually(() => fs.existsSync(path.join(open.dataDir, 'admin.json')), 15_000, 'admin listener up again')
    const { page, problems } = await newPage()
    await page.goto(adminUrl(open) + '/')
    // The delivery's message left the queue before the restart; its attempt is in the queue's log.
    const row = events(page, 'delivered', delivered)
    await row.waitFor({ timeout: 10_000 })
    expect(await row.textContent()).toContain('ok@restart.test')
    expect(await row.textContent()).toMatch(/250/)
    await events(page, 'deferred', deferred).waitFor({ timeout: 5000 })
    // The filters work on them as on the rest.
    await page.fill('#event-domain', 'restart.test')
    await page.selectOption('#event-type', 'delivered')
    await eventually(async () => (await page.locator('#events tbody tr[data-type]').count()) === 1, 5000, 'only the delivery to restart.test')
    expect(problems).toEqual([])
    await page.context().close()
  }, 90_000)
})
