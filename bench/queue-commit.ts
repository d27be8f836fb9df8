// node --import tsx bench/queue-commit.ts [--n 3000] [--batch 1,2,4,16] [--variant base|no-triggers|no-indexes|file-body|sync-normal]
// The SQLite queue alone, without the relay: what one message costs the queue thread (enqueue of one
// 5 KB message with one recipient, then its delivery recorded and the message removed) when K
// messages share each commit: K enqueues in one commit, then their K completions in another, so K = 1
// is two commits per message. Under the bench's load the relay commits about once per message (an
// enqueue rides with an earlier message's completion), so this shows how the queue thread's CPU
// splits between what each commit costs and what each message costs.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { SqliteStore } from '../core/queue/sqlite/store.js'

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '3000' },
    batch: { type: 'string', default: '1,2,4,16' },
    variant: { type: 'string', default: 'base' },
  },
})
const VARIANTS = ['base', 'no-triggers', 'no-indexes', 'file-body', 'sync-normal']
if (!VARIANTS.includes(args.variant)) throw new Error(`--variant: expected one of ${VARIANTS.join(', ')}, got ${args.variant}`)
const TRIGGERS = ['messages_count_in', 'messages_count_out', 'messages_count_hold', 'recipients_count_in', 'recipients_count_out', 'recipients_count_state']
const INDEXES = ['messages_delay', 'messages_received', 'recipients_domain_due', 'recipients_leased', 'sent_log_received', 'attempts_at', 'attempts_message', 'sent_log_message']

function run(variant: string, n: number, k: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-queue-commit-'))
  const store = new SqliteStore(path.join(dir, 'queue.db'))
  // Variants that take parts away, to see what each costs (never a configuration of the relay).
  if (variant === 'no-triggers') for (const t of TRIGGERS) store.db.exec(`DROP TRIGGER ${t}`)
  if (variant === 'no-indexes') for (const i of INDEXES) store.db.exec(`DROP INDEX ${i}`)
  if (variant === 'sync-normal') store.db.pragma('synchronous = NORMAL')
  const headers = Buffer.from('From: a@bench.test\r\nSubject: bench\r\n\r\n')
  const body = Buffer.alloc(5120, 'x')
  const commit = <T>(fn: () => T): T => store.db.transaction(fn).immediate()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let first = 0; first < n; first += k) {
    const now = Date.now()
    const queued = commit(() =>
      Array.from({ length: Math.min(k, n - first) }, (_, j) => {
        const id = `Q${String(first + j).padStart(10, '0')}`
        const [rowId] = store.enqueue(
          {
            id, sender: 'a@bench.test', recipients: [{ address: 'rcpt@sink.test', domain: 'sink.test' }], headers,
            body: variant === 'file-body' ? { file: path.join(dir, id) } : { inline: body },
            size: headers.length + body.length, messageId: `<${id}@bench.test>`, receivedAt: now, expiresAt: now + 86_400_000, meta: {},
          } as Parameters<SqliteStore['enqueue']>[0],
          now + 60_000,
        )
        return { id, rowId: rowId! }
      }),
    )
    commit(() => {
      for (const { id, rowId } of queued) store.complete(id, [{ rowId, state: 'delivered', response: '250 2.0.0 ok', remoteHost: '127.0.0.1' }], undefined, Date.now())
    })
  }
  const cpu = process.cpuUsage(cpu0)
  const wall = performance.now() - t0
  store.close()
  fs.rmSync(dir, { recursive: true, force: true })
  const ms = (us: number) => (us / 1000 / n).toFixed(3)
  return `${variant.padEnd(12)} K=${String(k).padEnd(3)} user ${ms(cpu.user)}  sys ${ms(cpu.system)}  cpu ${ms(cpu.user + cpu.system)} ms/msg  wall ${(wall / n).toFixed(3)} ms/msg`
}

for (const k of args.batch.split(',').map(Number)) console.log(run(args.variant, Number(args.n), k))
