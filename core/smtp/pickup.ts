// The running relay's side of `relay sendmail` (Postfix's pickup): watches <dataDir>/maildrop/,
// injects each message through core/smtp/inject.ts and removes its file only once the message is
// durable in the queue. A refused message gets a bounce to its sender and is removed; a temporary
// failure leaves the file for the next scan; an unreadable file is set aside as `.corrupt-<name>`.
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import { runGenerated } from '../hooks/generated.js'
import type { InjectMessage } from '../hooks/operator.js'
import { failureDsn, statusOf } from '../mail/bounce.js'
import { newQueueId } from '../queue/id.js'
import type { QueueIntake } from '../queue/intake.js'
import { CorruptDropError, ensureMaildrop, listDropped, parseDropped, type DroppedMessage } from '../queue/maildrop.js'
import type { InjectOrigin } from './inject.js'

export interface PickupEnv {
  config: () => RelayConfig
  log: Logger
  intake: Pick<QueueIntake, 'enqueue'>
  inject(message: InjectMessage, origin: InjectOrigin): Promise<{ queueId: string }>
  /** The plugins: their `generated` hook sees the bounce (a signature). */
  hooks?: Pick<HookBus, 'has' | 'run'>
}

/** A scan also runs this often: fs.watch misses events on some file systems. */
const POLL_MS = 5_000
/** How long a file refused for now (the queue unavailable, a plugin's tempfail) waits before it is tried again. */
const RETRY_MS = 60_000
/** A file the relay may not rename (nor so remove) is looked at again this much later, not at every scan. */
const CANNOT_TAKE_MS = 10 * 60_000
/** The name a file gets once taken (it is then queued and removed; one left by a crash is queued at the next scan). */
const TAKEN = 'taken.'
/** A file that does not parse and changed less than this ago is left for a later scan: it may be still being written. */
const SETTLE_MS = 2_000

export class MaildropPickup {
  private watcher: fs.FSWatcher | undefined
  private timer: NodeJS.Timeout | undefined
  private scanning: Promise<void> | undefined
  private again = false
  private stopped = false
  private readonly dir: string
  /** Files refused for now, and when each may be tried again. */
  private readonly retryAt = new Map<string, number>()

  constructor(private readonly env: PickupEnv) {
    const dataDir = env.config().dataDir
    this.dir = ensureMaildrop(dataDir)
    warnIfNotOwned(this.dir, env.log)
  }

  /** Picks up what waits now, then watches for more. */
  start(): void {
    try {
      this.watcher = fs.watch(this.dir, () => this.kick())
      this.watcher.on('error', (err) => this.env.log.warn({ err }, 'maildrop: watching failed; polling only'))
    } catch (err) {
      this.env.log.warn({ err, dir: this.dir }, 'maildrop: cannot watch the directory; polling only')
    }
    this.timer = setInterval(() => this.kick(), POLL_MS)
    this.timer.unref()
    this.kick()
  }

  /** Stops watching; a message being injected finishes first. */
  async stop(): Promise<void> {
    this.stopped = true
    this.watcher?.close()
    clearInterval(this.timer)
    await this.scanning
  }

  /** One scan at a time; a kick during a scan runs one more after it. */
  private kick(): void {
    if (this.stopped) return
    if (this.scanning) {
      this.again = true
      return
    }
    this.scanning = this.scan()
      .catch((err: unknown) => this.env.log.error({ err, dir: this.dir }, 'maildrop: scan failed'))
      .finally(() => {
        this.scanning = undefined
        if (this.again) {
          this.again = false
          this.kick()
        }
      })
  }

  private async scan(): Promise<void> {
    const names = await listDropped(this.dir)
    const present = new Set(names)
    for (const name of this.retryAt.keys()) if (!present.has(name)) this.retryAt.delete(name)
    for (const name of names) {
      if (this.stopped) return
      // One file that cannot be taken (whatever a local user put there) never holds up the others.
      await this.pickUp(path.join(this.dir, name)).catch((err: unknown) => this.env.log.error({ err, file: name }, 'maildrop: cannot pick up this file; the others go on'))
    }
  }

  /**
   * The file's bytes and owner. Anyone may create entries here: only a regular file with one link,
   * opened without following a symlink and without blocking (a FIFO), up to the message size limit
   * (and the envelope) is read; anything else is CorruptDropError (set aside).
   */
  private async read(file: string): Promise<{ data: Buffer; uid: number; mtimeMs: number }> {
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ELOOP' || code === 'EMLINK') throw new CorruptDropError('a symbolic link, not a message file')
      if (code === 'EACCES' || code === 'EPERM') throw new CorruptDropError('not readable by the relay')
      throw err
    }
    try {
      const stat = await handle.stat()
      if (!stat.isFile()) throw new CorruptDropError('not a regular file')
      if (stat.nlink !== 1) throw new CorruptDropError('a file with other links')
      const limit = this.env.config().smtp.maxMessageSize + 1024 * 1024
      if (stat.size > limit) throw new CorruptDropError(`too large (${stat.size} bytes)`)
      // At most limit + 1 bytes, whatever the size is now: the file's owner may grow it after the
      // stat (a sparse gigabyte read whole into memory).
      const buffer = Buffer.allocUnsafe(Math.min(stat.size, limit) + 1)
      let length = 0
      while (length < buffer.length) {
        const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length)
        if (!bytesRead) break
        length += bytesRead
      }
      if (length > limit) throw new CorruptDropError(`too large (grew past ${limit} bytes while read)`)
      if (length === buffer.length) throw new CorruptDropError('it grew while read')
      return { data: buffer.subarray(0, length), uid: stat.uid, mtimeMs: stat.mtimeMs }
    } finally {
      await handle.close()
    }
  }

  private async pickUp(file: string): Promise<void> {
    const { log } = this.env
    // A file refused for now waits before it is read, tried and logged again: a scan runs at every
    // change in the directory, which any local user can make many times a second.
    const name = path.basename(file)
    const waiting = this.retryAt.get(name)
    if (waiting !== undefined && waiting > Date.now()) return
    let dropped: DroppedMessage
    let uid: number
    let written = 0
    try {
      const read = await this.read(file)
      written = read.mtimeMs
      dropped = parseDropped(read.data)
      uid = read.uid
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      if (!(err instanceof CorruptDropError)) throw err
      // A file written in place (by hand, not sendmail's rename) may be read half written: judged
      // once it has not changed for a moment (its last write wakes a scan, the poll another).
      if (Date.now() - written < SETTLE_MS) return
      const aside = await this.setAside(file)
      log.error({ file: aside ?? path.basename(file), reason: err.message }, aside ? 'maildrop: not a message file; set aside' : 'maildrop: not a message file; removed (it could not be set aside)')
      return
    }
    // Taken (renamed) before it is queued: a file the relay cannot remove (the maildrop another
    // user's, sticky) was queued again at every scan, its mail delivered every few seconds.
    let taken = file
    if (!name.startsWith(TAKEN)) {
      taken = path.join(this.dir, `${TAKEN}${name}`)
      try {
        await fsp.rename(file, taken)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT') return
        this.retryAt.set(name, Date.now() + CANNOT_TAKE_MS)
        log.error({ file: name, code }, `maildrop: cannot take ${name} (${code ?? (err as Error).message}): the relay must be able to remove files in the maildrop (docs/sendmail.md); it stays there, not delivered, tried again in ${CANNOT_TAKE_MS / 60_000} min`)
        return
      }
    }
    const takenName = path.basename(taken)
    try {
      const { queueId } = await this.env.inject({ sender: dropped.sender, recipients: dropped.recipients, raw: dropped.raw }, { kind: 'local', uid })
      log.info({ queueId, uid, file: name }, 'maildrop: picked up')
    } catch (err) {
      const code = (err as { responseCode?: number }).responseCode
      // Too many recipients (452 4.5.3) is no passing state for a file: the same list is refused
      // every time. It bounces, as a permanent refusal does.
      const tooMany = code === 452 && /^4\.5\.3\b/.test((err as Error).message)
      // A temporary refusal (or a failure without a reply): the file stays, tried again in a minute.
      if (!tooMany && (!code || code < 500)) {
        this.retryAt.set(takenName, Date.now() + RETRY_MS)
        log.warn({ err: code ? undefined : err, reply: (err as Error).message, file: takenName }, `maildrop: not picked up now; tried again in ${RETRY_MS / 1000} s`)
        return
      }
      await this.bounce(dropped, uid, tooMany ? `552 5.5.3 Too many recipients (at most ${this.env.config().smtp.maxRecipients})` : `${code} ${(err as Error).message}`)
    }
    this.retryAt.delete(takenName)
    await fsp.rm(taken, { force: true })
  }

  /** Moves a file that is no message aside (`.corrupt-<name>`, else a unique name), or removes it; the name it got. */
  private async setAside(file: string): Promise<string | undefined> {
    const name = path.basename(file)
    for (const aside of [`.corrupt-${name}`, `.corrupt-${name}-${newQueueId()}`]) {
      try {
        await fsp.rename(file, path.join(this.dir, aside))
        return aside
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      }
    }
    // Whatever holds those names (a local user's directory), the entry must not be read at every scan.
    await fsp.rm(file, { recursive: true, force: true })
    return undefined
  }

  /** The refusal goes back to the sender as a DSN (none for the null sender). */
  private async bounce(m: DroppedMessage, uid: number, response: string): Promise<void> {
    const config = this.env.config()
    const split = headerEnd(m.raw)
    const now = Date.now()
    const original = {
      id: newQueueId(now),
      sender: m.sender,
      headers: m.raw.subarray(0, split),
      body: { inline: m.raw.subarray(split) },
      size: m.raw.length,
      receivedAt: now,
      expiresAt: now + config.delivery.maxQueueLifetime,
      meta: { user: `uid ${uid}`, trusted: true },
    }
    const failed = m.recipients.map((address) => ({ address, response, status: statusOf(response, '5.0.0'), remote: false }))
    const generated = (b: Parameters<typeof runGenerated>[1]) => runGenerated(this.env.hooks, b, this.env.log)
    const dsn = await failureDsn({ reportingMta: config.hostname, lifetime: config.delivery.maxQueueLifetime, newId: newQueueId, generated }, original, failed)
    if (dsn) await this.env.intake.enqueue(dsn)
    this.env.log.warn({ uid, sender: m.sender, recipients: m.recipients, reply: response, dsn: dsn?.id }, dsn ? 'maildrop: message refused; bounced to the sender' : 'maildrop: message refused; no bounce (null or unusable sender)')
  }
}

/** Where the header section ends (after its blank line), or the whole message when there is none. */
function headerEnd(raw: Buffer): number {
  const crlf = raw.indexOf('\r\n\r\n')
  const lf = raw.indexOf('\n\n')
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return crlf + 4
  return lf >= 0 ? lf + 2 : raw.length
}

/** The sticky maildrop lets only its owner remove other users' files. */
function warnIfNotOwned(dir: string, log: Logger): void {
  const uid = process.getuid?.()
  if (uid === undefined || uid === 0) return
  const owner = fs.statSync(dir).uid
  if (owner !== uid) log.warn({ dir, owner, uid }, 'maildrop: the directory belongs to another user; the relay may fail to remove picked-up files (see docs/sendmail.md)')
}
