// relay doctor <domain>: the real CLI, with a config whose dns.servers is a test DNS server holding
// a well-configured domain and broken ones. The outbound addresses are documentation addresses
// (192.0.2.x, 198.51.100.x, 2001:db8::): they are only DNS data, no traffic goes to them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { BIN, ROOT, tempDir } from '../harness/relay.js'

interface Check {
  name: string
  status: 'ok' | 'warning' | 'error'
  message: string
  fix: string | null
}

const FIXTURE = path.join(ROOT, 'test/fixtures/doctor-check.plugin.ts')
const DKIM_KEY = 'v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtestkey'

let dns: TestDns
let ca: TestCa
let policyServer: https.Server
let policyPort: number
let dir: string
const configs: Record<string, string> = {}

/** Policies served by the test "mta-sts.<domain>" host, chosen by the Host header. */
const POLICIES: Record<string, string> = {
  'mta-sts.good.test': 'version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 604800\n',
  'mta-sts.syntax.test': 'version: STSv1\nmode: enforce\nmx: other.syntax.test\nmax_age: 604800\n',
}

function writeConfig(name: string, config: Record<string, unknown>): string {
  const file = path.join(dir, `${name}.json`)
  fs.writeFileSync(file, JSON.stringify({ dataDir: path.join(dir, 'data'), dns: { servers: [dns.server], timeout: '2s' }, log: { level: 'silent' }, ...config }, null, 2))
  return file
}

/**
 * `relay doctor`, trusting the test CA for the MTA-STS policy fetch. Run asynchronously (not the
 * harness's runCli, whose spawnSync would block this process, and with it the test DNS server).
 */
function doctor(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return doctorWithEnv({ NODE_EXTRA_CA_CERTS: ca.caFile }, ...args)
}

function doctorWithEnv(env: Record<string, string | undefined>, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'doctor', ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

async function doctorJson(...args: string[]): Promise<{ code: number | null; checks: Check[]; stderr: string }> {
  const r = await doctor(...args, '--json')
  let checks: Check[]
  try {
    checks = JSON.parse(r.stdout) as Check[]
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\nstderr: ${r.stderr}`)
  }
  return { code: r.code, checks, stderr: r.stderr }
}

const find = (checks: Check[], name: string) => {
  const c = checks.find((x) => x.name === name)
  if (!c) throw new Error(`no check named '${name}' in ${JSON.stringify(checks.map((x) => x.name))}`)
  return c
}

beforeAll(async () => {
  dir = tempDir('relay-doctor-')
  ca = makeCa()
  const cert = ca.issue(['mta-sts.good.test', 'mta-sts.syntax.test'])
  policyServer = https.createServer({ key: fs.readFileSync(cert.key), cert: fs.readFileSync(cert.cert) }, (req, res) => {
    const policy = POLICIES[String(req.headers.host)]
    if (req.url !== '/.well-known/mta-sts.txt' || !policy) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(policy)
  })
  await new Promise<void>((resolve) => policyServer.listen(0, '127.0.0.1', resolve))
  policyPort = (policyServer.address() as AddressInfo).port

  dns = await startDns({
    // good.test: everything in order.
    'good.test': { MX: [{ exchange: 'mx.good.test', priority: 10 }], TXT: ['google-site-verification=abc', 'v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 include:_spf.good.test -all'] },
    'mx.good.test': { A: ['192.0.2.25'] },
    '_spf.good.test': { TXT: ['v=spf1 ip4:198.51.100.0/28 -all'] },
    's1._domainkey.good.test': { TXT: [DKIM_KEY] },
    // news.good.test: SPF by redirect to good.test, no DMARC record of its own (good.test's applies).
    'news.good.test': { MX: [{ exchange: 'mx.good.test', priority: 10 }], TXT: ['v=spf1 redirect=good.test'] },
    '_dmarc.good.test': { TXT: ['v=DMARC1; p=reject; rua=mailto:dmarc@good.test'] },
    '_mta-sts.good.test': { TXT: ['v=STSv1; id=20260101'] },
    'mta-sts.good.test': { A: ['127.0.0.1'] },
    '_smtp._tls.good.test': { TXT: ['v=TLSRPTv1; rua=mailto:tls-reports@good.test'] },
    'mail.good.test': { A: ['192.0.2.10'], AAAA: ['2001:db8::10'] },
    '10.2.0.192.in-addr.arpa': { PTR: ['mail.good.test.'] },
    // 2001:db8::10, nibble by nibble
    [`${'0.1.0.0.' + '0.0.0.0.'.repeat(5)}8.b.d.0.1.0.0.2.ip6.arpa`]: { PTR: ['mail.good.test.'] },

    // twospf.test: two SPF records, no MX (A fallback), no DMARC, an MTA-STS record whose policy host does not exist.
    'twospf.test': { A: ['192.0.2.40'], TXT: ['v=spf1 ip4:198.51.100.7 -all', 'v=spf1 mx -all'] },
    '_mta-sts.twospf.test': { TXT: ['v=STSv1; id=abc1'] },

    // manylookups.test: 12 lookups through nested includes; no MX, no A; DMARC p=none without rua.
    'manylookups.test': { TXT: ['v=spf1 include:i1.manylookups.test include:i2.manylookups.test -all'] },
    'i1.manylookups.test': { TXT: ['v=spf1 include:i3.manylookups.test include:i4.manylookups.test include:i5.manylookups.test -all'] },
    'i2.manylookups.test': { TXT: ['v=spf1 mx:hosts.manylookups.test -all'] },
    'i3.manylookups.test': { TXT: ['v=spf1 a:h1.manylookups.test mx:hosts.manylookups.test ip4:203.0.113.1 -all'] },
    'i4.manylookups.test': { TXT: ['v=spf1 include:i6.manylookups.test -all'] },
    'i5.manylookups.test': { TXT: ['v=spf1 exists:%{i}.nothere.manylookups.test -all'] },
    'i6.manylookups.test': { TXT: ['v=spf1 a:h1.manylookups.test a:h2.manylookups.test -all'] },
    'hosts.manylookups.test': { MX: [{ exchange: 'h1.manylookups.test', priority: 10 }] },
    'h1.manylookups.test': { A: ['203.0.113.1'] },
    'h2.manylookups.test': { A: ['203.0.113.2'] },
    '_dmarc.manylookups.test': { TXT: ['v=DMARC1; p=none'] },

    // escape.test: records with terminal escape sequences (DNS answers are anyone's to write).
    'escape.test': { MX: [{ exchange: 'mx.good.test', priority: 10 }], TXT: ['v=spf1 ip4:192.0.2.10 \x1b]0;PWNED\x07\x1b[2J -all'] },
    '_dmarc.escape.test': { TXT: ['v=DMARC1; p=reject\x1b[8m; rua=mailto:d@escape.test'] },

    // notcovered.test: a valid SPF record that leaves out the relay's addresses.
    'notcovered.test': { MX: [{ exchange: 'mx.good.test', priority: 10 }], TXT: ['v=spf1 ip4:203.0.113.0/24 ~all'] },
    '_dmarc.notcovered.test': { TXT: ['v=DMARC1; p=quarantine; pct=50; rua=mailto:d@notcovered.test'] },
    '_smtp._tls.notcovered.test': { TXT: ['v=TLSRPTv1; rua=mailto:tls@notcovered.test'] },

    // syntax.test: SPF with an unknown mechanism and ?all; null MX; MTA-STS policy missing its MX host.
    'syntax.test': { MX: [{ exchange: 'mx.syntax.test', priority: 10 }], TXT: ['v=spf1 ip4:198.51.100.7 foo:bar.test ?all'] },
    'mx.syntax.test': { A: ['192.0.2.60'] },
    '_mta-sts.syntax.test': { TXT: ['v=STSv1; id=2'] },
    'nullmx.test': { MX: [{ exchange: '.', priority: 0 }], TXT: ['v=spf1 -all'] },
    // includes.test: an include without an SPF record, an include loop, and 3 void lookups.
    'includes.test': { TXT: ['v=spf1 include:missing.includes.test include:loop.includes.test a:gone1.includes.test a:gone2.includes.test -all'] },
    'loop.includes.test': { TXT: ['v=spf1 include:includes.test -all'] },
    // servfail.test: its name servers fail.
    'servfail.test': 'SERVFAIL',

    // The broken config's outbound addresses: .7 has no PTR; .8's PTR name resolves elsewhere.
    '8.100.51.198.in-addr.arpa': { PTR: ['wrong.bad.test.'] },
    'wrong.bad.test': { A: ['198.51.100.99'] },
  })

  configs.good = writeConfig('good', {
    hostname: 'mail.good.test',
    delivery: { outboundAddresses: ['192.0.2.10', '2001:db8::10'] },
    plugins: [[FIXTURE, { selector: 's1' }]],
  })
  configs.broken = writeConfig('broken', { hostname: 'relay.bad.test', delivery: { outboundAddresses: ['198.51.100.7', '198.51.100.8'] } })
  configs.otherName = writeConfig('other-name', { hostname: 'relay.other.test', delivery: { outboundAddresses: ['192.0.2.10'] } })
  configs.plugins = writeConfig('plugins', {
    hostname: 'mail.good.test',
    plugins: [
      [FIXTURE, { selector: 's1' }],
      [FIXTURE, { selector: 's2', throws: true }],
    ],
  })
})

afterAll(async () => {
  await dns?.close()
  await new Promise<void>((resolve) => (policyServer ? policyServer.close(() => resolve()) : resolve()))
})

describe('relay doctor: a well-configured domain', () => {
  it('reports every check ok, aligned, and exits 0', async () => {
    const r = await doctor('good.test', '--config', configs.good!, '--mta-sts-connect', `127.0.0.1:${policyPort}`)
    expect(r.stderr).toBe('')
    expect(r.code, r.stdout).toBe(0)
    const lines = r.stdout.trimEnd().split('\n')
    const report = lines.slice(0, lines.indexOf(''))
    expect(lines.at(-1)).toBe(`0 errors, 0 warnings, ${report.length} ok`)
    // One line per check: `ok`, the name padded to the longest name, two spaces, the explanation; no fixes.
    const width = 'DKIM s1._domainkey.good.test'.length
    for (const line of report) expect(line).toMatch(new RegExp(`^ok {7}\\S.{${width - 1}} {2}\\S`))
    const byName = (name: string) => report.find((l) => l.slice(9, 9 + width).trimEnd() === name)?.slice(9 + width + 2) ?? `(no line ${name})`
    expect(byName('MX')).toContain('mx.good.test (10) → 192.0.2.25')
    expect(byName('SPF')).toContain('v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 include:_spf.good.test -all')
    expect(byName('SPF lookups')).toContain('1 DNS lookup of at most 10 (include:_spf.good.test 1)')
    expect(byName('SPF policy')).toContain('-all')
    expect(byName('SPF 192.0.2.10')).toContain('pass')
    expect(byName('SPF 2001:db8::10')).toContain('pass')
    expect(byName('DKIM s1._domainkey.good.test')).toContain('public key published (signing as mail.good.test)')
    expect(byName('DMARC')).toContain('v=DMARC1; p=reject; rua=mailto:dmarc@good.test')
    expect(byName('DMARC policy')).toContain('p=reject')
    expect(byName('DMARC reports')).toContain('mailto:dmarc@good.test')
    expect(byName('MTA-STS')).toContain('v=STSv1; id=20260101')
    expect(byName('MTA-STS policy')).toContain('mode enforce, max_age 604800, mx mx.good.test')
    expect(byName('TLS-RPT')).toContain('v=TLSRPTv1; rua=mailto:tls-reports@good.test')
    expect(byName('rDNS 192.0.2.10')).toContain('192.0.2.10 → mail.good.test → 192.0.2.10 (forward-confirmed')
    expect(byName('rDNS 2001:db8::10')).toContain('2001:db8::10 → mail.good.test → 2001:db8::10')
    // With DKIM reported by a plugin, there is no "no DKIM signing" warning.
    expect(r.stdout).not.toContain('no DKIM signing')
  })

  it('--json gives the same checks as { name, status, message, fix }', async () => {
    const { code, checks } = await doctorJson('good.test', '--config', configs.good!, '--mta-sts-connect', `127.0.0.1:${policyPort}`)
    expect(code, JSON.stringify(checks, null, 2)).toBe(0)
    expect(checks.map((c) => c.name)).toEqual([
      'MX',
      'SPF',
      'SPF lookups',
      'SPF policy',
      'SPF 192.0.2.10',
      'SPF 2001:db8::10',
      'DKIM s1._domainkey.good.test',
      'DMARC',
      'DMARC policy',
      'DMARC reports',
      'MTA-STS',
      'MTA-STS policy',
      'TLS-RPT',
      'rDNS 192.0.2.10',
      'rDNS 2001:db8::10',
    ])
    for (const c of checks) {
      expect(Object.keys(c).sort()).toEqual(['fix', 'message', 'name', 'status'])
      expect(c).toMatchObject({ status: 'ok', fix: null })
      expect(c.message).not.toBe('')
    }
  })

  it('the MTA-STS policy fetch verifies the certificate: without the test CA it is a warning', async () => {
    const r = await doctorWithEnv({ NODE_EXTRA_CA_CERTS: undefined }, 'good.test', '--config', configs.good!, '--mta-sts-connect', `127.0.0.1:${policyPort}`, '--json')
    const checks = JSON.parse(r.stdout) as Check[]
    expect(find(checks, 'MTA-STS policy')).toMatchObject({
      status: 'warning',
      message: expect.stringMatching(/^cannot fetch https:\/\/mta-sts\.good\.test\/\.well-known\/mta-sts\.txt: .*certificate/),
      fix: 'serve the policy at https://mta-sts.good.test/.well-known/mta-sts.txt with a certificate valid for mta-sts.good.test',
    })
    expect(r.code).toBe(0)
  })

  it('a subdomain: SPF through redirect=, DMARC inherited from the organisational domain', async () => {
    const { code, checks } = await doctorJson('news.good.test', '--config', configs.good!, '--no-mta-sts-fetch')
    expect(find(checks, 'SPF lookups')).toMatchObject({ status: 'ok', message: '2 DNS lookups of at most 10 (redirect=good.test 2)' })
    expect(find(checks, 'SPF policy')).toMatchObject({ status: 'ok', message: 'redirect=good.test: the policy of good.test applies' })
    expect(find(checks, 'SPF 192.0.2.10')).toMatchObject({ status: 'ok', message: expect.stringMatching(/^pass/) })
    expect(find(checks, 'DMARC')).toMatchObject({ status: 'ok', message: 'no record of its own; news.good.test falls under _dmarc.good.test: v=DMARC1; p=reject; rua=mailto:dmarc@good.test' })
    expect(find(checks, 'DMARC policy')).toMatchObject({ status: 'ok', message: expect.stringContaining('p=reject') })
    // Its own DKIM key, MTA-STS and TLS-RPT records are missing; nothing else is wrong.
    expect(checks.filter((c) => c.status !== 'ok').map((c) => c.name).sort()).toEqual(['DKIM s1._domainkey.news.good.test', 'MTA-STS', 'TLS-RPT'])
    expect(code).toBe(1)
  })
})

describe('relay doctor: broken domains', () => {
  it('two SPF records, no MX, no DMARC, no PTR, PTR not forward-confirmed, no DKIM plugin, unreachable MTA-STS policy', async () => {
    const r = await doctor('twospf.test', '--config', configs.broken!)
    expect(r.code, r.stdout).toBe(1)
    const out = r.stdout
    // Status first, then the name, then the explanation; the fix on the next line, indented.
    expect(out).toMatch(/^warning {2}MX +no MX record: mail to twospf\.test \(replies, bounces\) goes to its address record \(192\.0\.2\.40\)\n {9}fix: publish an MX record/m)
    expect(out).toMatch(/^error {4}SPF +2 SPF records at twospf\.test .*receivers return permerror.*\n {9}fix: replace them with one TXT record: "v=spf1 ip4:198\.51\.100\.7 mx -all"$/m)
    expect(out).not.toMatch(/^\S+ +SPF 198\.51\.100\.7 /m) // nothing more to say about SPF until there is one record
    expect(out).toMatch(/^warning {2}DKIM +no DKIM signing configured for twospf\.test/m)
    expect(out).toMatch(/^error {4}DMARC +no DMARC record at _dmarc\.twospf\.test.*\n {9}fix: publish a TXT record at _dmarc\.twospf\.test: "v=DMARC1; p=none; rua=mailto:dmarc-reports@twospf\.test"/m)
    expect(out).toMatch(/^ok {7}MTA-STS +v=STSv1; id=abc1$/m)
    expect(out).toMatch(/^warning {2}MTA-STS policy +cannot fetch https:\/\/mta-sts\.twospf\.test\/\.well-known\/mta-sts\.txt: mta-sts\.twospf\.test has no A\/AAAA record/m)
    expect(out).toMatch(/^warning {2}TLS-RPT +no TLS-RPT record at _smtp\._tls\.twospf\.test/m)
    expect(out).toMatch(/^error {4}rDNS 198\.51\.100\.7 +no PTR record for 198\.51\.100\.7.*\n {9}fix: ask whoever hosts 198\.51\.100\.7 .* set its reverse DNS \(PTR\) to relay\.bad\.test/m)
    expect(out).toMatch(/^error {4}rDNS 198\.51\.100\.8 +198\.51\.100\.8 → wrong\.bad\.test, but wrong\.bad\.test resolves to 198\.51\.100\.99: the reverse DNS is not forward-confirmed.*\n {9}fix: give wrong\.bad\.test an A record 198\.51\.100\.8/m)
    expect(out.trimEnd().split('\n').at(-1)).toMatch(/^4 errors, 4 warnings, 1 ok$/)
  })

  it('more than 10 SPF lookups through nested includes; DMARC p=none without rua; neither MX nor A', async () => {
    const { code, checks } = await doctorJson('manylookups.test', '--config', configs.broken!)
    expect(code, JSON.stringify(checks, null, 2)).toBe(1)
    expect(find(checks, 'MX')).toMatchObject({ status: 'error', message: expect.stringContaining('no MX record and no A/AAAA record') })
    const lookups = find(checks, 'SPF lookups')
    expect(lookups.status).toBe('error')
    // i1 (1) + i3,i4,i5 (3) + a,mx in i3 (2) + i6 in i4 (1) + a,a in i6 (2) + exists in i5 (1) = 10, + i2 (1) + its mx (1) = 12
    expect(lookups.message).toBe(
      '12 DNS lookups, more than the limit of 10 (include:i1.manylookups.test 10, include:i2.manylookups.test 2): receivers return permerror, so SPF fails',
    )
    expect(lookups.fix).toContain('replace include:i1.manylookups.test (10), include:i2.manylookups.test (2) by the ip4:/ip6: ranges it authorises')
    // Receivers (mailauth) agree: permerror for both outbound addresses.
    for (const ip of ['198.51.100.7', '198.51.100.8']) {
      expect(find(checks, `SPF ${ip}`)).toMatchObject({ status: 'error', message: expect.stringMatching(/^permerror \(Too many DNS requests\)/) })
    }
    expect(find(checks, 'DMARC')).toMatchObject({ status: 'ok', message: 'v=DMARC1; p=none' })
    expect(find(checks, 'DMARC policy')).toMatchObject({ status: 'warning', message: expect.stringContaining('p=none: receivers only report') })
    expect(find(checks, 'DMARC policy').fix).toContain('p=quarantine, then p=reject')
    expect(find(checks, 'DMARC reports')).toMatchObject({ status: 'warning', fix: 'add rua=mailto:dmarc-reports@manylookups.test to the record at _dmarc.manylookups.test' })
    expect(find(checks, 'MTA-STS')).toMatchObject({ status: 'warning', message: expect.stringContaining('no MTA-STS record at _mta-sts.manylookups.test') })
  })

  it('an SPF record that does not cover the outbound addresses gets an error with the record to publish', async () => {
    const { code, checks } = await doctorJson('notcovered.test', '--config', configs.broken!)
    expect(code).toBe(1)
    expect(find(checks, 'MX')).toMatchObject({ status: 'ok' })
    expect(find(checks, 'SPF')).toMatchObject({ status: 'ok', message: 'v=spf1 ip4:203.0.113.0/24 ~all' })
    expect(find(checks, 'SPF policy')).toMatchObject({ status: 'ok', message: expect.stringContaining('~all') })
    for (const ip of ['198.51.100.7', '198.51.100.8']) {
      expect(find(checks, `SPF ${ip}`)).toEqual({
        name: `SPF ${ip}`,
        status: 'error',
        message: `softfail: the SPF record of notcovered.test does not authorise ${ip}, an address this relay sends from`,
        fix: `add ip4:${ip} to the SPF record: "v=spf1 ip4:203.0.113.0/24 ip4:${ip} ~all"`,
      })
    }
    expect(find(checks, 'DMARC policy')).toMatchObject({ status: 'ok', message: expect.stringContaining('p=quarantine') })
    expect(find(checks, 'DMARC pct')).toMatchObject({ status: 'warning', message: expect.stringContaining('pct=50: the policy applies to only 50%') })
    expect(find(checks, 'TLS-RPT')).toMatchObject({ status: 'ok' })
  })

  it('SPF syntax errors and ?all; an MTA-STS policy that leaves out an MX host', async () => {
    const { code, checks } = await doctorJson('syntax.test', '--config', configs.broken!, '--mta-sts-connect', `127.0.0.1:${policyPort}`)
    expect(code).toBe(1)
    expect(find(checks, 'SPF syntax')).toMatchObject({ status: 'error', message: expect.stringContaining("unknown mechanism 'foo:bar.test'") })
    expect(find(checks, 'SPF policy')).toMatchObject({ status: 'warning', message: expect.stringContaining("'?all'"), fix: 'end the record with -all (or ~all): "v=spf1 ip4:198.51.100.7 foo:bar.test -all"' })
    expect(find(checks, 'SPF 198.51.100.7')).toMatchObject({ status: 'error', message: expect.stringMatching(/^permerror/) })
    expect(find(checks, 'MTA-STS policy')).toMatchObject({
      status: 'error',
      message: expect.stringContaining('MX host mx.syntax.test is not in the policy, so senders that enforce MTA-STS will not deliver to them'),
      fix: 'add "mx: mx.syntax.test" to the policy (and change the id= in _mta-sts.syntax.test)',
    })
  })

  it('an include without an SPF record, an include loop, too many void lookups', async () => {
    const { checks } = await doctorJson('includes.test', '--config', configs.broken!, '--no-mta-sts-fetch')
    const includes = checks.filter((c) => c.name === 'SPF include')
    expect(includes).toEqual([
      {
        name: 'SPF include',
        status: 'error',
        message: 'include:missing.includes.test: missing.includes.test has no SPF record: receivers return permerror, so SPF fails for all mail from includes.test',
        fix: 'remove include:missing.includes.test or correct the name',
      },
      {
        name: 'SPF include',
        status: 'error',
        message: 'include:includes.test makes a loop: includes.test → loop.includes.test → includes.test',
        fix: 'remove include:includes.test from the SPF record of loop.includes.test',
      },
    ])
    expect(find(checks, 'SPF void lookups')).toMatchObject({ status: 'warning', message: '3 lookups find no record, more than 2: receivers may return permerror' })
    expect(find(checks, 'SPF 198.51.100.7')).toMatchObject({ status: 'error', message: expect.stringMatching(/^permerror/) })
  })

  it('a null MX is noted; --no-mta-sts-fetch checks only the DNS record', async () => {
    const { checks } = await doctorJson('nullmx.test', '--config', configs.broken!, '--no-mta-sts-fetch')
    expect(find(checks, 'MX')).toMatchObject({ status: 'warning', message: expect.stringContaining('null MX (RFC 7505)') })
    expect(checks.some((c) => c.name === 'MTA-STS policy')).toBe(false)
  })

  it('reverse DNS that is forward-confirmed but differs from the EHLO name is a warning', async () => {
    const { code, checks } = await doctorJson('good.test', '--config', configs.otherName!, '--no-mta-sts-fetch')
    expect(find(checks, 'rDNS 192.0.2.10')).toEqual({
      name: 'rDNS 192.0.2.10',
      status: 'warning',
      message: '192.0.2.10 → mail.good.test → 192.0.2.10 (forward-confirmed), but the relay introduces itself (EHLO) as relay.other.test; receivers trust a greeting that matches the reverse DNS',
      fix: "set hostname: 'mail.good.test' in the config, or set the PTR of 192.0.2.10 to relay.other.test (with an A record relay.other.test → 192.0.2.10)",
    })
    // Warnings alone (here also: no DKIM plugin) do not fail the run.
    expect(checks.filter((c) => c.status === 'error')).toEqual([])
    expect(code).toBe(0)
  })

  it('a DNS failure is an error naming the failure, not a missing record', async () => {
    const { code, checks } = await doctorJson('servfail.test', '--config', configs.broken!, '--no-mta-sts-fetch')
    expect(code).toBe(1)
    for (const name of ['MX', 'SPF']) {
      expect(find(checks, name)).toMatchObject({
        status: 'error',
        message: expect.stringContaining('the DNS server answered SERVFAIL'),
        fix: `make sure the DNS servers the relay uses (${dns.server}) answer, and that the name servers of servfail.test do`,
      })
    }
  })
})

describe('relay doctor: plugins', () => {
  it('records with terminal escape sequences print their control characters as ?, --json escapes them', async () => {
    const r = await doctor('escape.test', '--config', configs.good!)
    expect(r.stdout).toContain('PWNED')
    expect(r.stdout).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
    const j = await doctor('escape.test', '--json', '--config', configs.good!)
    expect(j.stdout).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
    expect(j.stdout).toContain('\\u001b]0;PWNED')
  })

  it("adds each plugin's doctor() checks, and reports a plugin whose doctor() throws", async () => {
    const { code, checks } = await doctorJson('twospf.test', '--config', configs.plugins!, '--no-mta-sts-fetch')
    expect(code).toBe(1)
    expect(find(checks, 'DKIM s1._domainkey.twospf.test')).toEqual({
      name: 'DKIM s1._domainkey.twospf.test',
      status: 'error',
      message: 'no DKIM public key at s1._domainkey.twospf.test',
      fix: 'publish TXT "v=DKIM1; k=rsa; p=<public key>" at s1._domainkey.twospf.test',
    })
    expect(find(checks, 'plugin doctor-check')).toMatchObject({ status: 'error', message: 'its doctor check failed: doctor-check exploded on purpose for twospf.test' })
    // A plugin reported on DKIM, so no generic warning; without outbound addresses, one warning says which key to set.
    expect(checks.some((c) => c.name === 'DKIM')).toBe(false)
    expect(find(checks, 'outbound addresses')).toMatchObject({ status: 'warning', fix: expect.stringContaining("delivery: { outboundAddresses: ['203.0.113.5'] }") })
    expect(checks.some((c) => c.name.startsWith('rDNS') || /^SPF \d/.test(c.name))).toBe(false)
  })

  it('refuses something that is not a domain (exit 2)', async () => {
    const r = await doctor('not a domain', '--config', configs.broken!)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("'not a domain' is not a domain name")
    expect(r.stdout).toBe('')
  })
})
