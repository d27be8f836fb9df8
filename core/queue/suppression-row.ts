// The suppressions table's row as both queue implementations store it, and its public shape.
import type { Suppression } from './types.js'

export interface SuppressionRow {
  address: string
  reason: string
  source: string | null
  created_at: number
  expires_at: number | null
}

export const toSuppression = (r: SuppressionRow): Suppression => ({
  address: r.address,
  reason: r.reason,
  source: r.source ?? undefined,
  createdAt: r.created_at,
  expiresAt: r.expires_at ?? undefined,
})
