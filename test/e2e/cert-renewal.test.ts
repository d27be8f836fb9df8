// A certbot renewal is picked up without a reload: certbot writes new files under archive/<name>/
// and re-points the symlinks in live/<name>/ at them (unlink + symlink, as certbot's storage.py
// does); the next STARTTLS connection gets the new certificate, a session opened before goes on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import pino from 'pino'
import { makeCa, type TestCa } from '../harness/tls.js'
import { connectRaw } from '../harness/smtp-client.js'
import { eventually, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { TlsCertificates } from '../../core/smtp/tls-watch.js'
import type { TlsFiles } from '../../core/smtp/tls.js'

const NAME = 'relay.test'
const KINDS = ['cert', 'privkey', 'chain', 'fullchain'] as const

let ca: TestCa
let relay: RelayProcess
/** The letsencrypt directory: live/, archive/ and renewal-hooks/ as certbot keeps them. */
let le: string
const serials: string[] = []

/** Writes archive/<NAME>/{cert,privkey,chain,fullchain}<n>.pem for a new certificate; returns its serial. */
function archiveVersion(n: number): string {
  const issued = ca.issue([NAME], { file: `renewal-${n}` })
  const cert = fs.readFileSync(issued.cert)
  const dir = path.join(le, 'archive', NAME)
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, `cert${n}.pem`), cert)
  fs.writeFileSync(path.join(dir, `privkey${n}.pem`), fs.readFileSync(issued.key), { mode: 0o600 })
  fs.writeFileSync(path.join(dir, `chain${n}.pem`), ca.caPem)
  fs.writeFileSync(path.join(dir, `fullchain${n}.pem`), Buffer.concat([cert, ca.caPem]))
  return new crypto.X509Certificate(cert).serialNumber.toUpperCase()
}

/** Points live/<NAME>/*.pem at version n the way certbot does: relative links, unlink then symlink. */
function pointLive(n: number): void {
  const dir = path.join(le, 'live', NAME)
  fs.mkdirSync(dir, { recursive: true })
  for (const kind of KINDS) {
    const link = path.join(dir, `${kind}.pem`)
    fs.rmSync(link, { force: true })
    fs.symlinkSync(`../../archive/${NAME}/${kind}${n}.pem`, link)
  }
}

/** EHLO, STARTTLS, handshake: the serial of the certificate served (verified against the test CA). */
function starttlsSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const plain = net.connect(port, '127.0.0.1')
    const fail = (err: Error) => {
      plain.destroy()
      reject(err)
    }
    plain.setTimeout(5000, () => fail(new Error('timed out')))
    plain.on('error', fail)
    let buf = ''
    let step = 0
    plain.on('data', (d: Buffer) => {
      buf += d.toString()
      if (!/(^|\n)\d{3} [^\n]*\r\n$/.test(buf)) return // a whole (last line of a) reply
      const reply = buf
      buf = ''
      if (step === 0 && reply.startsWith('220')) plain.write('EHLO probe.test\r\n')
      else if (step === 1 && reply.startsWith('250')) plain.write('STARTTLS\r\n')
      else if (step === 2 && reply.startsWith('220')) {
        plain.removeAllListeners('data')
        const secure = tls.connect({ socket: plain, servername: NAME, ca: ca.caPem }, () => {
          const serial = secure.getPeerCertificate().serialNumber.toUpperCase()
          secure.destroy()
          resolve(serial)
        })
        secure.on('error', fail)
      } else return fail(new Error(`unexpected reply at step ${step}: ${reply}`))
      step++
    })
  })
}

beforeAll(async () => {
  ca = makeCa()
  le = path.join(tempDir('relay-letsencrypt-'), 'letsencrypt')
  serials.push(archiveVersion(1))
  pointLive(1)
  const live = path.join(le, 'live', NAME)
  relay = await startRelay({
    config: {
      listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'starttls' }],
      tls: { cert: path.join(live, 'fullchain.pem'), key: path.join(live, 'privkey.pem') },
    },
  })
})

afterAll(async () => {
  await relay?.stop()
})

describe('certbot renewal', () => {
  it('serves the certificate live/ points at, with its chain, over STARTTLS', async () => {
    expect(await starttlsSerial(relay.port)).toBe(serials[0])
  })

  it('re-pointed live/ links: new connections get the new certificate within seconds, an open session goes on', async () => {
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO before.test')
    expect(await client.command('STARTTLS')).toMatch(/^220 /)
    await client.startTls({ ca: ca.caPem, servername: NAME })

    serials.push(archiveVersion(2))
    pointLive(2)
    await eventually(async () => (await starttlsSerial(relay.port)) === serials[1], 5000, 'the renewed certificate in use')
    await eventually(() => relay.logs.some((l) => l.msg === 'TLS certificate files changed' && l.trigger === 'watch'), 2000, 'the log line of the change')

    expect(await client.command('EHLO before.test')).toMatch(/^250/)
    expect(await client.command('MAIL FROM:<a@before.test>')).toMatch(/^250 /)
    client.close()
  })

  it('the next renewal too (the watches moved to the new targets), and no reload when nothing changed', async () => {
    serials.push(archiveVersion(3))
    pointLive(3)
    await eventually(async () => (await starttlsSerial(relay.port)) === serials[2], 5000, 'the second renewal in use')
    // (log lines are flushed every 100 ms) one reload per renewal so far
    const reloadLines = () => relay.logs.filter((l) => l.msg === 'TLS certificates reloaded').length
    await eventually(() => reloadLines() === 2, 2000, 'one reload line per renewal')
    // certbot also writes files that are not ours (renewal/<name>.conf, new archive versions): nothing reloads.
    fs.writeFileSync(path.join(le, 'live', NAME, 'README'), 'This directory contains your keys and certificates.\n')
    archiveVersion(4)
    await new Promise((r) => setTimeout(r, 1000))
    expect(reloadLines()).toBe(2)
    expect(await starttlsSerial(relay.port)).toBe(serials[2])
  })
})

describe('TlsCertificates without a watch that fires', () => {
  it('the poll finds a link re-pointed in a directory nobody watches (Kubernetes ..data style)', async () => {
    // tls.crt -> ../secret/..data/tls.crt, and ..data -> ..v1: re-pointing ..data changes no watched directory.
    const root = tempDir('relay-k8s-')
    const secret = path.join(root, 'secret')
    const certs = path.join(root, 'certs')
    fs.mkdirSync(certs)
    const version = (v: number) => {
      const issued = ca.issue([NAME], { file: `k8s-${v}` })
      fs.mkdirSync(path.join(secret, `..v${v}`), { recursive: true })
      fs.copyFileSync(issued.cert, path.join(secret, `..v${v}`, 'tls.crt'))
      fs.copyFileSync(issued.key, path.join(secret, `..v${v}`, 'tls.key'))
      return new crypto.X509Certificate(fs.readFileSync(issued.cert)).serialNumber.toUpperCase()
    }
    const first = version(1)
    fs.symlinkSync('..v1', path.join(secret, '..data'))
    for (const f of ['tls.crt', 'tls.key']) fs.symlinkSync(`../secret/..data/${f}`, path.join(certs, f))

    const installed: TlsFiles[] = []
    const log = pino({ level: 'silent' })
    const config = { cert: path.join(certs, 'tls.crt'), key: path.join(certs, 'tls.key'), sni: {}, minVersion: 'TLSv1.2' as const }
    const certs_ = new TlsCertificates(config, log, (files) => installed.push(files), 300)
    certs_.start()
    try {
      const serialOf = (files: TlsFiles | undefined) => files && new crypto.X509Certificate(files.cert).serialNumber.toUpperCase()
      expect(serialOf(certs_.files)).toBe(first)
      const second = version(2)
      fs.symlinkSync('..v2', path.join(secret, '..data.tmp'))
      fs.renameSync(path.join(secret, '..data.tmp'), path.join(secret, '..data'))
      await eventually(() => serialOf(certs_.files) === second, 3000, 'the poll to pick up the new version')
      expect(installed.map(serialOf)).toEqual([second])
    } finally {
      certs_.stop()
    }
  })

  it('a key that does not match the certificate (a renewal half done) keeps the old pair in use', async () => {
    const dir = tempDir('relay-halfdone-')
    const a = ca.issue([NAME], { file: 'half-a' })
    const b = ca.issue([NAME], { file: 'half-b' })
    fs.copyFileSync(a.cert, path.join(dir, 'c.pem'))
    fs.copyFileSync(a.key, path.join(dir, 'k.pem'))
    const installed: TlsFiles[] = []
    const config = { cert: path.join(dir, 'c.pem'), key: path.join(dir, 'k.pem'), sni: {}, minVersion: 'TLSv1.2' as const }
    const certs_ = new TlsCertificates(config, pino({ level: 'silent' }), (files) => installed.push(files), 200)
    certs_.start()
    try {
      fs.copyFileSync(b.key, path.join(dir, 'k.pem'))
      await new Promise((r) => setTimeout(r, 800))
      expect(installed).toEqual([])
      fs.copyFileSync(b.cert, path.join(dir, 'c.pem'))
      await eventually(() => installed.length === 1, 3000, 'the complete pair installed')
      expect(installed[0]!.cert.equals(fs.readFileSync(b.cert))).toBe(true)
    } finally {
      certs_.stop()
    }
  })

  it('a certificate file that holds no PEM (the wrong file linked) keeps the old pair, and the log says which file is wrong, not "do not make a pair"', async () => {
    const dir = tempDir('relay-nopem-')
    const a = ca.issue([NAME], { file: 'nopem-a' })
    fs.copyFileSync(a.cert, path.join(dir, 'c.pem'))
    fs.copyFileSync(a.key, path.join(dir, 'k.pem'))
    const lines: { msg: string; err?: { message: string } }[] = []
    const log = pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as (typeof lines)[number]) })
    const installed: TlsFiles[] = []
    const config = { cert: path.join(dir, 'c.pem'), key: path.join(dir, 'k.pem'), sni: {}, minVersion: 'TLSv1.2' as const }
    const certs_ = new TlsCertificates(config, log, (files) => installed.push(files), 200)
    certs_.start()
    try {
      fs.writeFileSync(path.join(dir, 'c.pem'), 'garbage\n')
      const warned = await eventually(() => lines.find((l) => /cannot be used yet/.test(l.msg)), 3000, 'the warning')
      expect(warned.err?.message).toBe('tls: the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)')
      expect(installed).toEqual([])
    } finally {
      certs_.stop()
    }
  })
})
