// The suppression list in PostgreSQL: written inside a caller's transaction (suppress, or a batch
// of completes), looked up many addresses to a query, listed and removed by operators.
import type pg from 'pg'
import type { Suppression } from '../types.js'
import { toSuppression, type SuppressionRow } from '../suppression-row.js'
import type { Db, PgContext } from './sql.js'

export async function upsertSuppressions(c: pg.PoolClient, s: string, entries: Suppression[], now: number): Promise<void> {
  // Expired entries go whenever new ones come (an indexed delete).
  await c.query(`DELETE FROM ${s}.suppressions WHERE expires_at IS NOT NULL AND expires_at <= $1`, [now])
  // The last entry for an address wins, as one upsert after another would have it; rows in
  // address order, so two transactions upserting the same addresses cannot deadlock.
  const last = new Map(entries.map((e) => [e.address.toLowerCase(), e]))
  const list = [...last.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  await c.query(
    `INSERT INTO ${s}.suppressions (address, reason, source, created_at, expires_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
     ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at, expires_at = excluded.expires_at`,
    [list.map(([a]) => a), list.map(([, e]) => e.reason), list.map(([, e]) => e.source ?? null), list.map(([, e]) => e.createdAt), list.map(([, e]) => e.expiresAt ?? null)],
  )
}

/** The entries in force for `addresses` (lower case), in their order. */
export async function lookupSuppressions(db: Db, s: string, addresses: string[]): Promise<(Suppression | undefined)[]> {
  const { rows } = await db.query<SuppressionRow>({
    name: `relay-suppressed-${s}`,
    text: `SELECT * FROM ${s}.suppressions WHERE address = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > $2)`,
    values: [addresses, Date.now()],
  })
  const found = new Map(rows.map((r) => [r.address, toSuppression(r)]))
  return addresses.map((a) => found.get(a))
}

export async function unsuppress(db: PgContext, address: string): Promise<boolean> {
  const { rowCount } = await db.query(`DELETE FROM ${db.s}.suppressions WHERE address = $1`, [address.toLowerCase()])
  return (rowCount ?? 0) > 0
}

export async function listSuppressed(db: PgContext): Promise<Suppression[]> {
  const { rows } = await db.query<SuppressionRow>(
    `SELECT * FROM ${db.s}.suppressions WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at, address`,
    [Date.now()],
  )
  return rows.map(toSuppression)
}
