// The queue summary's figures as counters, kept by triggers in the same transaction as the rows
// they count: whatever writes recipients or messages (enqueue, complete, hold, bulk actions, backup
// repair, a future statement) cannot leave them behind, and `summary` reads a few rows instead of
// scanning the queue. Schema migration 5 (schema.ts) creates them and counts an existing queue once.
import type { QueueSummary } from '../types.js'
import type { Sqlite } from './sql.js'

const PENDING = `IN ('queued','deferred')`
/** A pending recipient's bucket: 'held' while its message is held, else its state. */
const bucket = (row: 'NEW' | 'OLD') =>
  `CASE WHEN (SELECT held_at FROM messages WHERE id = ${row}.message_id) IS NOT NULL THEN 'held' ELSE ${row}.state END`

/** Schema migration 5. Append-only like the others: never edit once released. */
export const QUEUE_COUNTS = `
  CREATE TABLE queue_counts (
    domain TEXT NOT NULL,
    bucket TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (domain, bucket)
  ) WITHOUT ROWID;
  CREATE TABLE queue_totals (id INTEGER PRIMARY KEY CHECK (id = 0), messages INTEGER NOT NULL);
  INSERT INTO queue_totals (id, messages) VALUES (0, (SELECT COUNT(*) FROM messages));
  INSERT INTO queue_counts (domain, bucket, n)
    SELECT r.domain, CASE WHEN m.held_at IS NOT NULL THEN 'held' ELSE r.state END, COUNT(*)
    FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.state ${PENDING} GROUP BY 1, 2;
  -- Recipients of a message that is gone were never shown; they go, as deleteMessage meant.
  DELETE FROM recipients WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = recipients.message_id);

  CREATE TRIGGER messages_count_in AFTER INSERT ON messages
  BEGIN UPDATE queue_totals SET messages = messages + 1 WHERE id = 0; END;
  -- A message's recipients go before it (while its held mark still says which bucket they are in).
  CREATE TRIGGER messages_count_out BEFORE DELETE ON messages
  BEGIN
    DELETE FROM recipients WHERE message_id = OLD.id;
    UPDATE queue_totals SET messages = messages - 1 WHERE id = 0;
  END;
  CREATE TRIGGER messages_count_hold AFTER UPDATE OF held_at ON messages
  WHEN (OLD.held_at IS NULL) IS NOT (NEW.held_at IS NULL)
  BEGIN
    UPDATE queue_counts SET n = n - (
      -- By the message's recipients (+domain: not the per-domain index, which would walk a whole domain).
      SELECT COUNT(*) FROM recipients r WHERE r.message_id = NEW.id AND r.state ${PENDING} AND +r.domain = queue_counts.domain
        AND (CASE WHEN OLD.held_at IS NOT NULL THEN 'held' ELSE r.state END) = queue_counts.bucket)
    WHERE domain IN (SELECT domain FROM recipients WHERE message_id = NEW.id AND state ${PENDING});
    INSERT INTO queue_counts (domain, bucket, n)
      SELECT domain, CASE WHEN NEW.held_at IS NOT NULL THEN 'held' ELSE state END, COUNT(*) FROM recipients
      WHERE message_id = NEW.id AND state ${PENDING} GROUP BY 1, 2
      ON CONFLICT (domain, bucket) DO UPDATE SET n = n + excluded.n;
    DELETE FROM queue_counts WHERE n = 0 AND domain IN (SELECT domain FROM recipients WHERE message_id = NEW.id);
  END;

  CREATE TRIGGER recipients_count_in AFTER INSERT ON recipients WHEN NEW.state ${PENDING}
  BEGIN
    INSERT INTO queue_counts (domain, bucket, n) VALUES (NEW.domain, ${bucket('NEW')}, 1)
      ON CONFLICT (domain, bucket) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER recipients_count_out AFTER DELETE ON recipients WHEN OLD.state ${PENDING}
  BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE domain = OLD.domain AND bucket = ${bucket('OLD')};
    DELETE FROM queue_counts WHERE domain = OLD.domain AND n = 0;
  END;
  CREATE TRIGGER recipients_count_state AFTER UPDATE OF state, domain ON recipients
  WHEN OLD.state IS NOT NEW.state OR OLD.domain IS NOT NEW.domain
  BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE OLD.state ${PENDING} AND domain = OLD.domain AND bucket = ${bucket('OLD')};
    INSERT INTO queue_counts (domain, bucket, n) SELECT NEW.domain, ${bucket('NEW')}, 1 WHERE NEW.state ${PENDING}
      ON CONFLICT (domain, bucket) DO UPDATE SET n = n + 1;
    DELETE FROM queue_counts WHERE domain = OLD.domain AND n = 0;
  END;

  -- MIN(received_at) and paging by (received_at, id) without a scan.
  CREATE INDEX messages_received ON messages(received_at, id);
  -- recover() at start: only the rows left leased, not every pending one.
  CREATE INDEX recipients_leased ON recipients(id) WHERE leased = 1;
  -- bodyFiles() at start: only the messages with a spool file.
  CREATE INDEX messages_body_file ON messages(body_file) WHERE body_file IS NOT NULL;
  -- claim() when the domains at the head of the queue are full: due work of the others.
  CREATE INDEX recipients_domain_due ON recipients(domain, next_attempt) WHERE state ${PENDING};`

/** The summary from the counters (schema 5 on): a few rows per domain with mail queued. */
export function summaryFromCounts(q: Sqlite): QueueSummary {
  const totals = q.stmt(`SELECT messages AS n FROM queue_totals WHERE id = 0`).get() as { n: number } | undefined
  const oldest = q.stmt(`SELECT received_at AS t FROM messages ORDER BY received_at LIMIT 1`).get() as { t: number } | undefined
  const rows = q.stmt(`SELECT domain, bucket, n FROM queue_counts WHERE n > 0`).all() as { domain: string; bucket: 'queued' | 'deferred' | 'held'; n: number }[]
  const recipients = { queued: 0, deferred: 0, held: 0 }
  const domains = new Map<string, QueueSummary['domains'][number]>()
  for (const r of rows) {
    recipients[r.bucket] += r.n
    const d = domains.get(r.domain) ?? { domain: r.domain, queued: 0, deferred: 0, held: 0 }
    d[r.bucket] += r.n
    domains.set(r.domain, d)
  }
  const total = (d: QueueSummary['domains'][number]) => d.queued + d.deferred + d.held
  return {
    messages: totals?.n ?? 0,
    recipients,
    oldestReceivedAt: oldest?.t,
    domains: [...domains.values()].sort((a, b) => total(b) - total(a) || (a.domain < b.domain ? -1 : 1)).slice(0, 20),
  }
}
