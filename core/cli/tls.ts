import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { makeDirs } from '../queue/private-files.js'

/**
 * `relay tls selfsigned`: a self-signed certificate for development (openssl), written as
 * <out>/<name>.key and <out>/<name>.crt, and the config lines that use it.
 */
export async function tlsSelfSigned(opts: { name: string; out: string; days: string }): Promise<void> {
  const dir = path.resolve(opts.out)
  makeDirs(dir)
  const key = path.join(dir, `${opts.name}.key`)
  const cert = path.join(dir, `${opts.name}.crt`)
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', String(Number(opts.days) || 365),
      '-subj', `/CN=${opts.name}`, '-addext', `subjectAltName=DNS:${opts.name}`,
      '-keyout', key, '-out', cert,
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer }
    throw new Error(e.code === 'ENOENT' ? 'openssl is not installed (apt-get install openssl)' : `openssl failed: ${e.stderr?.toString().trim() ?? e.message}`)
  }
  fs.chmodSync(key, 0o600)
  process.stdout.write(
    `wrote ${cert}\nwrote ${key}\n\nIn relay.config.ts (self-signed: for development only; clients will not trust it):\n` +
      `  tls: { cert: '${cert}', key: '${key}' },\n`,
  )
}
