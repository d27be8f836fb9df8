// A feedback address outside the local domains gets in only because this plugin accepts it from
// anyone (the closed-relay rule would refuse it), so it must never be delivered: its transaction
// goes to feedback addresses only. The RCPT that would mix them gets 452 4.5.3 (RFC 5321: the
// client sends that recipient in a later transaction of its own); DATA and the queue refuse a
// transaction that got mixed anyway (a plugin listed earlier accepted a recipient this rcpt hook
// never saw). A feedback address in a local domain is a local mailbox: it mixes like any other.
import { accept, reject, tempfail, type Envelope, type Notes, type Verdict } from '../../core/index.js'
import type { FeedbackIntake } from './intake.js'

/** Message note: the feedback addresses this plugin let in although their domain is not local. */
const TAKEN = 'reputation:foreign-feedback'

const taken = (notes: Notes): Set<string> => {
  let set = notes.message.get(TAKEN) as Set<string> | undefined
  if (!set) notes.message.set(TAKEN, (set = new Set()))
  return set
}

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1)

const separately = (address: string): Verdict =>
  tempfail({ code: 452, status: '4.5.3', message: `Feedback reports go in a transaction of their own: send to <${address}> separately` })

/**
 * The rcpt verdict: a feedback address is accepted from anyone (the providers' machines that send
 * reports may not relay), a foreign one only into a transaction of feedback addresses, and no other
 * recipient joins a transaction that has a foreign one.
 */
export function rcptVerdict(intake: FeedbackIntake, o: { recipient: string; isLocal: boolean; envelope: Envelope; notes: Notes; isLocalDomain(d: string): boolean }): Verdict | undefined {
  const before = o.envelope.recipients.map((r) => r.address)
  if (intake.isFeedbackAddress(o.recipient)) {
    if (o.isLocal) return accept()
    if (before.some((a) => !intake.isFeedbackAddress(a))) return separately(o.recipient)
    taken(o.notes).add(o.recipient.toLowerCase())
    return accept()
  }
  const foreign = before.find((a) => intake.isFeedbackAddress(a) && !o.isLocalDomain(domainOf(a)))
  return foreign === undefined ? undefined : separately(o.recipient)
}

/** At DATA and queue: a foreign feedback address let in by this plugin, in a transaction that is not a report. */
export function strayed(envelope: Envelope, notes: Notes, code: 550 | 554): Verdict | undefined {
  const set = notes.message.get(TAKEN) as Set<string> | undefined
  const stray = set && envelope.recipients.find((r) => set.has(r.address.toLowerCase()))
  if (!stray) return undefined
  return reject({ code, status: '5.7.1', message: `Feedback address <${stray.address}> takes reports only, in a transaction of their own; message not delivered` })
}
