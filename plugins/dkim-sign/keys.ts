// DKIM keys: reading the PEM files, the public key in the forms DNS uses, and which key signs when
// (rotation by `activeFrom`). Shared by the plugin, its doctor checks and `relay dkim keygen`.
import crypto from 'node:crypto'
import fs from 'node:fs'
import { domainToASCII } from 'node:url'

export type KeyType = 'rsa' | 'ed25519'

/** A private key read from disk at start, with what DNS must publish for it. */
export interface LoadedKey {
  type: KeyType
  /** The PEM text, as mailauth takes it. */
  pem: string
  /** The public key as base64 DER SubjectPublicKeyInfo: what `p=` holds for RSA, and what keys are compared by. */
  spki: string
  /** RSA modulus size in bits. */
  bits?: number
}

/** One configured key (a `keys[]` entry of the options, with its file read). */
export interface DkimKey extends LoadedKey {
  /** Its position in `keys`, for messages. */
  index: number
  /** The signing domain (d=), lower case, A-labels. */
  domain: string
  /** The selector (s=). */
  selector: string
  /** The private key file (resolved against the config file's directory). */
  file: string
  /** From when it signs; unset = always. */
  activeFrom?: Date
}

/** RFC 8410 SubjectPublicKeyInfo header of an Ed25519 key; the raw 32 key bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** RFC 8301: verifiers refuse RSA keys under 1024 bits. */
const MIN_RSA_BITS = 1024

/** A domain name in the form keys are matched by: lower case, no trailing dot, A-labels. */
export function normalizeDomain(domain: string): string {
  const trimmed = domain.trim().replace(/\.$/, '').toLowerCase()
  return domainToASCII(trimmed) || trimmed
}

const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
const DOMAIN = new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})+$`)
const SELECTOR = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`, 'i')

export const isDomainName = (domain: string): boolean => DOMAIN.test(domain)
export const isSelector = (selector: string): boolean => SELECTOR.test(selector) && selector.length <= 63

/** The public key of a private key as base64 DER SPKI. */
function spkiOf(key: crypto.KeyObject): string {
  return crypto.createPublicKey(key).export({ type: 'spki', format: 'der' }).toString('base64')
}

/** Reads and checks a private key file; throws an Error with a message fit for an options error. */
export function loadPrivateKey(file: string): LoadedKey {
  let pem: string
  try {
    pem = fs.readFileSync(file, 'utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new Error(`cannot read the private key file ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message}`)
  }
  let key: crypto.KeyObject
  try {
    key = crypto.createPrivateKey({ key: pem, format: 'pem' })
  } catch (err) {
    throw new Error(`${file} is not a PEM private key (or it is encrypted: keys must be unencrypted PKCS#8 or PKCS#1): ${(err as Error).message}`)
  }
  const type = key.asymmetricKeyType
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < MIN_RSA_BITS) throw new Error(`${file}: an RSA key of ${bits} bits is too short (verifiers refuse keys under ${MIN_RSA_BITS} bits, RFC 8301); use 2048`)
    return { type, pem, spki: spkiOf(key), bits }
  }
  if (type === 'ed25519') return { type, pem, spki: spkiOf(key) }
  throw new Error(`${file}: a ${type ?? 'unknown'} key cannot sign DKIM (use rsa or ed25519)`)
}

/** What the plugin's setup returns (`ctx.state`): the keys with their files read. */
export interface State {
  keys: DkimKey[]
}

/** A `keys[]` entry of the options: its file not read yet. */
export interface KeyEntry {
  index: number
  domain: string
  selector: string
  /** The path as configured. */
  privateKey: string
  activeFrom?: Date
}

/**
 * Reads the configured keys at setup, each path through `resolvePath` (the config file's directory).
 * Throws naming the entry, `options.keys[1].privateKey: cannot read ...`, as the options check does.
 */
export function loadKeys(entries: readonly KeyEntry[], resolvePath: (file: string) => string): DkimKey[] {
  return entries.map(({ privateKey, ...entry }) => {
    const file = resolvePath(privateKey)
    try {
      return { ...entry, file, ...loadPrivateKey(file) }
    } catch (err) {
      throw new Error(`options.keys[${entry.index}].privateKey: ${(err as Error).message}`)
    }
  })
}

/** Makes a new private key: RSA 2048 or Ed25519, PEM (PKCS#8). */
export function generatePrivateKey(type: KeyType): string {
  const { privateKey } = type === 'rsa' ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }) : crypto.generateKeyPairSync('ed25519')
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
}

/**
 * The `p=` value of the DNS record for a key: the SPKI for RSA (RFC 6376 §3.6.1), the raw 32-byte
 * public key for Ed25519 (RFC 8463 §4.2).
 */
export function publicKeyValue(key: Pick<LoadedKey, 'type' | 'spki'>): string {
  if (key.type === 'rsa') return key.spki
  return Buffer.from(key.spki, 'base64').subarray(ED25519_SPKI_PREFIX.length).toString('base64')
}

/** The TXT record value to publish at `<selector>._domainkey.<domain>`. */
export function dnsRecordValue(key: Pick<LoadedKey, 'type' | 'spki'>): string {
  return `v=DKIM1; k=${key.type}; p=${publicKeyValue(key)}`
}

export const recordName = (key: { selector: string; domain: string }): string => `${key.selector}._domainkey.${key.domain}`

/**
 * The public key in a published `p=` value as base64 DER SPKI, so it can be compared with a private
 * key's. Takes the raw Ed25519 form (RFC 8463), SPKI, and PKCS#1 RSA keys; undefined when it is none.
 */
export function spkiFromRecord(p: string): string | undefined {
  const der = Buffer.from(p.replace(/\s+/g, ''), 'base64')
  if (!der.length) return undefined
  if (der.length === 32) return Buffer.concat([ED25519_SPKI_PREFIX, der]).toString('base64')
  for (const type of ['spki', 'pkcs1'] as const) {
    try {
      return crypto.createPublicKey({ key: der, format: 'der', type }).export({ type: 'spki', format: 'der' }).toString('base64')
    } catch {
      // try the next form
    }
  }
  return undefined
}

/** A key's place in a rotation at `now`. */
export type KeyState = 'signing' | 'future' | 'retired'

/**
 * Which keys sign for `domain` at `now`: per key type, the active key (no `activeFrom`, or one not
 * in the future) with the latest `activeFrom`; a key without `activeFrom` counts as the oldest.
 * Among equals the one listed last wins. At most one RSA and one Ed25519 key.
 */
export function signingKeys(keys: readonly DkimKey[], domain: string, now: Date): DkimKey[] {
  const best = new Map<KeyType, DkimKey>()
  for (const key of keys) {
    if (key.domain !== domain) continue
    const from = key.activeFrom?.getTime() ?? -Infinity
    if (from > now.getTime()) continue
    const current = best.get(key.type)
    if (!current || from >= (current.activeFrom?.getTime() ?? -Infinity)) best.set(key.type, key)
  }
  return [...best.values()].sort((a, b) => (a.type === b.type ? 0 : a.type === 'rsa' ? -1 : 1))
}

export function keyState(key: DkimKey, keys: readonly DkimKey[], now: Date): KeyState {
  if ((key.activeFrom?.getTime() ?? -Infinity) > now.getTime()) return 'future'
  return signingKeys(keys, key.domain, now).includes(key) ? 'signing' : 'retired'
}
