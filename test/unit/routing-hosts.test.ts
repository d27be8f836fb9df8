// The routing plugin's `host` (smarthost and lmtp): a host name, an IPv4 or IPv6 address, with an
// optional ':port' from 1 to 65535; anything else is refused at config time naming the key, and a
// refused value with a password in it is not repeated.
import { describe, expect, it } from 'vitest'
import { options } from '../../plugins/routing/options.js'

const smarthost = (host: unknown) => options.safeParse({ routes: [{ kind: 'smarthost', tls: 'starttls', host }] })
const issues = (r: ReturnType<typeof smarthost>) => (r.success ? [] : r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })))

describe('routing: smarthost and lmtp host', () => {
  for (const host of ['https://smtp.sendgrid.net', 'bad host name', 'smtp.sendgrid.net:587:25', 'u:p@127.0.0.1:5702', 'smtp.example.com:70000', 'smtp.example.com:0', '999.1.1.1', '[bad name]:25', '[a..b]', 'a..b', '-a.example', 'host/x']) {
    it(`refuses ${JSON.stringify(host)} naming routes.0.host`, () => {
      const r = smarthost(host)
      expect(r.success).toBe(false)
      const found = issues(r)
      expect(found.map((i) => i.path)).toContain('routes.0.host')
      expect(found.find((i) => i.path === 'routes.0.host')!.message).toMatch(/expected a host name or IP address|is not a port number from 1 to 65535/)
    })
  }

  it('does not repeat a password given in host', () => {
    const r = smarthost('apikey:SG.s3cretvalue@smtp.sendgrid.net:587')
    expect(JSON.stringify(issues(r))).not.toContain('s3cret')
    expect(issues(r)[0]!.message).toContain("contains '@'")
  })

  it('names the entry of a host list', () => {
    expect(issues(smarthost(['smtp.example.com', 'x:99999']))).toEqual([{ path: 'routes.0.host.1', message: "port '99999' is not a port number from 1 to 65535" }])
  })

  for (const host of ['smtp.sendgrid.net', 'smtp.sendgrid.net:587', 'SMTP.Example.COM.', '127.0.0.1', '127.0.0.1:2525', '::1', '[::1]', '[2001:db8::1]:587', 'relay_1.internal', 'localhost:65535', '[smtp.example.com]:587', '[192.0.2.1]', '[smtp.example.com]']) {
    it(`accepts ${JSON.stringify(host)}`, () => {
      expect(issues(smarthost(host))).toEqual([])
    })
  }

  it('lmtp host is checked the same way', () => {
    const r = options.safeParse({ routes: [{ kind: 'lmtp', host: 'mail store:24' }] })
    expect(issues(r)).toEqual([{ path: 'routes.0.host', message: expect.stringContaining('it contains a space') }])
    expect(options.safeParse({ routes: [{ kind: 'lmtp', host: 'dovecot.internal:24' }] }).success).toBe(true)
  })
})

describe('routing: hostPort', () => {
  it("takes Postfix's [name]:port form apart like the others", async () => {
    const { hostPort } = await import('../../plugins/routing/options.js')
    expect(hostPort('[smtp.example.com]:587')).toEqual({ host: 'smtp.example.com', port: 587 })
    expect(hostPort('[192.0.2.1]')).toEqual({ host: '192.0.2.1', port: undefined })
    expect(hostPort('[2001:db8::1]:25')).toEqual({ host: '2001:db8::1', port: 25 })
    expect(hostPort('smtp.example.com')).toEqual({ host: 'smtp.example.com', port: undefined })
    expect(hostPort('::1')).toEqual({ host: '::1', port: undefined })
  })
})
