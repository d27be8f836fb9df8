// auth-file: SMTP AUTH against a users file of scrypt hashes, managed with `relay user add|remove`
// (the real CLI), read by a real relay that picks up changes while it runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, type RawSmtp } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { BIN, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import authFile from '../../plugins/auth-file/index.js'

// Distinctive passwords, so finding one in a file or a log line cannot be a coincidence.
const PW = {
  alice: 'alice-Pw-7f3e!unique',
  bob: 'bob-Pw-91ac%unique',
  bobNew: 'bob-NewPw-2c4d&unique',
  carol: 'carol-Pw-55d0#unique',
  dave: 'dave-Pw-e81b*unique',
  erin: 'erin-Pw-0a9f(unique',
}
const b64 = (s: string) => Buffer.from(s).toString('base64')

let ca: TestCa
let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess
let dir: string
let F: string

const userAdd = (address: string, password: string, ...extra: string[]) =>
  runCli(['user', 'add', address, '--file', F, '--password-stdin', ...extra], { input: `${password}\n` })
const userRemove = (address: string, file = F) => runCli(['user', 'remove', address, '--file', file])
/** Replaces the users file in one step (as an editor saving by rename would), so the relay sees one change. */
function replaceUsersFile(text: string): void {
  fs.writeFileSync(`${F}.edit`, text)
  fs.renameSync(`${F}.edit`, F)
}

/** EHLO, STARTTLS (verified against the test CA), EHLO again: ready for AUTH. */
async function tlsSession(): Promise<RawSmtp> {
  const { client } = await connectRaw(relay.ports.submission!)
  await client.command('EHLO client.test')
  expect(await client.command('STARTTLS')).toMatch(/^220 /)
  await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
  await client.command('EHLO client.test')
  return client
}

async function authPlain(c: RawSmtp, user: string, pass: string): Promise<string> {
  return c.command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`)
}

async function authLogin(c: RawSmtp, user: string, pass: string): Promise<string> {
  const first = await c.command('AUTH LOGIN')
  if (!first.startsWith('334 ')) return first
  const second = await c.command(b64(user))
  if (!second.startsWith('334 ')) return second
  return c.command(b64(pass))
}

/** One login in a fresh session; the reply to AUTH. */
async function login(user: string, pass: string, method: 'PLAIN' | 'LOGIN' = 'PLAIN'): Promise<string> {
  const c = await tlsSession()
  try {
    return await (method === 'PLAIN' ? authPlain : authLogin)(c, user, pass)
  } finally {
    c.close()
  }
}

beforeAll(async () => {
  dir = tempDir('relay-auth-file-')
  F = path.join(dir, 'users.json')
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] } })
  expect(userAdd('alice@example.test', PW.alice, '--sender', 'example.test').code).toBe(0)
  expect(userAdd('bob@example.test', PW.bob).code).toBe(0)
  relay = await startRelay({
    config: {
      tls: { cert: cert.cert, key: cert.key },
      listen: [
        { host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' },
        // Port 25 without AUTH (Postfix's default): no password guessing there.
        { host: '127.0.0.1', port: 0, role: 'mx', tls: 'starttls', auth: false },
      ],
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port },
      plugins: [
        ['auth-file', { file: F }],
        ['relay-acl', { trustedNetworks: [] }],
      ],
      smtp: { authFailureDelay: '10ms', reverseLookup: false },
      log: { level: 'debug' },
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), rx?.close()])
})

describe('relay user add', () => {
  it('stores scrypt hashes (N=16384 r=8 p=1, 16-byte salt) in a 0600 file, never the password', () => {
    const text = fs.readFileSync(F, 'utf8')
    const file = JSON.parse(text) as { users: Record<string, { hash: string; senders?: string[] }> }
    expect(Object.keys(file)).toEqual(['users'])
    expect(Object.keys(file.users)).toEqual(['alice@example.test', 'bob@example.test'])
    expect(file.users['alice@example.test']!.senders).toEqual(['example.test'])
    expect(file.users['bob@example.test']!.senders).toBeUndefined()
    for (const { hash } of Object.values(file.users)) {
      const m = /^scrypt\$16384\$8\$1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash)
      expect(m, hash).not.toBeNull()
      expect(Buffer.from(m![1]!, 'base64')).toHaveLength(16)
      expect(Buffer.from(m![2]!, 'base64')).toHaveLength(32)
    }
    // Same parameters, different random salts: equal passwords would still give different hashes.
    expect(file.users['alice@example.test']!.hash).not.toBe(file.users['bob@example.test']!.hash)
    for (const pw of Object.values(PW)) expect(text).not.toContain(pw)
    expect(fs.statSync(F).mode & 0o777).toBe(0o600)
    // Only the file itself is left (the temporary file was renamed over it).
    expect(fs.readdirSync(dir).filter((f) => f.includes('users'))).toEqual(['users.json'])

    const list = runCli(['user', 'list', '--file', F])
    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(/^alice@example\.test {2}may send as: example\.test$/m)
    expect(list.stdout).toMatch(/^bob@example\.test {2}may send as: bob@example\.test$/m)
    expect(list.stdout).not.toContain('scrypt$')
  })

  it('refuses a bad address, a bad --sender, an empty password, and a missing --password-stdin off a terminal (usage errors: exit 2)', () => {
    const before = fs.readFileSync(F, 'utf8')
    const notAddress = userAdd('not-an-address', 'x')
    expect(notAddress.code).toBe(2)
    expect(notAddress.stderr).toMatch(/^relay: 'not-an-address' is not an email address/)
    const badSender = userAdd('x@example.test', 'x', '--sender', 'two words')
    expect(badSender.code).toBe(2)
    expect(badSender.stderr).toMatch(/--sender 'two words'/)
    // A short password is taken, with a warning; a long one without.
    const short = userAdd('short@example.test', 'abc12')
    expect([short.code, short.stderr]).toEqual([0, 'relay: warning: a password of 5 characters is easy to guess over SMTP AUTH (rate-limit slows guessing, it does not stop it): use 12 or more\n'])
    expect(userAdd('short@example.test', 'a-much-longer-pass').stderr).toBe('')
    expect(userRemove('short@example.test').code).toBe(0)
    const empty = runCli(['user', 'add', 'x@example.test', '--file', F, '--password-stdin'], { input: '\n' })
    expect(empty.code).toBe(2)
    expect(empty.stderr).toMatch(/no password on standard input/)
    const noTty = runCli(['user', 'add', 'x@example.test', '--file', F], { input: 'x\n' })
    expect(noTty.code).toBe(2)
    expect(noTty.stderr).toMatch(/not a terminal: give the password with --password-stdin/)
    expect(fs.readFileSync(F, 'utf8')).toBe(before)
  })

  it('takes the file from the config when --file is not given, else ./users.json', () => {
    const viaConfig = runCli(['user', 'add', 'dave@example.test', '--config', relay.configFile, '--password-stdin'], { input: `${PW.dave}\n` })
    expect(viaConfig.code, viaConfig.stderr).toBe(0)
    expect(viaConfig.stdout).toContain(`added dave@example.test in ${F}`)
    expect(Object.keys(JSON.parse(fs.readFileSync(F, 'utf8')).users)).toContain('dave@example.test')

    const cwd = tempDir('relay-auth-file-cwd-') // no config here: the default file in the current directory
    const plain = runCli(['user', 'add', 'x@example.test', '--password-stdin'], { cwd, input: 'pw\n' })
    expect(plain.code, plain.stderr).toBe(0)
    expect(Object.keys(JSON.parse(fs.readFileSync(path.join(cwd, 'users.json'), 'utf8')).users)).toEqual(['x@example.test'])
  })

  it('asks twice on a terminal without echoing, and refuses two different answers', async () => {
    // A real pseudo-terminal needs python3's pty module (the standard library); Node has none.
    if (spawnSync('python3', ['-c', 'import pty'], { timeout: 5000 }).status !== 0) {
      console.warn('skipped: no python3 to drive a pseudo-terminal; the password prompt was not tested')
      return
    }
    const file = path.join(tempDir('relay-auth-file-tty-'), 'users.json')
    // Waits for the prompt, then types both answers at once (the second is read ahead).
    const script = `
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, end = b'', time.time() + 15
while b'Password: ' not in out and time.time() < end:
    out += os.read(fd, 1024)
os.write(fd, os.environ['ANSWERS'].encode())
while time.time() < end:
    try:
        d = os.read(fd, 1024)
    except OSError:
        break
    if not d:
        break
    out += d
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode())
sys.exit(os.waitstatus_to_exitcode(status))
`
    const tty = (answers: string) =>
      spawnSync('python3', ['-c', script, process.execPath, BIN, 'user', 'add', 'tty@example.test', '--file', file], {
        env: { ...process.env, ANSWERS: answers },
        encoding: 'utf8',
        timeout: 20_000,
      })
    const differ = tty('tty-Pw-one\rtty-Pw-two\r')
    expect(differ.status).toBe(1)
    expect(differ.stdout).toContain('the passwords differ')
    expect(fs.existsSync(file)).toBe(false)

    const ok = tty('tty-Pw-abx\u007fc\rtty-Pw-abc\r') // a backspace is honoured
    expect(ok.status, ok.stdout).toBe(0)
    expect(ok.stdout).toMatch(/Password: \r?\n.*Password again: \r?\n.*added tty@example\.test/s)
    expect(ok.stdout).not.toContain('tty-Pw')
    expect(fs.readFileSync(file, 'utf8')).toMatch(/"tty@example\.test": \{\s+"hash": "scrypt\$/)
  })
})

describe('AUTH against the users file', () => {
  it('loaded the file at start', async () => {
    const loaded = await relay.waitForLog((l) => l.msg === 'users file loaded')
    expect(loaded).toMatchObject({ plugin: 'auth-file', file: F })
  })

  it('offers AUTH only inside TLS; PLAIN and LOGIN succeed with the right password', async () => {
    const { client } = await connectRaw(relay.ports.submission!)
    expect(await client.command('EHLO client.test')).not.toMatch(/AUTH/)
    client.close()
    const c = await tlsSession()
    try {
      expect(await c.command('EHLO client.test')).toMatch(/^250[- ]AUTH PLAIN LOGIN$/m)
    } finally {
      c.close()
    }
    expect(await login('alice@example.test', PW.alice, 'PLAIN')).toMatch(/^235 2\.7\.0 /)
    expect(await login('alice@example.test', PW.alice, 'LOGIN')).toMatch(/^235 2\.7\.0 /)
    expect(await login('Alice@Example.TEST', PW.alice, 'PLAIN')).toMatch(/^235 /) // names are case-insensitive
    expect(await login('bob@example.test', PW.bob, 'LOGIN')).toMatch(/^235 /)
  })

  it('an mx listener with auth: false offers no AUTH, in TLS or not, and refuses the command', async () => {
    const { client } = await connectRaw(relay.ports.mx!)
    try {
      expect(await client.command('EHLO client.test')).not.toMatch(/AUTH/)
      expect(await client.command('STARTTLS')).toMatch(/^220 /)
      await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
      expect(await client.command('EHLO client.test')).not.toMatch(/AUTH/)
      expect(await authPlain(client, 'alice@example.test', PW.alice)).toMatch(/^5\d\d /)
      // The session goes on, unauthenticated.
      expect(await client.command('MAIL FROM:<alice@example.test>')).toMatch(/^250 /)
    } finally {
      client.close()
    }
  })

  it('refuses a wrong password and an unknown user alike with 535 5.7.8', async () => {
    expect(await login('alice@example.test', PW.bob, 'PLAIN')).toMatch(/^535 5\.7\.8 /)
    expect(await login('alice@example.test', `${PW.alice}x`, 'LOGIN')).toMatch(/^535 5\.7\.8 /)
    expect(await login('alice@example.test', '', 'PLAIN')).toMatch(/^535 5\.7\.8 /)
    expect(await login('nobody@example.test', PW.alice, 'PLAIN')).toMatch(/^535 5\.7\.8 /)
    expect(await login('nobody@example.test', PW.alice, 'LOGIN')).toMatch(/^535 5\.7\.8 /)
  })

  it('lets the user send as its senders (a domain; by default its own address) and refuses others with 553 5.7.1', async () => {
    const c = await tlsSession()
    try {
      expect(await authPlain(c, 'alice@example.test', PW.alice)).toMatch(/^235 /)
      expect(await c.command('MAIL FROM:<alice.other@other.test>')).toMatch(/^553 5\.7\.1 /)
      expect(await c.command('MAIL FROM:<anyone@example.test>')).toMatch(/^250 /)
      expect(await c.command('RCPT TO:<u@dest.test>')).toMatch(/^250 /)
      expect(await c.command('DATA')).toMatch(/^354 /)
      const p = c.read()
      c.send(dotStuff('From: anyone@example.test\r\nTo: u@dest.test\r\nSubject: via auth-file\r\n\r\nhello\r\n'))
      expect(await p).toMatch(/^250 2\.0\.0 Ok: queued as /)
    } finally {
      c.close()
    }
    const [m] = await rx.waitForMessages(1, 10_000)
    expect(m!.from).toBe('anyone@example.test')
    expect(m!.to).toEqual(['u@dest.test'])

    const b = await tlsSession()
    try {
      expect(await authLogin(b, 'bob@example.test', PW.bob)).toMatch(/^235 /)
      expect(await b.command('MAIL FROM:<alice@example.test>')).toMatch(/^553 5\.7\.1 /)
      expect(await b.command('MAIL FROM:<"alice"@example.test>')).toMatch(/^553 5\.7\.1 /)
      expect(await b.command('MAIL FROM:<bob+tag@example.test>')).toMatch(/^553 5\.7\.1 /)
      // The quoted spelling of its own address is the same mailbox (RFC 5321 §4.1.2), as in Postfix.
      for (const own of ['"bob"@example.test', '"B\\ob"@Example.Test', 'bob@example.test']) {
        expect(await b.command(`MAIL FROM:<${own}>`), own).toMatch(/^250 /)
        expect(await b.command('RSET')).toMatch(/^250 /)
      }
    } finally {
      b.close()
    }
  })
})

describe('changes while the relay runs', () => {
  it('a user added by the CLI can log in shortly after; removed, it cannot', async () => {
    expect(await login('carol@example.test', PW.carol)).toMatch(/^535 /)
    const added = userAdd('carol@example.test', PW.carol, '--sender', 'carol@example.test', '--sender', 'carol.example.test')
    expect(added.code, added.stderr).toBe(0)
    await eventually(async () => /^235 /.test(await login('carol@example.test', PW.carol)), 5000, 'carol to log in')

    const removed = userRemove('carol@example.test')
    expect(removed.code, removed.stderr).toBe(0)
    expect(removed.stdout).toContain(`removed carol@example.test from ${F}`)
    await eventually(async () => /^535 5\.7\.8 /.test(await login('carol@example.test', PW.carol)), 5000, 'carol to be refused')
    expect(await login('alice@example.test', PW.alice)).toMatch(/^235 /)
  })

  it('a new password replaces the old one and keeps the senders', async () => {
    expect(userAdd('alice@example.test', PW.erin).code).toBe(0) // no --sender: alice keeps example.test
    expect(JSON.parse(fs.readFileSync(F, 'utf8')).users['alice@example.test'].senders).toEqual(['example.test'])
    await eventually(async () => /^235 /.test(await login('alice@example.test', PW.erin)), 5000, 'the new password to work')
    expect(await login('alice@example.test', PW.alice)).toMatch(/^535 /)
    expect(userAdd('alice@example.test', PW.alice).code).toBe(0)
    await eventually(async () => /^235 /.test(await login('alice@example.test', PW.alice)), 5000, 'the old password back')
  })

  it('a broken file keeps the last good users, logs an error that does not quote it, and a fixed file is read again', async () => {
    const good = fs.readFileSync(F, 'utf8')
    const from = relay.logs.length
    // A plain password typed in by hand: refused, and never repeated in the logs.
    replaceUsersFile(JSON.stringify({ users: { 'mallory@example.test': { hash: 'Plain-Typed-In-Pw' }, 'bob@example.test': { password: 'Other-Plain-Pw' } } }))
    await eventually(() => relay.logs.slice(from).find((l) => l.msg === 'users file is broken: keeping the last good users'), 5000, 'the error log')
    replaceUsersFile('{ "users": { "bob@example.test": { "hash": "Not-Json-Plain-Pw ')
    await eventually(() => relay.logs.slice(from).filter((l) => l.msg === 'users file is broken: keeping the last good users').length >= 2, 5000, 'the second error log')
    const errors = relay.logs.slice(from).filter((l) => l.level >= 50)
    expect(errors.map((l) => l.error)).toEqual([
      expect.stringMatching(/users\["mallory@example\.test"\]\.hash: not a password hash: expected scrypt\$N\$r\$p\$salt\$key/),
      expect.stringMatching(/not valid JSON/),
    ])
    expect(errors[0]!.error).toMatch(/users\["bob@example\.test"\]\.password: unknown key/)
    for (const secret of ['Plain-Typed-In-Pw', 'Other-Plain-Pw', 'Not-Json-Plain-Pw']) expect(JSON.stringify(relay.logs)).not.toContain(secret)
    expect(await login('alice@example.test', PW.alice)).toMatch(/^235 /)
    expect(await login('mallory@example.test', 'Plain-Typed-In-Pw')).toMatch(/^535 /)

    // The CLI will not overwrite a file it cannot read.
    const cli = userAdd('erin@example.test', PW.erin)
    expect(cli.code).toBe(1)
    expect(cli.stderr).toMatch(/not valid JSON/)

    const reloads = relay.logs.filter((l) => l.msg === 'users file loaded').length
    replaceUsersFile(good)
    await eventually(() => relay.logs.filter((l) => l.msg === 'users file loaded').length > reloads, 5000, 'the good file to load')
    expect(await login('bob@example.test', PW.bob)).toMatch(/^235 /)
  })

  it('remove of an unknown user (or of a missing file) exits non-zero and changes nothing', () => {
    const before = fs.readFileSync(F, 'utf8')
    const r = userRemove('nobody@example.test')
    expect(r.code).toBe(1)
    expect(r.stderr).toBe(`relay: no user nobody@example.test in ${F}\n`)
    expect(fs.readFileSync(F, 'utf8')).toBe(before)
    const missing = userRemove('bob@example.test', path.join(dir, 'none.json'))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/^relay: no users file at /)
  })

  it('no password ever reached a log line or the users file', () => {
    const logs = JSON.stringify(relay.logs)
    const file = fs.readFileSync(F, 'utf8')
    expect(relay.logs.some((l) => l.msg === 'refused' && l.stage === 'auth' && typeof l.user === 'string')).toBe(true) // failures were logged, by name
    for (const pw of Object.values(PW)) {
      expect(logs).not.toContain(pw)
      expect(file).not.toContain(pw)
    }
  })
})

describe('the plugin on its own (public pieces: options, setup, the auth hook)', () => {
  /** Runs the plugin's setup on a users file (written first unless `text` is undefined); its auth hook and log lines. */
  async function withPlugin(text: string | undefined, extra: Record<string, unknown> = {}) {
    const file = path.join(tempDir('relay-auth-file-unit-'), 'users.json')
    if (text !== undefined) fs.writeFileSync(file, text)
    const lines: Record<string, unknown>[] = []
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk, _enc, cb) => (lines.push(JSON.parse(String(chunk))), cb()) }))
    const options = authFile.options!.parse({ file, ...extra })
    const configDir = path.dirname(file)
    const ctx = { log, options, resolver: undefined as never, hostname: 'relay.test', isLocalDomain: () => false, configDir, resolvePath: (f: string) => path.resolve(configDir, f) }
    const state = (await authFile.setup!({ ...ctx, dataDir: configDir, mode: 'start', watchFile: () => { throw new Error('not used') } })) as never
    const session = {} as never
    const auth = (username: string, password: string) => authFile.hooks!.auth!({ ...ctx, state, session, method: 'PLAIN', username, password, notes: undefined as never, signal: undefined as never })
    const accepts = async (username: string, password: string) => (await auth(username, password))?.action === 'accept'
    return { file, auth, accepts, lines, close: () => authFile.teardown!({ ...ctx, state }) }
  }

  it('verifies a hash made by hand to the documented format (other scrypt parameters too)', async () => {
    const salt = crypto.randomBytes(16)
    const key = crypto.scryptSync('hand-made-pw', salt, 32, { N: 1024, r: 8, p: 2 })
    const hash = `scrypt$1024$8$2$${salt.toString('base64')}$${key.toString('base64')}`
    const p = await withPlugin(JSON.stringify({ users: { 'hand@example.test': { hash, senders: ['*'] }, 'own@example.test': { hash } } }))
    try {
      expect(await p.auth('hand@example.test', 'hand-made-pw')).toMatchObject({ action: 'accept', senders: ['*'] })
      expect(await p.auth('own@example.test', 'hand-made-pw')).toMatchObject({ action: 'accept', senders: ['own@example.test'] })
      expect(await p.auth('hand@example.test', 'hand-made-pX')).toMatchObject({ action: 'reject' })
      expect(await p.auth('who@example.test', 'hand-made-pw')).toMatchObject({ action: 'reject' })
      expect(p.lines.find((l) => l.msg === 'users file loaded')).toMatchObject({ users: 2 })
    } finally {
      p.close()
    }
  })

  it('an AUTH flood is answered 454 (try later) beyond the bounded line of password checks, not queued without end', async () => {
    // scrypt runs in libuv's thread pool, shared with spool writes and DNS lookups: at most half of
    // it checks passwords, 64 more wait, and the rest are told to try again later.
    const salt = crypto.randomBytes(16)
    const hash = `scrypt$16384$8$1$${salt.toString('base64')}$${crypto.scryptSync('flood-pw', salt, 32, { N: 16384, r: 8, p: 1 }).toString('base64')}`
    const p = await withPlugin(JSON.stringify({ users: { 'flood@example.test': { hash } } }))
    try {
      const verdicts = await Promise.all(Array.from({ length: 100 }, (_, i) => p.auth(i % 2 ? 'flood@example.test' : `who${i}@example.test`, 'wrong')))
      const actions = verdicts.map((v) => v?.action)
      expect(actions.filter((a) => a === 'tempfail').length).toBeGreaterThanOrEqual(100 - 64 - 2)
      expect(actions.filter((a) => a === 'reject').length).toBeGreaterThanOrEqual(64)
      expect(actions.every((a) => a === 'tempfail' || a === 'reject')).toBe(true)
      expect(p.lines.some((l) => l.level === 40 && /password checks busy/.test(String(l.msg)))).toBe(true)
      // Once the line is worked off, the right password gets in.
      expect(await p.auth('flood@example.test', 'flood-pw')).toMatchObject({ action: 'accept' })
    } finally {
      p.close()
    }
  })

  it('an unknown user costs about as much as a wrong password (a dummy hash is checked)', async () => {
    const salt = crypto.randomBytes(16)
    const hash = `scrypt$16384$8$1$${salt.toString('base64')}$${crypto.scryptSync('pw', salt, 32, { N: 16384, r: 8, p: 1 }).toString('base64')}`
    const p = await withPlugin(JSON.stringify({ users: { 'timing@example.test': { hash } } }))
    try {
      const time = async (user: string) => {
        const t = process.hrtime.bigint()
        for (let i = 0; i < 3; i++) expect(await p.auth(user, 'wrong')).toMatchObject({ action: 'reject' })
        return Number(process.hrtime.bigint() - t) / 3e6
      }
      await time('timing@example.test') // warm up
      const known = await time('timing@example.test')
      const unknown = await time('nobody@example.test')
      // Both run one scrypt with N=16384 (tens of ms); without the dummy an unknown name would take ~0 ms.
      expect(unknown).toBeGreaterThan(known / 3)
    } finally {
      p.close()
    }
  })

  it('starts without a file (nobody can log in), reads it once created, and forgets everyone when it is removed', async () => {
    const p = await withPlugin(undefined, { checkInterval: 60 }) // watching only: the stat check is a minute away
    try {
      expect(p.lines.find((l) => l.level === 40)?.msg).toMatch(/users file not found/)
      expect(await p.accepts('new@example.test', 'new-pw')).toBe(false)
      expect(runCli(['user', 'add', 'new@example.test', '--file', p.file, '--password-stdin'], { input: 'new-pw\n' }).code).toBe(0)
      await eventually(() => p.accepts('new@example.test', 'new-pw'), 5000, 'the created file to be read')
      fs.rmSync(p.file)
      await eventually(async () => !(await p.accepts('new@example.test', 'new-pw')), 5000, 'the removed file to count as no users')
      expect(p.lines.some((l) => l.level === 40 && /users file removed/.test(String(l.msg)))).toBe(true)
    } finally {
      p.close()
    }
  })

  it('with watch: false, the stat check alone picks up a change', async () => {
    const p = await withPlugin('{ "users": {} }', { watch: false, checkInterval: '200ms' })
    try {
      expect(runCli(['user', 'add', 'polled@example.test', '--file', p.file, '--password-stdin'], { input: 'polled-pw\n' }).code).toBe(0)
      await eventually(() => p.accepts('polled@example.test', 'polled-pw'), 5000, 'the stat check to see the change')
    } finally {
      p.close()
    }
  })

  it('refuses option mistakes by name', () => {
    expect(authFile.options!.safeParse({}).success).toBe(false)
    expect(authFile.options!.safeParse({ file: 'u.json', checkInterval: 'often' }).success).toBe(false)
    expect(authFile.options!.safeParse({ file: 'u.json', extra: 1 }).success).toBe(false)
    expect(authFile.options!.safeParse({ file: 'u.json', checkInterval: '0ms' }).success).toBe(false)
    expect(authFile.options!.parse({ file: 'u.json', checkInterval: '500ms' })).toEqual({ file: 'u.json', checkInterval: 500, watch: true })
    expect(authFile.options!.parse({ file: 'u.json', checkInterval: 3 }).checkInterval).toBe(3000)
  })
})

describe('relay check-config and the users file', () => {
  // A users file the relay cannot use (unreadable: `relay user add` run as root writes it 0600 for
  // root; or broken: a hand edit) passed `config ok`, and the relay then let nobody log in. The
  // relay still starts with it (mail on other listeners must flow); check-config says what is wrong.
  // A missing file stays fine: `relay user add` creates it.
  const configWith = (users: string) => {
    const d = tempDir('relay-authfile-check-')
    const file = path.join(d, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ hostname: 'check.example', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: './data', plugins: [['auth-file', { file: users }]] }))
    return { d, file }
  }

  it('a broken users file is a problem naming the plugin and the fault (exit 2); a missing one is not', () => {
    const broken = configWith('./users.json')
    fs.writeFileSync(path.join(broken.d, 'users.json'), JSON.stringify({ users: { 'a@example.com': { password: 'oops' } } }))
    const r = runCli(['check-config', '--config', broken.file])
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toMatch(/plugins\[0\] \(auth-file\): setup: .*users\.json.*\[RELAY_ERR_PLUGIN_SETUP\]/)
    expect(r.stderr).not.toContain('oops')

    const missing = configWith('./nobody-yet.json')
    expect(runCli(['check-config', '--config', missing.file]).code).toBe(0)
  })

  it('a users file the relay user cannot read is a problem too', () => {
    if (process.getuid?.() !== 0) return // needs another user to read as
    const c = configWith('./users.json')
    fs.chmodSync(c.d, 0o755)
    fs.mkdirSync(path.join(c.d, 'data'))
    fs.chmodSync(path.join(c.d, 'data'), 0o777)
    fs.writeFileSync(path.join(c.d, 'users.json'), JSON.stringify({ users: {} }), { mode: 0o600 })
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'check-config', '--config', c.file], { encoding: 'utf8' })
    expect(r.status, r.stdout).toBe(2)
    expect(r.stderr).toMatch(/plugins\[0\] \(auth-file\): setup: .*users\.json: cannot read: EACCES/)
  })
})
