import fs from 'node:fs'
import tls from 'node:tls'
import type { RelayConfig } from '../config/schema.js'

export interface TlsFiles {
  key: Buffer
  cert: Buffer
  sniOptions: Record<string, { key: Buffer; cert: Buffer }>
  minVersion: 'TLSv1.2' | 'TLSv1.3'
}

/** Reads the certificate and key files named in config `tls` (and each `sni` entry). */
export function readTlsFiles(tls: NonNullable<RelayConfig['tls']>): TlsFiles {
  const read = (file: string, what: string) => {
    try {
      return fs.readFileSync(file)
    } catch (err) {
      throw new Error(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  const sniOptions: TlsFiles['sniOptions'] = {}
  for (const [name, pair] of Object.entries(tls.sni)) {
    sniOptions[name.toLowerCase()] = { key: read(pair.key, `tls.sni.${name}.key`), cert: read(pair.cert, `tls.sni.${name}.cert`) }
  }
  return { key: read(tls.key, 'tls.key'), cert: read(tls.cert, 'tls.cert'), sniOptions, minVersion: tls.minVersion }
}

/** Every file the TLS setup reads, for watching. */
export function tlsFilePaths(tls: NonNullable<RelayConfig['tls']>): string[] {
  return [tls.key, tls.cert, ...Object.values(tls.sni).flatMap((p) => [p.key, p.cert])]
}

/** Throws when a key does not match its certificate or a file is not PEM (what a server would refuse). */
export function checkTlsFiles(files: TlsFiles): void {
  const pairs: [string, { key: Buffer; cert: Buffer }][] = [['tls', files], ...Object.entries(files.sniOptions).map(([name, p]) => [`tls.sni.${name}`, p] as [string, typeof p])]
  for (const [what, pair] of pairs) {
    // A file that is no PEM at all (a renewal half written, the wrong file linked) says which.
    if (!pair.cert.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`${what}: the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)
    if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pair.key.toString('latin1'))) throw new Error(`${what}: the key file holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)`)
    try {
      tls.createSecureContext({ key: pair.key, cert: pair.cert })
    } catch (err) {
      throw new Error(`${what}: the key and certificate do not make a pair (${(err as Error).message})`)
    }
  }
}

/** Same bytes in every file (a change event that changed nothing, or a poll that found nothing new). */
export function sameTlsFiles(a: TlsFiles, b: TlsFiles): boolean {
  const names = Object.keys(a.sniOptions)
  if (names.length !== Object.keys(b.sniOptions).length) return false
  if (!a.key.equals(b.key) || !a.cert.equals(b.cert) || a.minVersion !== b.minVersion) return false
  return names.every((n) => b.sniOptions[n] !== undefined && a.sniOptions[n]!.key.equals(b.sniOptions[n]!.key) && a.sniOptions[n]!.cert.equals(b.sniOptions[n]!.cert))
}
