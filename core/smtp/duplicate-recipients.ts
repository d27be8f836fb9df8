// A recipient given twice in one transaction. smtp-server keeps one entry per address (compared
// without case) and lets the later RCPT replace the earlier: `RCPT TO:<x@d> NOTIFY=FAILURE` then
// `RCPT TO:<X@d> NOTIFY=NEVER` dropped the bounce the first one asked for. The later entry is made
// to carry both: the first spelling, the first ORCPT, and every notification either asked for.
import type { SMTPServerAddress } from 'smtp-server'

type Args = Record<string, string | boolean>

const argsOf = (a: SMTPServerAddress): Args => (a.args || {}) as Args

/** The notifications asked for: RFC 3461 §4.1, no NOTIFY means failures and delays. */
const notifications = (args: Args): string[] =>
  typeof args.NOTIFY === 'string' ? args.NOTIFY.toUpperCase().split(',').filter((n) => n !== 'NEVER') : ['FAILURE', 'DELAY']

/** Before smtp-server stores `address`: merges it with an earlier entry for the same address. */
export function mergeDuplicateRecipient(rcpts: SMTPServerAddress[], address: SMTPServerAddress): void {
  const key = address.address.toLowerCase()
  const earlier = rcpts.find((r) => r.address.toLowerCase() === key)
  if (!earlier) return
  const [first, later] = [argsOf(earlier), argsOf(address)]
  const merged: Args = { ...later }
  if ('NOTIFY' in first || 'NOTIFY' in later) {
    const all = [...new Set([...notifications(first), ...notifications(later)])]
    merged.NOTIFY = all.length ? all.join(',') : 'NEVER'
  }
  if ('ORCPT' in first) merged.ORCPT = first.ORCPT!
  address.address = earlier.address
  address.args = merged as SMTPServerAddress['args']
}
