// The suppression list in SQLite (hard bounces, `relay suppression`).
import type { Suppression } from '../types.js'
import { toSuppression, type SuppressionRow } from '../suppression-row.js'
import type { Sqlite } from './sql.js'

export function isSuppressed(q: Sqlite, address: string, now: number): Suppression | undefined {
  const row = q.stmt(`SELECT * FROM suppressions WHERE address = ? AND (expires_at IS NULL OR expires_at > ?)`).get(address.toLowerCase(), now) as
    | SuppressionRow
    | undefined
  return row && toSuppression(row)
}

export function suppress(q: Sqlite, entries: Suppression[], now: number): void {
  // Expired entries go whenever new ones come (an indexed delete).
  q.stmt(`DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= ?`).run(now)
  const upsert = q.stmt(
    `INSERT INTO suppressions (address, reason, source, created_at, expires_at) VALUES (?,?,?,?,?)
     ON CONFLICT(address) DO UPDATE SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at, expires_at = excluded.expires_at`,
  )
  for (const e of entries) upsert.run(e.address.toLowerCase(), e.reason, e.source ?? null, e.createdAt, e.expiresAt ?? null)
}

export function unsuppress(q: Sqlite, address: string): boolean {
  return q.stmt(`DELETE FROM suppressions WHERE address = ?`).run(address.toLowerCase()).changes > 0
}

export function listSuppressed(q: Sqlite, now: number): Suppression[] {
  if (q.version < 2) return []
  const rows = q.db
    .prepare(`SELECT * FROM suppressions WHERE expires_at IS NULL OR expires_at > ? ORDER BY created_at, address`)
    .all(now) as SuppressionRow[]
  return rows.map(toSuppression)
}
