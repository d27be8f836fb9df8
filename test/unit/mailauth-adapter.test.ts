// core/mailauth.ts: every mailauth internal (`mailauth/lib/...`) the adapter uses is loaded here
// straight from its path, and each function is called with the inputs and read for the outputs
// Relay relies on. A mailauth upgrade that moves, renames or reshapes one fails here, naming the path.
import { createHash, generateKeyPairSync } from 'node:crypto'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { MAILAUTH_INTERNALS, loadMailauthInternal, mailauthInternals } from '../../core/mailauth.js'

const require = createRequire(import.meta.url)

/** A resolver over fixed TXT records; anything else is ENOTFOUND, as mailauth expects. */
function txtResolver(records: Record<string, string>) {
  return async (name: string, type: string): Promise<string[][]> => {
    const txt = records[name.toLowerCase()]
    if (type === 'TXT' && txt !== undefined) return [[txt]]
    throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' })
  }
}

describe('mailauth internals: every path and export the adapter uses', () => {
  it.each(Object.entries(MAILAUTH_INTERNALS))('%s loads and exports %j as functions', (path, names) => {
    let mod: Record<string, unknown>
    try {
      mod = require(path) as Record<string, unknown>
    } catch (err) {
      throw new Error(`mailauth internal '${path}' (used by core/mailauth.ts) cannot be loaded: ${(err as Error).message}`)
    }
    for (const name of names) {
      const fn = name ? mod[name] : mod
      expect(typeof fn, `'${path}' must export ${name ? `function ${name}` : 'a function as the module'} (core/mailauth.ts)`).toBe('function')
    }
  })

  it('says which path and export is missing', () => {
    expect(() => loadMailauthInternal('mailauth/lib/tools.js', 'noSuchExport')).toThrow(/'mailauth\/lib\/tools\.js' has no function noSuchExport/)
  })
})

describe('mailauth internals: the shapes Relay relies on', () => {
  it('mta-sts.js: parsePolicy gives mode, mx and maxAge; validateMx matches patterns; resolvePolicy reads the id', async () => {
    const policy = mailauthInternals.parsePolicy('version: STSv1\r\nmode: enforce\r\nmx: *.mx.example.com\r\nmax_age: 86400\r\n')
    expect(policy).toMatchObject({ mode: 'enforce', mx: ['*.mx.example.com'], maxAge: 86400 })
    expect(() => mailauthInternals.parsePolicy('not a policy')).toThrow()
    expect(mailauthInternals.validateMx('a.mx.example.com', policy).valid).toBe(true)
    expect(mailauthInternals.validateMx('a.other.example', policy).valid).toBe(false)
    const resolver = txtResolver({ '_mta-sts.example.com': 'v=STSv1; id=20260101' })
    expect(await mailauthInternals.resolvePolicy('example.com', { resolver: resolver as never })).toBe('20260101')
    expect(await mailauthInternals.resolvePolicy('none.example', { resolver: resolver as never })).toBe(false)
  })

  it('spf/index.js: spf gives status.result, domain and an info line through an injected resolver', async () => {
    const resolver = txtResolver({ 'example.com': 'v=spf1 ip4:192.0.2.1 -all' })
    const pass = await mailauthInternals.spf({ sender: 'a@example.com', ip: '192.0.2.1', helo: 'mx.example.com', mta: 'relay.test', resolver: resolver as never })
    expect(pass.status.result).toBe('pass')
    expect(pass.domain).toBe('example.com')
    expect(pass.info).toMatch(/^spf=pass/)
    const fail = await mailauthInternals.spf({ sender: 'a@example.com', ip: '198.51.100.7', helo: 'x', mta: 'relay.test', resolver: resolver as never })
    expect(fail.status.result).toBe('fail')
  })

  it('dmarc/get-dmarc-record.js: the record, falling back to the organisational domain', async () => {
    const resolver = txtResolver({ '_dmarc.example.com': 'v=DMARC1; p=reject' })
    expect(await mailauthInternals.getDmarcRecord('example.com', resolver)).toMatchObject({ rr: 'v=DMARC1; p=reject', recordDomain: 'example.com', isOrgRecord: false })
    expect(await mailauthInternals.getDmarcRecord('sub.example.com', resolver)).toMatchObject({ rr: 'v=DMARC1; p=reject', recordDomain: 'example.com', isOrgRecord: true })
    expect(await mailauthInternals.getDmarcRecord('none.example', resolver)).toBe(false)
  })

  it('dmarc/index.js: evaluateDmarc takes results already computed and gives response (status, policy, info, record), or false and a reason', async () => {
    const resolver = txtResolver({ '_dmarc.example.com': 'v=DMARC1; p=reject; pct=100' })
    const evaluation = await mailauthInternals.evaluateDmarc({
      headerFrom: 'a@example.com',
      spfDomains: ['example.com'],
      dkimDomains: [],
      resolver: resolver as never,
    } as never)
    const response = evaluation.response as unknown as { status: { result: string; header: { from: string } }; policy: string; info: string; record: { pct: number } }
    expect(response.status.result).toBe('pass')
    expect(response.status.header.from).toBe('example.com')
    expect(response.policy).toBe('reject')
    expect(response.info).toMatch(/^dmarc=pass/)
    expect(response.record.pct).toBe(100)
    const noAuthor = await mailauthInternals.evaluateDmarc({ headerFrom: ['a@example.com', 'b@example.org'], spfDomains: [], dkimDomains: [], resolver: resolver as never } as never)
    expect(noAuthor.response).toBe(false)
    expect(typeof (noAuthor as { reason?: unknown }).reason).toBe('string')
  })

  it('tools.js + dkim/body + dkim/sign.js: parsed headers and a precomputed body hash are what dkimSign signs', async () => {
    const header = Buffer.from('From: a@example.com\r\nSubject: hi\r\n\tthere\r\n')
    const { parsed, original } = mailauthInternals.parseHeaders(header)
    expect(Buffer.isBuffer(original)).toBe(true)
    expect(parsed.map((h) => [h.key, h.casedKey])).toEqual([['from', 'From'], ['subject', 'Subject']])
    expect(Buffer.isBuffer(parsed[1]!.line)).toBe(true)
    expect(parsed[1]!.line.toString()).toBe('Subject: hi\r\n\tthere')

    const hasher = mailauthInternals.dkimBody('relaxed', 'sha256', false)
    hasher.update(Buffer.from('Hello  world \r\n\r\n'))
    const bodyHash = hasher.digest('base64')
    expect(bodyHash).toBe(createHash('sha256').update('Hello world\r\n').digest('base64'))

    const { privateKey } = generateKeyPairSync('ed25519')
    const result = await mailauthInternals.dkimSign(Buffer.alloc(0), {
      canonicalization: 'relaxed/relaxed',
      headerList: ['From', 'Subject'],
      signTime: new Date(),
      headers: { parsed, original },
      bodyHash,
      signatureData: [{ signingDomain: 'example.com', selector: 's1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }), algorithm: 'ed25519-sha256' }],
    } as never)
    expect(result.errors ?? []).toEqual([])
    expect(result.signatures).toMatch(/^DKIM-Signature: /)
    expect(result.signatures.replace(/\r\n[ \t]+/g, '')).toContain(`bh=${bodyHash}`)
    expect(result.signatures).toMatch(/d=example\.com/)
  })
})
