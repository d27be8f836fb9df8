// The checks themselves, done by mailauth: SPF (at MAIL), then DKIM, ARC and DMARC on the whole
// message (at DATA). This file only calls mailauth and gathers what the plugin decides on.
import net from 'node:net'
import type { Readable } from 'node:stream'
import { arc, dkimVerify, spf, type ARCData, type ARCResult, type DKIMVerifyResult, type DMARCResult, type SPFResult } from 'mailauth'
import { mailauthInternals } from '../../core/index.js'
import { comparableDomain, readerDomains } from './reader-domains.js'
import type { MailauthResolver } from './dns.js'

const { evaluateDmarc } = mailauthInternals

export type { SPFResult, ARCResult, DMARCResult, DKIMVerifyResult }

/** The HELO identity as SPF wants it: an address literal in brackets; the client IP when HELO is missing. */
function heloIdentity(helo: string | undefined, ip: string): string {
  if (!helo) return `[${ip}]`
  return net.isIP(helo) ? `[${helo}]` : helo
}

export interface SpfInput {
  ip: string
  helo?: string
  /** MAIL FROM; '' (the null sender) checks the HELO identity instead (RFC 7208 §2.4). */
  sender: string
  mta: string
  resolver: MailauthResolver
  strict: boolean
  timeLimit: number
}

export function checkSpf(o: SpfInput): Promise<SPFResult> {
  return spf({
    sender: o.sender || undefined,
    ip: o.ip,
    helo: heloIdentity(o.helo, o.ip),
    mta: o.mta,
    resolver: o.resolver as never,
    strict: o.strict,
    maxElapsedTime: o.timeLimit,
  })
}

/** DMARC evaluated for one Author Domain. */
export interface DmarcCheck {
  result: string
  policy?: string
  /** The Author Domain (header.from). */
  from?: string
  /** Where the DMARC record was found: the Author Domain, or its organizational domain (its sp= then applies). */
  policyDomain?: string
  error?: string
  /** Its Authentication-Results entry. */
  info: string
  /** The legacy pct= of the applied DMARC record, when it has one. */
  pct?: number
  /** Whether the DMARC record has a t= tag (which replaces pct=, RFC 9989). */
  hasT: boolean
}

/**
 * Why the From: field(s) cannot be authenticated as one author, whatever the domains publish:
 * RFC 5322 §3.6 allows exactly one From: field with at least one mailbox, and DMARC needs every
 * mailbox's domain (RFC 7489 §6.6.1).
 */
export type BadFrom = 'multiple-from-fields' | 'no-author-domain' | 'invalid-author-domain' | 'too-many-author-domains'

/** At most this many Author Domains are evaluated (each costs DNS lookups); a From: with more is a BadFrom. */
export const MAX_AUTHOR_DOMAINS = 10

/**
 * What the plugin decides on, as plain data: it is computed in a worker thread (worker.ts) and
 * sent back by structured clone, so no mailauth objects (key caches, functions) travel.
 */
export interface MessageChecks {
  /** One row per verified signature (DKIM and the newest ARC-Message-Signature). */
  dkim: { signingDomain?: string; result?: string }[]
  arc: { result: string; shouldSeal: boolean }
  /**
   * DMARC, one result per Author Domain: one for the usual single-domain From:, one per domain for
   * a From: with several (RFC 7489 §6.6.1: each is evaluated, the strictest failing policy
   * applies), and per domain found in a malformed From: too (see `badFrom`). Empty when no domain
   * could be evaluated.
   */
  dmarc: DmarcCheck[]
  /** mailauth's reason why the From: has no single Author Domain (`dmarc=permerror (<reason>)`). */
  dmarcSkipReason?: string
  /** Set when the From: field(s) are malformed in a way that defeats DMARC. */
  badFrom?: BadFrom
  /** The number of From: fields. */
  fromFields: number
  /** The d= of the DKIM signatures that could not be checked for a DNS failure (lower case). */
  dkimTempErrorDomains: string[]
  /** Authentication-Results entries, in order: dkim, spf, arc, dmarc. */
  entries: string[]
}

export interface MessageInput {
  /** The whole message (header fields and body), read once. */
  message: Readable | Buffer
  ip: string
  sender: string
  spf: Pick<SPFResult, 'domain' | 'info'> & { status: Pick<SPFResult['status'], 'result'> }
  mta: string
  resolver: MailauthResolver
  strict: boolean
  minBitLength: number
  /** 'policy': a passing signature whose l= leaves body bytes unsigned is dkim=policy and carries no DMARC. */
  partialBody: 'policy' | 'pass'
  /** The From: field values, as the message has them (for the domains a reader sees). */
  fromValues: string[]
}

/**
 * RFC 6376 §8.2: with l=, anything after the signed length (or, with l=0, the whole body) is the
 * sender's choice, yet mailauth calls the signature `pass` and DMARC counts it. Such a signature
 * becomes `dkim=policy` (its "(undersized signature: N bytes unsigned)" comment says why), as
 * rspamd and large receivers treat it: a signed message of a p=reject domain cannot carry new text.
 */
function refusePartialBodies(results: DKIMVerifyResult['results']): void {
  for (const row of results) {
    const status = row.status as { result?: string; underSized?: number }
    if (status?.result !== 'pass' || !status.underSized) continue
    status.result = 'policy'
    row.info = row.info?.replace(/^dkim=pass\b/, 'dkim=policy')
  }
}

export async function checkMessage(o: MessageInput): Promise<MessageChecks> {
  const resolver = o.resolver as never
  const dkim = await dkimVerify(o.message, { resolver, sender: o.sender || undefined, strict: o.strict, minBitLength: o.minBitLength })
  if (o.partialBody === 'policy') refusePartialBodies(dkim.results ?? [])
  const arcResult = await arc(dkim.arc as unknown as ARCData, { resolver, strict: o.strict, minBitLength: o.minBitLength, ip: o.ip })

  const passing = (dkim.results ?? []).filter((r) => r.status?.result === 'pass')
  const evaluate = (headerFrom: string[], fromFields: number) =>
    evaluateDmarc({
      headerFrom,
      fromFields,
      spfDomains: o.spf.status.result === 'pass' && o.spf.domain ? [o.spf.domain] : [],
      dkimDomains: passing.map((r) => ({
        id: r.id,
        domain: r.signingDomain!,
        aligned: (r.status as { aligned?: string | false }).aligned,
        underSized: (r.status as { underSized?: number }).underSized,
      })),
      arcResult,
      resolver,
      strict: o.strict,
    })
  const headerFrom = ([] as string[]).concat(dkim.headerFrom ?? [])
  const fromFields = typeof dkim.fromFields === 'number' ? dkim.fromFields : headerFrom.length ? 1 : 0
  const evaluation = await evaluate(headerFrom, fromFields)
  const dmarc: DmarcCheck[] = []
  let badFrom: BadFrom | undefined
  // Domains a mail reader shows that mailauth's parser did not take (`a@bank .example`): the From:
  // is one DMARC cannot speak for, and those domains are evaluated too.
  const evaluated = evaluation.response ? [comparableDomain(dmarcCheck(evaluation.response).from ?? '')] : (evaluation.authorDomains ?? []).map(comparableDomain)
  const unseen = readerDomains(o.fromValues).filter((d) => !evaluated.includes(d))
  // A domain literal (`a@[bank.example]`, `a@[192.0.2.1]`) publishes no policy: a reader may still
  // show the bank's name. DMARC cannot speak for it either.
  const literal = evaluated.some((d) => d.startsWith('['))
  if (evaluation.response && !unseen.length && !literal) dmarc.push(dmarcCheck(evaluation.response))
  else {
    const reason = evaluation.reason
    const domains = [...evaluated, ...unseen]
    if (reason === 'multiple-from-fields' || reason === 'no-author-domain' || reason === 'invalid-author-domain') badFrom = reason
    else if (unseen.length || literal) badFrom = 'invalid-author-domain'
    else if (domains.length > MAX_AUTHOR_DOMAINS) badFrom = 'too-many-author-domains'
    // RFC 7489 §6.6.1: each Author Domain is evaluated on its own (a bare domain is what
    // mailauth's author-domain parser takes as that domain); also those of a malformed From:, so
    // that their results are recorded and a report-only setup still applies their policies.
    for (const domain of domains.slice(0, MAX_AUTHOR_DOMAINS)) {
      const one = await evaluate([domain], 1)
      if (one.response) dmarc.push(dmarcCheck(one.response))
    }
  }

  const entries: string[] = []
  for (const row of dkim.results ?? []) if (row.info) entries.push(row.info)
  if (!(dkim.results ?? []).length) entries.push('dkim=none')
  entries.push(o.spf.info)
  entries.push(arcResult.info ?? `arc=${arcResult.status.result}`)
  if (badFrom) entries.push(`dmarc=permerror (${badFrom})`)
  for (const d of dmarc) entries.push(d.info)
  if (!badFrom && !dmarc.length && evaluation.reason) entries.push(`dmarc=permerror (${evaluation.reason})`)

  const arcStatus = arcResult.status as { result: string; shouldSeal?: boolean }
  return {
    dkim: (dkim.results ?? []).map((r) => ({ signingDomain: r.signingDomain, result: r.status?.result })),
    arc: { result: arcStatus.result, shouldSeal: Boolean(arcStatus.shouldSeal) },
    dmarc,
    dmarcSkipReason: evaluation.reason,
    badFrom,
    fromFields,
    dkimTempErrorDomains: (dkim.results ?? []).filter((r) => r.status?.result === 'temperror' && r.signingDomain).map((r) => r.signingDomain!.toLowerCase()),
    entries,
  }
}

/** mailauth's DMARC result as plain data. */
function dmarcCheck(dmarc: DMARCResult): DmarcCheck {
  const status = dmarc.status as { result: string; header?: { from?: string } }
  const error = (dmarc as unknown as { error?: unknown }).error
  const record = (dmarc as unknown as { record?: { pct?: number; t?: string } }).record
  return {
    result: status.result,
    policy: typeof dmarc.policy === 'string' ? dmarc.policy : undefined,
    from: status.header?.from,
    policyDomain: (dmarc as unknown as { policyDomain?: unknown }).policyDomain === undefined ? undefined : String((dmarc as unknown as { policyDomain?: unknown }).policyDomain),
    error: error === undefined || error === null ? undefined : String((error as Error).message ?? error),
    info: dmarc.info,
    pct: typeof record?.pct === 'number' ? record.pct : undefined,
    hasT: record?.t !== undefined,
  }
}
