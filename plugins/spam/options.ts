// Options of the spam plugin (see README.md): which scanner, limits, what to do with its answer.
import { httpUrl, size, timerAtLeast, z } from '../../core/index.js'

const duration = timerAtLeast(1, '1ms')

const spamassassin = z
  .object({
    /** Where spamd listens (its `--listen`); spamd must allow this relay in `--allowed-ips`. */
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(783),
    /** The `User:` sent to spamd (whose per-user preferences apply, if spamd reads any). */
    user: z.string().min(1).optional(),
  })
  .strict()

const rspamd = z
  .object({
    /** rspamd's normal worker (default port 11333); `/checkv2` is appended unless the URL has a path. */
    url: httpUrl.default('http://127.0.0.1:11333'),
    /** Sent as the `Password` header (rspamd asks for one only on its controller worker). */
    password: z.string().min(1).optional(),
  })
  .strict()

const score = z.number().finite()

export const options = z
  .object({
    /** `{ spamassassin: { host, port } }` (spamd) or `{ rspamd: { url, password? } }`: exactly one. */
    backend: z
      .object({ spamassassin: spamassassin.optional(), rspamd: rspamd.optional() })
      .strict()
      .refine((b) => (b.spamassassin ? 1 : 0) + (b.rspamd ? 1 : 0) === 1, {
        message: 'expected exactly one of { spamassassin: { host, port } } or { rspamd: { url, password? } }',
      }),
    /** The longest a scan may take (connect, send, answer); then `onError` applies. */
    timeout: duration.default(10_000),
    /** Messages larger than this are not scanned; they pass with `X-Spam-Status: skipped (too large)`. */
    maxSize: size.default(2 * 1024 ** 2),
    /**
     * When the scanner cannot be reached, times out or answers nonsense: 'accept' (fail open: the
     * message passes with `X-Spam-Status: unknown (scanner unavailable)`) or 'tempfail' (fail closed:
     * `451 4.7.1`, the client tries again later).
     */
    onError: z.enum(['accept', 'tempfail']).default('accept'),
    /**
     * What a score leads to. Score thresholds (each optional; at or above it): `reject` → `550 5.7.1`,
     * `tempfail` → `451 4.7.1`, `header` → marked as spam (`X-Spam-Flag: YES`). With `scanner`
     * (default true) the scanner's own verdict counts too: SpamAssassin's `Spam: True` marks the
     * message; rspamd's action `reject` rejects, `soft reject`/`greylist` tempfail, `add header`/
     * `rewrite subject` mark. The strongest outcome wins.
     */
    actions: z
      .object({
        reject: score.optional(),
        tempfail: score.optional(),
        header: score.optional(),
        scanner: z.boolean().default(true),
      })
      .strict()
      .default({ scanner: true }),
    /** Put this in front of the Subject of messages marked as spam (e.g. '[SPAM]'); unset: Subject unchanged. */
    subjectTag: z.string().min(1).optional(),
    /** Scan only sessions on listeners with these roles (inbound mail arrives on 'mx'). */
    listeners: z.array(z.enum(['mx', 'submission'])).min(1).default(['mx']),
    /** Also scan sessions that authenticated (usually your own users' outgoing mail). */
    scanAuthenticated: z.boolean().default(false),
  })
  .strict()

export type SpamOptions = z.output<typeof options>
