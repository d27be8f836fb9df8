// RFC 5321 §4.1.1.3: `RCPT TO:<postmaster>` (no domain) must be accepted; it is the first local
// domain's postmaster. This rewrites the address smtp-server keeps in the envelope, so it is a step
// of the SMTP adapter before any check or hook, not a policy (a verdict cannot change an address).
import type { SMTPServerAddress } from 'smtp-server'

/** Rewrites a bare `postmaster` in place; false when there is no local domain to give it. */
export function qualifyPostmaster(address: SMTPServerAddress, localDomains: readonly string[]): boolean {
  if (address.address.toLowerCase() !== 'postmaster') return true
  const domain = localDomains[0]
  if (!domain) return false
  address.address = `postmaster@${domain}`
  return true
}

/**
 * smtp-server dedupes recipients by what the client typed; `<postmaster>` is another spelling of
 * `postmaster@<first local domain>`: keep one of them.
 */
export function dropPostmasterTwin(rcpts: SMTPServerAddress[], address: SMTPServerAddress): void {
  const twin = rcpts.findIndex((r) => r !== address && r.address.toLowerCase() === address.address.toLowerCase())
  if (twin >= 0) rcpts.splice(twin, 1)
}
