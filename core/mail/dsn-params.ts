// The DSN parameters of RFC 3461 as the relay reads them from MAIL and RCPT (NOTIFY, RET, ENVID,
// ORCPT), passes them on to a next hop, and derives a status from a reply (core/mail/bounce.ts builds the DSNs).

export type Args = Record<string, string | boolean> | undefined

/** Without control characters, NUL included (a remote reply or an xtext-decoded ENVID/ORCPT may carry one). */
export const oneLine = (s: string) => s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim()

/** NOTIFY of a recipient (RFC 3461 §4.1), upper-cased; undefined when the client gave none. */
export function notifyOf(args: Args): string[] | undefined {
  const v = args?.NOTIFY
  return typeof v === 'string' && v ? v.toUpperCase().split(',').map((s) => s.trim()) : undefined
}

/**
 * Whether the sender asked for this kind of DSN for a recipient: NOTIFY=NEVER never; a NOTIFY list
 * only for what it names; no NOTIFY: failures and delays (RFC 3461 §4.1, the usual default).
 */
export function wantsDsn(args: Args, kind: 'FAILURE' | 'DELAY' | 'SUCCESS'): boolean {
  const notify = notifyOf(args)
  if (!notify) return kind !== 'SUCCESS'
  return notify.includes(kind)
}

/** RET of the message: 'FULL' or 'HDRS' (the default). */
export function retOf(senderArgs: Args): 'FULL' | 'HDRS' {
  return typeof senderArgs?.RET === 'string' && senderArgs.RET.toUpperCase() === 'FULL' ? 'FULL' : 'HDRS'
}

/** ENVID of the message, if the client gave one. */
export function envidOf(senderArgs: Args): string | undefined {
  return typeof senderArgs?.ENVID === 'string' && senderArgs.ENVID ? oneLine(senderArgs.ENVID) : undefined
}

/** ORCPT of a recipient (`rfc822;addr`), if the client gave one. */
export function orcptOf(args: Args): string | undefined {
  return typeof args?.ORCPT === 'string' && args.ORCPT ? oneLine(args.ORCPT) : undefined
}

const NOTIFY_ORDER = ['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']

/**
 * The DSN parameters to pass on to the next hop (used only when the server offers DSN): RET and
 * ENVID of the message, and each recipient's own NOTIFY and ORCPT, by address (RFC 3461 §4.1, §4.2:
 * given ones MUST be passed on). A recipient without either has no entry.
 */
export function relayDsn(senderArgs: Args, recipients: { address: string; args?: Args }[]): { ret?: string; envid?: string; rcpt?: Map<string, { notify?: string; orcpt?: string }> } | undefined {
  const out: { ret?: string; envid?: string; rcpt?: Map<string, { notify?: string; orcpt?: string }> } = {}
  if (typeof senderArgs?.RET === 'string') out.ret = retOf(senderArgs)
  const envid = envidOf(senderArgs)
  if (envid) out.envid = envid
  for (const r of recipients) {
    // In one order (SUCCESS,FAILURE for failure,success), known keywords only.
    const n = notifyOf(r.args)
    const notify = n ? NOTIFY_ORDER.filter((k) => n.includes(k)).join(',') || undefined : undefined
    const orcpt = orcptOf(r.args)
    if (notify || orcpt) (out.rcpt ??= new Map()).set(r.address, { ...(notify && { notify }), ...(orcpt && { orcpt }) })
  }
  return Object.keys(out).length ? out : undefined
}

/**
 * Pulls the enhanced status code out of an SMTP reply, else derives one from the basic code. The
 * relay's own results (`4.4.1 Host … unreachable`, `4.4.3 DNS …`) have no reply code: their leading
 * enhanced code is the status.
 */
export function statusOf(response: string, fallback: string): string {
  // An enhanced code of another class than the reply's (`550 2.0.0`) is ignored, as Postfix does.
  const enhanced = /^(\d)\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(response)
  if (enhanced && enhanced[2]![0] === enhanced[1]) return enhanced[2]!
  const local = /^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)/.exec(response)
  if (local) return local[1]!
  const basic = /^([45])\d\d\b/.exec(response)
  return basic ? `${basic[1]}.0.0` : fallback
}
