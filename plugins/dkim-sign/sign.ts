// Computes DKIM-Signature header values with mailauth's dkimSign (relaxed/relaxed, sha256), one per key.
//
// mailauth's signer lists each signed field in h= exactly as often as it occurs, so it cannot
// oversign by itself. The message is therefore read here once: the body is hashed as it streams by
// (mailauth's relaxed body hasher), the header section is parsed with mailauth's parser, and
// dkimSign gets both as prepared values (its `headers` + `bodyHash` inputs, the way mailauth's
// own ARC sealer signs). The oversigned names are added to the h= tag after the last field that is
// signed: a verifier finds no instance left for them and hashes nothing (RFC 6376 §5.4.2), exactly
// as the signer did, while any field of that name added later breaks the signature.
import type { Readable } from 'node:stream'
import type { DKIMSignOptions } from 'mailauth'
import { mailauthInternals, type MailauthHeaderLine as ParsedHeaderLine } from '../../core/index.js'
import type { DkimKey } from './keys.js'

const { dkimSign, parseHeaders, dkimBody } = mailauthInternals

/**
 * RFC 6376 §5.4.1's recommended fields, plus Sender, Message-ID, the MIME fields (changing them
 * changes what the body shows) and List-Unsubscribe-Post (RFC 8058 §4 requires it signed).
 */
export const DEFAULT_HEADERS: readonly string[] = [
  'From', 'Reply-To', 'Subject', 'Date', 'To', 'Cc',
  'Resent-Date', 'Resent-From', 'Resent-To', 'Resent-Cc',
  'In-Reply-To', 'References',
  'List-Id', 'List-Help', 'List-Unsubscribe', 'List-Subscribe', 'List-Post', 'List-Owner', 'List-Archive', 'List-Unsubscribe-Post',
  'Sender', 'Message-ID', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding',
]

/**
 * Listed once more than present, so that a second one (or a first, where there was none) cannot be
 * added to a replayed message: who it is from and to, where replies go, what it answers, which it is,
 * and how its body is shown (RFC 6376 §8.15). Not List-*: a list that only adds its fields keeps it valid.
 */
export const DEFAULT_OVERSIGN: readonly string[] = [
  'From', 'Subject', 'To', 'Cc', 'Date', 'Reply-To', 'Sender', 'Message-ID', 'In-Reply-To', 'References',
  'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding',
]

export interface SignOptions {
  /** Fields to sign (each present instance). */
  headers: readonly string[]
  /** Fields to list once more than present (also signed). */
  oversign: readonly string[]
  /** Signature time (t=); default now. */
  now?: Date
}

export interface SignResult {
  /** One DKIM-Signature value per key that signed (without the field name; folded with CRLF + space). */
  values: string[]
  /** Keys that could not sign, with why (mailauth's error code, e.g. ENOFROM). */
  errors: { domain: string; selector: string; code?: string; message: string }[]
}

/** Where the header section ends in the bytes read so far: fields end at headerEnd, the body starts at bodyStart. */
function headerEnd(head: Buffer, from: number): { headerEnd: number; bodyStart: number } | undefined {
  if (head.length >= 2 && head[0] === 0x0d && head[1] === 0x0a) return { headerEnd: 0, bodyStart: 2 }
  const i = head.indexOf('\r\n\r\n', Math.max(0, from - 3), 'latin1')
  return i < 0 ? undefined : { headerEnd: i + 2, bodyStart: i + 4 }
}

/** Reads the message once: the header section into memory, the body only through the hasher. */
async function readAndHash(message: Readable): Promise<{ header: Buffer; bodyHash: string }> {
  const hasher = dkimBody('relaxed', 'sha256', false)
  let head: Buffer = Buffer.alloc(0)
  let header: Buffer | undefined
  for await (const chunk of message as AsyncIterable<Buffer | string>) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk
    if (header) {
      hasher.update(buf)
      continue
    }
    const scanned = head.length
    head = head.length ? Buffer.concat([head, buf]) : buf
    const split = headerEnd(head, scanned)
    if (!split) continue
    header = head.subarray(0, split.headerEnd)
    if (split.bodyStart < head.length) hasher.update(head.subarray(split.bodyStart))
  }
  // No empty line at all: the message is all header fields and has an empty body.
  return { header: header ?? head, bodyHash: hasher.digest('base64') }
}

/** Adds the oversigned names to h=: after the last field the signer lists (the topmost signed one). */
function withOversigning(parsed: ParsedHeaderLine[], signed: Set<string>, oversign: readonly string[]): ParsedHeaderLine[] {
  if (!oversign.length) return parsed
  const top = parsed.findIndex((h) => h.key !== null && signed.has(h.key))
  if (top < 0) return parsed // nothing to sign (no From): dkimSign reports ENOFROM
  const copy = [...parsed]
  const entry = copy[top]!
  copy[top] = { ...entry, casedKey: [entry.casedKey ?? entry.key, ...oversign].join(': ') }
  return copy
}

/** Splits mailauth's header block ("DKIM-Signature: ...\r\n" per signature) into field values. */
function splitSignatures(block: string): string[] {
  return block
    .split(/\r\n(?![ \t])/)
    .filter((field) => field.trim())
    .map((field) => field.replace(/^DKIM-Signature[ \t]*:[ \t]*/i, ''))
}

export async function signMessage(message: Readable, keys: readonly DkimKey[], o: SignOptions): Promise<SignResult> {
  const { header, bodyHash } = await readAndHash(message)
  const listed = new Set(o.headers.map((h) => h.toLowerCase()))
  const headerList = [...o.headers, ...o.oversign.filter((h) => !listed.has(h.toLowerCase()))]
  const { parsed, original } = parseHeaders(header)
  // mailauth's typings want one key at the top level; signatureData carries them all here.
  const options = {
    canonicalization: 'relaxed/relaxed',
    headerList,
    signTime: o.now ?? new Date(),
    headers: { parsed: withOversigning(parsed, new Set(headerList.map((h) => h.toLowerCase())), o.oversign), original },
    bodyHash,
    signatureData: keys.map((k) => ({
      signingDomain: k.domain,
      selector: k.selector,
      privateKey: k.pem,
      algorithm: k.type === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
    })),
  }
  // Prepared headers and body hash: the (empty) input is not parsed again.
  const result = await dkimSign(Buffer.alloc(0), options as unknown as DKIMSignOptions)
  return {
    values: splitSignatures(result.signatures),
    errors: (result.errors ?? []).map((e) => ({
      domain: e.signingDomain ?? '',
      selector: e.selector ?? '',
      code: e.err?.code,
      message: e.err?.message ?? 'signing failed',
    })),
  }
}
