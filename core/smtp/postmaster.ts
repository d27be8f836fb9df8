// RFC 5321 §4.5.1: mail to `postmaster` must be taken. `RCPT TO:<postmaster>` (no domain, §4.1.1.3)
// and `<postmaster@hostname>` are the relay's postmaster: config `postmaster`, else the first local
// domain's, else the hostname's (Postfix appends $myorigin, $myhostname by default). This rewrites the
// address smtp-server keeps in the envelope, so it is a step of the SMTP adapter before any check or
// hook, not a policy (a verdict cannot change an address).
import type { SMTPServerAddress } from 'smtp-server'
import type { RelayConfig } from '../config/schema.js'

/** The mailbox the relay's postmaster mail goes to. */
export const postmasterMailbox = (c: Pick<RelayConfig, 'postmaster' | 'localDomains' | 'hostname'>): string => c.postmaster ?? `postmaster@${c.localDomains[0] ?? c.hostname.toLowerCase()}`

/** Rewrites the relay's postmaster (bare, or at the hostname) in place; true when it was one. */
export function qualifyPostmaster(address: SMTPServerAddress, c: Pick<RelayConfig, 'postmaster' | 'localDomains' | 'hostname'>): boolean {
  const a = address.address.toLowerCase()
  if (a !== 'postmaster' && a !== `postmaster@${c.hostname.toLowerCase()}`) return false
  address.address = postmasterMailbox(c)
  return true
}

/**
 * smtp-server dedupes recipients by what the client typed; `<postmaster>` is another spelling of
 * the postmaster mailbox: keep one of them.
 */
export function dropPostmasterTwin(rcpts: SMTPServerAddress[], address: SMTPServerAddress): void {
  const twin = rcpts.findIndex((r) => r !== address && r.address.toLowerCase() === address.address.toLowerCase())
  if (twin >= 0) rcpts.splice(twin, 1)
}
