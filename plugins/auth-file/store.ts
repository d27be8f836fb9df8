// auth-file: the users the relay knows, kept in step with the users file. The file is watched
// (its directory, so an atomic rename is seen) with a short debounce, and also checked by stat every
// `checkInterval` for filesystems where watching does not work. A broken file keeps the last good
// users and logs an error; a missing file means no users.
import fs from 'node:fs'
import path from 'node:path'
import type { PluginContext } from '../../core/index.js'
import { parseUsersFile, userKey, type User } from './users.js'

export class UserStore {
  private users = new Map<string, User>()
  /** Identity of the file as last seen (`ino:size:mtime`, or 'missing'): the stat check's "changed?". */
  private seen: string | undefined
  /** Text last read (good or broken): a watch event with the same content is not news. */
  private lastText: string | undefined
  /** Whether a good file has been read since the start (or since the file went missing). */
  private seenGood = false
  private watcher: fs.FSWatcher | undefined
  private poll: NodeJS.Timeout | undefined
  private debounce: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private rerun = false
  private rerunForced = false

  constructor(
    readonly file: string,
    private readonly log: PluginContext<unknown>['log'],
    private readonly opts: { checkInterval: number; watch?: boolean; debounce?: number },
  ) {}

  get size(): number {
    return this.users.size
  }

  /** The user with this name (case-insensitive, its domain in either spelling: see userKey). */
  get(name: string): User | undefined {
    return this.users.get(userKey(name))
  }

  async start(): Promise<void> {
    await this.check(true)
    if (this.opts.watch !== false) this.watch()
    this.poll = setInterval(() => void this.check(false), this.opts.checkInterval)
    this.poll.unref()
  }

  /** Watches the directory, not the file: a rename over the file replaces it and ends a watch on it. */
  private watch(): void {
    try {
      const base = path.basename(this.file)
      this.watcher = fs.watch(path.dirname(this.file), { persistent: false }, (_event, name) => {
        if (!name || name.toString() === base) this.changed()
      })
      this.watcher.on('error', (err) => {
        this.log.warn({ file: this.file, error: err.message }, 'cannot watch the users file any more; checking it by stat only')
        this.watcher?.close()
        this.watcher = undefined
      })
    } catch (err) {
      this.log.warn({ file: this.file, error: (err as Error).message }, 'cannot watch the users file; checking it by stat only')
    }
  }

  close(): void {
    this.watcher?.close()
    clearInterval(this.poll)
    clearTimeout(this.debounce)
  }

  /** A watch event: writers often touch the file several times in a row, so wait for quiet. */
  private changed(): void {
    clearTimeout(this.debounce)
    this.debounce = setTimeout(() => void this.check(true), this.opts.debounce ?? 100)
    this.debounce.unref()
  }

  /** One check at a time; a request during a check runs another one after it. */
  private check(force: boolean): Promise<void> {
    if (this.running) {
      this.rerun = true
      this.rerunForced ||= force
      return this.running
    }
    this.running = (async () => {
      let f = force
      for (;;) {
        await this.load(f).catch((err: Error) => this.log.error({ file: this.file, error: err.message }, 'users file check failed'))
        if (!this.rerun) break
        f = this.rerunForced
        this.rerun = this.rerunForced = false
      }
    })().finally(() => (this.running = undefined))
    return this.running
  }

  /** Reads the file if it changed (`force`: read it anyway, e.g. after a watch event). */
  private async load(force: boolean): Promise<void> {
    let fh: fs.promises.FileHandle
    try {
      fh = await fs.promises.open(this.file, 'r')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') {
        if (this.seen === 'missing') return
        this.seen = 'missing'
        this.lastText = undefined
        if (this.users.size) this.log.warn({ file: this.file }, 'users file removed: no user can log in until it is back')
        else this.log.warn({ file: this.file }, 'users file not found: no user can log in until it is created (relay user add)')
        this.users = new Map()
        this.seenGood = false
        return
      }
      if (this.seen === `error:${code}`) return
      this.seen = `error:${code}`
      this.log.error({ file: this.file, error: (err as Error).message }, 'cannot read the users file: keeping the last good users')
      return
    }
    try {
      // Stat and read through one descriptor, so the identity recorded is that of the text read.
      const st = await fh.stat()
      const id = `${st.ino}:${st.size}:${st.mtimeMs}`
      if (id === this.seen && !force) return
      this.seen = id
      const text = await fh.readFile('utf8')
      if (text === this.lastText) return
      this.lastText = text
      try {
        const { users } = parseUsersFile(text, this.file)
        this.users = users
        this.seenGood = true
        this.log.info({ file: this.file, users: users.size }, 'users file loaded')
      } catch (err) {
        const what = this.seenGood ? 'keeping the last good users' : 'nobody can log in until it is fixed'
        this.log.error({ file: this.file, error: (err as Error).message, users: this.users.size }, `users file is broken: ${what}`)
      }
    } finally {
      await fh.close()
    }
  }
}
