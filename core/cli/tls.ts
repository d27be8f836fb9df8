import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { makeDirs } from '../queue/private-files.js'

/** A mistake in the command line: `relay: <message>`, exit 2 (as commander's usage errors). */
function usage(message: string): never {
  process.stderr.write(`relay: ${message}\n`)
  process.exit(2)
}

/** Creates `file` (0600 from the start for a key) only if it is not there yet: false if it is. */
function createNew(file: string, mode: number): boolean {
  try {
    fs.closeSync(fs.openSync(file, 'wx', mode))
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return false
  }
}

/**
 * `relay tls selfsigned`: a self-signed certificate for development (openssl), written as
 * <out>/<name>.key and <out>/<name>.crt, and the config lines that use it. Existing files are never
 * replaced (a real key may sit in --out); the key is private (0600) from its first byte; a name
 * that is an IP address goes in the certificate as one, so clients that connect to it can match it.
 */
export async function tlsSelfSigned(opts: { name: string; out: string; days: string }): Promise<void> {
  const days = /^\d{1,5}$/.test(opts.days) ? Number(opts.days) : 0
  if (days < 1 || days > 36500) usage(`--days: expected a whole number of days from 1 to 36500, got '${opts.days}'`)
  const ip = net.isIP(opts.name) !== 0
  if (!ip && !/^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$/.test(opts.name)) {
    usage(`--name: expected a host name or IP address (like mail.example.com), got '${opts.name}'`)
  }
  const dir = path.resolve(opts.out)
  makeDirs(dir)
  const base = opts.name.replace(/:/g, '_') // an IPv6 address: no ':' in file names
  const key = path.join(dir, `${base}.key`)
  const cert = path.join(dir, `${base}.crt`)
  const taken = !createNew(key, 0o600) ? key : !createNew(cert, 0o644) ? cert : undefined
  if (taken) {
    if (taken === cert) fs.rmSync(key, { force: true })
    process.stderr.write(`relay: ${taken} already exists; not overwriting it (choose another --name or --out, or move the old files away)\n`)
    process.exit(1)
  }
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', String(days),
      '-subj', `/CN=${opts.name}`, '-addext', `subjectAltName=${ip ? 'IP' : 'DNS'}:${opts.name}`,
      '-keyout', key, '-out', cert,
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    fs.rmSync(key, { force: true })
    fs.rmSync(cert, { force: true })
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer }
    throw new Error(e.code === 'ENOENT' ? 'openssl is not installed (apt-get install openssl)' : `openssl failed: ${e.stderr?.toString().trim() ?? e.message}`)
  }
  fs.chmodSync(key, 0o600)
  process.stdout.write(
    `wrote ${cert}\nwrote ${key}\n\nIn relay.config.ts (self-signed: for development only; clients will not trust it):\n` +
      `  tls: { cert: '${cert}', key: '${key}' },\n`,
  )
}
