// The certificate files of config `tls`: read at start, watched, and read again when they change
// (or on SIGHUP); new connections get the new certificates, open sessions keep theirs.
//
// certbot renews by writing new files under archive/<name>/ and re-pointing the symlinks in
// live/<name>/ at them. A watch on the link follows the old target, so it never fires: the
// directory holding each link and the directory of its current target are watched as well, and
// a poll every `pollMs` reads the files again for what no watch sees (network filesystems, a link
// in a further directory such as Kubernetes' `..data`). Either only acts when the bytes differ
// from those in use, and after a change the watches are set up again on the new targets.
import { X509Certificate } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import { checkTlsFiles, readTlsFiles, sameTlsFiles, tlsFilePaths, type TlsFiles } from './tls.js'

type TlsConfig = RelayConfig['tls']

/** How often the files are read again when no watch has fired (a few small reads: cheap). */
export const TLS_POLL_MS = 30_000
/** Change events come in bursts (certbot re-points four links, an editor writes twice): one read shortly after the first. */
const SETTLE_MS = 200

/** A certificate served: its file, subject (the CN, else the whole subject) and expiry (epoch ms). */
export interface ServedCertificate {
  file: string
  subject: string
  notAfter: number
}

export class TlsCertificates {
  files: TlsFiles | undefined
  /** The config the files in use were read from (their paths, for `served()`). */
  private filesFrom: TlsConfig
  private servedCache: { files: TlsFiles; list: ServedCertificate[] } | undefined
  private watchers: fs.FSWatcher[] = []
  private poller: NodeJS.Timeout | undefined
  private settle: NodeJS.Timeout | undefined
  /** The last problem a change ran into, logged once until it is a different one. */
  private problem: string | undefined

  constructor(
    private tls: TlsConfig,
    private readonly log: Logger,
    /** Hands freshly read files to the running servers. */
    private readonly install: (files: TlsFiles) => void,
    private readonly pollMs = TLS_POLL_MS,
  ) {
    this.filesFrom = tls
  }

  /** Reads the files (throws when one cannot be read) and starts watching them. */
  start(): void {
    if (!this.tls) return
    this.files = readTlsFiles(this.tls)
    this.filesFrom = this.tls
    this.watch()
  }

  /** The certificates in use (metrics: expiry alerts); the first certificate of each file, not its chain. */
  served(): ServedCertificate[] {
    const files = this.files
    const tls = this.filesFrom
    if (!files || !tls) return []
    if (this.servedCache?.files === files) return this.servedCache.list
    const pairs: [string, Buffer][] = [[tls.cert, files.cert]]
    for (const [name, pair] of Object.entries(tls.sni)) {
      const cert = files.sniOptions[name.toLowerCase()]?.cert
      if (cert) pairs.push([pair.cert, cert])
    }
    const list: ServedCertificate[] = []
    for (const [file, pem] of pairs) {
      try {
        const x509 = new X509Certificate(pem)
        const cn = /^CN=(.*)$/m.exec(x509.subject)?.[1]
        list.push({ file, subject: cn ?? x509.subject.replace(/\n/g, ', '), notAfter: Date.parse(x509.validTo) })
      } catch {
        // not parsable here: the TLS stack accepted it (checkTlsFiles), so leave it out rather than fail a scrape
      }
    }
    this.servedCache = { files, list }
    return list
  }

  /** SIGHUP or a new config: reads the files; one that cannot be read keeps the old certificate in use (and says so in the log). */
  reload(): boolean {
    if (!this.tls) return false
    let files: TlsFiles
    try {
      files = readTlsFiles(this.tls)
      checkTlsFiles(files)
    } catch (err) {
      this.log.error({ err }, 'TLS certificate reload failed; the previous certificate stays in use')
      return false
    }
    this.use(files)
    return true
  }

  /** A new config generation: its files are watched and read (when the servers run already). */
  apply(tls: TlsConfig, running: boolean): void {
    this.tls = tls
    if (!running) return
    this.stop()
    if (!tls) return
    this.watch()
    this.reload()
  }

  stop(): void {
    for (const w of this.watchers) w.close()
    this.watchers = []
    clearInterval(this.poller)
    clearTimeout(this.settle)
    this.poller = this.settle = undefined
  }

  private use(files: TlsFiles): void {
    this.install(files)
    this.files = files
    this.filesFrom = this.tls
    this.problem = undefined
    this.log.info('TLS certificates reloaded')
    // The links may point elsewhere now: watch the new targets and their directories.
    this.stop()
    this.watch()
  }

  /** A watch fired or the poll came: reload only when the bytes differ from those in use. */
  private check(trigger: 'watch' | 'poll'): void {
    if (!this.tls) return
    let files: TlsFiles
    try {
      files = readTlsFiles(this.tls)
      if (this.files && sameTlsFiles(files, this.files)) return
      checkTlsFiles(files)
    } catch (err) {
      // Often a renewal half done (one link re-pointed, the next not yet): the next event or poll retries.
      const problem = (err as Error).message
      if (problem !== this.problem) this.log.warn({ err, trigger }, 'TLS certificate files changed but cannot be used yet; the previous certificate stays in use')
      this.problem = problem
      return
    }
    this.log.info({ trigger, files: tlsFilePaths(this.tls) }, 'TLS certificate files changed')
    try {
      this.use(files)
    } catch (err) {
      this.log.error({ err }, 'TLS certificate reload failed; the previous certificate stays in use')
    }
  }

  private watch(): void {
    // At most one read per SETTLE_MS: a directory that never goes quiet (the cert beside busy files) still gets checked.
    const changed = () => {
      if (this.settle) return
      this.settle = setTimeout(() => {
        this.settle = undefined
        this.check('watch')
      }, SETTLE_MS)
      this.settle.unref()
    }
    for (const target of watchTargets(tlsFilePaths(this.tls!))) {
      try {
        const w = fs.watch(target, changed)
        // A watched directory or file that goes away must not take the process with it.
        w.on('error', () => w.close())
        w.unref()
        this.watchers.push(w)
      } catch {
        // not there or not watchable (e.g. some network filesystems): the poll and SIGHUP still reload
      }
    }
    if (this.pollMs > 0) {
      this.poller = setInterval(() => this.check('poll'), this.pollMs)
      this.poller.unref()
    }
  }
}

/** Each file (a watch on a link follows its target), the directory holding it, and its target's directory. */
function watchTargets(files: string[]): string[] {
  const targets = new Set<string>()
  for (const file of files) {
    targets.add(file)
    targets.add(path.dirname(file))
    try {
      targets.add(path.dirname(fs.realpathSync(file)))
    } catch {
      // missing now; its directory's watch sees it come
    }
  }
  return [...targets]
}
