// The PostgreSQL queue's tables, as versioned migrations kept in `<schema>.schema_migrations`.
// Every node runs them at start under an advisory lock, so nodes starting together do not race.
import type pg from 'pg'

const PENDING = `state IN ('queued','deferred')`

/** Migration n (1-based) is MIGRATIONS[n-1]; `s` is the quoted schema name. Append only. */
const MIGRATIONS: ((s: string) => string)[] = [
  (s) => `
    CREATE TABLE ${s}.messages (
      id text PRIMARY KEY,
      sender text NOT NULL,
      sender_args jsonb,
      message_id text,
      size bigint NOT NULL,
      headers bytea NOT NULL,
      -- Small bodies inline; larger ones in body_chunks (body_size set, body NULL).
      body bytea,
      body_size bigint,
      received_at bigint NOT NULL,
      expires_at bigint NOT NULL,
      meta jsonb NOT NULL,
      -- 0: never warn (bounces); NULL: not warned yet.
      delay_notified_at bigint,
      held_at bigint
    );
    CREATE INDEX messages_received ON ${s}.messages (received_at, id);
    CREATE INDEX messages_delay ON ${s}.messages (received_at) WHERE delay_notified_at IS NULL;
    CREATE INDEX messages_held ON ${s}.messages (id) WHERE held_at IS NOT NULL;

    CREATE TABLE ${s}.body_chunks (
      message_id text NOT NULL REFERENCES ${s}.messages (id) ON DELETE CASCADE,
      seq integer NOT NULL,
      data bytea NOT NULL,
      PRIMARY KEY (message_id, seq)
    );

    CREATE TABLE ${s}.recipients (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      message_id text NOT NULL REFERENCES ${s}.messages (id) ON DELETE CASCADE,
      address text NOT NULL,
      domain text NOT NULL,
      args jsonb,
      state text NOT NULL,
      attempts integer NOT NULL DEFAULT 0,
      -- A lease moves next_attempt to the lease's expiry, so one index finds both due work and
      -- work a dead node left leased.
      next_attempt bigint NOT NULL,
      leased_by text,
      lease_until bigint,
      last_response text,
      remote_host text,
      category text,
      updated_at bigint NOT NULL
    );
    CREATE INDEX recipients_due ON ${s}.recipients (next_attempt) WHERE ${PENDING};
    CREATE INDEX recipients_message ON ${s}.recipients (message_id);
    CREATE INDEX recipients_leased_by ON ${s}.recipients (leased_by) WHERE leased_by IS NOT NULL;

    CREATE TABLE ${s}.attempts (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      recipient_id bigint NOT NULL REFERENCES ${s}.recipients (id) ON DELETE CASCADE,
      at bigint NOT NULL,
      state text NOT NULL,
      response text NOT NULL,
      remote_host text,
      category text
    );
    CREATE INDEX attempts_recipient ON ${s}.attempts (recipient_id, id);

    CREATE TABLE ${s}.stats (
      hour bigint NOT NULL,
      sender_domain text NOT NULL,
      dest_domain text NOT NULL,
      outcome text NOT NULL,
      category text NOT NULL,
      count bigint NOT NULL,
      PRIMARY KEY (hour, sender_domain, dest_domain, outcome, category)
    );

    -- Messages delivered, kept \`retention\` to match feedback-loop complaints to their sender.
    CREATE TABLE ${s}.sent_log (
      queue_id text PRIMARY KEY,
      message_id text,
      sender text NOT NULL,
      sender_domain text NOT NULL,
      sent_at bigint NOT NULL
    );
    CREATE INDEX sent_log_message_id ON ${s}.sent_log (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX sent_log_sender ON ${s}.sent_log (lower(sender), sent_at);
    CREATE INDEX sent_log_sent_at ON ${s}.sent_log (sent_at);

    CREATE TABLE ${s}.suppressions (
      address text PRIMARY KEY,
      reason text NOT NULL,
      source text,
      created_at bigint NOT NULL,
      expires_at bigint
    );
    CREATE INDEX suppressions_expiry ON ${s}.suppressions (expires_at) WHERE expires_at IS NOT NULL;
  `,
  // Node liveness (heartbeat.ts): one row per running node, its last heartbeat on the database's
  // clock (ms). A row older than deadAfter is a dead node: removed, its leases taken over.
  (s) => `
    CREATE TABLE ${s}.nodes (
      node_id text PRIMARY KEY,
      beat_at bigint NOT NULL,
      started_at bigint NOT NULL
    );
  `,
  // The attempt log (recent.ts): attempts carry their envelope and outlive their message for a
  // while (the dashboard's recent events survive restarts and come from every node).
  (s) => `
    ALTER TABLE ${s}.attempts DROP CONSTRAINT IF EXISTS attempts_recipient_id_fkey;
    ALTER TABLE ${s}.attempts ADD COLUMN message_id text, ADD COLUMN sender text, ADD COLUMN recipient text;
    CREATE INDEX attempts_at ON ${s}.attempts (at, id);
  `,
  // A DSN owed for a recipient with a final result (core/delivery/dsn.ts): sent once per message,
  // when nothing else of it is in flight or due. The message stays until it is sent.
  (s) => `
    ALTER TABLE ${s}.recipients ADD COLUMN dsn jsonb;
    CREATE INDEX recipients_dsn ON ${s}.recipients (message_id) WHERE dsn IS NOT NULL;
  `,
  // Each node's own deadAfter (nodes with different heartbeat settings judge each other by the
  // dead node's, not their own), the process that beats (a second process with the same node
  // identity is seen), and a clean stop (`left`: the next beat of another node takes its work
  // over at once, without reporting a node that died).
  (s) => `
    ALTER TABLE ${s}.nodes ADD COLUMN dead_after bigint, ADD COLUMN instance text, ADD COLUMN left_cluster boolean NOT NULL DEFAULT false;
  `,
]

export const SCHEMA_VERSION = MIGRATIONS.length

const MIGRATION_TIMEOUT_MS = 3_600_000

/** The schema name, quoted for SQL; refuses anything that is not a plain lower-case identifier. */
export function quoteSchema(schema: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`queue.schema: expected a lower-case SQL identifier, got '${schema}'`)
  return `"${schema}"`
}

/**
 * Creates the schema if missing and applies the migrations it lacks, each in its own transaction.
 * A session-level advisory lock (keyed by the schema) makes concurrent starts take turns; the
 * lock goes with the connection if this process dies.
 */
export async function migrate(pool: pg.Pool, schema: string): Promise<number> {
  const s = quoteSchema(schema)
  const client = await pool.connect()
  let broken: Error | undefined
  // A connection lost while checked out is no uncaught exception (pg-pool listens only while idle).
  const lost = (err: Error) => void (broken ??= err)
  client.on('error', lost)
  try {
    // Waiting for another node's migration, and a migration on a large queue, may take longer than
    // queue.queryTimeout: these two have an hour.
    await client.query({ text: `SELECT pg_advisory_lock(hashtextextended($1, 0))`, values: [`relay.queue:${schema}`], query_timeout: MIGRATION_TIMEOUT_MS } as pg.QueryConfig)
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`)
      await client.query(`CREATE TABLE IF NOT EXISTS ${s}.schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`)
      const { rows } = await client.query<{ v: number | null }>(`SELECT max(version) AS v FROM ${s}.schema_migrations`)
      const current = rows[0]?.v ?? 0
      if (current > MIGRATIONS.length) throw new Error(`queue schema ${schema} is at version ${current}, newer than this relay knows (${MIGRATIONS.length})`)
      for (let v = current; v < MIGRATIONS.length; v++) {
        await client.query('BEGIN')
        try {
          await client.query({ text: MIGRATIONS[v]!(s), query_timeout: MIGRATION_TIMEOUT_MS } as pg.QueryConfig)
          await client.query(`INSERT INTO ${s}.schema_migrations (version) VALUES ($1)`, [v + 1])
          await client.query('COMMIT')
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined)
          throw err
        }
      }
      return MIGRATIONS.length
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtextextended($1, 0))`, [`relay.queue:${schema}`]).catch((err: Error) => (broken = err))
    }
  } finally {
    // A connection whose unlock failed may still hold the lock: do not hand it back to the pool.
    client.removeListener('error', lost)
    client.release(broken)
  }
}
