// PostgreSQL and Redis for the tests that need them: where they are (RELAY_TEST_PG_URL,
// RELAY_TEST_REDIS_URL, else the default loopback addresses), whether they answer, and the one
// rule for when they do not: a visible "skipped: …" notice on a laptop, a failure in CI
// (RELAY_REQUIRE_SERVICES=1, set by .ci/run).
import pg from 'pg'
import { Redis } from 'ioredis'

export const PG_URL = process.env.RELAY_TEST_PG_URL || 'postgres://postgres@127.0.0.1:5432/test'
export const REDIS_URL = process.env.RELAY_TEST_REDIS_URL || 'redis://127.0.0.1:6379'
export const REQUIRE_SERVICES = process.env.RELAY_REQUIRE_SERVICES === '1'

/** A URL without its password, for messages. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url)
    u.password = ''
    return u.toString()
  } catch {
    return '(unparseable URL)'
  }
}

/** A connected client on PG_URL, or the reason there is none. */
export async function connectPostgres(): Promise<{ client: pg.Client; problem?: undefined } | { client?: undefined; problem: string }> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return { client }
  } catch (err) {
    await client.end().catch(() => undefined)
    return { problem: `no PostgreSQL at ${shownUrl(PG_URL)} (${(err as Error).message || String(err)})` }
  }
}

/** Undefined when Redis answers PING at REDIS_URL, else the reason. */
export async function redisProblem(): Promise<string | undefined> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 1000, retryStrategy: () => null })
  r.on('error', () => undefined)
  try {
    await r.connect()
    if ((await r.ping()) === 'PONG') return undefined
    return `Redis at ${shownUrl(REDIS_URL)} did not answer PING`
  } catch (err) {
    return `no Redis at ${shownUrl(REDIS_URL)} (${(err as Error).message || String(err)})`
  } finally {
    r.disconnect()
  }
}

export async function redisUp(): Promise<boolean> {
  return (await redisProblem()) === undefined
}

/**
 * Call where a test needs a service that is missing (`problem`): throws under
 * RELAY_REQUIRE_SERVICES=1, else prints the notice and returns true so the test can return.
 */
export function skipFor(problem: string, what = 'this test'): true {
  if (REQUIRE_SERVICES) throw new Error(`RELAY_REQUIRE_SERVICES=1 but ${problem}`)
  console.warn(`skipped: ${problem} (${what} did not run)`)
  return true
}
