// Cluster liveness: each node's beat in `nodes`, and the takeover of nodes silent too long.
import type pg from 'pg'
import type { HeartbeatResult } from '../types.js'
import { PENDING } from './sql.js'

/**
 * One statement, on the database's clock: this node's beat, the nodes silent for longer than
 * deadAfter (removed: only one live node takes each over), and their pending leased work made
 * due now. Leases stay marked with the dead holder, so the claim that takes them counts them
 * as taken over. Rows are locked in id order, as complete locks them.
 */
export async function beat(pool: pg.Pool, s: string, nodeId: string, now: number, deadAfterMs: number): Promise<HeartbeatResult> {
  const { rows } = await pool.query<{ was_missing: boolean; dead: HeartbeatResult['dead'] | null }>({
    name: `relay-heartbeat-${s}`,
    text: `WITH clock AS MATERIALIZED (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS t),
     beat AS (
       INSERT INTO ${s}.nodes AS n (node_id, beat_at, started_at) SELECT $1, t, t FROM clock
       ON CONFLICT (node_id) DO UPDATE SET beat_at = excluded.beat_at
       RETURNING (n.xmax = 0) AS inserted
     ),
     dead AS (
       DELETE FROM ${s}.nodes d USING clock WHERE d.node_id <> $1 AND d.beat_at < clock.t - $2::bigint
       RETURNING d.node_id, clock.t - d.beat_at AS silent
     ),
     held AS (
       SELECT r.id FROM ${s}.recipients r JOIN dead ON r.leased_by = dead.node_id
       WHERE r.${PENDING} ORDER BY r.id FOR UPDATE OF r
     ),
     released AS (
       UPDATE ${s}.recipients r SET next_attempt = least(r.next_attempt, $3), lease_until = least(r.lease_until, $3)
       FROM held WHERE r.id = held.id
       RETURNING r.leased_by
     )
     SELECT (SELECT inserted FROM beat) AS was_missing,
       (SELECT json_agg(json_build_object('nodeId', d.node_id, 'silentMs', d.silent,
                                          'recipients', (SELECT count(*) FROM released x WHERE x.leased_by = d.node_id)) ORDER BY d.node_id)
        FROM dead d) AS dead`,
    values: [nodeId, Math.max(0, Math.round(deadAfterMs)), now],
  })
  return { wasMissing: rows[0]?.was_missing ?? false, dead: rows[0]?.dead ?? [] }
}
