// Secrets never reach the log, as an operator reads it: a plugin that logs a password, a token or a
// secret, at any of the first four levels of what it logs, in a child logger's bindings, on an Error,
// or interpolated into the message, gets '[redacted]' written in its place. The lines keep
// everything else (the error's message, the fields beside the secret).
import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { connectRaw } from '../harness/smtp-client.js'

const relays: RelayProcess[] = []
afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
})

const PLUGIN = `
const leak = (log, where) => {
  log.info({ where, password: 'S1-pw', user: { name: 'ann', pass: 'S2-pass' }, deep: { a: { token: 'S3-tok' } }, deeper: { a: { b: { secret: 'S4-sec' } } }, list: [{ secret: 'S5-sec' }] }, 'leak: nested')
  const err = Object.assign(new Error('login refused'), { code: 'EAUTH', config: { auth: { user: 'ann', pass: 'S6-pass' }, password: 'S7-pw' } })
  log.error({ where, err }, 'leak: error field')
  log.error(err)
  log.info('leak: interpolated %j (' + where + ')', { token: 'S8-tok', ok: 1 })
  log.child({ secret: 'S9-sec', opts: { password: 'S10-pw' } }).child({ token: 'S11-tok' }).info({ where, kept: 'visible' }, 'leak: child')
}
export default {
  name: 'leaky',
  setup(ctx) { leak(ctx.log, 'setup') },
  hooks: { rcpt(ctx) { leak(ctx.log, 'rcpt') } },
}
`

describe('secrets in log lines', () => {
  it("a plugin's secrets, nested, on an Error, interpolated or in a child's bindings, are written as [redacted]; the rest of the line is kept", async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'leaky.mjs'), PLUGIN)
    const relay = await startRelay({ dir, config: { localDomains: ['local.test'], plugins: [path.join(dir, 'leaky.mjs')] } })
    relays.push(relay)
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    await client.command('MAIL FROM:<a@remote.test>')
    expect(await client.command('RCPT TO:<b@local.test>')).toMatch(/^250/)
    await client.command('QUIT').catch(() => undefined)
    client.close()
    await relay.waitForLog((l) => l.msg === 'leak: child' && l.where === 'rcpt', 10_000)

    const lines = relay.logs.filter((l) => JSON.stringify(l).includes('leak') || l.msg === 'login refused')
    expect(lines.length).toBeGreaterThanOrEqual(10)
    const text = JSON.stringify(lines)
    for (let i = 1; i <= 11; i++) expect(text).not.toMatch(new RegExp(`S${i}-`))

    const nested = lines.find((l) => l.msg === 'leak: nested' && l.where === 'rcpt')!
    expect(nested).toMatchObject({ password: '[redacted]', user: { name: 'ann', pass: '[redacted]' }, deep: { a: { token: '[redacted]' } }, deeper: { a: { b: { secret: '[redacted]' } } }, list: [{ secret: '[redacted]' }] })
    const withErr = lines.find((l) => l.msg === 'leak: error field' && l.where === 'rcpt')!
    expect(withErr.err).toMatchObject({ type: 'Error', message: 'login refused', code: 'EAUTH', config: { auth: { user: 'ann', pass: '[redacted]' }, password: '[redacted]' } })
    expect(String((withErr.err as { stack?: string }).stack)).toContain('login refused')
    expect(lines.find((l) => l.msg === 'login refused')!.err).toMatchObject({ message: 'login refused', config: { password: '[redacted]' } })
    expect(lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('leak: interpolated'))!.msg).toContain('{"token":"[redacted]","ok":1}')
    expect(lines.find((l) => l.msg === 'leak: child' && l.where === 'setup')).toMatchObject({ secret: '[redacted]', opts: { password: '[redacted]' }, token: '[redacted]', kept: 'visible' })
  })
})
