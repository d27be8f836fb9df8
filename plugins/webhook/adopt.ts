// Outboxes no entry uses any more: an entry's `url` changed (a reload, or while the relay was
// stopped), an entry was removed, or the single outbox of earlier versions. Their events are taken
// over by the entries of the running configuration, each event by the first entry (in config order)
// that sends its type; those no entry sends are dropped with a warning and counted under
// `orphaned`. Only an outbox no one has open is taken over: after a reload once the old generation
// has closed its outboxes (the `reloaded` event), at start once the relay runs, so no event goes twice.
import fs from 'node:fs'
import path from 'node:path'
import type { PluginContext } from '../../core/index.js'
import { DROP_REASONS, Outbox } from './outbox.js'
import { safeUrl, type Sender } from './sender.js'

/** An entry of the running configuration, in config order (set up, not torn down yet). */
export interface Entry {
  dataDir: string
  file: string
  outbox: Outbox
  sender: Sender
  events: ReadonlySet<string>
}

export const entries: Entry[] = []

/** Outbox files: one per url (`webhook-outbox-<hash>.sqlite`), and the single one of earlier versions. */
const OUTBOX_FILE = /^webhook-outbox(-[0-9a-f]{16})?\.sqlite$/
/** Events moved per transaction. */
const CHUNK = 1000

type Log = PluginContext<unknown>['log']

/** Takes over every outbox in `dataDir` that no entry has open. */
export function adoptOrphans(dataDir: string, log: Log): void {
  const live = entries.filter((e) => e.dataDir === dataDir && e.outbox.open)
  if (!live.length) return
  const used = new Set(live.map((e) => e.file))
  let names: string[]
  try {
    names = fs.readdirSync(dataDir).filter((n) => OUTBOX_FILE.test(n))
  } catch (err) {
    log.error({ err }, 'webhook: cannot list the data directory for outboxes no entry uses')
    return
  }
  for (const name of names) {
    const file = path.join(dataDir, name)
    if (used.has(file)) continue
    try {
      adopt(file, live, log)
    } catch (err) {
      log.error({ err, file }, 'webhook: taking over an outbox no entry uses failed; it stays and is tried again at the next reload or start')
    }
  }
}

function adopt(file: string, live: Entry[], log: Log): void {
  const orphan = new Outbox(file)
  // Made before outboxes kept their url: named by its file.
  const from = orphan.url === undefined ? path.basename(file) : safeUrl(orphan.url)
  const to = new Set<Entry>()
  const droppedTypes = new Set<string>()
  let events = 0
  let dropped = 0
  try {
    for (let batch = orphan.next(CHUNK); batch.length; batch = orphan.next(CHUNK)) {
      const byEntry = new Map<Entry, typeof batch>()
      for (const e of batch) {
        const target = live.find((t) => t.events.has(e.type))
        if (!target) {
          dropped++
          droppedTypes.add(e.type)
          continue
        }
        byEntry.set(target, [...(byEntry.get(target) ?? []), e])
      }
      // Appended before removed here: a crash between the two sends them twice, never loses them.
      for (const [target, list] of byEntry) {
        target.outbox.append(list)
        to.add(target)
      }
      orphan.remove(batch.at(-1)!.seq)
      events += batch.length
    }
    // The drops it counted stay counted (on /metrics, summed over the open outboxes).
    for (const reason of DROP_REASONS) live[0]!.outbox.countDropped(reason, orphan.dropped(reason))
    live[0]!.outbox.countDropped('orphaned', dropped)
  } finally {
    orphan.close()
  }
  for (const suffix of ['-wal', '-shm', '']) fs.rmSync(file + suffix, { force: true })
  // An empty one (a refused reload's, one whose events were all sent) goes quietly.
  if (!events) return
  const urls = [...to].map((t) => safeUrl(t.outbox.url ?? ''))
  log.info({ from, events, adopted: events - dropped, to: urls }, `webhook: took over the outbox of ${from}, which no entry uses any more: ${events - dropped} of its ${events} events go to the entries that send their type`)
  if (dropped) log.warn({ from, dropped, types: [...droppedTypes], reason: 'orphaned' }, `webhook: events of an outbox no entry uses any more (${from}) dropped unsent: no entry sends their type`)
  for (const t of to) t.sender.start()
}

/** Runs `fn` once the relay runs (its plugins all set up), polling its state; stops polling when it stops. */
export function whenRunning(readiness: () => { state: string }, fn: () => void): { cancel(): void } {
  let tries = 0
  const timer = setInterval(() => {
    const { state } = readiness()
    // Bounded: a start that takes ten minutes is long past its setupTimeout.
    if (state === 'running') fn()
    if (state !== 'starting' || ++tries > 6000) clearInterval(timer)
  }, 100)
  timer.unref()
  return { cancel: () => clearInterval(timer) }
}
