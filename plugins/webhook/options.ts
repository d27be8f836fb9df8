// Options of the webhook plugin and their defaults (see README.md).
import { durationAtLeast, httpUrl, z } from '../../core/index.js'

/** The events the plugin can send, in the order they happen to a message. */
export const EVENT_TYPES = ['accepted', 'delivered', 'deferred', 'bounced', 'suppressed'] as const
export type WebhookEventType = (typeof EVENT_TYPES)[number]

const ms = (min: number, hint: string) => durationAtLeast(min, hint)

export const optionsSchema = z
  .object({
    /** Where the batches are POSTed. */
    url: httpUrl,
    /** HMAC-SHA256 key for X-Relay-Signature; never logged. */
    secret: z.string().min(16, { message: 'use a secret of at least 16 characters' }),
    events: z.array(z.enum(EVENT_TYPES)).min(1, { message: 'list at least one event' }).default([...EVENT_TYPES]),
    /** Events per POST at most. */
    batchSize: z.number().int().min(1).max(10_000).default(100),
    /** How long an event may wait for its batch to fill before it is sent. */
    flushInterval: ms(10, '10ms').default(1000),
    /** Per request; a slower endpoint counts as a failure. */
    timeout: ms(100, '100ms').default(10_000),
    /** After a failed POST: wait `base`, doubling up to `max`, then every `max`. */
    retry: z
      .object({ base: ms(10, '10ms').default(1000), max: ms(10, '10ms').default(300_000) })
      .strict()
      .prefault({}),
  })
  .strict()
  .refine((o) => o.retry.max >= o.retry.base, { message: 'retry.max must not be shorter than retry.base', path: ['retry', 'max'] })

export type WebhookOptions = z.output<typeof optionsSchema>
