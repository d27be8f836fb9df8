// dkim-sign: the real relay signs outgoing mail at the queue hook; the messages the receiver gets
// verify with mailauth's dkimVerify against the test DNS server. Keys come from `relay dkim keygen`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import { promises as dnsPromises } from 'node:dns'
import fs from 'node:fs'
import path from 'node:path'
import { dkimVerify } from 'mailauth/lib/dkim/verify.js'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { BIN, ROOT, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const ADD_HEADER = path.join(ROOT, 'test/fixtures/dkim-add-header.plugin.ts')
const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')
const PASSWORD = 'dkim-Pa55word'

interface Generated {
  file: string
  name: string
  value: string
  stdout: string
}

let keyDir: string
let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess // signBy 'from', default header list
let userRelay: RelayProcess // signBy 'user', submission over STARTTLS, X-Added fields in the signed list
const keys: Record<string, Generated> = {}
let verifyResolver: dnsPromises.Resolver
let ca: TestCa

/** `relay dkim keygen`, parsed from what it prints. */
function keygen(domain: string, args: string[] = [], out = keyDir): Generated {
  const r = runCli(['dkim', 'keygen', domain, '--out', out, ...args])
  expect(r.code, r.stderr).toBe(0)
  const file = /^private key: (.+)$/m.exec(r.stdout)?.[1]
  const name = /^ {2}name: {2}(\S+)$/m.exec(r.stdout)?.[1]
  const value = /^ {2}value: (v=DKIM1; .+)$/m.exec(r.stdout)?.[1]
  if (!file || !name || !value) throw new Error(`unexpected keygen output:\n${r.stdout}`)
  return { file, name, value, stdout: r.stdout }
}

const iso = (offsetDays: number) => new Date(Date.now() + offsetDays * 86_400_000).toISOString()

async function verify(raw: Buffer | string) {
  const resolver = async (name: string, type: string) => (type === 'TXT' ? verifyResolver.resolveTxt(name) : verifyResolver.resolve(name, type))
  return (await dkimVerify(raw, { resolver: resolver as never })).results
}

/** The message the receiver got with this Subject. */
async function delivered(subject: string): Promise<ReceivedMessage> {
  return eventually(() => rx.messages.find((m) => m.raw.toString('latin1').includes(`\r\nSubject: ${subject}\r\n`)), 10_000, `delivery of '${subject}'`)
}

/** The DKIM-Signature fields of a message, unfolded, with their tags. */
function signatures(raw: Buffer): Map<string, string>[] {
  const header = raw.toString('latin1').split('\r\n\r\n')[0]!
  return header
    .split(/\r\n(?![ \t])/)
    .filter((f) => /^DKIM-Signature:/i.test(f))
    .map((f) => {
      const tags = new Map<string, string>()
      for (const part of f.replace(/^DKIM-Signature:/i, '').replace(/\r\n/g, '').split(';')) {
        const eq = part.indexOf('=')
        if (eq > 0) tags.set(part.slice(0, eq).trim(), part.slice(eq + 1).replace(/\s+/g, ''))
      }
      return tags
    })
}

const hList = (sig: Map<string, string>): string[] => sig.get('h')!.split(':').map((h) => h.trim().toLowerCase())
const count = (list: string[], name: string) => list.filter((h) => h === name).length

const message = (from: string, subject: string, extra = '') =>
  `From: Sender <${from}>\r\nTo: Someone <x@dest.test>\r\nSubject: ${subject}\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <${crypto.randomUUID()}@test>\r\n${extra}\r\n` +
  `Hello,\r\n\r\nthis line has  two spaces and a trailing one \r\n.a line that starts with a dot\r\n..and two\r\n\r\n\r\n`

async function send(from: string, subject: string, opts: { extra?: string; to?: string } = {}) {
  const r = await sendMail(relay.port, { from, to: [opts.to ?? 'x@dest.test'], data: message(from, subject, opts.extra) })
  expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
  return delivered(subject)
}

beforeAll(async () => {
  keyDir = tempDir('relay-dkim-keys-')
  keys.rsa = keygen('rsaonly.test', ['--selector', 'r1'])
  keys.ed = keygen('edonly.test', ['--selector', 'e1', '--type', 'ed25519'])
  keys.dualRsa = keygen('dual.test', ['--selector', 'dr', '--type', 'rsa'])
  keys.dualEd = keygen('dual.test', ['--selector', 'de', '--type', 'ed25519'])
  keys.old = keygen('rot.test', ['--selector', 'old'])
  keys.new = keygen('rot.test', ['--selector', 'new'])
  keys.next = keygen('rot.test', ['--selector', 'next'])
  keys.docOk = keygen('doc.test', ['--selector', 'good'])
  keys.docWrong = keygen('doc.test', ['--selector', 'wrong', '--type', 'ed25519'])
  keys.gone = keygen('gone.test', ['--selector', 'gone'])
  keys.corp = keygen('corp.test', ['--selector', 'c1'])

  rx = await startReceiver({ host: '127.0.0.2' })
  const txt = (k: Generated) => [k.name, { TXT: [k.value] }] as const
  dns = await startDns({
    'dest.test': { A: ['127.0.0.2'] },
    'local.test': { A: ['127.0.0.2'] },
    ...Object.fromEntries([keys.rsa, keys.ed, keys.dualRsa, keys.dualEd, keys.old, keys.new, keys.docOk, keys.corp].map((k) => txt(k!))),
    // doc.test's Ed25519 selector publishes another key (edonly's); rot.test's next selector and
    // gone.test are not published at all.
    [keys.docWrong!.name]: { TXT: [keys.ed!.value] },
  })
  verifyResolver = new dnsPromises.Resolver({ timeout: 1000, tries: 1 })
  verifyResolver.setServers([dns.server])

  relay = await startRelay({
    config: {
      localDomains: ['local.test'],
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port },
      log: { level: 'debug' },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        [ADD_HEADER, {}],
        [
          'dkim-sign',
          {
            keys: [
              { domain: 'rsaonly.test', selector: 'r1', privateKey: keys.rsa.file },
              { domain: 'edonly.test', selector: 'e1', privateKey: keys.ed.file },
              { domain: 'dual.test', selector: 'dr', privateKey: keys.dualRsa.file },
              { domain: 'dual.test', selector: 'de', privateKey: keys.dualEd.file },
              { domain: 'rot.test', selector: 'next', privateKey: keys.next.file, activeFrom: iso(30) },
              { domain: 'rot.test', selector: 'old', privateKey: keys.old.file, activeFrom: '2020-01-01' },
              { domain: 'rot.test', selector: 'new', privateKey: keys.new.file, activeFrom: iso(-1) },
              { domain: 'doc.test', selector: 'good', privateKey: keys.docOk.file },
              { domain: 'doc.test', selector: 'wrong', privateKey: keys.docWrong.file },
              { domain: 'gone.test', selector: 'gone', privateKey: keys.gone.file },
            ],
          },
        ],
      ],
    },
  })

  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  userRelay = await startRelay({
    config: {
      listen: [{ host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' }],
      tls: { cert: cert.cert, key: cert.key },
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port },
      smtp: { reverseLookup: false, authFailureDelay: '10ms' },
      plugins: [
        [STATIC_AUTH, { users: { 'alice@corp.test': { password: PASSWORD, senders: ['*'] } } }],
        ['relay-acl', { trustedNetworks: [] }],
        [ADD_HEADER, {}],
        [
          'dkim-sign',
          {
            signBy: 'user',
            headers: ['From', 'Subject', 'Date', 'To', 'Cc', 'Message-ID', 'MIME-Version', 'Content-Type', 'X-Added', 'X-Added-Queue'],
            keys: [{ domain: 'corp.test', selector: 'c1', privateKey: keys.corp.file }],
          },
        ],
      ],
    },
  })
}, 60_000)

afterAll(async () => {
  await Promise.all([relay?.stop(), userRelay?.stop()])
  await Promise.all([dns?.close(), rx?.close()])
})

describe('dkim-sign: signatures that verify', () => {
  it('RSA alone: one rsa-sha256 signature that passes', async () => {
    const m = await send('a@rsaonly.test', 'rsa alone')
    const sigs = signatures(m.raw)
    expect(sigs).toHaveLength(1)
    expect(sigs[0]!.get('a')).toBe('rsa-sha256')
    expect(sigs[0]!.get('c')).toBe('relaxed/relaxed')
    expect(sigs[0]!.get('d')).toBe('rsaonly.test')
    expect(sigs[0]!.get('s')).toBe('r1')
    // The field is at the top, one name, folded with CRLF + whitespace only.
    const text = m.raw.toString('latin1')
    expect(text.startsWith('DKIM-Signature: v=1;')).toBe(true)
    expect(text).not.toMatch(/DKIM-Signature:\s*DKIM-Signature/i)
    const field = text.split(/\r\n(?![ \t])/)[0]!
    expect(field).toMatch(/\r\n[ \t]/)
    expect(field.replace(/\r\n[ \t]/g, '')).not.toMatch(/[\r\n]/)
    const results = await verify(m.raw)
    expect(results.map((r) => r.status.result)).toEqual(['pass'])
  })

  it('Ed25519 alone: one ed25519-sha256 signature that passes', async () => {
    const m = await send('a@edonly.test', 'ed25519 alone')
    const sigs = signatures(m.raw)
    expect(sigs).toHaveLength(1)
    expect(sigs[0]!.get('a')).toBe('ed25519-sha256')
    expect(sigs[0]!.get('s')).toBe('e1')
    const results = await verify(m.raw)
    expect(results.map((r) => [r.status.result, r.signingDomain])).toEqual([['pass', 'edonly.test']])
  })

  it('dual: an RSA and an Ed25519 signature, both pass', async () => {
    const m = await send('a@dual.test', 'dual signing')
    const sigs = signatures(m.raw)
    expect(sigs.map((s) => [s.get('a'), s.get('s')])).toEqual([
      ['rsa-sha256', 'dr'],
      ['ed25519-sha256', 'de'],
    ])
    const results = await verify(m.raw)
    expect(results).toHaveLength(2)
    expect(results.map((r) => r.status.result)).toEqual(['pass', 'pass'])
  })

  it('one body byte changed after delivery: both signatures fail', async () => {
    const m = await send('a@dual.test', 'tamper with the body')
    const raw = Buffer.from(m.raw)
    const at = raw.indexOf('this line')
    raw[at] = 'T'.charCodeAt(0)
    const results = await verify(raw)
    expect(results).toHaveLength(2)
    for (const r of results) expect(r.status.result).not.toBe('pass')
    // ...while the untouched copy passes.
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass', 'pass'])
  })

  it('signs the recommended fields and oversigns From, Subject, To, Date, Reply-To, Message-ID, Content-Type... (a second From, or a Reply-To added, breaks it)', async () => {
    const m = await send('a@rsaonly.test', 'header set', { extra: 'Reply-To: "J\u00f6rg M\u00fcller" <r@rsaonly.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n' })
    const h = hList(signatures(m.raw)[0]!)
    for (const name of ['from', 'subject', 'to', 'date', 'message-id', 'reply-to', 'mime-version', 'content-type']) expect(count(h, name), name).toBe(2)
    // Absent ones are listed once: none can be added.
    for (const name of ['cc', 'sender', 'in-reply-to', 'references', 'content-transfer-encoding']) expect(count(h, name), name).toBe(1)
    for (const name of ['list-id', 'list-unsubscribe']) expect(count(h, name), name).toBe(0)
    // Received, the trace fields and fields outside the list are not signed.
    for (const name of ['received', 'x-added', 'x-added-queue', 'dkim-signature']) expect(h).not.toContain(name)
    // Oversigned: a From added after signing makes the signature fail, and so does a second Subject.
    const text = m.raw.toString('latin1')
    expect((await verify(text.replace('\r\nSubject: header set\r\n', '\r\nSubject: header set\r\nFrom: evil@attacker.test\r\n'))).map((r) => r.status.result)).not.toContain('pass')
    expect((await verify(text.replace('\r\nTo: ', '\r\nSubject: urgent\r\nTo: '))).map((r) => r.status.result)).not.toContain('pass')
    // A replay with a Cc, Sender or a second Message-ID added (at the top: read last) fails too.
    for (const added of ['Cc: victim@other.test', 'Sender: evil@attacker.test', 'Message-ID: <replayed@attacker.test>']) {
      expect((await verify(`${added}\r\n${text}`)).map((r) => r.status.result), added).not.toContain('pass')
    }
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass'])
  })

  it('a missing To or Date is still listed once, so none can be added', async () => {
    const data = `From: a@rsaonly.test\r\nSubject: no to no date\r\n\r\nbody\r\n`
    await sendMail(relay.port, { from: 'a@rsaonly.test', to: ['x@dest.test'], data })
    const m = await delivered('no to no date')
    const h = hList(signatures(m.raw)[0]!)
    expect([count(h, 'from'), count(h, 'subject'), count(h, 'to'), count(h, 'date')]).toEqual([2, 2, 1, 1])
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass'])
    const added = m.raw.toString('latin1').replace('\r\n\r\n', '\r\nTo: someone@else.test\r\n\r\n')
    expect((await verify(added)).map((r) => r.status.result)).not.toContain('pass')
  })

  it('a large message (its body spooled to disk) verifies', async () => {
    const line = 'x'.repeat(70) + ' \t y\r\n'
    const big = line.repeat(Math.ceil(400_000 / line.length))
    const data = `From: a@dual.test\r\nTo: x@dest.test\r\nSubject: large spooled\r\n\r\n${big}`
    const r = await sendMail(relay.port, { from: 'a@dual.test', to: ['x@dest.test'], data })
    expect(r.lastReply).toMatch(/^250 /)
    const m = await delivered('large spooled')
    expect(m.raw.length).toBeGreaterThan(400_000)
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass', 'pass'])
  })

  it('rotation: the newest active selector signs; a future one does not yet', async () => {
    const m = await send('a@rot.test', 'rotation')
    const sigs = signatures(m.raw)
    expect(sigs.map((s) => s.get('s'))).toEqual(['new'])
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass'])
  })

  it('headers added by earlier plugins at data and queue are in the signed message', async () => {
    const m = await send('a@rsaonly.test', 'added headers')
    const text = m.raw.toString('latin1')
    expect(text).toMatch(/\r\nX-Added: 1\r\n/)
    expect(text).toMatch(/\r\nX-Added-Queue: 1\r\n/)
    expect(text).toMatch(/\r\nReceived: /)
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass'])
  })

  it('the key follows the From: domain, not the envelope sender (MAIL FROM of another domain)', async () => {
    const subject = 'envelope sender differs'
    const r = await sendMail(relay.port, { from: 'bounces+x@esp.test', to: ['x@dest.test'], data: message('a@rsaonly.test', subject) })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 /)
    const m = await delivered(subject)
    expect(signatures(m.raw).map((sig) => sig.get('d'))).toEqual(['rsaonly.test'])
    expect((await verify(m.raw)).map((v) => v.status.result)).toEqual(['pass'])
  })

  it('mail from a domain without a key passes unsigned', async () => {
    const m = await send('a@nokey.test', 'no key here')
    expect(signatures(m.raw)).toHaveLength(0)
    await relay.waitForLog((l) => l.msg === 'not signed: no DKIM key for this domain' && l.domain === 'nokey.test')
  })

  it('inbound mail (unauthenticated, local recipients only) is not signed, even from a domain with a key', async () => {
    const m = await send('a@rsaonly.test', 'inbound to a local domain', { to: 'someone@local.test' })
    expect(signatures(m.raw)).toHaveLength(0)
  })
})

describe('dkim-sign: a From: a signature must not vouch for (RFC 6376 §8.15)', () => {
  /** Sends `data` (its own header section) from a@rsaonly.test; the message must be accepted. */
  async function sendRaw(subject: string, head: string): Promise<ReceivedMessage> {
    const data = `${head}To: x@dest.test\r\nSubject: ${subject}\r\nMessage-ID: <${crypto.randomUUID()}@test>\r\n\r\nbody\r\n`
    const r = await sendMail(relay.port, { from: 'a@rsaonly.test', to: ['x@dest.test'], data })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 /)
    return delivered(subject)
  }

  it('two From: fields: delivered unsigned, with a warning naming why', async () => {
    const m = await sendRaw('two from fields', 'From: <a@rsaonly.test>\r\nFrom: <boss@victim.test>\r\n')
    expect(signatures(m.raw)).toHaveLength(0)
    await relay.waitForLog((l) => l.level === 40 && l.msg === 'not signed: the message has 2 From: fields' && l.domain === 'rsaonly.test')
    // The same, the other way round (the signing domain's From: second).
    expect(signatures((await sendRaw('two from fields reversed', 'From: <boss@victim.test>\r\nFrom: <a@rsaonly.test>\r\n')).raw)).toHaveLength(0)
  })

  it('a From: with a second author of another domain is not signed; several authors of the signing domain are', async () => {
    const other = await sendRaw('two authors', 'From: <a@rsaonly.test>, "Boss" <boss@victim.test>\r\n')
    expect(signatures(other.raw)).toHaveLength(0)
    await relay.waitForLog((l) => l.level === 40 && /^not signed: the From: field names several authors, not all of rsaonly\.test/.test(String(l.msg)))
    const ours = await sendRaw('two authors same domain', 'From: <a@rsaonly.test>, <b@rsaonly.test>, <c@sub.rsaonly.test>\r\n')
    expect((await verify(ours.raw)).map((r) => [r.status.result, r.signingDomain])).toEqual([['pass', 'rsaonly.test']])
  })

  it("signBy 'user': two From: fields are not signed either", async () => {
    const subject = 'user with two from fields'
    const data = `From: <alice@corp.test>\r\nFrom: <boss@victim.test>\r\nTo: x@dest.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`
    const r = await sendMail(userRelay.ports.submission!, {
      from: 'alice@corp.test',
      to: ['x@dest.test'],
      data,
      starttls: { ca: ca.caPem, servername: 'relay.test' },
      auth: { user: 'alice@corp.test', pass: PASSWORD },
    })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 /)
    expect(signatures((await delivered(subject)).raw)).toHaveLength(0)
  })
})

describe("dkim-sign: signBy 'user'", () => {
  it("signs with the authenticated user's domain, covering fields added at data and queue", async () => {
    const subject = 'signed by user domain'
    const r = await sendMail(userRelay.ports.submission!, {
      from: 'alice@corp.test',
      to: ['x@dest.test'],
      data: message('news@other.test', subject),
      starttls: { ca: ca.caPem, servername: 'relay.test' },
      auth: { user: 'alice@corp.test', pass: PASSWORD },
    })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 /)
    const m = await delivered(subject)
    const sigs = signatures(m.raw)
    expect(sigs).toHaveLength(1)
    expect(sigs[0]!.get('d')).toBe('corp.test') // not other.test, the From: domain
    expect(sigs[0]!.get('s')).toBe('c1')
    const h = hList(sigs[0]!)
    expect(h).toContain('x-added')
    expect(h).toContain('x-added-queue')
    expect(count(h, 'from')).toBe(2)
    expect((await verify(m.raw)).map((r) => r.status.result)).toEqual(['pass'])
    // The fields the other plugin added are covered: changing one breaks the signature.
    const changed = m.raw.toString('latin1').replace('\r\nX-Added: 1\r\n', '\r\nX-Added: 2\r\n')
    expect((await verify(changed)).map((r) => r.status.result)).not.toContain('pass')
  })
})

describe('relay dkim keygen', () => {
  it('writes a 0600 PEM named <domain>.<selector>.<type>.pem and prints the record to publish', () => {
    const out = tempDir('relay-dkim-keygen-')
    const rsa = keygen('Example.Test', ['--selector', 'k1'], out)
    expect(rsa.file).toBe(path.join(out, 'example.test.k1.rsa.pem'))
    expect(fs.statSync(rsa.file).mode & 0o777).toBe(0o600)
    expect(rsa.name).toBe('k1._domainkey.example.test')
    const rsaKey = crypto.createPrivateKey(fs.readFileSync(rsa.file))
    expect(rsaKey.asymmetricKeyType).toBe('rsa')
    expect(rsaKey.asymmetricKeyDetails?.modulusLength).toBe(2048)
    const spki = crypto.createPublicKey(rsaKey).export({ type: 'spki', format: 'der' }).toString('base64')
    expect(rsa.value).toBe(`v=DKIM1; k=rsa; p=${spki}`)

    const ed = keygen('example.test', ['--selector', 'k2', '--type', 'ed25519'], out)
    expect(ed.file).toBe(path.join(out, 'example.test.k2.ed25519.pem'))
    const edKey = crypto.createPrivateKey(fs.readFileSync(ed.file))
    expect(edKey.asymmetricKeyType).toBe('ed25519')
    // RFC 8463: p= is the raw 32-byte public key.
    const raw = crypto.createPublicKey(edKey).export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64')
    expect(ed.value).toBe(`v=DKIM1; k=ed25519; p=${raw}`)
  })

  it("defaults to selector s<YYYYMM> and RSA; refuses to overwrite; refuses bad input", () => {
    const out = tempDir('relay-dkim-keygen-')
    const now = new Date()
    const selector = `s${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`
    const k = keygen('example.test', [], out)
    expect(k.file).toBe(path.join(out, `example.test.${selector}.rsa.pem`))
    expect(k.name).toBe(`${selector}._domainkey.example.test`)
    const before = fs.readFileSync(k.file, 'utf8')
    const again = runCli(['dkim', 'keygen', 'example.test', '--out', out])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/already exists; not overwriting/)
    expect(fs.readFileSync(k.file, 'utf8')).toBe(before)
    // A bad argument is a usage error (exit 2), as in the other verbs.
    expect(runCli(['dkim', 'keygen', 'example.test', '--type', 'dsa', '--out', out]).code).toBe(2)
    expect(runCli(['dkim', 'keygen', 'not a domain', '--out', out]).code).toBe(2)
    expect(runCli(['dkim', 'keygen', 'example.test', '--selector', 'a b', '--out', out]).code).toBe(2)
    // The selector of the RSA key, for an Ed25519 one: its DNS record would replace the RSA key's.
    const clash = runCli(['dkim', 'keygen', 'example.test', '--type', 'ed25519', '--selector', selector, '--out', out])
    expect([clash.code, clash.stderr]).toEqual([1, `relay: ${k.file} already has the selector ${selector} for example.test (its DNS record is ${selector}._domainkey.example.test): choose another --selector for the ed25519 key\n`])
    expect(fs.readdirSync(out)).toEqual([path.basename(k.file)])
  })
})

describe('dkim-sign: options errors', () => {
  it('a missing key file stops check-config and start with exit code 2, naming the key entry', () => {
    const dir = tempDir('relay-dkim-config-')
    const configFile = path.join(dir, 'relay.config.json')
    fs.writeFileSync(
      configFile,
      JSON.stringify({
        hostname: 'relay.test',
        listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }],
        dataDir: path.join(dir, 'data'),
        plugins: [
          [
            'dkim-sign',
            {
              keys: [
                { domain: 'rsaonly.test', selector: 'r1', privateKey: keys.rsa!.file },
                { domain: 'rsaonly.test', selector: 'r2', privateKey: path.join(dir, 'nope.pem') },
              ],
            },
          ],
        ],
      }),
    )
    for (const verb of ['check-config', 'start']) {
      const r = runCli([verb, '--config', configFile])
      expect(r.code, `${verb}: ${r.stdout}${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(/plugins\[0\] \(dkim-sign\) options\.keys\[1\]\.privateKey: cannot read the private key file .*nope\.pem: no such file/)
    }
    // A file that is no key is refused the same way.
    fs.writeFileSync(path.join(dir, 'nope.pem'), 'not a key\n')
    const r = runCli(['check-config', '--config', configFile])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/options\.keys\[1\]\.privateKey: .*nope\.pem is not a PEM private key/)
  })
})

describe('relay doctor: the DKIM records against the keys', () => {
  type Check = { name: string; status: string; message: string; fix: string | null }
  // Not runCli: it blocks this process, and with it the test DNS server the doctor has to ask.
  const doctor = (domain: string): Promise<Check[]> =>
    new Promise((resolve, reject) => {
      execFile(process.execPath, [BIN, 'doctor', domain, '--json', '--no-mta-sts-fetch', '--config', relay.configFile], { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
        const code = err ? (err as { code?: unknown }).code : 0
        if (code !== 0 && code !== 1) return reject(new Error(`relay doctor exited with ${String(code)}: ${stderr}`))
        resolve((JSON.parse(stdout) as Check[]).filter((c) => /^DKIM\b/.test(c.name)))
      })
    })

  it('ok when published and matching; error with the exact TXT value when different', async () => {
    const checks = await doctor('doc.test')
    const good = checks.find((c) => c.name === `DKIM ${keys.docOk!.name}`)
    const wrong = checks.find((c) => c.name === `DKIM ${keys.docWrong!.name}`)
    expect(good?.status).toBe('ok')
    expect(wrong?.status).toBe('error')
    expect(wrong?.message).toMatch(/does not match the private key/)
    expect(wrong?.fix).toContain(`TXT record ${keys.docWrong!.name} with the value: ${keys.docWrong!.value}`)
  })

  it('error when an active key is not published; warning for a future one; retired but published is ok', async () => {
    const [gone, rot] = await Promise.all([doctor('gone.test'), doctor('rot.test')])
    expect(gone).toHaveLength(1)
    expect(gone[0]).toMatchObject({ name: `DKIM ${keys.gone!.name}`, status: 'error' })
    expect(gone[0]!.fix).toContain(keys.gone!.value)

    const by = (k: Generated) => rot.find((c) => c.name === `DKIM ${k.name}`)
    expect(by(keys.new!)?.status).toBe('ok')
    expect(by(keys.new!)?.message).toMatch(/signing now/)
    expect(by(keys.old!)?.status).toBe('ok')
    expect(by(keys.old!)?.message).toMatch(/retired/)
    expect(by(keys.next!)?.status).toBe('warning')
    expect(by(keys.next!)?.message).toMatch(/not published yet/)
    expect(by(keys.next!)?.fix).toContain(keys.next!.value)
  })

  it('a domain without a key gets a warning', async () => {
    const checks = await doctor('nokey.test')
    expect(checks).toHaveLength(1)
    expect(checks[0]!.status).toBe('warning')
  })

  it("the relay's host name without a key of its own, below a domain with one: ok, its own mail signed by the parent's key (not 'leaves unsigned')", async () => {
    const file = path.join(path.dirname(relay.configFile), 'mx1.config.json')
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(relay.configFile, 'utf8')), hostname: 'mx1.doc.test' }))
    const checks = await new Promise<Check[]>((resolve, reject) => {
      execFile(process.execPath, [BIN, 'doctor', 'mx1.doc.test', '--json', '--no-mta-sts-fetch', '--config', file], { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
        const code = err ? (err as { code?: unknown }).code : 0
        if (code !== 0 && code !== 1) return reject(new Error(`relay doctor exited with ${String(code)}: ${stderr}`))
        resolve((JSON.parse(stdout) as Check[]).filter((c) => /^DKIM\b/.test(c.name)))
      })
    })
    expect(checks).toEqual([expect.objectContaining({ name: 'DKIM mx1.doc.test', status: 'ok', message: expect.stringContaining("the relay's own mail from it (bounces from MAILER-DAEMON@mx1.doc.test) is signed d=doc.test") })])
  })
})
