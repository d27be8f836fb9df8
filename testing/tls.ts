/**
 * A certificate authority made at test time (openssl), and server certificates it signs, so tests
 * do real TLS handshakes that verify against a real CA.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { tempDir } from './relay.js'

export interface TestCa {
  dir: string
  /** PEM of the CA certificate, for clients' `ca` option. */
  caPem: Buffer
  caFile: string
  /** Issues a certificate for these DNS names (the first is the CN); returns file paths. */
  issue(names: string[], opts?: { days?: number; file?: string }): { key: string; cert: string }
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })

export function makeCa(name = 'Relay Test CA'): TestCa {
  const dir = tempDir('relay-ca-')
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', `/CN=${name}`, '-keyout', 'ca.key', '-out', 'ca.crt'], dir)
  let serial = 1
  return {
    dir,
    caFile: path.join(dir, 'ca.crt'),
    caPem: fs.readFileSync(path.join(dir, 'ca.crt')),
    issue(names, opts = {}) {
      const base = opts.file ?? `${names[0]}-${serial}`
      const ext = path.join(dir, `${base}.ext`)
      fs.writeFileSync(ext, `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\nextendedKeyUsage=serverAuth\n`)
      openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${names[0]}`, '-keyout', `${base}.key`, '-out', `${base}.csr`], dir)
      openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', String(serial++), '-days', String(opts.days ?? 2), '-sha256', '-extfile', ext, '-out', `${base}.crt`], dir)
      return { key: path.join(dir, `${base}.key`), cert: path.join(dir, `${base}.crt`) }
    },
  }
}
