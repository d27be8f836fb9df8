// Hot reload (SIGHUP, `relay reload`): plugin options change under an open session, an invalid
// config is refused with the reason while the old one stays in force, local domains and
// certificates (new paths) apply to new work, restart-only keys are named.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { BIN, ROOT, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const BLOCK = path.join(ROOT, 'test/fixtures/block-recipient.plugin.ts')
let ca: TestCa
let certA: { key: string; cert: string }
let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess

type Config = Record<string, any>
const readConfig = (): Config => JSON.parse(fs.readFileSync(relay.configFile, 'utf8'))
const writeConfig = (c: Config) => fs.writeFileSync(relay.configFile, JSON.stringify(c, null, 2))
const withBlocked = (c: Config, blocked: unknown) => ({ ...c, plugins: [[BLOCK, { blocked }], ...c.plugins.slice(1)] })
const reload = () => runCli(['reload', '--config', relay.configFile])
const count = (msg: string) => relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(msg)).length
const implicitPort = () => (relay.logs.find((l) => l.msg?.startsWith?.('listening on') && l.tls === 'implicit')!.port as number)

/** How the relay answers RCPT for `to` now (a fresh session), from 127.0.0.1 or another loopback address. */
async function rcptReply(to: string, localAddress?: string): Promise<string> {
  const { client } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, localAddress)
  try {
    await client.command('EHLO client.test')
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    return await client.command(`RCPT TO:<${to}>`)
  } finally {
    await client.command('QUIT', 1000).catch(() => undefined)
    client.close()
  }
}

function peerSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'relay.test', ca: ca.caPem }, () => {
      const n = s.getPeerCertificate().serialNumber
      s.destroy()
      resolve(n.toUpperCase())
    })
    s.on('error', reject)
  })
}
const serialOf = (certFile: string) => new crypto.X509Certificate(fs.readFileSync(certFile)).serialNumber.toUpperCase()

beforeAll(async () => {
  ca = makeCa()
  certA = ca.issue(['relay.test'], { file: 'first' })
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] }, 'sender.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      listen: [
        { host: '127.0.0.1', port: 0, role: 'mx' },
        { host: '127.0.0.1', port: 0, role: 'mx', tls: 'implicit' },
      ],
      tls: { cert: certA.cert, key: certA.key },
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port },
      plugins: [
        [BLOCK, { blocked: ['x@dest.test'] }],
        ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
        // Last, so the tests' edits of plugins[0] leave it where it is (kept across reloads).
        ['admin', { host: '127.0.0.1', port: 0, insecureNoToken: true }],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, rx].map((x) => x?.close()))
})

describe('relay reload (admin API)', () => {
  it("changes a plugin's option while a session is open: the session goes on and its next transaction sees the new option", async () => {
    const { client } = await connectRaw(relay.port)
    try {
      await client.command('EHLO client.test')
      expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
      expect(await client.command('RCPT TO:<x@dest.test>')).toMatch(/^550 5\.7\.1 /)
      expect(await client.command('RCPT TO:<y@dest.test>')).toMatch(/^250 /)

      writeConfig(withBlocked(readConfig(), ['y@dest.test']))
      const r = reload()
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toBe('config reloaded\n  changed: plugins\n')
      await relay.waitForLog((l) => l.msg === 'config reloaded')

      // The same session, a new transaction: the new option decides.
      expect(await client.command('RSET')).toMatch(/^250 /)
      expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
      expect(await client.command('RCPT TO:<y@dest.test>')).toMatch(/^550 5\.7\.1 /)
      expect(await client.command('RCPT TO:<x@dest.test>')).toMatch(/^250 /)
      expect(await client.command('DATA')).toMatch(/^354 /)
      const end = client.read(10_000)
      client.send(dotStuff('From: <alice@sender.test>\r\nSubject: across a reload\r\n\r\nhi\r\n'))
      expect(await end).toMatch(/^250 2\.0\.0 Ok: queued as /)
    } finally {
      client.close()
    }
    await eventually(() => rx.messages.some((m) => m.to.includes('x@dest.test')), 10_000, 'message delivered')
  })

  it('refuses an invalid config with the reason, and the old one stays in force (mail still flows)', async () => {
    const good = readConfig()
    const refusedBefore = count('config reload refused')

    writeConfig({ ...good, smtp: { ...good.smtp, maxRecipients: 0 } })
    const r = reload()
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/reload refused, the running config stays in force:\ninvalid config in .*relay\.config\.json:\n {2}smtp\.maxRecipients: /)
    await eventually(() => count('config reload refused') === refusedBefore + 1, 5000, 'refusal logged')
    expect(relay.logs.filter((l) => l.msg?.startsWith?.('config reload refused')).at(-1)).toMatchObject({ level: 50, issues: [{ path: 'smtp.maxRecipients' }] })

    // A plugin option that does not validate: refused, naming the plugin's option.
    writeConfig(withBlocked(good, 'not-a-list'))
    const p = reload()
    expect(p.code).toBe(1)
    expect(p.stderr).toMatch(/plugins\[0\] \(block-recipient\) options\.blocked: /)

    // A file that does not parse at all: a refused reload as any other (exit 1); the CLI cannot find
    // the relay through it, and the relay refuses it the same way.
    fs.writeFileSync(relay.configFile, '{ "plugins": [')
    try {
      const s = reload()
      expect(s.code, s.stderr).toBe(1)
      expect(s.stderr).toMatch(/^relay: reload refused, the running config stays in force \(not sent: the file cannot be read, so no relay would take it\):\n[\s\S]*cannot load config/)
      const { url } = JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }
      const res = await fetch(`${url}/api/reload`, { method: 'POST' })
      expect(res.status).toBe(422)
      expect(await res.json()).toEqual({ ok: false, error: expect.stringMatching(/cannot load config/) })
    } finally {
      writeConfig(good)
    }

    // Still the config of the last good reload: y blocked, x taken, and mail is delivered.
    expect(await rcptReply('y@dest.test')).toMatch(/^550 5\.7\.1 /)
    const sent = await sendMail(relay.port, { from: 'alice@sender.test', to: ['x@dest.test'], data: 'From: <alice@sender.test>\r\nSubject: after refusals\r\n\r\nhi\r\n' })
    expect(sent.lastReply).toMatch(/^250 /)
    await eventually(() => rx.messages.some((m) => m.raw.toString().includes('Subject: after refusals')), 10_000, 'message delivered')
    writeConfig(good)
  })

  it('SIGHUP reloads the same way, and refuses an invalid config the same way', async () => {
    const good = readConfig()
    const reloaded = count('config reloaded')
    writeConfig(withBlocked(good, ['z@dest.test']))
    relay.child.kill('SIGHUP')
    await eventually(() => count('config reloaded') === reloaded + 1, 10_000, 'reload after SIGHUP')
    expect(await rcptReply('z@dest.test')).toMatch(/^550 5\.7\.1 /)
    expect(await rcptReply('y@dest.test')).toMatch(/^250 /)

    const refused = count('config reload refused')
    writeConfig({ ...withBlocked(good, ['y@dest.test']), delivery: { ...good.delivery, retry: { base: 'soon' } } })
    relay.child.kill('SIGHUP')
    await eventually(() => count('config reload refused') === refused + 1, 10_000, 'refusal after SIGHUP')
    expect(relay.logs.filter((l) => l.msg?.startsWith?.('config reload refused')).at(-1)!.msg).toMatch(/delivery\.retry\.base/)
    expect(await rcptReply('z@dest.test')).toMatch(/^550 5\.7\.1 /)
    expect(await rcptReply('y@dest.test')).toMatch(/^250 /)
    writeConfig(withBlocked(good, ['z@dest.test']))
  })

  it('a syntax error next to a secret: the refusal (log, reload-result.json, only for the relay user) names the place, never the config text', async () => {
    const good = readConfig()
    const secret = 'leak-S3cr3t-0042@dest.test'
    const refused = count('config reload refused')
    fs.writeFileSync(relay.configFile, JSON.stringify(withBlocked(good, [secret]), null, 2).replace(`"${secret}"`, `"${secret}",,`))
    try {
      relay.child.kill('SIGHUP')
      await eventually(() => count('config reload refused') === refused + 1, 10_000, 'refusal after SIGHUP')
      const line = relay.logs.filter((l) => l.msg?.startsWith?.('config reload refused')).at(-1)!
      expect(JSON.stringify(line)).toMatch(/relay\.config\.json:\d+:\d+/)
      expect(JSON.stringify(line)).not.toContain('S3cr3t')
      const resultFile = path.join(relay.dataDir, 'reload-result.json')
      await eventually(() => fs.readFileSync(resultFile, 'utf8').includes('"ok":false') || undefined, 5000, 'the refusal in reload-result.json')
      expect(fs.readFileSync(resultFile, 'utf8')).not.toContain('S3cr3t')
      expect(fs.statSync(resultFile).mode & 0o077).toBe(0)
      // The operator's own terminal still gets the lines around the error.
      const check = runCli(['check-config', '--config', relay.configFile])
      expect(check.code).toBe(2)
      expect(check.stderr).toContain(secret)
    } finally {
      writeConfig(good)
    }
  })

  it('applies new local domains at once and names settings that need a restart', async () => {
    // 127.0.0.77 is not a trusted network: it may send only to local domains.
    expect(await rcptReply('someone@local.test', '127.0.0.77')).toMatch(/^550 5\.7\.1 Relaying denied/)
    const c = readConfig()
    writeConfig({ ...c, localDomains: ['local.test'], hostname: 'renamed.test', smtp: { ...c.smtp, maxRecipients: 50 } })
    const r = reload()
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('config reloaded\n  changed: hostname, localDomains, smtp.maxRecipients\n  needs a restart to take effect: hostname\n')
    const warn = await relay.waitForLog((l) => l.level === 40 && l.key === 'hostname')
    expect(warn.msg).toBe('config reload: hostname changed; it takes effect after a restart')
    expect(await rcptReply('someone@local.test', '127.0.0.77')).toMatch(/^250 /)
    // The greeting still names the old host: hostname waits for a restart.
    const { client, greeting } = await connectRaw(relay.port)
    client.close()
    expect(greeting).toMatch(/^220 relay\.test /)
  })

  it('keeps the admin plugin across reloads (its listener, admin.json, its counters); changed options need a restart', async () => {
    const file = path.join(relay.dataDir, 'admin.json')
    const before = fs.readFileSync(file, 'utf8')
    const listening = count('admin listener on')
    const c = readConfig()
    const at = c.plugins.findIndex((p: unknown) => Array.isArray(p) && p[0] === 'admin')
    const withHosts = c.plugins.map((p: [string, object], i: number) => (i === at ? ['admin', { ...p[1], hosts: ['relay-admin.test'] }] : p))
    writeConfig({ ...c, plugins: withHosts })
    try {
      const r = reload()
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`needs a restart to take effect: .*plugins\\[${at}\\] \\(admin\\)`))
      // The same listener answered the reload it was asked for, and still answers.
      expect(fs.readFileSync(file, 'utf8')).toBe(before)
      expect(count('admin listener on')).toBe(listening)
      const { url } = JSON.parse(before) as { url: string }
      expect((await fetch(`${url}/readyz`)).status).toBe(200)
      // Counters from before the reloads are still there (mail was accepted in the tests above).
      expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/^relay_messages_accepted_total\{listener="mx"\} [1-9]/m)
    } finally {
      writeConfig(c)
    }
    const back = reload()
    expect(back.code, back.stderr).toBe(0)
    expect(back.stdout).not.toContain('(admin)')
  })

  it('serves a certificate from new paths to new connections; a TLS session opened before goes on', async () => {
    const port = implicitPort()
    expect(await peerSerial(port)).toBe(serialOf(certA.cert))
    const { client } = await connectRaw(port, '127.0.0.1', 5000, { ca: ca.caPem, servername: 'relay.test' })
    await client.command('EHLO client.test')

    const certB = ca.issue(['relay.test'], { file: 'second' })
    writeConfig({ ...readConfig(), tls: { cert: certB.cert, key: certB.key } })
    const r = reload()
    expect(r.code, r.stderr).toBe(0)
    // hostname still differs from what runs (it waits for a restart), so it is named again.
    expect(r.stdout).toBe('config reloaded\n  changed: hostname, tls.cert, tls.key\n  needs a restart to take effect: hostname\n')
    expect(await peerSerial(port)).toBe(serialOf(certB.cert))

    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<tls@dest.test>')).toMatch(/^250 /)
    expect(await client.command('QUIT')).toMatch(/^221 /)
    client.close()

    // A certificate path that cannot be read: refused, the certificate in use stays.
    writeConfig({ ...readConfig(), tls: { cert: path.join(tempDir(), 'missing.crt'), key: certB.key } })
    const bad = reload()
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/tls\.cert: cannot read .*missing\.crt: no such file/)
    expect(await peerSerial(port)).toBe(serialOf(certB.cert))

    // What start and check-config refuse, a reload refuses, restart-only settings included, and
    // nothing of that config is applied (the recipient limit below stays as it was): a key that is
    // not the certificate's, two listeners on one address, a data directory that cannot be used.
    const good = readConfig()
    const limit = async () => {
      const c = (await connectRaw(relay.port)).client
      await c.command('EHLO client.test')
      await c.command('MAIL FROM:<alice@sender.test>')
      const replies = [await c.command('RCPT TO:<l1@dest.test>'), await c.command('RCPT TO:<l2@dest.test>')]
      c.close()
      return replies.map((r) => r.slice(0, 3))
    }
    expect(await limit()).toEqual(['250', '250'])
    const file = path.join(tempDir(), 'file')
    fs.writeFileSync(file, '')
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ tls: { cert: certB.cert, key: certA.key } }, /tls: the key .* does not belong to the certificate/],
      [{ listen: [...good.listen, { host: '127.0.0.1', port: 2, role: 'mx' }, { host: '127.0.0.1', port: 2, role: 'mx' }] }, /listen\[3\]: .*is already listen\[2\]/],
      [{ dataDir: path.join(file, 'data') }, /dataDir: cannot create .*: .*file is not a directory/],
    ]
    const { url } = JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }
    for (const [change, reason] of cases) {
      writeConfig({ ...good, ...change, smtp: { ...good.smtp, maxRecipients: 1 } })
      if (!('dataDir' in change)) {
        const refused = reload()
        expect(refused.code, refused.stdout).toBe(1)
        expect(refused.stderr).toMatch(reason)
      }
      // (The CLI finds the relay by the data directory the config names: through the admin API here.)
      const res = await fetch(`${url}/api/reload`, { method: 'POST' })
      expect(res.status).toBe(422)
      expect(((await res.json()) as { error: string }).error).toMatch(reason)
      expect(await limit()).toEqual(['250', '250'])
      expect(await peerSerial(port)).toBe(serialOf(certB.cert))
    }
    writeConfig(good)
  })
})

describe('relay reload without an admin listener', () => {
  it('sends SIGHUP to the pid in relay.pid; with no relay running it exits 1', async () => {
    const plain = await startRelay({ config: { plugins: [[BLOCK, { blocked: ['x@dest.test'] }]] } })
    try {
      expect(fs.readFileSync(path.join(plain.dataDir, 'relay.pid'), 'utf8')).toBe(`${plain.child.pid}\n`)
      const c = JSON.parse(fs.readFileSync(plain.configFile, 'utf8'))
      fs.writeFileSync(plain.configFile, JSON.stringify({ ...c, plugins: [[BLOCK, { blocked: ['w@dest.test'] }]] }))
      const r = runCli(['reload', '--config', plain.configFile])
      expect(r.code, r.stderr).toBe(0)
      // The relay's answer comes through <dataDir>/reload-result.json, admin listener or not.
      expect(r.stdout).toBe('config reloaded\n  changed: plugins\n')
      await plain.waitForLog((l) => l.msg === 'config reloaded')
    } finally {
      expect(await plain.stop()).toBe(0)
    }
    expect(fs.existsSync(path.join(plain.dataDir, 'relay.pid'))).toBe(false)
    const none = runCli(['reload', '--config', plain.configFile])
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/no running relay found for /)

    // A relay.pid left behind (kill -9, a crash, a reboot) whose pid now belongs to another
    // process: `relay reload` sent that process SIGHUP, which ends most programs. A pid counts
    // only while a relay holds the data directory's lock (relay.lock).
    const other = spawn('sleep', ['60'], { stdio: 'ignore' })
    try {
      fs.writeFileSync(path.join(plain.dataDir, 'relay.pid'), `${other.pid}\n`)
      const stale = runCli(['reload', '--config', plain.configFile])
      expect(stale.code).toBe(1)
      expect(stale.stderr).toMatch(/no running relay found for /)
      await new Promise((r) => setTimeout(r, 200))
      expect([other.exitCode, other.signalCode]).toEqual([null, null])
    } finally {
      other.kill('SIGKILL')
    }
  })

  it('run by a user who may not see or signal the relay: says so, not "no running relay found"', async () => {
    // That user: nobody under root; otherwise this user with the data directory closed to it.
    const asRoot = process.getuid?.() === 0
    const relay = await startRelay()
    const run = () => {
      const argv = [process.execPath, BIN, 'reload', '--config', relay.configFile]
      const r = asRoot ? spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...argv], { cwd: '/', encoding: 'utf8', timeout: 30_000 }) : spawnSync(argv[0]!, argv.slice(1), { cwd: '/', encoding: 'utf8', timeout: 30_000 })
      return { code: r.status, stderr: r.stderr }
    }
    const dirMode = fs.statSync(relay.dir).mode & 0o777
    const dataMode = fs.statSync(relay.dataDir).mode & 0o777
    try {
      fs.chmodSync(relay.dir, 0o755) // the config is readable
      if (!asRoot) fs.chmodSync(relay.dataDir, 0o000)
      const hidden = run()
      expect(hidden.code).toBe(1)
      expect(hidden.stderr).toBe(`relay: cannot read ${path.join(relay.dataDir, 'relay.pid')}: permission denied; run relay reload as the relay's user (sudo -u relay relay reload), or as root\n`)
      if (asRoot) {
        // It may read relay.pid but not signal another user's process.
        fs.chmodSync(relay.dataDir, 0o755)
        const signal = run()
        expect(signal.code).toBe(1)
        expect(signal.stderr).toBe(`relay: cannot signal relay ${relay.child.pid}: permission denied; run relay reload as the relay's user (sudo -u relay relay reload), or as root\n`)
      }
    } finally {
      fs.chmodSync(relay.dir, dirMode)
      fs.chmodSync(relay.dataDir, dataMode)
      expect(await relay.stop()).toBe(0)
    }
  })
})
