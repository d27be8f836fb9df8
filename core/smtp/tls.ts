import fs from 'node:fs'
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
