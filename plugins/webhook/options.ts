// Options of the webhook plugin and their defaults (see README.md).
import { durationAtLeast, httpUrlWith, timerAtLeast, z } from '../../core/index.js'

/** The events the plugin can send, in the order they happen to a message. */
export const EVENT_TYPES = ['accepted', 'delivered', 'deferred', 'bounced', 'suppressed'] as const
export type WebhookEventType = (typeof EVENT_TYPES)[number]

/** A timer's duration (an interval, a timeout, a retry wait): at most 24 days, as setTimeout allows. */
const ms = (min: number, hint: string) => timerAtLeast(min, hint)

/** `url`: credentials in it are refused, naming what authenticates the relay instead. */
const url = httpUrlWith('(no event would ever be sent); the endpoint authenticates the relay by X-Relay-Signature, made with `secret`')

export const optionsSchema = z
  .object({
    /** Where the batches are POSTed. */
    url,
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
    /**
     * A batch the endpoint refuses for good (a 4xx other than 408, 425, 429) is dropped after this
     * many tries, with a warning; other failures are retried for as long as the outbox keeps it.
     */
    maxRejects: z.number().int().min(1).max(1000).default(3),
    /** Most events the outbox holds; beyond it the oldest are dropped (logged, counted). */
    maxEvents: z.number().int().min(1).default(100_000),
    /** Oldest an event may be; older ones are dropped unsent (logged, counted). */
    maxAge: durationAtLeast(1000, '1s').default(3 * 86_400_000),
  })
  .strict()
  .refine((o) => o.retry.max >= o.retry.base, { message: 'retry.max must not be shorter than retry.base', path: ['retry', 'max'] })

export type WebhookOptions = z.output<typeof optionsSchema>
