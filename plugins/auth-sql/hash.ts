// Password hashes for auth-sql: scrypt in the text form `scrypt$N$r$p$saltB64$hashB64` (the same
// form plugins/auth-file reads), checked with node:crypto scrypt and timingSafeEqual. Plain
// passwords are never accepted as a stored value.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { BUSY, passwordChecks } from '../../core/index.js'

export interface ScryptHash {
  N: number
  r: number
  p: number
  salt: Buffer
  hash: Buffer
}

/** Cost used by hashPassword() and for the stand-in check of unknown users until a real hash is seen. */
export const DEFAULT_COST = { N: 16384, r: 8, p: 1 } as const

// Bounds that keep one check from eating the host: at most 256 MiB of scrypt memory (128·N·r)
// and p ≤ 16, salts of 8+ bytes, derived keys of 16..128 bytes.
const MAX_MEMORY = 256 * 1024 * 1024
const B64 = /^[A-Za-z0-9+/_-]+={0,2}$/

/** Parses a stored hash; undefined when it is not a well-formed scrypt hash within bounds. */
export function parseScryptHash(stored: string): ScryptHash | undefined {
  const parts = stored.trim().split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined
  const [N, r, p] = parts.slice(1, 4).map((x) => (/^\d{1,10}$/.test(x!) ? Number(x) : NaN)) as [number, number, number]
  if (!(N >= 2 && (N & (N - 1)) === 0 && r >= 1 && p >= 1 && p <= 16)) return undefined
  if (128 * N * r > MAX_MEMORY) return undefined
  if (!B64.test(parts[4]!) || !B64.test(parts[5]!)) return undefined
  const salt = Buffer.from(parts[4]!, 'base64')
  const hash = Buffer.from(parts[5]!, 'base64')
  if (salt.length < 8 || hash.length < 16 || hash.length > 128) return undefined
  return { N, r, p, salt, hash }
}

function derive(password: string, salt: Buffer, keylen: number, cost: { N: number; r: number; p: number }): Promise<Buffer> {
  const opts: ScryptOptions = { N: cost.N, r: cost.r, p: cost.p, maxmem: 256 * cost.N * cost.r + 1024 * 1024 }
  // The async form runs on libuv's thread pool: a check never blocks the event loop.
  return new Promise((resolve, reject) => scrypt(Buffer.from(password, 'utf8'), salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))))
}

/** Whether `password` matches the parsed hash (constant-time comparison). */
export async function verifyScrypt(password: string, stored: ScryptHash): Promise<boolean> {
  const key = await derive(password, stored.salt, stored.hash.length, stored)
  return key.length === stored.hash.length && timingSafeEqual(key, stored.hash)
}

/** Makes a hash for a password, for provisioning users (`scrypt$16384$8$1$salt$hash`). */
export async function hashPassword(password: string, cost: { N: number; r: number; p: number } = DEFAULT_COST): Promise<string> {
  const salt = randomBytes(16)
  const key = await derive(password, salt, 32, cost)
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${salt.toString('base64')}$${key.toString('base64')}`
}

/**
 * Checks passwords, and spends the same work on users that do not exist (or whose stored value is
 * not a usable hash), so a wrong user name answers as slowly as a wrong password. The stand-in
 * check uses the cost of the last real hash seen, so it follows the database's parameters.
 */
export class PasswordChecker {
  private dummy: ScryptHash = { ...DEFAULT_COST, salt: randomBytes(16), hash: randomBytes(32) }

  /** BUSY when the process's password checks are all taken and their line is full (core's passwordChecks). */
  async verify(password: string, stored: ScryptHash): Promise<boolean | typeof BUSY> {
    const { N, r, p, hash } = stored
    if (N !== this.dummy.N || r !== this.dummy.r || p !== this.dummy.p || hash.length !== this.dummy.hash.length) {
      this.dummy = { N, r, p, salt: randomBytes(16), hash: randomBytes(hash.length) }
    }
    return passwordChecks.run(() => verifyScrypt(password, stored))
  }

  /** The work of one check, for a user that cannot succeed: false, or BUSY as `verify` would be. */
  async waste(password: string): Promise<false | typeof BUSY> {
    const r = await passwordChecks.run(() => verifyScrypt(password, this.dummy).catch(() => false))
    return r === BUSY ? BUSY : false
  }
}
