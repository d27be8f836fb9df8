// The admin API's request and response bodies as zod schemas: the request ones parse what clients
// send, and all of them become the OpenAPI document's components (openapi.ts), so the document and
// the code cannot drift apart. Responses are described, not enforced (the operator API's types are).
import { z } from '../../core/index.js'

/** Every named schema, by id: the OpenAPI document's `components.schemas`. */
export const apiSchemas = z.registry<{ id: string; description?: string }>()

const named = <T extends z.ZodType>(id: string, description: string, schema: T): T => {
  apiSchemas.add(schema, { id, description })
  return schema
}

const epochMs = z.number().describe('epoch milliseconds')
const category = z.string().describe('bounce category (e.g. mailbox, policy, spam, quota, routing, network)')

export const ErrorBody = named('Error', 'What went wrong', z.object({ error: z.string() }))

export const RecipientSummary = named(
  'Recipient',
  'One recipient of a queued message',
  z.object({
    address: z.string(),
    state: z.enum(['queued', 'deferred', 'delivered', 'bounced']),
    attempts: z.number().int(),
    nextAttemptAt: epochMs.optional(),
    lastResponse: z.string().optional(),
    category: category.optional(),
    dsnOwed: z.literal(true).optional().describe('a final result whose DSN to the sender is not sent yet (the message stays queued until it is)'),
    delivering: z.literal(true).optional().describe('a pending recipient in a delivery attempt now (nextAttemptAt is not set while it runs)'),
  }),
)

const entryFields = {
  id: z.string().describe('queue id'),
  messageId: z.string().optional(),
  sender: z.string().describe("envelope sender; '' the null sender"),
  size: z.number().int(),
  receivedAt: epochMs,
  heldAt: epochMs.optional(),
}

export const QueueEntry = named('QueueEntry', 'A queued message and its recipients', z.object({ ...entryFields, recipients: z.array(RecipientSummary) }))

export const QueuePage = named(
  'QueuePage',
  'Messages oldest first; `nextCursor` when more follow (pass it as `cursor`)',
  z.object({ messages: z.array(QueueEntry), nextCursor: z.string().optional() }),
)

export const AttemptRecord = named(
  'Attempt',
  "One delivery attempt's result for one recipient",
  z.object({ at: epochMs, state: z.enum(['delivered', 'deferred', 'bounced']), response: z.string(), remoteHost: z.string().optional(), category: category.optional() }),
)

export const MessageDetail = named(
  'MessageDetail',
  'The envelope, each recipient with its attempt history, and the header section',
  z.object({
    ...entryFields,
    senderArgs: z.record(z.string(), z.union([z.string(), z.boolean()])).optional(),
    expiresAt: epochMs,
    meta: z.looseObject({}).describe('client address, HELO, listener, user, ...'),
    headers: z.string().nullable().describe('the header section; null for the read-only token, which reads no message content'),
    recipients: z.array(
      RecipientSummary.extend({
        rowId: z.number().int(),
        domain: z.string(),
        args: z.record(z.string(), z.union([z.string(), z.boolean()])).optional(),
        leased: z.boolean(),
        remoteHost: z.string().optional(),
        history: z.array(AttemptRecord),
      }),
    ),
  }),
)

export const QueueSummary = named(
  'QueueSummary',
  'Queue size at a glance',
  z.object({
    messages: z.number().int(),
    recipients: z.object({ queued: z.number().int(), deferred: z.number().int(), held: z.number().int() }),
    oldestReceivedAt: epochMs.optional(),
    domains: z.array(z.object({ domain: z.string(), queued: z.number().int(), deferred: z.number().int(), held: z.number().int() })),
    owingDsn: z.number().int().optional().describe('messages kept queued for a DSN to their sender not sent yet'),
  }),
)

export const HoldResult = named(
  'HoldResult',
  'The message is held; inFlight: recipients a delivery held at that moment (that attempt is not stopped)',
  z.object({ id: z.string(), held: z.literal(true), inFlight: z.array(z.string()).optional() }),
)
export const ReleaseResult = named('ReleaseResult', 'The message is released and due now', z.object({ id: z.string(), released: z.literal(true) }))
export const DeleteResult = named('DeleteResult', 'The message is gone, without a bounce', z.object({ id: z.string(), deleted: z.literal(true) }))
export const BounceResult = named(
  'BounceResult',
  'Pending recipients bounced; `inFlight`: those a delivery held (left to it); `dsn`: the queue id of the report to the sender; `dsnWaits`: it goes once the delivery in flight is done',
  z.object({ id: z.string(), bounced: z.array(z.string()), inFlight: z.array(z.string()).optional(), dsn: z.string().optional(), dsnWaits: z.boolean().optional() }),
)
export const FlushRequest = named('FlushRequest', 'All pending mail, one message or one domain', z.strictObject({ id: z.string().optional(), domain: z.string().optional() }))
export const FlushResult = named('FlushResult', 'Recipients made due now', z.object({ flushed: z.number().int() }))

const bulkAction = z.enum(['hold', 'release', 'flush', 'delete', 'bounce'])

export const BulkRequest = named(
  'BulkRequest',
  'One action on every message the filter selects (postsuper-style); `dryRun` only counts',
  z.strictObject({
    action: bulkAction,
    filter: z
      .strictObject({
        ids: z.array(z.string().min(1)).optional().describe('these messages (with the other fields: those of them that match); [] selects none'),
        all: z.literal(true).optional().describe('every message; alone'),
        domain: z.string().min(1).optional(),
        sender: z.string().optional().describe("'' or '<>': the null sender"),
        state: z.enum(['queued', 'deferred', 'held']).optional(),
        olderThan: z.union([z.number().nonnegative().describe('milliseconds'), z.string().describe("a duration: '90s', '30m', '4h', '5d'")]).optional(),
      })
      .describe('ids, or all: true, or at least one narrowing field (they all apply)'),
    dryRun: z.boolean().optional(),
  }),
)

export const BulkResult = named(
  'BulkResult',
  'What matched, how many the action changed (0 in a dry run), and the messages it could not change because of their state (being delivered, not held, held) with the reason',
  z.object({
    action: bulkAction,
    dryRun: z.boolean(),
    matched: z.array(z.string()),
    done: z.number().int(),
    skipped: z.array(z.object({ id: z.string(), reason: z.string() })),
  }),
)

const recipients = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).describe('one address, or several')

export const InjectRaw = named(
  'InjectRaw',
  'A whole RFC 5322 message (header section, blank line, body) and its envelope',
  z.strictObject({ from: z.string().describe("envelope sender; '' the null sender"), to: recipients, raw: z.string().min(1) }),
)

export const InjectCompose = named(
  'InjectCompose',
  'A plain-text message built by the relay: From, To, Subject, Date, Message-ID and MIME headers',
  z.strictObject({
    from: z.string().min(1),
    to: recipients,
    subject: z.string(),
    text: z.string(),
    headers: z.record(z.string(), z.string()).optional().describe('further header fields (Reply-To, X-...); they may replace From, To, Date, Message-ID'),
  }),
)

export const InjectResult = named('InjectResult', 'The message is queued', z.object({ queueId: z.string() }))

export const InjectRefusal = named(
  'InjectRefusal',
  "The relay's checks refused the message, as they would over SMTP",
  z.object({ error: z.string().describe('the reply text'), code: z.number().int().describe('SMTP reply code'), status: z.string().optional().describe('enhanced status code, e.g. 5.7.1') }),
)

export const Readiness = named(
  'Readiness',
  'Whether the relay takes traffic',
  z.object({ ready: z.boolean(), state: z.enum(['starting', 'running', 'stopping', 'stopped']), reason: z.string().optional() }),
)

export const ReloadResult = named(
  'ReloadResult',
  'The new config in force (`changed`, `restartNeeded`), or why it was refused',
  z.union([
    z.object({ ok: z.literal(true), changed: z.array(z.string()), restartNeeded: z.array(z.string()) }),
    z.object({ ok: z.literal(false), error: z.string() }),
  ]),
)

export const StatsResponse = named(
  'StatsResponse',
  'Reputation figures per sending and destination domain, and the last 24 hours hourly',
  z.looseObject({ period: z.enum(['hour', 'day']), figures: z.looseObject({}), series: z.array(z.looseObject({})) }),
)

export const EventsResponse = named(
  'EventsResponse',
  'Recent events, newest first',
  z.looseObject({ events: z.array(z.looseObject({ type: z.string() })), capacity: z.number().int() }),
)

/** A zod error as one line naming the fields: `filter.state: Invalid option ...`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`)
    .join('; ')
}
