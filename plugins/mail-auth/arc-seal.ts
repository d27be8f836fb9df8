// ARC sealing (RFC 8617 §5.1) of a message as it will be queued: one ARC set, instance N+1,
// whose ARC-Authentication-Results carries this relay's Authentication-Results.
import crypto from 'node:crypto'
import fs from 'node:fs'
import type { Readable } from 'node:stream'
import { createSeal } from 'mailauth'

export interface SealKey {
  domain: string
  selector: string
  privateKey: string
  /** The public key as the base64 of its SubjectPublicKeyInfo DER (what p= of the DNS record holds). */
  publicKeyB64: string
  keyType: string
}

/**
 * Reads and checks the ARC key at start, so a bad key stops the relay instead of every message.
 * `privateKeyFile` is resolved by the caller (against the config file's directory).
 */
export function loadSealKey(o: { domain: string; selector: string; privateKey?: string; privateKeyFile?: string }): SealKey {
  let pem: string
  if (o.privateKey !== undefined) pem = o.privateKey
  else {
    try {
      pem = fs.readFileSync(o.privateKeyFile!, 'utf8')
    } catch (err) {
      throw new Error(`cannot read the key file: ${(err as Error).message}`)
    }
  }
  let key: crypto.KeyObject
  try {
    key = crypto.createPrivateKey(pem)
  } catch {
    throw new Error('not a PEM private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)')
  }
  const type = key.asymmetricKeyType
  if (type !== 'rsa' && type !== 'ed25519') throw new Error(`the key must be RSA or ed25519, not ${type}`)
  if (type === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 1024) throw new Error('an RSA key must have at least 1024 bits (2048 recommended)')
  const pub = crypto.createPublicKey(key)
  const der = pub.export({ type: 'spki', format: 'der' })
  // An ed25519 record holds the raw 32-byte key (RFC 8463), an RSA record the SPKI DER.
  const publicKeyB64 = (type === 'ed25519' ? der.subarray(der.length - 32) : der).toString('base64')
  return { domain: o.domain, selector: o.selector, privateKey: pem, publicKeyB64, keyType: type }
}

export interface SealOutcome {
  /** Header fields to put on top of the message, in order (ARC-Seal first). */
  fields: { name: string; value: string }[]
  instance?: number
  errors: string[]
}

/** Splits mailauth's ready header lines ("Name: value\r\n folded") into name and value. */
function splitField(line: string): { name: string; value: string } {
  const colon = line.indexOf(':')
  return { name: line.slice(0, colon).trim(), value: line.slice(colon + 1).replace(/^[ \t]+/, '').replace(/\r\n$/, '') }
}

export async function sealMessage(message: Readable | Buffer, key: SealKey, o: { cv: 'none' | 'pass' | 'fail'; authResults: string; strict: boolean }): Promise<SealOutcome> {
  const result = await createSeal(message, {
    seal: { signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey, cv: o.cv, authResults: o.authResults },
    strict: o.strict,
  })
  const fields = result.headers.map(splitField)
  const instance = Number(/\bi=(\d+)/.exec(fields[0]?.value ?? '')?.[1]) || undefined
  return { fields, instance, errors: result.errors.map((e) => e.err?.message ?? String(e.err)) }
}
