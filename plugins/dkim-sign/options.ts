// dkim-sign's options. A key file given by an absolute path is read while the options are validated
// (at start and by `relay check-config`), so a missing or unreadable key is an options error naming
// its entry, `plugins[i] (dkim-sign) options.keys[0].privateKey: ...`, and the relay does not start
// (exit 2). A relative path is taken from the config file's directory, which only setup knows: it is
// read there (keys.ts `loadKeys`), its error naming the entry the same way (exit 2 too).
import path from 'node:path'
import { pemFilePath, z } from '../../core/index.js'
import { isDomainName, isSelector, loadPrivateKey, normalizeDomain } from './keys.js'
import { DEFAULT_HEADERS, DEFAULT_OVERSIGN } from './sign.js'

const headerName = z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, { message: 'expected a header field name like Subject' })

const ISO = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/i

/** An ISO 8601 date ('2026-12-01', midnight UTC) or date and time; a time without an offset is UTC. */
const isoDate = z.union([z.string(), z.date()]).transform((value, ctx) => {
  if (value instanceof Date) {
    if (!Number.isNaN(value.getTime())) return value
  } else {
    const m = ISO.exec(value.trim())
    const text = m && value.includes(':') && !m[1] ? `${value.trim()}Z` : value.trim()
    const date = m ? new Date(text) : undefined
    if (date && !Number.isNaN(date.getTime())) return date
  }
  ctx.addIssue({ code: 'custom', message: `expected an ISO date like '2026-12-01' or '2026-12-01T08:00:00Z', got ${JSON.stringify(value)}` })
  return z.NEVER
})

const keyEntry = z
  .object({
    /** The signing domain (d=): mail whose From: (or user) domain is this one is signed with this key. */
    domain: z.string().transform(normalizeDomain).refine(isDomainName, { message: 'expected a domain name like example.com' }),
    /** The selector (s=): the key's record is the TXT record `<selector>._domainkey.<domain>`. */
    selector: z.string().trim().refine(isSelector, { message: 'expected a selector like s202612 (letters, digits and hyphens; dots between labels)' }),
    /** Path of the private key (PEM; PKCS#8 or PKCS#1, unencrypted). Relative paths are taken from the config file's directory. */
    privateKey: z.string().min(1, { message: 'expected the path of a PEM private key file' }).pipe(pemFilePath),
    /** From when this key signs; unset: always (until a newer key of the same type takes over). */
    activeFrom: isoDate.optional(),
  })
  .strict()
  .superRefine((entry, ctx) => {
    // Read at setup, which knows the config file's directory; PEM text pasted here is refused above, never read as a path.
    if (!path.isAbsolute(entry.privateKey) || /-----BEGIN|[\r\n]/.test(entry.privateKey)) return
    try {
      loadPrivateKey(entry.privateKey)
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['privateKey'], message: (err as Error).message })
    }
  })

export const options = z
  .object({
    /** The keys, several per domain for rotation (and one RSA plus one Ed25519 to sign twice). */
    keys: z
      .array(keyEntry)
      .min(1, { message: 'expected at least one key' })
      .transform((keys) => keys.map((key, index) => ({ ...key, index }))),
    /** 'from': the key is chosen by the domain of the From: header; 'user': by the authenticated user's domain. */
    signBy: z.enum(['from', 'user']).default('from'),
    /** The header fields to sign (each instance present). Default: RFC 6376 §5.4.1's list and a few more (README). */
    headers: z
      .array(headerName)
      .min(1)
      .refine((list) => list.some((h) => h.toLowerCase() === 'from'), { message: 'must include From (RFC 6376 §5.4: the From field is always signed)' })
      .default([...DEFAULT_HEADERS]),
    /** Fields listed once more than present, so none can be added after signing (signed too). */
    oversign: z.array(headerName).default([...DEFAULT_OVERSIGN]),
    /**
     * Also sign mail from unauthenticated clients whose recipients are all local (mail arriving
     * from outside). Off: such mail carries whatever From: a stranger wrote, and must not get our signature.
     */
    signInbound: z.boolean().default(false),
    /**
     * Convert 8-bit MIME parts to quoted-printable/base64 before signing, so the signature stays
     * valid when a next hop without 8BITMIME gets the message (the relay would convert it then,
     * RFC 6152 §3, and break a signature over the 8-bit form). Off: 8-bit mail is signed as it is.
     */
    sevenBit: z.boolean().default(true),
  })
  .strict()
  .superRefine((o, ctx) => {
    const seen = new Map<string, number>()
    for (const key of o.keys) {
      const id = `${key.selector.toLowerCase()}._domainkey.${key.domain}`
      const first = seen.get(id)
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['keys', key.index, 'selector'], message: `keys[${first}] already uses selector ${key.selector} for ${key.domain} (one DNS record per selector)` })
      else seen.set(id, key.index)
    }
  })

export type Options = z.output<typeof options>
