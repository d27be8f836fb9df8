// relay-mta/testing as a plugin author meets it when something goes wrong: waitForMessages says why
// nothing came (the relay's deferrals and bounces), and the test receiver records who logged in.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { ROOT, send, startRelay, startReceiver, startTestRelay, tempDir, type TestReceiver, type TestRelay } from '../../testing/index.js'
import { childNodes } from '../harness/processes.js'

describe('waitForMessages on a startTestRelay', () => {
  let t: TestRelay
  beforeAll(async () => {
    t = await startTestRelay({
      receiver: { behaviour: { reply: { rcpt: () => ({ code: 451, message: '4.7.1 greylisted, come back later' }) } } },
    })
  }, 30_000)
  afterAll(() => t?.close())

  it('rejects with the deferral and its response, and an NXDOMAIN bounce', async () => {
    const r = await t.send({ from: 'alice@example.test', to: ['bob@example.test', 'carol@nowhere.test'] })
    expect(r.data).toBe(250)
    await t.relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'bob@example.test', 15_000)
    await t.relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'carol@nowhere.test', 15_000)
    const err = await t.receiver.waitForMessages(1, 500).then(
      () => undefined,
      (e: Error) => e,
    )
    expect(err).toBeInstanceOf(Error)
    const text = err!.message
    expect(text).toMatch(/^waitForMessages\(1\): only 0 message\(s\) on 127\.0\.0\.1:\d+ after 500 ms\n/)
    expect(text).toMatch(/deferred bob@example\.test .*451 4\.7\.1 greylisted, come back later/)
    expect(text).toMatch(/bounced carol@nowhere\.test .*NXDOMAIN/)
    expect(text).toMatch(/accepted bob@example\.test,carol@nowhere\.test/)
  }, 40_000)
})

describe('a test receiver with AUTH', () => {
  let rx: TestReceiver
  beforeAll(async () => {
    rx = await startReceiver({ users: { apikey: 's3cret' } })
  })
  afterAll(() => rx?.close())

  it('records the user a message was sent as, and none without AUTH', async () => {
    const withAuth = await send({ port: rx.port, from: 'a@sender.test', to: 'b@example.test', auth: { user: 'apikey', pass: 's3cret' } })
    expect(withAuth.codes).toContain(235)
    expect(withAuth.data).toBe(250)
    const anonymous = await send({ port: rx.port, from: 'a@sender.test', to: 'c@example.test' })
    expect(anonymous.data).toBe(250)
    const [first, second] = await rx.waitForMessages(2)
    expect(first!.authUser).toBe('apikey')
    expect(second!.authUser).toBeUndefined()
  })

  it('refuses a wrong password with 535 and records nothing', async () => {
    const r = await send({ port: rx.port, from: 'a@sender.test', to: 'b@example.test', auth: { user: 'apikey', pass: 'wrong' } })
    expect(r.last).toMatch(/^535 /)
    expect(r.mail).toBeUndefined()
    expect(rx.messages).toHaveLength(2)
  })
})

describe('startRelay on a relay that does not start in time', () => {
  it('rejects, and the relay process it started is stopped, not left running', async () => {
    // A slow machine or a slow plugin setup: the start was given up while the relay went on starting,
    // and every such test left a relay process behind, holding its ports and files.
    const dir = tempDir('relay-slow-start-')
    const before = childNodes(process.pid)
    const started = startRelay({ dir, startTimeoutMs: 1000, config: { setupTimeout: '20s', plugins: [[path.join(ROOT, 'test/fixtures/slow-setup.plugin.ts'), { ms: 15_000 }]] } })
    await expect(started).rejects.toThrow(/relay did not start: timed out after 1000 ms/)
    const left = () => childNodes(process.pid).filter((pid) => !before.includes(pid))
    for (let i = 0; i < 50 && left().length; i++) await new Promise((r) => setTimeout(r, 100))
    expect(left()).toEqual([])
  })
})
