// relay doctor <domain> for domains whose mail goes through smarthost routes of the routing plugin:
// the real CLI, with a config whose dns.servers is a test DNS server on loopback. The zones hold a
// SendGrid-routed domain set up right and ones set up wrong, an SES-routed one (checked without and
// with the Easy DKIM tokens in the doctor's options), Mailgun-routed ones (EU and US), one routed
// through a provider the doctor does not know, and one of which only some mail takes a smarthost.
// The provider zones (sendgrid.net, amazonses.com, ...) are test copies: no traffic leaves 127.0.0.1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { BIN, ROOT, tempDir } from '../harness/relay.js'

interface Check {
  name: string
  status: 'ok' | 'warning' | 'error'
  message: string
  fix: string | null
}

const KEY = 'v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtestkey'
const TOKENS = ['abcdefghijklmnopqrstuvwxyz234567', 'bcdefghijklmnopqrstuvwxyz2345672', 'cdefghijklmnopqrstuvwxyz23456723']

let dns: TestDns
let dir: string
const configs: Record<string, string> = {}

/** What every test domain has besides its sending records, so only those decide the exit code. */
function basics(domain: string): Record<string, object> {
  return {
    [`_dmarc.${domain}`]: { TXT: [`v=DMARC1; p=reject; rua=mailto:dmarc@${domain}`] },
    [`_smtp._tls.${domain}`]: { TXT: [`v=TLSRPTv1; rua=mailto:tls@${domain}`] },
    [`_mta-sts.${domain}`]: { TXT: ['v=STSv1; id=1'] },
  }
}

const smarthost = (name: string, sender: string | string[], host: string, extra: Record<string, unknown> = {}) => ({
  name,
  match: { sender },
  kind: 'smarthost',
  host,
  tls: 'implicit',
  auth: { user: 'user', pass: 'secret' },
  ...extra,
})

const ROUTES = [
  smarthost('sendgrid', ['sg.test', 'sgbad.test', 'sgnone.test'], 'smtp.sendgrid.net'),
  smarthost('ses', 'ses.test', 'email-smtp.eu-west-1.amazonaws.com'),
  smarthost('mailgun-eu', 'mg.test', 'smtp.eu.mailgun.org'),
  smarthost('mailgun-us', 'mgus.test', 'smtp.mailgun.org:2525'),
  smarthost('other', 'other.test', 'smtp.relay-provider.test'),
  // only the mail to partner.test: the rest leaves from the relay's own address
  { ...smarthost('partner', 'partial.test', 'smtp.sendgrid.net'), match: { sender: 'partial.test', domain: 'partner.test' } },
]

function writeConfig(name: string, plugins: unknown[]): string {
  const file = path.join(dir, `${name}.json`)
  const config = {
    dataDir: path.join(dir, 'data'),
    hostname: 'mail.relay.test',
    dns: { servers: [dns.server], timeout: '2s' },
    log: { level: 'silent' },
    delivery: { outboundAddresses: ['192.0.2.10'] },
    plugins,
  }
  fs.writeFileSync(file, JSON.stringify(config, null, 2))
  return file
}

/** `relay doctor`, run asynchronously (a spawnSync would block this process and its DNS server). */
function doctor(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'doctor', ...args, '--no-mta-sts-fetch'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
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

async function doctorJson(domain: string, config: string): Promise<{ code: number | null; checks: Check[] }> {
  const r = await doctor(domain, '--config', config, '--json')
  try {
    return { code: r.code, checks: JSON.parse(r.stdout) as Check[] }
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\nstderr: ${r.stderr}`)
  }
}

const find = (checks: Check[], name: string) => {
  const c = checks.find((x) => x.name === name)
  if (!c) throw new Error(`no check named '${name}' in ${JSON.stringify(checks.map((x) => x.name))}`)
  return c
}
const errors = (checks: Check[]) => checks.filter((c) => c.status === 'error')

beforeAll(async () => {
  dir = tempDir('relay-doctor-smarthost-')
  dns = await startDns({
    // The providers' side, as far as the doctor follows it.
    'sendgrid.net': { TXT: ['v=spf1 ip4:167.89.0.0/17 -all'] },
    's1.domainkey.u1234.wl.sendgrid.net': { TXT: [KEY] },
    's2.domainkey.u1234.wl.sendgrid.net': { TXT: [KEY] },
    'amazonses.com': { TXT: ['v=spf1 ip4:54.240.0.0/18 -all'] },
    ...Object.fromEntries(TOKENS.map((t) => [`${t}.dkim.amazonses.com`, { TXT: [KEY] }])),
    'mailgun.org': { TXT: ['v=spf1 ip4:198.61.254.0/23 -all'] },
    'eu.mailgun.org': { TXT: ['v=spf1 ip4:141.193.32.0/23 -all'] },

    // sg.test: SendGrid set up right, SPF through a nested include.
    'sg.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }], TXT: ['v=spf1 include:_spf.sg.test -all'] },
    '_spf.sg.test': { TXT: ['v=spf1 include:sendgrid.net -all'] },
    'mx.sg.test': { A: ['192.0.2.25'] },
    's1._domainkey.sg.test': { CNAME: 's1.domainkey.u1234.wl.sendgrid.net' },
    's2._domainkey.sg.test': { CNAME: 's2.domainkey.u1234.wl.sendgrid.net' },
    ...basics('sg.test'),
    // sgbad.test: the old direct-sending SPF record, s1 a CNAME elsewhere, s2 to a SendGrid name that does not exist.
    'sgbad.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }], TXT: ['v=spf1 mx -all'] },
    's1._domainkey.sgbad.test': { CNAME: 's1.domainkey.u1234.wl.sendgird.net' },
    's2._domainkey.sgbad.test': { CNAME: 's2.domainkey.u9999.wl.sendgrid.net' },
    ...basics('sgbad.test'),
    // sgnone.test: no SPF record, no DKIM records.
    'sgnone.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }] },
    ...basics('sgnone.test'),

    // ses.test: custom MAIL FROM bounce.ses.test; two Easy DKIM CNAMEs right, the third wrong.
    'ses.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }], TXT: ['v=spf1 include:amazonses.com -all'] },
    'bounce.ses.test': { MX: [{ exchange: 'feedback-smtp.eu-west-1.amazonses.com', priority: 10 }], TXT: ['v=spf1 include:amazonses.com -all'] },
    [`${TOKENS[0]}._domainkey.ses.test`]: { CNAME: `${TOKENS[0]}.dkim.amazonses.com` },
    [`${TOKENS[1]}._domainkey.ses.test`]: { CNAME: `${TOKENS[1]}.dkim.amazonses.com` },
    [`${TOKENS[2]}._domainkey.ses.test`]: { CNAME: `${TOKENS[0]}.dkim.amazonses.com` },
    ...basics('ses.test'),

    // mg.test: an EU Mailgun domain whose SPF has the US include; DKIM TXT at pic._domainkey.
    'mg.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }], TXT: ['v=spf1 include:mailgun.org ~all'] },
    'pic._domainkey.mg.test': { TXT: ['k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCtestkey'] },
    ...basics('mg.test'),
    // mgus.test: a US Mailgun domain, SPF right, no DKIM record at any usual selector.
    'mgus.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }], TXT: ['v=spf1 include:mailgun.org -all'] },
    ...basics('mgus.test'),

    // other.test: a provider the doctor does not know; no SPF record.
    'other.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }] },
    ...basics('other.test'),
    // partial.test: SendGrid only for mail to partner.test; its SPF covers the relay but not SendGrid.
    'partial.test': { MX: [{ exchange: 'mx.sg.test', priority: 10 }], TXT: ['v=spf1 ip4:192.0.2.10 -all'] },
    ...basics('partial.test'),
  })
  configs.routes = writeConfig('routes', [['routing', { routes: ROUTES }]])
  configs.withTokens = writeConfig('with-tokens', [
    ['routing', { routes: ROUTES }],
    ['doctor', { domains: { 'ses.test': { dkimSelectors: TOKENS, mailFrom: 'bounce.ses.test' } } }],
  ])
})

afterAll(async () => {
  await dns?.close()
})

describe('relay doctor: a SendGrid-routed domain', () => {
  it('set up right: the route, SPF through include:sendgrid.net, both DKIM CNAMEs; exit 0', async () => {
    const r = await doctor('sg.test', '--config', configs.routes!)
    expect(r.stderr).toBe('')
    expect(r.code, r.stdout).toBe(0)
    expect(r.stdout).toMatch(/^ok +route sendgrid +all mail from sg\.test goes through smtp\.sendgrid\.net \(SendGrid\)$/m)
    expect(r.stdout).toMatch(/^ok +SPF SendGrid +the SPF record of sg\.test authorises SendGrid \(include:sendgrid\.net, through include:_spf\.sg\.test\)$/m)
    expect(r.stdout).toMatch(/^ok +DKIM s1\._domainkey\.sg\.test +CNAME to s1\.domainkey\.u1234\.wl\.sendgrid\.net: SendGrid's key is published$/m)
    expect(r.stdout).toMatch(/^ok +DKIM s2\._domainkey\.sg\.test +CNAME to s2\.domainkey\.u1234\.wl\.sendgrid\.net/m)
    // All of its mail goes through SendGrid: the relay's own address is neither required in SPF nor checked.
    expect(r.stdout).not.toMatch(/^\S+ +SPF 192\.0\.2\.10/m)
    expect(r.stdout).not.toMatch(/^\S+ +rDNS/m)
    expect(r.stdout).toMatch(/^ok +outbound addresses +all mail from sg\.test goes through smarthost routes/m)
    expect(r.stdout).not.toContain('no DKIM signing configured')
  })

  it('set up wrong: each finding says what is wrong and the exact record to publish; exit 1', async () => {
    const { code, checks } = await doctorJson('sgbad.test', configs.routes!)
    expect(code).toBe(1)
    const spf = find(checks, 'SPF SendGrid')
    expect(spf.status).toBe('error')
    expect(spf.message).toContain('does not authorise SendGrid (no include:sendgrid.net)')
    expect(spf.fix).toBe('change the TXT record at sgbad.test to: "v=spf1 mx include:sendgrid.net -all"')
    const s1 = find(checks, 'DKIM s1._domainkey.sgbad.test')
    expect(s1).toMatchObject({ status: 'error', message: expect.stringContaining('a CNAME to s1.domainkey.u1234.wl.sendgird.net, not to SendGrid') })
    expect(s1.fix).toContain('publish s1._domainkey.sgbad.test CNAME s1.domainkey.u<account id>.wl<NNN>.sendgrid.net')
    const s2 = find(checks, 'DKIM s2._domainkey.sgbad.test')
    expect(s2).toMatchObject({ status: 'error', message: expect.stringContaining('a CNAME to s2.domainkey.u9999.wl.sendgrid.net, which has no DKIM key') })
    expect(errors(checks).map((c) => c.name).sort()).toEqual(['DKIM s1._domainkey.sgbad.test', 'DKIM s2._domainkey.sgbad.test', 'SPF SendGrid'])
  })

  it('no SPF and no DKIM records: the SPF advice is include:sendgrid.net, never "mx -all"', async () => {
    const r = await doctor('sgnone.test', '--config', configs.routes!)
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('fix: publish a TXT record at sgnone.test: "v=spf1 include:sendgrid.net -all"')
    expect(r.stdout).not.toContain('mx -all')
    expect(r.stdout).not.toContain('ip4:192.0.2.10')
    expect(r.stdout).toMatch(/^error +DKIM s1\._domainkey\.sgnone\.test +no DKIM record: SendGrid signs mail from sgnone\.test with this selector/m)
    expect(r.stdout).toContain('fix: publish s2._domainkey.sgnone.test CNAME s2.domainkey.u<account id>.wl<NNN>.sendgrid.net (the exact record: SendGrid → Settings → Sender Authentication)')
  })
})

describe('relay doctor: an Amazon SES-routed domain', () => {
  it('without tokens or MAIL FROM in the options: says what to look for, as warnings, and exits 0', async () => {
    const { code, checks } = await doctorJson('ses.test', configs.routes!)
    expect(code, JSON.stringify(checks, null, 2)).toBe(0)
    expect(find(checks, 'route ses')).toMatchObject({ status: 'ok', message: 'all mail from ses.test goes through email-smtp.eu-west-1.amazonaws.com (Amazon SES)' })
    const dkim = find(checks, 'DKIM Amazon SES')
    expect(dkim.status).toBe('warning')
    expect(dkim.message).toContain('<token>._domainkey.ses.test → <token>.dkim.amazonses.com')
    expect(dkim.fix).toContain("dkimSelectors: ['<token1>', '<token2>', '<token3>']")
    const spf = find(checks, 'SPF Amazon SES')
    expect(spf.status).toBe('warning')
    expect(spf.fix).toContain('MX 10 feedback-smtp.eu-west-1.amazonses.com and TXT "v=spf1 include:amazonses.com -all"')
    expect(errors(checks)).toEqual([])
  })

  it('with the tokens and the custom MAIL FROM: checks each CNAME, the MAIL FROM SPF and MX', async () => {
    const { code, checks } = await doctorJson('ses.test', configs.withTokens!)
    expect(code).toBe(1)
    expect(find(checks, 'SPF Amazon SES')).toMatchObject({ status: 'ok', message: 'the SPF record of bounce.ses.test authorises Amazon SES (include:amazonses.com)' })
    expect(find(checks, 'MX Amazon SES').status).toBe('ok')
    expect(find(checks, `DKIM ${TOKENS[0]}._domainkey.ses.test`)).toMatchObject({ status: 'ok', message: `CNAME to ${TOKENS[0]}.dkim.amazonses.com: Amazon SES's key is published` })
    expect(find(checks, `DKIM ${TOKENS[1]}._domainkey.ses.test`).status).toBe('ok')
    const wrong = find(checks, `DKIM ${TOKENS[2]}._domainkey.ses.test`)
    expect(wrong.status).toBe('error')
    expect(wrong.message).toContain(`a CNAME to ${TOKENS[0]}.dkim.amazonses.com, not to Amazon SES`)
    expect(wrong.fix).toContain(`publish ${TOKENS[2]}._domainkey.ses.test CNAME ${TOKENS[2]}.dkim.amazonses.com`)
    expect(errors(checks).map((c) => c.name)).toEqual([`DKIM ${TOKENS[2]}._domainkey.ses.test`])
  })
})

describe('relay doctor: Mailgun-routed domains', () => {
  it('EU: the SPF record has the US include; the DKIM TXT key at pic._domainkey is found', async () => {
    const r = await doctor('mg.test', '--config', configs.routes!)
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^ok +route mailgun-eu +all mail from mg\.test goes through smtp\.eu\.mailgun\.org \(Mailgun \(EU\)\)$/m)
    expect(r.stdout).toMatch(/^error +SPF Mailgun \(EU\) +the SPF record of mg\.test does not authorise Mailgun \(EU\) \(no include:eu\.mailgun\.org\)/m)
    expect(r.stdout).toContain('fix: change the TXT record at mg.test to: "v=spf1 include:mailgun.org include:eu.mailgun.org ~all"')
    expect(r.stdout).toMatch(/^ok +DKIM pic\._domainkey\.mg\.test +DKIM key published \(TXT\) for Mailgun$/m)
    expect(r.stdout).not.toMatch(/DKIM (smtp|k1)\._domainkey\.mg\.test/)
  })

  it('US: SPF right, no DKIM key at any usual selector: one error naming them and what to publish', async () => {
    const { checks } = await doctorJson('mgus.test', configs.routes!)
    expect(find(checks, 'route mailgun-us').message).toBe('all mail from mgus.test goes through smtp.mailgun.org (Mailgun)')
    expect(find(checks, 'SPF Mailgun')).toMatchObject({ status: 'ok', message: 'the SPF record of mgus.test authorises Mailgun (include:mailgun.org)' })
    const dkim = find(checks, 'DKIM Mailgun')
    expect(dkim.status).toBe('error')
    expect(dkim.message).toContain('no Mailgun DKIM key at smtp._domainkey, pic._domainkey, k1._domainkey.mgus.test')
    expect(dkim.fix).toContain('TXT at pic._domainkey.mgus.test: "k=rsa; p=<the key Mailgun shows>"')
    expect(errors(checks).map((c) => c.name)).toEqual(['DKIM Mailgun'])
  })
})

describe('relay doctor: other smarthost routes', () => {
  it('an unknown provider: the route is reported and SPF must authorise it (no "mx -all" advice)', async () => {
    const { checks } = await doctorJson('other.test', configs.routes!)
    const route = find(checks, 'route other')
    expect(route.status).toBe('warning')
    expect(route.message).toContain('all mail from other.test goes through smtp.relay-provider.test, a provider the doctor does not know: the SPF record of other.test must authorise it')
    expect(find(checks, 'SPF').fix).toBe(`publish a TXT record at other.test: "v=spf1 include:<the SPF domain of smtp.relay-provider.test's provider> -all"`)
    expect(JSON.stringify(checks)).not.toContain('mx -all')
  })

  it('a route for some of the mail only: the relay address is still checked, and SendGrid is required too', async () => {
    const { checks } = await doctorJson('partial.test', configs.routes!)
    expect(find(checks, 'route partner').message).toBe('some mail from partial.test goes through smtp.sendgrid.net (SendGrid)')
    expect(find(checks, 'SPF 192.0.2.10').status).toBe('ok')
    expect(find(checks, 'SPF SendGrid').fix).toBe('change the TXT record at partial.test to: "v=spf1 ip4:192.0.2.10 include:sendgrid.net -all"')
    expect(checks.some((c) => c.name === 'outbound addresses')).toBe(false)
  })

  it('a domain no smarthost route fits: the report is the usual one', async () => {
    const { checks } = await doctorJson('nothere.test', configs.routes!)
    expect(checks.some((c) => c.name.startsWith('route ') || /SendGrid|Mailgun|Amazon SES/.test(c.name))).toBe(false)
    expect(find(checks, 'SPF').fix).toBe('publish a TXT record at nothere.test: "v=spf1 ip4:192.0.2.10 -all"')
  })
})
