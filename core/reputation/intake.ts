// Takes feedback-loop reports sent to config `reputation.feedbackAddresses`: a message whose
// recipients are all feedback addresses is parsed at DATA time and counted as a complaint against
// the original's sender; it is not queued for delivery.
//
// Every report gets a 250, also one that cannot be parsed (that is logged at warn with the reason):
// feedback loops are run by machines that do not read bounces, and some providers drop a loop
// whose address refuses their reports. Only a failure to record (the queue database) is a 451, so
// that the report comes again.
import fs from 'node:fs'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { Complaint, ComplaintResult, Queue } from '../queue/types.js'
import { replyError } from '../hooks/verdict.js'
import { parseArf } from './arf.js'

/** Reports are read up to this size; the parts that matter (fields, the original's headers) come first. */
const READ_LIMIT = 2 * 1024 * 1024

export interface ComplaintRecorded {
  queueId?: string
  senderDomain: string
  feedbackType: string
  matched: boolean
  destDomain?: string
  messageId?: string
  userAgent?: string
}

export class FeedbackIntake {
  /** Told of every complaint recorded (the dashboard's recent events). */
  onComplaint: ((c: ComplaintRecorded) => void) | undefined
  private lookup: { list: string[]; set: Set<string> } | undefined

  constructor(
    private readonly queue: Queue,
    private readonly config: RelayConfig,
    private readonly log: Logger,
  ) {}

  isFeedbackAddress(address: string): boolean {
    // Read from the live config: a hot reload may change the addresses.
    const list = this.config.reputation.feedbackAddresses
    if (this.lookup?.list !== list) this.lookup = { list, set: new Set(list.map((a) => a.toLowerCase())) }
    return this.lookup.set.has(address.toLowerCase())
  }

  /** A report only when every recipient is a feedback address; mixed recipients are ordinary mail. */
  isReport(recipients: string[]): boolean {
    return recipients.length > 0 && recipients.every((r) => this.isFeedbackAddress(r))
  }

  /**
   * Parses and records one report; resolves with the 250 reply text. `header` and `body` are the
   * message as received: the body from the blank line after the header section on, inline or in
   * a spool file (which the caller discards).
   */
  async take(o: { header: Buffer; body: { inline: Buffer } | { path: string }; session: string; client?: string; sender: string }): Promise<string> {
    const raw = Buffer.concat([o.header, await readBody(o.body)])
    const parsed = parseArf(raw, { hostname: this.config.hostname })
    if (!parsed.ok) {
      this.log.warn({ event: 'complaint-unparsed', session: o.session, client: o.client, from: o.sender, reason: parsed.error }, `feedback report not recorded: ${parsed.error}`)
      return `2.0.0 Ok: feedback report not recorded, ${parsed.error.replace(/[\x00-\x1f\x7f]+/g, ' ')}`
    }
    const r = parsed.report
    const complaint: Complaint = {
      messageId: r.original?.messageId,
      queueIds: r.original?.queueIds.length ? r.original.queueIds : undefined,
      originalMailFrom: r.originalMailFrom || undefined,
      originalRcptTo: r.originalRcptTo[0],
      feedbackType: r.feedbackType,
      receivedAt: Date.now(),
    }
    let result: ComplaintResult
    try {
      result = await this.queue.recordComplaint(complaint)
    } catch (err) {
      this.log.error({ err, session: o.session }, 'recording a complaint failed')
      throw replyError({ code: 451, status: '4.3.0', message: 'Feedback report could not be recorded, try again later' })
    }
    const destDomain = complaint.originalRcptTo?.split('@').pop()?.toLowerCase()
    this.log.info(
      {
        event: 'complaint',
        senderDomain: result.senderDomain,
        queueId: result.queueId,
        feedbackType: r.feedbackType,
        matched: result.matched,
        destDomain,
        messageId: complaint.messageId,
        userAgent: r.userAgent,
        client: o.client,
        notes: r.notes.length ? r.notes : undefined,
      },
      result.matched ? `complaint (${r.feedbackType}) about ${result.queueId ?? 'a message'} from ${result.sender ?? result.senderDomain}` : `complaint (${r.feedbackType}) not matched to a message sent`,
    )
    try {
      this.onComplaint?.({ queueId: result.queueId, senderDomain: result.senderDomain, feedbackType: r.feedbackType, matched: result.matched, destDomain, messageId: complaint.messageId, userAgent: r.userAgent })
    } catch {
      // an observer's problem is not the reporter's
    }
    const about = result.matched && result.queueId ? ` for ${result.queueId}` : result.senderDomain ? ` against ${result.senderDomain}` : ' (original not found)'
    return `2.0.0 Ok: feedback report recorded${about}`
  }
}

async function readBody(body: { inline: Buffer } | { path: string }): Promise<Buffer> {
  if ('inline' in body) return body.inline.length > READ_LIMIT ? body.inline.subarray(0, READ_LIMIT) : body.inline
  const handle = await fs.promises.open(body.path, 'r')
  try {
    const buf = Buffer.alloc(READ_LIMIT)
    const { bytesRead } = await handle.read(buf, 0, READ_LIMIT, 0)
    return buf.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
}
