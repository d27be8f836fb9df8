// The SQLite queue's tables, as versioned migrations counted in `PRAGMA user_version`.
import type Database from 'better-sqlite3'
import { PENDING } from './sql.js'
import { QUEUE_COUNTS } from './counts.js'

/** Schema versions in order; append, never edit (exported for tests that build an older database). */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE messages (
     id TEXT PRIMARY KEY,
     sender TEXT NOT NULL,
     sender_args TEXT,
     message_id TEXT,
     size INTEGER NOT NULL,
     headers BLOB NOT NULL,
     body BLOB,
     body_file TEXT,
     received_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     meta TEXT NOT NULL
   );
   CREATE TABLE recipients (
     id INTEGER PRIMARY KEY,
     message_id TEXT NOT NULL,
     address TEXT NOT NULL,
     domain TEXT NOT NULL,
     args TEXT,
     state TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt INTEGER NOT NULL,
     leased INTEGER NOT NULL DEFAULT 0,
     last_response TEXT,
     remote_host TEXT,
     updated_at INTEGER NOT NULL
   );
   -- A lease moves next_attempt to the lease's expiry, so one index finds both due and abandoned work.
   CREATE INDEX recipients_due ON recipients(next_attempt) WHERE ${PENDING};
   CREATE INDEX recipients_message ON recipients(message_id);`,
  // Bounce intelligence: the failure category per recipient, the delay warning sent once per
  // message (0: never, e.g. for bounces), the suppression list (hard bounces, `relay suppression`).
  `ALTER TABLE recipients ADD COLUMN category TEXT;
   ALTER TABLE messages ADD COLUMN delay_notified_at INTEGER;
   UPDATE messages SET delay_notified_at = 0 WHERE sender = '';
   CREATE INDEX messages_delay ON messages(received_at) WHERE delay_notified_at IS NULL;
   CREATE TABLE suppressions (
     address TEXT PRIMARY KEY,
     reason TEXT NOT NULL,
     source TEXT,
     created_at INTEGER NOT NULL,
     expires_at INTEGER
   );
   CREATE INDEX suppressions_expiry ON suppressions(expires_at) WHERE expires_at IS NOT NULL;`,
  // Operations and reputation: messages held by an operator, each attempt's result per recipient
  // (kept while the message is queued), hourly counters per sending and destination domain, and the
  // log of messages sent (kept \`retention\`) that feedback-loop complaints are matched against.
  `ALTER TABLE messages ADD COLUMN held_at INTEGER;
   CREATE INDEX messages_held ON messages(held_at) WHERE held_at IS NOT NULL;
   CREATE TABLE attempts (
     id INTEGER PRIMARY KEY,
     recipient_id INTEGER NOT NULL,
     message_id TEXT NOT NULL,
     at INTEGER NOT NULL,
     state TEXT NOT NULL,
     response TEXT NOT NULL,
     remote_host TEXT,
     category TEXT
   );
   CREATE INDEX attempts_message ON attempts(message_id);
   CREATE TABLE stats (
     hour INTEGER NOT NULL,
     sender_domain TEXT NOT NULL,
     dest_domain TEXT NOT NULL,
     outcome TEXT NOT NULL,
     category TEXT NOT NULL,
     count INTEGER NOT NULL,
     PRIMARY KEY (hour, sender_domain, dest_domain, outcome, category)
   ) WITHOUT ROWID;
   CREATE TABLE sent_log (
     queue_id TEXT PRIMARY KEY,
     message_id TEXT,
     sender TEXT NOT NULL,
     sender_domain TEXT NOT NULL,
     received_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX sent_log_message ON sent_log(message_id) WHERE message_id IS NOT NULL;
   CREATE INDEX sent_log_received ON sent_log(received_at);`,
  // The attempt log (recent.ts): attempts carry their envelope, so they outlive their message for a
  // while (the dashboard's recent events survive restarts), found newest first by time.
  `ALTER TABLE attempts ADD COLUMN sender TEXT;
   ALTER TABLE attempts ADD COLUMN recipient TEXT;
   CREATE INDEX attempts_at ON attempts(at);`,
  // Queue scale (nothing an operator or a restart does may scan the queue): the summary's figures
  // kept by triggers in the same transaction as the rows they count (counts.ts), the oldest message
  // by index, recovery at start over leased rows only, spool files by index, due work per domain.
  QUEUE_COUNTS,
  // A DSN owed for a recipient with a final result (core/delivery/dsn.ts): sent once per message,
  // when nothing else of it is in flight or due. The message stays until it is sent.
  `ALTER TABLE recipients ADD COLUMN dsn TEXT;
   CREATE INDEX recipients_dsn ON recipients(message_id) WHERE dsn IS NOT NULL;`,
]

/** Brings the database up to the newest schema, one migration per transaction. */
export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!)
      db.pragma(`user_version = ${v + 1}`)
    })()
  }
}
