// auth-file: the users file and its password hashes. Reading it strictly (error messages never quote
// the file's content), writing it atomically, and scrypt hashing/verification. Used by the plugin
// (index.ts) and by `relay user add|remove|list` (commands.ts).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { addressKey, makeDirs, parseAddress, z } from '../../core/index.js'

/** Parameters of new hashes: scrypt with N=16384, r=8, p=1 (16 MiB, ~50 ms), 16-byte salt, 32-byte key. */
export const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1, saltBytes: 16, keyBytes: 32 } as const

export interface PasswordHash {
  N: number
  r: number
  p: number
  salt: Buffer
  key: Buffer
}

export interface User {
  hash: PasswordHash
  /** As in the file; undefined means "the user's own address". */
  senders?: string[]
}

/** The file as stored: `{ "users": { "<address>": { "hash": "scrypt$...", "senders": [...] } } }`. */
export interface UsersFileData {
  users: Record<string, { hash: string; senders?: string[] }>
}

/** A users file that cannot be used; the message names the file and the fault, never its content. */
export class UsersFileError extends Error {
  override name = 'UsersFileError'
}

const B64 = '[A-Za-z0-9+/]+={0,2}'
const HASH_RE = new RegExp(`^scrypt\\$(\\d{1,7})\\$(\\d{1,3})\\$(\\d{1,3})\\$(${B64})\\$(${B64})$`)
const HASH_HELP = 'not a password hash: expected scrypt$N$r$p$salt$key (salt and key in base64) as `relay user add` writes it'

/**
 * Parses `scrypt$N$r$p$salt$key`. Bounds keep a hand-edited file from making every login slow or
 * memory-hungry: N a power of two, 128·N·r at most 256 MiB, p at most 16, salt ≥ 8 and key 16–128 bytes.
 */
export function parseHash(text: string): PasswordHash | undefined {
  const m = HASH_RE.exec(text)
  if (!m) return undefined
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])]
  if (N < 2 || (N & (N - 1)) !== 0 || r < 1 || p < 1 || p > 16 || 128 * N * r > 256 * 2 ** 20) return undefined
  const salt = Buffer.from(m[4]!, 'base64')
  const key = Buffer.from(m[5]!, 'base64')
  if (salt.length < 8 || key.length < 16 || key.length > 128) return undefined
  return { N, r, p, salt, key }
}

export function formatHash(h: PasswordHash): string {
  return `scrypt$${h.N}$${h.r}$${h.p}$${h.salt.toString('base64')}$${h.key.toString('base64')}`
}

/** scrypt in libuv's thread pool (never on the event loop). The password is taken as UTF-8 bytes. */
function derive(password: string, h: Omit<PasswordHash, 'key'>, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    crypto.scrypt(Buffer.from(password, 'utf8'), h.salt, keylen, { N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + 2 ** 20 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  )
}

/** A new hash string for this password, with a random salt. */
export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, saltBytes, keyBytes } = SCRYPT_DEFAULTS
  const salt = crypto.randomBytes(saltBytes)
  return formatHash({ N, r, p, salt, key: await derive(password, { N, r, p, salt }, keyBytes) })
}

/** Whether the password matches the hash (constant-time comparison of the derived keys). */
export async function verifyPassword(password: string, hash: PasswordHash): Promise<boolean> {
  const key = await derive(password, hash, hash.key.length)
  return crypto.timingSafeEqual(key, hash.key)
}

/** What a user may send as: '*', an address, a domain, or '@domain' (see docs/hooks.md, `senders`). */
export function isSenderPattern(s: string): boolean {
  if (s === '*') return true
  if (s.includes('@') && !s.startsWith('@')) return parseAddress(s) !== undefined
  return parseAddress(`x@${s.startsWith('@') ? s.slice(1) : s}`) !== undefined
}

/**
 * The key a user is found by: the name lower-cased with its domain in A-labels, so that
 * `dave@bücher.example` and `Dave@XN--BCHER-KVA.example` are one user (MAIL FROM and DNS know the
 * domain in its ASCII form; a login or the file may spell it either way).
 */
export function userKey(name: string): string {
  return addressKey(name) ?? name.toLowerCase()
}

const fileSchema = z
  .object({
    users: z.record(
      z.string().refine((s) => parseAddress(s) !== undefined),
      z
        .object({
          hash: z.string().refine((s) => parseHash(s) !== undefined, { message: HASH_HELP }),
          senders: z.array(z.string().refine(isSenderPattern, { message: "expected '*', an address, a domain or '@domain'" })).optional(),
        })
        .strict(),
    ),
  })
  .strict()

const where = (segments: readonly PropertyKey[]) =>
  segments.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? String(s) : /^[\w]+$/.test(String(s)) ? `.${String(s)}` : `["${String(s)}"]`)).join('')

/**
 * Validates the text of a users file. Throws UsersFileError naming the first faults; the messages
 * never repeat values from the file (a plain password typed in by mistake must not reach a log).
 */
export function parseUsersFile(text: string, file: string): { data: UsersFileData; users: Map<string, User> } {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    // JSON.parse's own message quotes the text around the fault, so it is not passed on.
    throw new UsersFileError(`${file}: not valid JSON (check the quotes, commas and braces)`)
  }
  const parsed = fileSchema.safeParse(raw)
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) =>
      i.code === 'unrecognized_keys'
        ? `${where([...i.path, i.keys[0]!]) || '(top level)'}: unknown key`
        : i.code === 'invalid_key'
          ? `${where(i.path)}: a user name must be an email address`
          : `${where(i.path) || '(top level)'}: ${i.message}`,
    )
    throw new UsersFileError(`${file}: ${issues.join('; ')}`)
  }
  const users = new Map<string, User>()
  for (const [name, entry] of Object.entries(parsed.data.users)) {
    const key = userKey(name)
    if (users.has(key)) throw new UsersFileError(`${file}: users["${name}"]: the same user twice (names are case-insensitive, a domain the same in Unicode and xn-- form)`)
    users.set(key, { hash: parseHash(entry.hash)!, senders: entry.senders })
  }
  return { data: parsed.data, users }
}

/** Reads and validates a users file; undefined when it does not exist. */
export async function readUsersFile(file: string): Promise<{ data: UsersFileData; users: Map<string, User> } | undefined> {
  let text: string
  try {
    text = await fs.promises.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new UsersFileError(`${file}: cannot read: ${(err as Error).message}`)
  }
  return parseUsersFile(text, file)
}

/**
 * Replaces the file atomically: a temporary file beside it (mode 0600), fsync'd, renamed over it,
 * then the directory fsync'd. Readers (the running relay) see the old file or the new, never half.
 */
export async function writeUsersFile(file: string, data: UsersFileData): Promise<void> {
  const dir = path.dirname(file)
  makeDirs(dir, 0o700)
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`)
  const fh = await fs.promises.open(tmp, 'wx', 0o600)
  try {
    try {
      await fh.chmod(0o600)
      await fh.writeFile(JSON.stringify(data, null, 2) + '\n')
      await fh.sync()
    } finally {
      await fh.close()
    }
    await fs.promises.rename(tmp, file)
  } catch (err) {
    await fs.promises.rm(tmp, { force: true })
    throw err
  }
  try {
    const d = await fs.promises.open(dir, 'r')
    await d.sync().finally(() => d.close())
  } catch {
    // some platforms cannot fsync a directory; the rename is still atomic
  }
}
