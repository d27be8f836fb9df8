// The certificate files of config `tls`: read at start, watched, and read again when they change
// (or on SIGHUP); new connections get the new certificates, open sessions keep theirs.
import fs from 'node:fs'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import { readTlsFiles, tlsFilePaths, type TlsFiles } from './tls.js'

type TlsConfig = RelayConfig['tls']

export class TlsCertificates {
  files: TlsFiles | undefined
  private watchers: fs.FSWatcher[] = []

  constructor(
    private tls: TlsConfig,
    private readonly log: Logger,
    /** Hands freshly read files to the running servers. */
    private readonly install: (files: TlsFiles) => void,
  ) {}

  /** Reads the files (throws when one cannot be read) and starts watching them. */
  start(): void {
    if (!this.tls) return
    this.files = readTlsFiles(this.tls)
    this.watch()
  }

  /** A file that cannot be read keeps the old certificate in use (and says so in the log). */
  reload(): boolean {
    if (!this.tls) return false
    let files: TlsFiles
    try {
      files = readTlsFiles(this.tls)
    } catch (err) {
      this.log.error({ err }, 'TLS certificate reload failed; the previous certificate stays in use')
      return false
    }
    this.files = files
    this.install(files)
    this.log.info('TLS certificates reloaded')
    return true
  }

  /** A new config generation: its files are watched and read (when the servers run already). */
  apply(tls: TlsConfig, running: boolean): void {
    this.tls = tls
    if (!tls || !running) return
    this.stop()
    this.watch()
    this.reload()
  }

  stop(): void {
    for (const w of this.watchers) w.close()
    this.watchers = []
  }

  private watch(): void {
    let timer: NodeJS.Timeout | undefined
    for (const file of tlsFilePaths(this.tls!)) {
      try {
        const w = fs.watch(file, () => {
          clearTimeout(timer)
          timer = setTimeout(() => this.reload(), 200)
        })
        w.unref()
        this.watchers.push(w)
      } catch {
        // not watchable (e.g. some network filesystems): SIGHUP still reloads
      }
    }
  }
}
