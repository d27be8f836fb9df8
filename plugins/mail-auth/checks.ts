// The checks themselves, done by mailauth: SPF (at MAIL), then DKIM, ARC and DMARC on the whole
// message (at DATA). This file only calls mailauth and gathers what the plugin decides on.
import net from 'node:net'
import type { Readable } from 'node:stream'
import { arc, dkimVerify, spf, type ARCData, type ARCResult, type DKIMVerifyResult, type DMARCResult, type SPFResult } from 'mailauth'
import { mailauthInternals } from '../../core/index.js'
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

/**
 * What the plugin decides on, as plain data: it is computed in a worker thread (worker.ts) and
 * sent back by structured clone, so no mailauth objects (key caches, functions) travel.
 */
export interface MessageChecks {
  /** One row per verified signature (DKIM and the newest ARC-Message-Signature). */
  dkim: { signingDomain?: string; result?: string }[]
  arc: { result: string; shouldSeal: boolean }
  /** false when DMARC could not be evaluated (no or several author domains: see `dmarcSkipReason`). */
  dmarc: { result: string; policy?: string; from?: string; error?: string; info: string } | false
  dmarcSkipReason?: string
  /** The legacy pct= of the applied DMARC record, when it has one. */
  dmarcPct?: number
  /** Whether the DMARC record has a t= tag (which replaces pct=, RFC 9989). */
  dmarcHasT: boolean
  /** A DKIM signature could not be checked for a DNS failure. */
  dkimTempError: boolean
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
}

export async function checkMessage(o: MessageInput): Promise<MessageChecks> {
  const resolver = o.resolver as never
  const dkim = await dkimVerify(o.message, { resolver, sender: o.sender || undefined, strict: o.strict, minBitLength: o.minBitLength })
  const arcResult = await arc(dkim.arc as unknown as ARCData, { resolver, strict: o.strict, minBitLength: o.minBitLength, ip: o.ip })

  const passing = (dkim.results ?? []).filter((r) => r.status?.result === 'pass')
  const evaluation = await evaluateDmarc({
    headerFrom: dkim.headerFrom,
    fromFields: dkim.fromFields,
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
  const dmarc = evaluation.response
  const record = dmarc ? (dmarc as unknown as { record?: { pct?: number; t?: string } }).record : undefined

  const entries: string[] = []
  for (const row of dkim.results ?? []) if (row.info) entries.push(row.info)
  if (!(dkim.results ?? []).length) entries.push('dkim=none')
  entries.push(o.spf.info)
  entries.push(arcResult.info ?? `arc=${arcResult.status.result}`)
  if (dmarc) entries.push(dmarc.info)
  else if (evaluation.reason) entries.push(`dmarc=permerror (${evaluation.reason})`)

  const arcStatus = arcResult.status as { result: string; shouldSeal?: boolean }
  const dmarcStatus = dmarc ? (dmarc.status as { result: string; header?: { from?: string } }) : undefined
  const dmarcError = dmarc ? (dmarc as unknown as { error?: unknown }).error : undefined
  return {
    dkim: (dkim.results ?? []).map((r) => ({ signingDomain: r.signingDomain, result: r.status?.result })),
    arc: { result: arcStatus.result, shouldSeal: Boolean(arcStatus.shouldSeal) },
    dmarc: dmarc
      ? {
          result: dmarcStatus!.result,
          policy: typeof dmarc.policy === 'string' ? dmarc.policy : undefined,
          from: dmarcStatus!.header?.from,
          error: dmarcError === undefined || dmarcError === null ? undefined : String((dmarcError as Error).message ?? dmarcError),
          info: dmarc.info,
        }
      : false,
    dmarcSkipReason: evaluation.reason,
    dmarcPct: typeof record?.pct === 'number' ? record.pct : undefined,
    dmarcHasT: record?.t !== undefined,
    dkimTempError: (dkim.results ?? []).some((r) => r.status?.result === 'temperror'),
    entries,
  }
}
