// Takes feedback-loop reports sent to the feedback addresses: a message whose recipients are all
// feedback addresses is parsed at DATA and counted as a complaint against the original's sender;
// it is not queued for delivery (the data verdict is `handled`).
//
// Every report gets a 250, also one that cannot be parsed (that is logged at warn with the reason):
// feedback loops are run by machines that do not read bounces, and some providers drop a loop
// whose address refuses their reports. Only a failure to record (the queue database) is a 451, so
// that the report comes again.
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Complaint, ComplaintResult, QueueOperations, Verdict } from '../../core/index.js'
import { parseArf } from './arf.js'

/** Reports are read up to this size past the header; the parts that matter (fields, the original's headers) come first. */
const READ_LIMIT = 2 * 1024 * 1024

export class FeedbackIntake {
  private readonly addresses: ReadonlySet<string>

  constructor(
    addresses: readonly string[],
    private readonly queue: Pick<QueueOperations, 'recordComplaint'>,
    private readonly hostname: string,
    private readonly log: Logger,
  ) {
    this.addresses = new Set(addresses.map((a) => a.toLowerCase()))
  }

  isFeedbackAddress(address: string): boolean {
    return this.addresses.has(address.toLowerCase())
  }

  /** A report only when every recipient is a feedback address; mixed recipients are ordinary mail. */
  isReport(recipients: readonly string[]): boolean {
    return recipients.length > 0 && recipients.every((r) => this.isFeedbackAddress(r))
  }

  /** Parses and records one report (`message`: the message as received, header section first). */
  async take(o: { message: () => Readable; headerSize: number; session: string; client?: string; sender: string }): Promise<Verdict> {
    const raw = await readUpTo(o.message(), o.headerSize + READ_LIMIT)
    const parsed = parseArf(raw, { hostname: this.hostname })
    if (!parsed.ok) {
      this.log.warn({ event: 'complaint-unparsed', session: o.session, client: o.client, from: o.sender, reason: parsed.error }, `feedback report not recorded: ${parsed.error}`)
      return handled(`Ok: feedback report not recorded, ${parsed.error.replace(/[\x00-\x1f\x7f]+/g, ' ')}`)
    }
    const r = parsed.report
    const complaint: Complaint = {
      messageId: r.original?.messageId,
      queueIds: r.original?.queueIds.length ? r.original.queueIds : undefined,
      originalMailFrom: r.originalMailFrom || undefined,
      originalRcptTo: r.originalRcptTo[0],
      feedbackType: r.feedbackType,
      userAgent: r.userAgent,
      receivedAt: Date.now(),
    }
    let result: ComplaintResult
    try {
      result = await this.queue.recordComplaint(complaint)
    } catch (err) {
      this.log.error({ err, session: o.session }, 'recording a complaint failed')
      return { action: 'tempfail', code: 451, status: '4.3.0', message: 'Feedback report could not be recorded, try again later' }
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
    const about = result.matched && result.queueId ? ` for ${result.queueId}` : result.senderDomain ? ` against ${result.senderDomain}` : ' (original not found)'
    return handled(`Ok: feedback report recorded${about}`)
  }
}

const handled = (message: string): Verdict => ({ action: 'accept', status: '2.0.0', message, handled: true })

/** The first `limit` bytes of the stream; the rest is not read (the stream is destroyed). */
async function readUpTo(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  try {
    for await (const chunk of stream) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string)
      chunks.push(size + buf.length > limit ? buf.subarray(0, limit - size) : buf)
      size += buf.length
      if (size >= limit) break
    }
  } finally {
    stream.destroy()
  }
  return Buffer.concat(chunks)
}
