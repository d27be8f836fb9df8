// Secrets an operator put in the wrong place, and files that hold them: a private key pasted where a
// file path goes, a password given as passEnv, the webhook outbox (its URL may carry a token). Never
// echoed on the terminal or in the log; never a file others may read.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { makeCa } from '../harness/tls.js'
import { runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const relays: RelayProcess[] = []
afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()))
})

describe('a PEM block pasted where a file path goes', () => {
  it('tls.key, tls.sni.<name>.key, delivery.tlsCa: check-config, start and config show exit 2 naming each key; not a line of the key printed', async () => {
    const ca = makeCa()
    const c = ca.issue(['relay.test'])
    const key = fs.readFileSync(c.key, 'utf8')
    const keyLines = key.split('\n').filter((l) => l && !l.startsWith('-----'))
    const dir = tempDir()
    const config = path.join(dir, 'relay.config.json')
    fs.writeFileSync(config, JSON.stringify({
      hostname: 'relay.test', dataDir: './data', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }],
      tls: { cert: c.cert, key, sni: { 'other.test': { cert: c.cert, key } } },
      delivery: { tlsCa: fs.readFileSync(ca.caFile, 'utf8') },
    }))
    for (const args of [['check-config'], ['start'], ['config', 'show'], ['config', 'show', '--json']]) {
      const r = await runCliAsync([...args, '--config', config])
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2)
      for (const k of ['tls.key', 'tls.sni.other.test.key', 'delivery.tlsCa']) expect(r.stderr, args.join(' ')).toMatch(new RegExp(`${k.replace(/\./g, '\\.')}: holds PEM text \\(or a line break\\), not a file path`))
      for (const line of keyLines) expect(r.stdout + r.stderr, args.join(' ')).not.toContain(line)
    }
  })

  it("dkim-sign's privateKey: check-config and start (log level debug too) exit 2 naming the key; not a line of it printed or logged", async () => {
    const { privateKey } = await import('node:crypto').then((c) => c.generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } }))
    const keyLines = privateKey.split('\n').filter((l) => l && !l.startsWith('-----'))
    const dir = tempDir()
    const config = path.join(dir, 'relay.config.json')
    fs.writeFileSync(config, JSON.stringify({
      hostname: 'relay.test', dataDir: './data', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], log: { level: 'debug' },
      plugins: [['dkim-sign', { keys: [{ domain: 'example.test', selector: 's1', privateKey }] }]],
    }))
    for (const args of [['check-config'], ['start']]) {
      const r = await runCliAsync([...args, '--config', config])
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(/plugins\[0\] \(dkim-sign\) options\.keys\[0\]\.privateKey: holds PEM text \(or a line break\), not a file path/)
      for (const line of keyLines) expect(r.stdout + r.stderr, args.join(' ')).not.toContain(line)
    }
  })
})

describe('routing: a password given as passEnv', () => {
  it('is refused as no variable name, without being printed', async () => {
    const dir = tempDir()
    const config = path.join(dir, 'relay.config.json')
    const route = { name: 'sh', match: { sender: ['example.com'] }, kind: 'smarthost', host: 'smarthost.test', tls: 'starttls', auth: { user: 'acct', passEnv: 'Pa$$w0rd!xyz' } }
    fs.writeFileSync(config, JSON.stringify({ hostname: 'relay.test', dataDir: './data', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], plugins: [['routing', { routes: [route] }]] }))
    const r = await runCliAsync(['check-config', '--config', config])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/options\.routes\[0\]\.auth\.passEnv: expected the name of an environment variable/)
    expect(r.stdout + r.stderr).not.toContain('Pa$$w0rd')
  })
})

describe('the webhook outbox', () => {
  it('is the relay user’s only (0600, with its -wal and -shm), in a data directory others may read, under umask 022', async () => {
    const dir = tempDir()
    const dataDir = path.join(dir, 'data')
    fs.mkdirSync(dataDir, { mode: 0o755 })
    fs.chmodSync(dataDir, 0o755)
    const old = process.umask(0o022)
    try {
      const relay = await startRelay({ dir, config: { dataDir, plugins: [['webhook', { url: 'http://127.0.0.1:9/hook?token=SeCrEtToKeN1234', secret: 'a-webhook-signing-secret' }]] } })
      relays.push(relay)
    } finally {
      process.umask(old)
    }
    const outboxes = fs.readdirSync(dataDir).filter((f) => f.startsWith('webhook-outbox'))
    expect(outboxes.some((f) => f.endsWith('.sqlite'))).toBe(true)
    for (const f of outboxes) expect((fs.statSync(path.join(dataDir, f)).mode & 0o777).toString(8), f).toBe('600')
  })
})
