// A recipient given twice in one transaction. smtp-server keeps one entry per address (compared
// without case) and lets the later RCPT replace the earlier: `RCPT TO:<x@d> NOTIFY=FAILURE` then
// `RCPT TO:<X@d> NOTIFY=NEVER` dropped the bounce the first one asked for. The later entry is made
// to carry both: the first spelling, the first ORCPT, and every notification either asked for.
// Spellings of one mailbox that smtp-server tells apart (`u@bücher.example`, `u@xn--bcher-kva.example`,
// `u@[IPv6:::ffff:192.0.2.1]` and `u@[192.0.2.1]`) are one recipient too: one queue row, one DSN line.
import type { SMTPServerAddress } from 'smtp-server'
import { asciiDomainAddress, hasNonAscii } from '../mail/address.js'

type Args = Record<string, string | boolean>

const argsOf = (a: SMTPServerAddress): Args => (a.args || {}) as Args

/** The notifications asked for: RFC 3461 §4.1, no NOTIFY means failures and delays. */
const notifications = (args: Args): string[] =>
  typeof args.NOTIFY === 'string' ? args.NOTIFY.toUpperCase().split(',').filter((n) => n !== 'NEVER') : ['FAILURE', 'DELAY']

/** The mailbox as compared: lower case, the domain in its ASCII form, an address literal in one spelling. */
const mailboxKey = (address: string): string => (hasNonAscii(address) || address.endsWith(']') ? asciiDomainAddress(address) : address).toLowerCase()

/** Before smtp-server stores `address`: merges it with an earlier entry for the same address. */
export function mergeDuplicateRecipient(rcpts: SMTPServerAddress[], address: SMTPServerAddress): void {
  const key = mailboxKey(address.address)
  const earlier = rcpts.find((r) => mailboxKey(r.address) === key)
  if (!earlier) return
  const [first, later] = [argsOf(earlier), argsOf(address)]
  const merged: Args = { ...later }
  if ('NOTIFY' in first || 'NOTIFY' in later) {
    const all = [...new Set([...notifications(first), ...notifications(later)])]
    merged.NOTIFY = all.length ? all.join(',') : 'NEVER'
  }
  if ('ORCPT' in first) merged.ORCPT = first.ORCPT!
  // smtp-server would replace only an entry spelled as this RCPT was typed (its key was taken before
  // the RCPT checks rewrote the address): the earlier entry goes here, and this one takes its place.
  rcpts.splice(rcpts.indexOf(earlier), 1)
  address.address = earlier.address
  address.args = merged as SMTPServerAddress['args']
}
