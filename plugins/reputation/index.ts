// reputation: feedback-loop reports (ARF) to the feedback addresses are taken from anyone at RCPT
// (a foreign one only in a transaction of its own), counted as complaints at DATA and not queued; a monitor logs a warning when a sending domain's
// bounce or complaint rate over the last day passes its threshold. The figures themselves are the
// queue's (`relay stats`, the admin API). List it before content scanners (spam): a report carries
// the reported spam. Options: README.md.
import { definePlugin, z } from '../../core/index.js'
import { FeedbackIntake } from './intake.js'
import { ReputationMonitor } from './monitor.js'
import { rcptVerdict, strayed } from './separate.js'

export const optionsSchema = z
  .object({
    /** Addresses that receive feedback-loop reports (ARF, RFC 5965); reports to them are counted, not delivered. */
    feedbackAddresses: z.array(z.email().transform((a) => a.toLowerCase())).default([]),
  })
  .strict()

export type ReputationOptions = z.output<typeof optionsSchema>

interface State {
  /** Absent in `relay check-config` (no running relay to count complaints in). */
  intake?: FeedbackIntake
  monitor?: ReputationMonitor
}

export default definePlugin<ReputationOptions, State>({
  name: 'reputation',
  options: optionsSchema,
  // One monitor for the relay's life (a reload must not repeat the hour's warnings): set up once;
  // a changed feedbackAddresses takes a restart, as the reload reports.
  keepOnReload: true,

  setup({ options, mode, relay, hostname, log, processes }) {
    if (mode === 'check') return {}
    if (!relay) throw new Error('needs the running relay (ctx.relay) to read and record the reputation counters')
    const intake = new FeedbackIntake(options.feedbackAddresses, relay.queue, hostname, log)
    // One monitor for the relay: in the primary (or the one process), not again in each SMTP worker,
    // which would repeat every warning (config `workers`).
    if (processes.role === 'worker') return { intake }
    const monitor = new ReputationMonitor(relay.queue, () => relay.warningThresholds(), log)
    monitor.start()
    return { intake, monitor }
  },

  async teardown({ state }) {
    await state.monitor?.stop()
  },

  hooks: {
    // Before the closed-relay rule: the providers' machines that send reports may not relay. A
    // foreign feedback address is never mixed with other recipients (separate.ts).
    rcpt({ recipient, isLocal, envelope, notes, isLocalDomain, state }) {
      if (!state.intake) return undefined
      return rcptVerdict(state.intake, { recipient: recipient.address, isLocal, envelope, notes, isLocalDomain })
    },

    data({ envelope, headers, readMessage, session, notes, state }) {
      if (!state.intake) return undefined
      if (!state.intake.isReport(envelope.recipients.map((r) => r.address))) return strayed(envelope, notes, 550)
      return state.intake.take({ message: readMessage, headerSize: headers.toBuffer().length, session: session.id, client: session.remoteAddress, sender: envelope.sender.address })
    },

    // Only when the data hook did not run (a plugin listed earlier accepted at DATA): not delivered either.
    queue({ envelope, notes, log }) {
      const refused = strayed(envelope, notes, 554)
      if (refused) log.error({ recipients: envelope.recipients.map((r) => r.address) }, 'a feedback address reached the queue (its data hook did not run): list reputation before plugins that accept at DATA')
      return refused
    },
  },
})
