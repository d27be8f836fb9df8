// The queue's sessions run with synchronous_commit=on and an idle-in-transaction limit whatever the
// URL's form: also libpq's form without a host in the authority (`postgresql://user:pw@/db?host=…`,
// the unix-socket one), which new URL() cannot parse as written and so once went without both.
import { afterAll, describe, expect, it } from 'vitest'
import type pg from 'pg'
import { workPool } from '../../core/queue/postgres/pool.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'

const pools: pg.Pool[] = []
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end().catch(() => undefined)))
})

describe('queue.url forms', () => {
  it('the host given as ?host= (user info, nothing after the @): the queue pool still sets its session options', async () => {
    const probe = await connectPostgres()
    if (!probe.client) return void skipFor(probe.problem)
    await probe.client.end()
    const u = new URL(PG_URL)
    const url = `postgresql://${u.username || 'postgres'}:unused@/${u.pathname.slice(1)}?host=${u.hostname}&port=${u.port || 5432}`
    const pool = workPool(url, 1, undefined, 5000)
    pools.push(pool)
    const { rows } = await pool.query<{ idle_in_transaction_session_timeout: string; synchronous_commit: string }>(
      "SELECT current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction_session_timeout, current_setting('synchronous_commit') AS synchronous_commit",
    )
    expect(rows[0]).toEqual({ idle_in_transaction_session_timeout: expect.not.stringMatching(/^0$/), synchronous_commit: 'on' })
  })
})
