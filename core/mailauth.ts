// The one place that reaches into mailauth's internals (`mailauth/lib/...`): functions its public
// entry point does not export (evaluateDmarc, the DMARC record lookup, the DKIM header parser and
// body hasher), or that Relay takes from their own module so the whole of mailauth (BIMI, undici)
// is not loaded. These paths are not a published API and move between versions: everything else
// (core/delivery, plugins through core/index.ts) uses this typed surface, and
// test/unit/mailauth-adapter.test.ts loads every path listed here, so an upgrade that moves one
// fails there by name. Each module is required on first use, not when Relay starts.
import { createRequire } from 'node:module'
import type { evaluateDmarc } from 'mailauth/lib/dmarc/index.js'
import type { dkimSign } from 'mailauth/lib/dkim/sign.js'
import type { spf } from 'mailauth/lib/spf/index.js'
import type { parsePolicy, resolvePolicy, validateMx } from 'mailauth/lib/mta-sts.js'

/** One header field as mailauth's parser gives it (and its DKIM signer takes it). */
export interface ParsedHeaderLine {
  /** Field name, lower case (null for a line that is no field). */
  key: string | null
  /** Field name as written: the DKIM signer builds the h= tag from these. */
  casedKey?: string
  /** The whole field, folds included, without the final CRLF. */
  line: Buffer
}

/** A DMARC record found for a domain, its own or inherited from the organisational domain. */
export interface DmarcRecordFound {
  rr: string
  recordDomain: string
  isOrgRecord: boolean
}

type Lookup = (name: string, type: string) => Promise<unknown>

/** The mailauth internals used, path → the exports called ('' = the module itself is the function). */
export const MAILAUTH_INTERNALS = {
  'mailauth/lib/mta-sts.js': ['parsePolicy', 'resolvePolicy', 'validateMx'],
  'mailauth/lib/spf/index.js': ['spf'],
  'mailauth/lib/dmarc/index.js': ['evaluateDmarc'],
  'mailauth/lib/dmarc/get-dmarc-record.js': [''],
  'mailauth/lib/dkim/sign.js': ['dkimSign'],
  'mailauth/lib/tools.js': ['parseHeaders'],
  'mailauth/lib/dkim/body/index.js': ['dkimBody'],
} as const

type InternalPath = keyof typeof MAILAUTH_INTERNALS
const requireInternal = createRequire(import.meta.url)

/** The export `name` of `path`; throws naming both when this mailauth version no longer has it. */
export function loadMailauthInternal(path: InternalPath, name: string): (...args: never[]) => unknown {
  const mod = requireInternal(path) as Record<string, unknown>
  const fn = name ? mod?.[name] : mod
  if (typeof fn !== 'function') {
    throw new Error(`mailauth: '${path}' has no function ${name || 'as its export'} any more; update core/mailauth.ts for this mailauth version`)
  }
  return fn as (...args: never[]) => unknown
}

/** A function that loads `path` on its first call (sync: mailauth is CommonJS). */
function lazy<F>(path: InternalPath, name: string): F {
  let fn: ((...args: unknown[]) => unknown) | undefined
  return ((...args: unknown[]) => {
    fn ??= loadMailauthInternal(path, name) as (...args: unknown[]) => unknown
    return fn(...args)
  }) as F
}

/** mailauth's internals, typed: the only way core and plugins reach them. */
export const mailauthInternals = Object.freeze({
  /** MTA-STS policy file text → policy (throws on an invalid file). */
  parsePolicy: lazy<typeof parsePolicy>('mailauth/lib/mta-sts.js', 'parsePolicy'),
  /** The `_mta-sts.<domain>` TXT record's policy id, or false. */
  resolvePolicy: lazy<typeof resolvePolicy>('mailauth/lib/mta-sts.js', 'resolvePolicy'),
  /** Does an MX host name match a policy's `mx:` patterns? */
  validateMx: lazy<typeof validateMx>('mailauth/lib/mta-sts.js', 'validateMx'),
  /** SPF check_host(), without loading the rest of mailauth. */
  spf: lazy<typeof spf>('mailauth/lib/spf/index.js', 'spf'),
  /** DMARC from results already computed (SPF, DKIM, ARC): mailauth's `dmarc` wants raw input. */
  evaluateDmarc: lazy<typeof evaluateDmarc>('mailauth/lib/dmarc/index.js', 'evaluateDmarc'),
  /** A domain's DMARC record, falling back to its organisational domain's, as receivers find it. */
  getDmarcRecord: lazy<(domain: string, resolver: Lookup) => Promise<false | DmarcRecordFound>>('mailauth/lib/dmarc/get-dmarc-record.js', ''),
  /** DKIM signing, accepting prepared `headers` + `bodyHash` in its options. */
  dkimSign: lazy<typeof dkimSign>('mailauth/lib/dkim/sign.js', 'dkimSign'),
  /** mailauth's header section parser (what its signer and verifier are built from). */
  parseHeaders: lazy<(buf: Buffer) => { parsed: ParsedHeaderLine[]; original: Buffer }>('mailauth/lib/tools.js', 'parseHeaders'),
  /** mailauth's DKIM body hasher. */
  dkimBody: lazy<
    (canonicalization: 'relaxed' | 'simple', hashAlgo: 'sha256', maxBodyLength: number | false) => {
      update(chunk: Buffer): void
      digest(encoding: 'base64'): string
    }
  >('mailauth/lib/dkim/body/index.js', 'dkimBody'),
})
