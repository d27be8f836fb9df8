// Options of the doctor plugin (optional: the verb works without it in the config). Per sending
// domain, what the doctor cannot find out from DNS alone about the provider a smarthost route
// sends it through.
import { z } from '../../core/index.js'

const domainSettings = z
  .object({
    /**
     * The DKIM selectors the provider signs with, instead of its usual ones: for Amazon SES the
     * three Easy DKIM tokens (`<token>._domainkey.<domain>`), for SendGrid custom selectors (default
     * s1, s2), for Mailgun the domain's selector (default: smtp, pic, k1 are tried).
     */
    dkimSelectors: z.array(z.string().regex(/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/i, 'expected a DKIM selector such as s1')).min(1).optional(),
    /** Amazon SES custom MAIL FROM domain (e.g. bounce.example.com): where SPF must include amazonses.com. */
    mailFrom: z.string().min(1).optional(),
  })
  .strict()

export const options = z
  .object({
    /** Keyed by sending domain: `{ 'example.com': { dkimSelectors: [...], mailFrom: '...' } }`. */
    domains: z.record(z.string(), domainSettings).default({}),
  })
  .strict()

export type Options = z.output<typeof options>
export type DomainSettings = z.output<typeof domainSettings>
