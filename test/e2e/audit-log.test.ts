// The audit log (docs/logging.md): every refusal is one line (`msg: 'refused'`) naming client,
// stage, reply, and the plugin or core rule; delivery lines carry code, dsn and relay; `log.format:
// 'line'` writes Postfix-like lines; and the documented fail2ban filter, run by Debian's own
// `fail2ban-regex` over the log file a relay wrote, finds the refused clients in both formats.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, sendMail } from '../harness/smtp-client.js'
import { BIN, ROOT, eventually, startRelay, tempDir } from '../harness/relay.js'
import { skipFor } from '../harness/services.js'

const FILTER = path.join(ROOT, 'docs/fail2ban/filter.d/relay.conf')
const PASSWORD = 'Audit-Log-Pa55word-91c4'
const fixture = (name: string) => path.join(ROOT, 'test/fixtures', `${name}.plugin.ts`)

/** A relay started as an operator would, its stdout going to a log file. */
interface LoggedRelay {
  file: string
  port: number
  text(): string
  stop(): Promise<void>
}

async function startLogged(format: 'json' | 'line', config: Record<string, unknown>): Promise<LoggedRelay> {
  const dir = tempDir('relay-audit-')
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(configFile, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), smtp: { reverseLookup: false }, log: { level: 'info', format }, shutdownTimeout: '2s', ...config }))
  const file = path.join(dir, 'relay.log')
  const out = fs.openSync(file, 'w')
  const child: ChildProcess = spawn(process.execPath, [BIN, 'start', '--config', configFile], { cwd: dir, stdio: ['ignore', out, 'pipe'] })
  fs.closeSync(out)
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const text = () => fs.readFileSync(file, 'utf8')
  await eventually(() => /relay started/.test(text()) || child.exitCode !== null, 20_000, 'relay started')
  if (child.exitCode !== null) throw new Error(`relay exited: ${stderr}`)
  const port = Number((format === 'json' ? /"port":(\d+)/ : /port=(\d+)/).exec(text())![1])
  return {
    file,
    port,
    text,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

/** Waits for the log file to hold a line the test expects (lines are flushed within 0.1 s). */
const logged = (r: LoggedRelay, match: (line: string) => boolean, what: string) => eventually(() => r.text().split('\n').find(match), 10_000, what)
const jsonLines = (r: LoggedRelay) =>
  r
    .text()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
const refusals = (r: LoggedRelay, client: string) => jsonLines(r).filter((l) => l.msg === 'refused' && l.client === client)

/** Debian's fail2ban is not installed: a skip with a notice, or a failure under RELAY_REQUIRE_SERVICES=1. */
function noFail2ban(what: string): boolean {
  if (spawnSync('sh', ['-c', 'command -v fail2ban-regex && command -v fail2ban-client']).status === 0) return false
  return skipFor('fail2ban-regex is not installed (Debian package fail2ban)', what)
}

/** The client addresses `fail2ban-regex` finds in a log file with the documented filter. */
function fail2banMatches(file: string): string[] | undefined {
  if (noFail2ban('the fail2ban filter check')) return undefined
  const r = spawnSync('fail2ban-regex', ['-v', file, FILTER], { encoding: 'utf8' })
  expect(r.status, r.stderr).toBe(0)
  return [...new Set([...r.stdout.matchAll(/^\|\s+(\d+\.\d+\.\d+\.\d+)\s+\w{3} /gm)].map((m) => m[1]!))].sort()
}

let dns: TestDns
let mx: TestReceiver
let json: LoggedRelay
let line: LoggedRelay

const hops = (n: number) => Array.from({ length: n }, (_, i) => `Received: from hop${i}.test by hop${i + 1}.test; Thu, 3 Dec 2026 07:00:00 +0000\r\n`).join('')
const message = (n: string, extra = '') => `${extra}From: a@sender.test\r\nTo: bob@one.test\r\nSubject: ${n}\r\nMessage-ID: <${n}@sender.test>\r\n\r\nhello\r\n`

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.2' })
  mx.setBehaviour({ reply: { rcpt: ({ address }) => (address === 'busy@one.test' ? { code: 451, message: '4.2.1 mailbox busy' } : undefined) } })
  dns = await startDns({ 'one.test': { MX: [{ exchange: 'mx.test', priority: 10 }] }, 'mx.test': { A: ['127.0.0.2'] } })
  const config = {
    listen: [{ host: '127.0.0.1', port: 0, role: 'mx', allowPlaintextAuth: true }],
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s' },
    smtp: { reverseLookup: false, maxHops: 3 },
    plugins: [
      [fixture('connect-gate'), { refuse: ['127.0.0.66'], refuseHelo: ['bad.helo.test'] }],
      [fixture('static-auth'), { users: { 'alice@sender.test': { password: PASSWORD } } }],
      [fixture('block-recipient'), { blocked: ['blocked@one.test'] }],
      ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
    ],
  }
  ;[json, line] = await Promise.all([startLogged('json', config), startLogged('line', config)])
}, 40_000)

afterAll(async () => {
  await Promise.all([json?.stop(), line?.stop()])
  await Promise.all([dns?.close(), mx?.close()])
})

/** The refusals both relays are given, one client address each (127.0.0.1 is trusted). */
async function refuseAll(port: number): Promise<void> {
  const c = await connectRaw(port, '127.0.0.1', 5000, undefined, '127.0.0.66')
  expect(c.greeting).toMatch(/^554 5\.7\.1 connections from your address are refused/)
  c.client.close()
  const helo = await sendMail(port, { localAddress: '127.0.0.67', helo: 'bad.helo.test', from: 'x@sender.test', to: ['bob@one.test'], data: message('helo') })
  expect(helo.lastReply).toMatch(/^550 5\.7\.1 HELO bad\.helo\.test refused/)
  const relaying = await sendMail(port, { localAddress: '127.0.0.68', from: 'spam@sender.test', to: ['victim@one.test'], data: message('relay') })
  expect(relaying.lastReply).toMatch(/^550 5\.7\.1 Relaying denied/)
  const auth = await sendMail(port, { localAddress: '127.0.0.69', auth: { user: 'alice@sender.test', pass: 'wrong-guess' }, from: 'alice@sender.test', to: ['bob@one.test'], data: message('auth') })
  expect(auth.lastReply).toMatch(/^535 5\.7\.8 /)
  const blocked = await sendMail(port, { localAddress: '127.0.0.70', from: 'x@sender.test', to: ['blocked@one.test'], data: message('blocked') })
  expect(blocked.lastReply).toMatch(/^550 5\.7\.1 recipient blocked/)
  // A loop is refused at the end of DATA, by a core check that is no abuse (5.4.6): nobody is banned for it.
  const loop = await sendMail(port, { from: 'a@sender.test', to: ['bob@one.test'], data: message('loop', hops(4)) })
  expect(loop.lastReply).toMatch(/^554 5\.4\.6 Too many hops/)
  // Commands smtp-server refuses itself (syntax, sequence, unknown): each one line as well.
  const { client } = await connectRaw(port, '127.0.0.1', 5000, undefined, '127.0.0.71')
  expect(await client.command('EHLO two words')).toMatch(/^501 /)
  expect(await client.command('VRFY')).toMatch(/^501 /)
  expect(await client.command('XYZZY')).toMatch(/^500 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250[ -]/)
  expect(await client.command('RCPT TO:<bob@one.test>')).toMatch(/^503 /)
  client.close()
  const ok = await sendMail(port, { from: 'a@sender.test', to: ['bob@one.test', 'busy@one.test'], data: message('ok') })
  expect(ok.lastReply).toMatch(/^250 /)
}

describe('the audit log (JSON)', () => {
  it('writes one refused line per refusal, with client, stage, reply and the plugin or core rule', async () => {
    await refuseAll(json.port)
    await logged(json, (l) => l.includes('"msg":"deferred"'), 'the deferral')
    expect(refusals(json, '127.0.0.66')).toEqual([
      expect.objectContaining({ level: 40, event: 'rejected', stage: 'connect', hook: 'connect', code: 554, dsn: '5.7.1', text: 'connections from your address are refused', plugin: 'connect-gate', clientHostname: '[127.0.0.66]', listener: 'mx', time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) }),
    ])
    expect(refusals(json, '127.0.0.67')).toEqual([expect.objectContaining({ stage: 'helo', hook: 'helo', code: 550, dsn: '5.7.1', plugin: 'connect-gate', helo: 'bad.helo.test', sender: 'x@sender.test', proto: 'ESMTP' })])
    // The closed-relay default: the core rule is named, as no plugin decided.
    const [relaying] = refusals(json, '127.0.0.68')
    expect(refusals(json, '127.0.0.68')).toHaveLength(1)
    expect(relaying).toMatchObject({ stage: 'rcpt', hook: 'rcpt', code: 550, dsn: '5.7.1', rule: 'core:closed-relay', sender: 'spam@sender.test', recipient: 'victim@one.test' })
    expect(relaying).not.toHaveProperty('plugin')
    expect(refusals(json, '127.0.0.70')).toEqual([expect.objectContaining({ stage: 'rcpt', plugin: 'block-recipient', recipient: 'blocked@one.test', text: 'recipient blocked' })])
  })

  it("a command smtp-server refuses itself (bad EHLO, VRFY syntax, unknown command, bad sequence) is one refused line, as the relay's own", () => {
    const rule = 'core:protocol'
    expect(refusals(json, '127.0.0.71')).toEqual([
      expect.objectContaining({ stage: 'helo', hook: 'protocol', command: 'EHLO', code: 501, text: 'Error: syntax: EHLO hostname', rule }),
      expect.objectContaining({ stage: 'command', hook: 'protocol', command: 'VRFY', code: 501, dsn: '5.5.4', rule }),
      expect.objectContaining({ stage: 'command', hook: 'protocol', command: 'XYZZY', code: 500, dsn: '5.5.2', rule }),
      expect.objectContaining({ stage: 'rcpt', hook: 'protocol', command: 'RCPT', code: 503, dsn: '5.5.1', helo: 'client.test', rule }),
    ])
  })

  it('an AUTH failure is one line: the user tried and the method, never the password', () => {
    expect(refusals(json, '127.0.0.69')).toEqual([expect.objectContaining({ stage: 'auth', code: 535, dsn: '5.7.8', plugin: 'static-auth', user: 'alice@sender.test', method: 'PLAIN', failures: 1 })])
    expect(jsonLines(json).filter((l) => l.client === '127.0.0.69' || l.user === 'alice@sender.test')).toHaveLength(1)
    expect(json.text()).not.toContain('wrong-guess')
    expect(json.text()).not.toContain(PASSWORD)
  })

  it('a DATA refusal by a core check names the rule, the envelope and what was wrong', () => {
    const loop = refusals(json, '127.0.0.1').filter((l) => l.stage === 'data')
    expect(loop).toEqual([expect.objectContaining({ hook: 'protocol', code: 554, dsn: '5.4.6', rule: 'core:too-many-hops', sender: 'a@sender.test', recipients: ['bob@one.test'], hops: 4, limit: 3 })])
    expect(jsonLines(json).some((l) => typeof l.msg === 'string' && /too many hops/.test(l.msg))).toBe(false)
  })

  it('delivery lines say what happened, with code, dsn, relay and ISO times', async () => {
    const delivered = jsonLines(json).find((l) => l.msg === 'delivered' && l.recipient === 'bob@one.test')!
    expect(delivered).toMatchObject({ event: 'delivered', code: 250, dsn: '2.0.0', route: 'mx', remoteHost: `mx.test[127.0.0.2]:${mx.port}`, durationMs: expect.any(Number), queuedMs: expect.any(Number) })
    const deferred = jsonLines(json).find((l) => l.msg === 'deferred')!
    expect(deferred).toMatchObject({ event: 'deferred', recipient: 'busy@one.test', code: 451, dsn: '4.2.1', nextAttemptAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) })
    const accepted = jsonLines(json).find((l) => l.msg === 'accepted')!
    expect(accepted).toMatchObject({ event: 'accepted', sender: 'a@sender.test', recipients: ['bob@one.test', 'busy@one.test'], durationMs: expect.any(Number) })
  })

  it('fail2ban-regex with the documented filter finds the refused clients, and not the trusted one', () => {
    const ips = fail2banMatches(json.file)
    if (!ips) return
    expect(ips).toEqual(['127.0.0.66', '127.0.0.67', '127.0.0.68', '127.0.0.69', '127.0.0.70'])
  })
})

describe("log.format: 'line'", () => {
  it('writes Postfix-like lines for refusals and deliveries', async () => {
    await refuseAll(line.port)
    const stamp = String.raw`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ `
    await logged(line, (l) => / status=deferred /.test(l), 'the deferral')
    const text = line.text()
    expect(text).toMatch(new RegExp(`${stamp}relay/smtpd\\[\\d+\\]: NOQUEUE: reject: CONNECT from unknown\\[127\\.0\\.0\\.66\\]: 554 5\\.7\\.1 connections from your address are refused; proto=SMTP by=connect-gate$`, 'm'))
    expect(text).toMatch(/relay\/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.68\]: 550 5\.7\.1 Relaying denied for <victim@one\.test>; from=<spam@sender\.test> to=<victim@one\.test> proto=ESMTP helo=<client\.test> by=core:closed-relay$/m)
    expect(text).toMatch(/NOQUEUE: reject: EHLO from unknown\[127\.0\.0\.71\]: 501 Error: syntax: EHLO hostname; proto=SMTP by=core:protocol$/m)
    expect(text).toMatch(/NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.71\]: 503 5\.5\.1 .*; proto=ESMTP helo=<client\.test> by=core:protocol$/m)
    expect(text).toMatch(/NOQUEUE: reject: AUTH from unknown\[127\.0\.0\.69\]: 535 5\.7\.8 .*sasl_username=alice@sender\.test by=static-auth$/m)
    expect(text).toMatch(new RegExp(`relay/smtp\\[\\d+\\]: \\w+: to=<bob@one\\.test>, relay=mx\\.test\\[127\\.0\\.0\\.2\\]:${mx.port}, delay=\\d+\\.\\d+, dsn=2\\.0\\.0, attempts=1, status=sent \\(250 `, 'm'))
    expect(text).toMatch(/: to=<busy@one\.test>, relay=mx\.test\[127\.0\.0\.2\]:\d+, delay=[\d.]+, dsn=4\.2\.1, attempts=1, status=deferred \(451 4\.2\.1 mailbox busy\), next=\d{4}-/m)
    expect(text).toMatch(/relay\/smtpd\[\d+\]: \w+: client=unknown\[127\.0\.0\.1\], from=<a@sender\.test>, to=<bob@one\.test,busy@one\.test>, size=\d+, nrcpt=2, status=queued$/m)
    // Every line is one line with the time first; none is JSON.
    for (const l of text.trimEnd().split('\n')) expect(l).toMatch(new RegExp(stamp))
  })

  it('fail2ban-regex with the documented filter finds the refused clients', () => {
    const ips = fail2banMatches(line.file)
    if (!ips) return
    expect(ips).toEqual(['127.0.0.66', '127.0.0.67', '127.0.0.68', '127.0.0.69', '127.0.0.70'])
  })

  it("the jail passes fail2ban-client's configuration test with the filter", () => {
    if (noFail2ban('the fail2ban jail check')) return
    // Debian's /etc/fail2ban with the documented filter and jail (the journal backend is opened only at start).
    const dir = tempDir('relay-fail2ban-')
    fs.cpSync('/etc/fail2ban', dir, { recursive: true })
    // Only this jail: Debian's defaults enable sshd, whose log this machine may not have.
    fs.rmSync(path.join(dir, 'jail.d'), { recursive: true, force: true })
    fs.mkdirSync(path.join(dir, 'jail.d'))
    fs.copyFileSync(FILTER, path.join(dir, 'filter.d/relay.conf'))
    fs.copyFileSync(path.join(ROOT, 'docs/fail2ban/jail.d/relay.local'), path.join(dir, 'jail.d/relay.local'))
    const r = spawnSync('fail2ban-client', ['-c', dir, '-t'], { encoding: 'utf8' })
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stdout + r.stderr).toContain('OK: configuration test is successful')
  })

  it('docs/logging.md shows the filter that was tested', () => {
    const docs = fs.readFileSync(path.join(ROOT, 'docs/logging.md'), 'utf8')
    for (const l of fs.readFileSync(FILTER, 'utf8').split('\n').filter((x) => /^(failregex|datepattern| {12}\^)/.test(x))) expect(docs).toContain(l)
  })
})

describe('refusals of MAIL and RCPT parameters name their check', () => {
  it('an unsupported parameter, a bad or too long ENVID/ORCPT, a UTF-8 address without SMTPUTF8: each its own rule (they all read core:protocol, with no command to tell them apart)', async () => {
    const relay = await startRelay({ config: { smtp: { reverseLookup: false } } })
    try {
      const { client } = await connectRaw(relay.port)
      await client.command('EHLO client.test')
      const replies = [
        await client.command('MAIL FROM:<a@sender.test> FOO=bar'),
        await client.command('MAIL FROM:<a@sender.test> ENVID=a+ZZb'),
        await client.command(`MAIL FROM:<a@sender.test> ENVID=${'a'.repeat(150)}`),
        await client.command('MAIL FROM:<jos\u00e9@sender.test>'),
      ]
      client.close()
      expect(replies.map((r) => r.slice(0, 3))).toEqual(['555', '501', '501', '553'])
      const rules = await eventually(() => {
        const found = relay.logs.filter((l) => l.msg === 'refused').map((l) => l.rule)
        expect(found).toHaveLength(4)
        return found
      })
      expect(rules).toEqual(['core:unsupported-parameter', 'core:bad-dsn-parameter', 'core:dsn-parameter-too-long', 'core:smtp-utf8-required'])
    } finally {
      await relay.stop()
    }
  })
})
