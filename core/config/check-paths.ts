// The files and directories a valid config names must also be usable: the TLS certificates and keys
// readable and matching, the CA file readable, the data directory writable (or creatable). Checked
// by `relay check-config` and before `relay start`, so a bad path is a config error naming its key.
// Listen addresses that two listeners share: check-listen.ts.
import fs from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import type { RelayConfig } from './schema.js'
import { listenIssues } from './check-listen.js'

export interface PathIssue {
  path: string
  message: string
}

function reason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return 'no such file'
  if (code === 'EACCES' || code === 'EPERM') return `permission denied (the relay runs as uid ${process.getuid?.() ?? '?'})`
  if (code === 'EISDIR') return 'a directory, not a file'
  return code ?? (err as Error).message
}

/** The file's bytes, or an issue naming the key that points to it. */
function readFile(file: string, key: string, issues: PathIssue[]): Buffer | undefined {
  try {
    return fs.readFileSync(file)
  } catch (err) {
    issues.push({ path: key, message: `cannot read ${file}: ${reason(err)}` })
    return undefined
  }
}

/** A certificate and key that are readable PEM and make a pair, as the TLS server will need them. */
function checkPair(pair: { cert: string; key: string }, at: string, issues: PathIssue[]): void {
  const cert = readFile(pair.cert, `${at}.cert`, issues)
  const key = readFile(pair.key, `${at}.key`, issues)
  if (!cert || !key) return
  try {
    tls.createSecureContext({ cert, key })
  } catch (err) {
    const message = (err as Error).message
    const mismatch = /key values mismatch|KEY_VALUES_MISMATCH/i.test(message)
    issues.push({
      path: at,
      message: mismatch ? `the key ${pair.key} does not belong to the certificate ${pair.cert}` : `${pair.cert} and ${pair.key} are not a usable PEM certificate and key (${message})`,
    })
  }
}

/**
 * The extra CA file holds PEM certificates: Node's TLS takes a file of anything else (a key, a
 * garbled copy, an empty file) without a word, and the CA is then never used.
 */
function checkCaFile(file: string, issues: PathIssue[]): void {
  const pem = readFile(file, 'delivery.tlsCa', issues)?.toString('latin1')
  if (pem === undefined) return
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) return void issues.push({ path: 'delivery.tlsCa', message: `${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)` })
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block)
    } catch (err) {
      issues.push({ path: 'delivery.tlsCa', message: `${file}: certificate ${i + 1} cannot be read (${(err as Error).message})` })
    }
  }
}

/** The directory exists and is writable, or its nearest existing parent is (start creates it): as start will find it. */
function checkWritableDir(dir: string, key: string, issues: PathIssue[], sqlite: boolean): void {
  let existing = dir
  while (!fs.existsSync(existing)) {
    const parent = path.dirname(existing)
    if (parent === existing) break
    existing = parent
  }
  let stat: fs.Stats
  try {
    stat = fs.statSync(existing)
  } catch (err) {
    issues.push({ path: key, message: `cannot use ${dir}: ${reason(err)}` })
    return
  }
  if (!stat.isDirectory()) {
    issues.push({ path: key, message: existing === dir ? `${dir} is not a directory` : `cannot create ${dir}: ${existing} is not a directory` })
    return
  }
  try {
    fs.accessSync(existing, fs.constants.W_OK | fs.constants.X_OK)
  } catch (err) {
    issues.push({ path: key, message: existing === dir ? `${dir} is not writable: ${reason(err)}` : `cannot create ${dir}: ${existing} is not writable (${reason(err)})` })
    return
  }
  // The permission bits pass for root everywhere, /proc and /sys included, where start's mkdir then
  // fails: a directory made and removed at once tells, and leaves nothing behind.
  try {
    fs.rmdirSync(fs.mkdtempSync(path.join(existing, '.relay-check-')))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    issues.push({ path: key, message: existing === dir ? `${dir} is not writable: it does not take new directories (${code})` : `cannot create ${dir}: ${existing} does not take new directories (${code})` })
    return
  }
  if (existing === dir) checkOwnFiles(dir, key, issues, sqlite)
}

/** What start opens in the data directory (queue, lock, pid and signals files, spool, maildrop): a start as root may have left them. */
const OWN_FILES = ['queue.sqlite', 'queue.sqlite-wal', 'queue.sqlite-shm', 'relay.lock', 'relay.pid', 'relay.signals', 'spool', 'maildrop']

function checkOwnFiles(dir: string, key: string, issues: PathIssue[], sqlite: boolean): void {
  for (const file of OWN_FILES.filter((n) => sqlite || !n.startsWith('queue.')).map((n) => path.join(dir, n))) {
    const stat = fs.statSync(file, { throwIfNoEntry: false })
    try {
      if (stat) fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK | (stat.isDirectory() ? fs.constants.X_OK : 0))
    } catch (err) {
      const mode = (stat!.mode & 0o7777).toString(8).padStart(4, '0')
      issues.push({ path: key, message: `cannot open ${file} (mode ${mode}, owner uid ${stat!.uid}): ${reason(err)}; chown the data directory to the relay's user` })
    }
  }
}

/** Every problem with the paths the config names, and listen addresses that clash, all at once. */
export function checkConfigPaths(config: RelayConfig): PathIssue[] {
  const issues: PathIssue[] = listenIssues(config.listen)
  if (config.tls) {
    checkPair(config.tls, 'tls', issues)
    for (const [name, pair] of Object.entries(config.tls.sni)) checkPair(pair, `tls.sni.${name}`, issues)
  }
  if (config.delivery.tlsCa) checkCaFile(path.resolve(config.configDir, config.delivery.tlsCa), issues)
  checkWritableDir(config.dataDir, 'dataDir', issues, config.queue.driver === 'sqlite')
  return issues
}

/**
 * Certificates the relay would serve that clients which verify will refuse: expired, or not valid
 * yet. Warnings, not errors (a sender doing opportunistic TLS still takes them); said by
 * check-config and logged at start.
 */
export function certificateWarnings(config: RelayConfig, now = Date.now()): PathIssue[] {
  if (!config.tls) return []
  const pairs: [string, string][] = [['tls.cert', config.tls.cert], ...Object.entries(config.tls.sni).map(([name, p]) => [`tls.sni.${name}.cert`, p.cert] as [string, string])]
  const out: PathIssue[] = []
  for (const [key, file] of pairs) {
    let cert: X509Certificate
    try {
      cert = new X509Certificate(fs.readFileSync(file))
    } catch {
      continue // unreadable or no PEM: checkConfigPaths says so
    }
    const until = Date.parse(cert.validTo)
    const from = Date.parse(cert.validFrom)
    if (until < now) out.push({ path: key, message: `${file} expired on ${new Date(until).toISOString().slice(0, 10)}: clients that verify certificates will refuse it` })
    else if (from > now) out.push({ path: key, message: `${file} is not valid before ${new Date(from).toISOString().slice(0, 10)}: clients that verify certificates will refuse it` })
  }
  return out
}
