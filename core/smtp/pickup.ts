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

export class MaildropPickup {
  private watcher: fs.FSWatcher | undefined
  private timer: NodeJS.Timeout | undefined
  private scanning: Promise<void> | undefined
  private again = false
  private stopped = false
  private readonly dir: string

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
    for (const name of await listDropped(this.dir)) {
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
  private async read(file: string): Promise<{ data: Buffer; uid: number }> {
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
      if (stat.size > this.env.config().smtp.maxMessageSize + 1024 * 1024) throw new CorruptDropError(`too large (${stat.size} bytes)`)
      return { data: await handle.readFile(), uid: stat.uid }
    } finally {
      await handle.close()
    }
  }

  private async pickUp(file: string): Promise<void> {
    const { log } = this.env
    let dropped: DroppedMessage
    let uid: number
    try {
      const read = await this.read(file)
      dropped = parseDropped(read.data)
      uid = read.uid
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      if (!(err instanceof CorruptDropError)) throw err
      const aside = path.join(this.dir, `.corrupt-${path.basename(file)}`)
      await fsp.rename(file, aside)
      log.error({ file: aside, reason: err.message }, 'maildrop: not a message file; set aside')
      return
    }
    try {
      const { queueId } = await this.env.inject({ sender: dropped.sender, recipients: dropped.recipients, raw: dropped.raw }, { kind: 'local', uid })
      log.info({ queueId, uid, file: path.basename(file) }, 'maildrop: picked up')
    } catch (err) {
      const code = (err as { responseCode?: number }).responseCode
      // A temporary refusal (or a failure without a reply): the file stays for the next scan.
      if (!code || code < 500) {
        log.warn({ err: code ? undefined : err, reply: (err as Error).message, file: path.basename(file) }, 'maildrop: not picked up now; will retry')
        return
      }
      await this.bounce(dropped, uid, `${code} ${(err as Error).message}`)
    }
    await fsp.rm(file, { force: true })
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
