// nodemailer looks for each EHLO keyword anywhere in the reply (`/[ -]DSN\b/im`), so a server named
// mx-dsn.example "offers" DSN and smtp-starttls.example "offers" STARTTLS, and the relay would send
// NOTIFY=, STARTTLS, BODY=8BITMIME or pipelined commands to a server that never offered them. RFC 5321
// §4.1.1.1: the first line is the server's name and greeting, each later line one keyword and its
// parameters. nodemailer is handed the reply with the greeting line emptied and each keyword line
// reduced to its keyword, plus the parameters it reads: SIZE's number and AUTH's mechanisms.
import type SMTPConnection from 'nodemailer/lib/smtp-connection'

const AUTH_MECHANISMS = new Set(['PLAIN', 'LOGIN', 'CRAM-MD5', 'XOAUTH2'])

/** The EHLO reply as nodemailer should read it (a reply that is not 2xx is left as it is). */
export function keywordsOnly(reply: string): string {
  if (!/^2\d\d[ -]/.test(reply)) return reply
  return reply
    .split(/\r?\n/)
    .map((line, i) => {
      const m = /^(\d{3}[ -]?)(.*)$/.exec(line)
      if (!m) return line
      if (i === 0) return `${m[1]}server`
      const [keyword = '', ...params] = m[2]!.trim().split(/\s+/)
      const upper = keyword.toUpperCase()
      const kept = upper === 'SIZE' ? params.filter((p) => /^\d+$/.test(p)) : upper === 'AUTH' || upper.startsWith('AUTH=') ? params.filter((p) => AUTH_MECHANISMS.has(p.toUpperCase())) : []
      return `${m[1]}${[keyword, ...kept].join(' ')}`
    })
    .join('\n')
}

/** Makes this connection read EHLO (and LMTP's LHLO) replies by their keyword lines only. */
export function readEhloKeywordsOnly(conn: SMTPConnection): void {
  const c = conn as unknown as { _actionEHLO?: (str: string) => unknown }
  const actionEHLO = c._actionEHLO
  if (typeof actionEHLO !== 'function') throw new Error('nodemailer changed: SMTPConnection#_actionEHLO is gone (core/delivery/ehlo-keywords.ts)')
  // An own property: nodemailer queues `this._actionEHLO` as the handler, and LHLO's calls it.
  c._actionEHLO = function (this: unknown, str: string) {
    return actionEHLO.call(this, keywordsOnly(String(str)))
  }
}
