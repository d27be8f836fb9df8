// Cluster liveness: each node's beat in `nodes`, and the takeover of nodes silent too long.
import type pg from 'pg'
import type { Logger } from 'pino'
import type { HeartbeatResult } from '../types.js'
import { PENDING } from './sql.js'

/**
 * One statement, on the database's clock: this node's beat, the nodes silent for longer than
 * deadAfter (removed: only one live node takes each over), and their pending leased work made
 * due now. Leases stay marked with the dead holder, so the claim that takes them counts them
 * as taken over. Rows are locked in id order, as complete locks them.
 */
export async function beat(pool: pg.Pool, s: string, nodeId: string, now: number, deadAfterMs: number, instance: string): Promise<HeartbeatResult> {
  const { rows } = await pool.query<{ was_missing: boolean; dead: HeartbeatResult['dead'] | null; twin_age: string | null }>({
    name: `relay-heartbeat-${s}`,
    // A node is dead when silent past its own deadAfter (a node with a longer one beats less often:
    // judged by ours, it was taken over alive and its mail delivered twice).
    text: `WITH clock AS MATERIALIZED (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS t),
     prev AS MATERIALIZED (SELECT p.instance, p.beat_at FROM ${s}.nodes p WHERE p.node_id = $1),
     beat AS (
       INSERT INTO ${s}.nodes AS n (node_id, beat_at, started_at, dead_after, instance) SELECT $1, t, t, $2, $4 FROM clock
       ON CONFLICT (node_id) DO UPDATE SET beat_at = excluded.beat_at, dead_after = excluded.dead_after, instance = excluded.instance, left_cluster = false
       RETURNING (n.xmax = 0) AS inserted
     ),
     dead AS (
       DELETE FROM ${s}.nodes d USING clock WHERE d.node_id <> $1 AND (d.left_cluster OR d.beat_at < clock.t - coalesce(d.dead_after, $2::bigint))
       RETURNING d.node_id, clock.t - d.beat_at AS silent, d.left_cluster
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
       (SELECT json_agg(json_build_object('nodeId', d.node_id, 'silentMs', d.silent, 'left', d.left_cluster,
                                          'recipients', (SELECT count(*) FROM released x WHERE x.leased_by = d.node_id)) ORDER BY d.node_id)
        FROM dead d) AS dead,
       (SELECT clock.t - p.beat_at FROM prev p, clock WHERE p.instance IS NOT NULL AND p.instance <> $4) AS twin_age`,
    values: [nodeId, Math.max(0, Math.round(deadAfterMs)), now, instance],
  })
  const twin = rows[0]?.twin_age
  return { wasMissing: rows[0]?.was_missing ?? false, dead: rows[0]?.dead ?? [], ...(twin != null && { otherProcessBeatMsAgo: Number(twin) }) }
}

/** A clean stop: the next beat of another node takes what this one still holds over, and does not report a node that died. */
export async function leave(pool: pg.Pool, s: string, nodeId: string, instance: string): Promise<void> {
  await pool.query(`UPDATE ${s}.nodes SET left_cluster = true WHERE node_id = $1 AND instance = $2`, [nodeId, instance])
}

/**
 * Before a start releases this node's leases (a crash left them): a record of this node that beat
 * within its deadAfter is a crashed run or another process running with this identity. One
 * heartbeat interval tells them apart: a record that beats again is alive.
 */
export async function refuseLiveTwin(pool: pg.Pool, s: string, nodeId: string, settings: { interval: number; deadAfter: number }, log: Logger | undefined): Promise<void> {
  const read = async () =>
    (await pool.query<{ beat_at: string; age: string; dead_after: string | null }>(
      `SELECT beat_at, (extract(epoch FROM clock_timestamp()) * 1000)::bigint - beat_at AS age, dead_after FROM ${s}.nodes WHERE node_id = $1 AND NOT left_cluster`,
      [nodeId],
    )).rows[0]
  const first = await read()
  if (!first) return
  const age = Number(first.age)
  const deadAfter = Number(first.dead_after ?? settings.deadAfter)
  if (age >= deadAfter) return
  const wait = Math.min(deadAfter - age, 2 * settings.interval + 500)
  log?.info({ node: nodeId, beatMsAgo: age, waitMs: wait }, `queue: node ${nodeId} beat ${age} ms ago (a crashed run, or another process with this identity): waiting ${wait} ms to see whether it still beats`)
  await new Promise((resolve) => setTimeout(resolve, wait))
  const again = await read()
  if (again && again.beat_at !== first.beat_at) {
    throw Object.assign(
      new Error(`queue: another process is running as cluster node ${nodeId} (it beat ${Number(again.age)} ms ago): each node needs its own identity (its hostname setting and machine name: <hostname>/<machine>), docs/cluster.md; not started, so that the mail it is delivering is not taken over and sent twice`),
      { kind: 'unavailable' as const },
    )
  }
}
