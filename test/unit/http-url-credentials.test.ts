// URLs that go to fetch (auth-http's and webhook's `url`, core's `httpUrl`): one with a user name or
// password is refused by the schema, naming what carries the credential instead; and what a failed
// request reports (the reason logged) never repeats a URL's user info or query string.
import { describe, expect, it } from 'vitest'
import { httpUrl } from '../../core/index.js'
import { options as authHttpOptions } from '../../plugins/auth-http/options.js'
import { check, safeUrl as authSafeUrl, scrubUrls } from '../../plugins/auth-http/client.js'
import { optionsSchema as webhookOptions } from '../../plugins/webhook/options.js'
import { post, safeUrl as webhookSafeUrl } from '../../plugins/webhook/sender.js'

const WITH_CREDENTIALS = 'http://user:Pw-s3cret@127.0.0.1:9/auth?key=qsecret'
const messages = (r: { success: boolean; error?: { issues: { path: PropertyKey[]; message: string }[] } }) => (r.error?.issues ?? []).map((i) => `${i.path.join('.')}: ${i.message}`)

describe('a URL with credentials', () => {
  it('is refused by httpUrl, auth-http and webhook, each message naming the option to use; none repeats the URL', () => {
    for (const url of [WITH_CREDENTIALS, 'https://user@hooks.example.com/x', 'https://:pw@hooks.example.com/x']) {
      const core = messages(httpUrl.safeParse(url))
      expect(core, url).toEqual([expect.stringMatching(/must not hold a user name or password .*header or secret option/)])
      const auth = messages(authHttpOptions.safeParse({ url }))
      expect(auth, url).toEqual([expect.stringMatching(/^url: must not hold a user name or password .*`headers`/)])
      const hook = messages(webhookOptions.safeParse({ url, secret: 'x'.repeat(16) }))
      expect(hook, url).toEqual([expect.stringMatching(/^url: must not hold a user name or password .*`secret`/)])
      for (const m of [...core, ...auth, ...hook]) expect(m).not.toMatch(/Pw-s3cret|qsecret|pw@/)
    }
    // Without credentials (a key in the query string included): accepted.
    expect(httpUrl.safeParse('http://127.0.0.1:9/auth?key=qsecret').success).toBe(true)
    expect(authHttpOptions.safeParse({ url: 'https://auth.example.com/smtp?key=1' }).success).toBe(true)
    expect(messages(authHttpOptions.safeParse({ url: 'ftp://x' }))).toEqual([expect.stringMatching(/^url: expected an http:\/\/ or https:\/\/ URL/)])
  })

  it("fetch's refusal, as a failure reason, carries neither the password nor the query string", async () => {
    const auth = await check({ url: WITH_CREDENTIALS, headers: {}, timeoutMs: 2000, body: { username: 'u', password: 'p', method: 'PLAIN', client: '127.0.0.1' } })
    expect(auth.result).toBe('fail')
    const authReason = (auth as { reason: string }).reason
    expect(authReason).toMatch(/credentials/)
    expect(authReason).not.toMatch(/Pw-s3cret|qsecret/)
    const hook = await post(WITH_CREDENTIALS, 'x'.repeat(16), '{}', 2000, new AbortController().signal)
    expect(hook.ok).toBe(false)
    const hookReason = (hook as { reason: string }).reason
    expect(hookReason).toMatch(/credentials/)
    expect(hookReason).not.toMatch(/Pw-s3cret|qsecret/)
  })

  it('URLs for logs: origin and path only', () => {
    for (const safe of [authSafeUrl, webhookSafeUrl]) expect(safe(WITH_CREDENTIALS)).toBe('http://127.0.0.1:9/auth')
    expect(scrubUrls(`failed: ${WITH_CREDENTIALS}, and https://a:b@h.test/p#frag too`)).toBe('failed: http://127.0.0.1:9/auth, and https://h.test/p too')
  })
})
