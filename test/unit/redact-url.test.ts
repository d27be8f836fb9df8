// A URL from the config made safe to show (`relay config show`, start errors, logs): the user-info
// password even with an unencoded `@` (the LAST `@` before the host part ends it), query parameters
// named like a secret, key=value connection strings; nothing else of the URL changes.
import { describe, expect, it } from 'vitest'
import { redactUrl } from '../../core/config/redact-url.js'
import { redactConfig } from '../../core/config/redact.js'
import { withoutPassword } from '../../core/queue/postgres/pool.js'

const R = '<redacted>'

describe('redactUrl', () => {
  it.each([
    // user info
    ['postgres://relay:pw@db/relay', `postgres://relay:${R}@db/relay`],
    ['postgres://relay:Pg@x-SECRET-662@127.0.0.1:5432/relay', `postgres://relay:${R}@127.0.0.1:5432/relay`],
    ['redis://:Red@is-SECRET-552@127.0.0.1:6379/0', `redis://:${R}@127.0.0.1:6379/0`],
    ['redis://:a@b@c@cache:6379', `redis://:${R}@cache:6379`],
    ['https://TOKEN123@git.example/x', `https://${R}@git.example/x`], // a lone user part: some services' token
    ['redis://:ab/c-SECRET@cache/0', `redis://:${R}@cache/0`], // a `/` in the password
    ['redis://:ab?c#d-SECRET@cache:1/0', `redis://:${R}@cache:1/0`], // `?` and `#` in it
    ['postgres://u:p@[::1]:5432/db', `postgres://u:${R}@[::1]:5432/db`],
    // query parameters named like a secret, whatever the case or spelling
    ['postgres://relay@127.0.0.1:5432/relay?password=PgQ-SECRET-661', `postgres://${R}@127.0.0.1:5432/relay?password=${R}`],
    ['redis://cache/0?password=RedisQ-SECRET-551', `redis://cache/0?password=${R}`],
    ['http://127.0.0.1:9/hook?apikey=QueryKey-SECRET-888', `http://127.0.0.1:9/hook?apikey=${R}`],
    [
      'https://h.example/p?a=1&api_key=k&Access_Token=t&pwd=p&pass=p&secret=s&token=t&key=k&auth=a&sig=s&signature=s&b=2',
      `https://h.example/p?a=1&api_key=${R}&Access_Token=${R}&pwd=${R}&pass=${R}&secret=${R}&token=${R}&key=${R}&auth=${R}&sig=${R}&signature=${R}&b=2`,
    ],
    ['https://s3.example/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&X-Amz-Expires=60', `https://s3.example/o?X-Amz-Credential=${R}&X-Amz-Signature=${R}&X-Amz-Expires=60`],
    ['https://h.example/cb#access_token=T&state=s', `https://h.example/cb#access_token=${R}&state=s`],
    ['postgres://u:p@db/relay?sslmode=require&password=x#frag', `postgres://u:${R}@db/relay?sslmode=require&password=${R}#frag`],
    // key=value connection strings (libpq)
    ['host=127.0.0.1 port=5432 user=relay password=PgKV-SECRET-664', `host=127.0.0.1 port=5432 user=relay password=${R}`],
    ["host=db password='a b c' dbname=relay", `host=db password=${R} dbname=relay`],
  ])('%s', (url, shown) => {
    expect(redactUrl(url)).toBe(shown)
    expect(redactUrl(url)).not.toMatch(/SECRET/)
  })

  it.each([
    'postgres://relay@db:5432/relay', // a lone user part is redacted (below), the rest shown as is
    'https://registry.npmjs.org/@types/node', // an `@` in the path is no user info
    'postgres://[::1]:5432/db?sslmode=require&options=-c%20search_path%3Drelay',
    'http://127.0.0.1:11333',
    'redis://cache.internal:6379/2',
    'plain text, no URL',
    '/etc/relay/relay.key',
  ])('leaves what is no secret: %s', (url) => {
    expect(redactUrl(url).replace(`${R}@`, 'relay@')).toBe(url)
  })

  it('a URL with no valid host anywhere shows nothing after the scheme', () => {
    expect(redactUrl('redis://:pw/with-SECRET-slash')).toBe(`redis://${R}`)
  })

  it('with another mark (the PostgreSQL queue says ***)', () => {
    expect(withoutPassword('postgres://relay:Pg@x-SECRET@127.0.0.1:1/relay?password=SECRET')).toBe('postgres://relay:***@127.0.0.1:1/relay?password=***')
    expect(withoutPassword('host=db password=SECRET')).toBe('host=db password=***')
  })

  it('redactConfig applies it to every string', () => {
    const shown = redactConfig({
      queue: { url: 'postgres://relay@db/relay?password=PgQ-SECRET-661' },
      delivery: { throttle: { redis: 'redis://:Red@is-SECRET-552@cache/0' } },
      plugins: [{ plugin: 'webhook', options: { url: 'http://h/hook?apikey=QueryKey-SECRET-888', events: ['delivered'] } }],
    })
    expect(JSON.stringify(shown)).not.toMatch(/SECRET/)
    expect(shown).toMatchObject({ plugins: [{ options: { url: `http://h/hook?apikey=${R}`, events: ['delivered'] } }] })
  })
})
