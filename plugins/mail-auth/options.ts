import os from 'node:os'
import path from 'node:path'
import { cidr, timerAtLeast, z } from '../../core/index.js'
import { loadSealKey } from './arc-seal.js'

const duration = timerAtLeast(1, '1ms')

/** An RFC 8601 authserv-id written as a token (a host name in practice). */
const authservId = z
  .string()
  .regex(/^[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~]+$/, { message: "expected a token such as a host name, like 'mx.example.com'" })

const domainName = z
  .string()
  .transform((d) => d.toLowerCase().replace(/\.$/, ''))
  .refine((d) => /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/.test(d), {
    message: 'expected a domain name like example.com',
  })

const arcSeal = z
  .object({
    /** d= of the ARC-Seal and ARC-Message-Signature: the key is published at `<selector>._domainkey.<domain>`. */
    domain: domainName,
    selector: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, { message: 'expected a selector like arc2026' }),
    /** The private key as PEM text (RSA of at least 1024 bits, or ed25519)… */
    privateKey: z.string().optional(),
    /** …or the path of a PEM file (absolute, or relative to the config file's directory). */
    privateKeyFile: z.string().optional(),
    /**
     * A message that came with no signature (no DKIM-Signature, no ARC set) has its 8-bit MIME parts
     * converted to 7-bit before it is sealed, as dkim-sign's sevenBit does before signing: the seal
     * (and a DKIM signature added after it) then survive a next hop without 8BITMIME.
     */
    sevenBit: z.boolean().default(true),
  })
  .strict()
  .superRefine((s, ctx) => {
    if ((s.privateKey === undefined) === (s.privateKeyFile === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of privateKey (PEM text) and privateKeyFile (a path)' })
      return
    }
    // A key that cannot sign is a config error (exit 2, key named), not a failure at every message.
    // A relative file is checked at setup, which knows the config file's directory.
    if (s.privateKeyFile !== undefined && !path.isAbsolute(s.privateKeyFile)) return
    try {
      loadSealKey(s)
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: [s.privateKey === undefined ? 'privateKeyFile' : 'privateKey'], message: (err as Error).message })
    }
  })

export const options = z
  .object({
    /** The authserv-id written into (and stripped from) Authentication-Results. Default: config `hostname`. */
    authservId: authservId.optional(),
    /** More authserv-ids whose incoming Authentication-Results are removed (other names of this ADMD's MTAs). */
    stripAuthservIds: z.array(authservId).default([]),
    /** Clients (IPs / CIDR blocks) that are not checked, e.g. internal hosts relaying outbound on the MX port. */
    skipNetworks: z.array(cidr).default([]),
    spf: z
      .object({
        /** SPF `fail` (the domain's `-all` matched): `reject` → 550 5.7.1 at MAIL; `mark` → only recorded in Authentication-Results. */
        fail: z.enum(['reject', 'mark']).default('mark'),
        /** Longest time one SPF evaluation may take (RFC 7208 §4.6.4 suggests at least 20 s); then temperror. */
        timeLimit: duration.default(20_000),
      })
      .strict()
      .prefault({}),
    dmarc: z
      .object({
        /** A message that fails DMARC of a domain with `p=reject`: `reject` (550 5.7.1), `quarantine-header`, or `none`. */
        reject: z.enum(['reject', 'quarantine-header', 'none']).default('reject'),
        /** A message that fails DMARC of a domain with `p=quarantine`: `header` adds `X-Relay-Quarantine: dmarc`; `none` does nothing. */
        quarantine: z.enum(['header', 'none']).default('header'),
        /** Apply the legacy `pct=` tag (RFC 7489 §6.6.4): outside the sample, the next weaker policy applies. */
        honourPct: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    /** A DNS temporary error (SPF, DMARC, or a DKIM key that decides DMARC): `tempfail` (451) or `accept` (only recorded). */
    tempError: z.enum(['tempfail', 'accept']).default('tempfail'),
    /** ARC-seal checked mail before it is queued for onward delivery (RFC 8617). */
    arcSeal: arcSeal.optional(),
    /** Follow the RFCs exactly (mailauth's strict mode): e.g. a DKIM body hash mismatch is dkim=fail, not neutral. */
    strict: z.boolean().default(true),
    /** Shortest RSA key accepted for DKIM and ARC signatures. */
    minBitLength: z.number().int().min(512).default(1024),
    /**
     * A DKIM signature whose l= tag leaves part of the body unsigned (RFC 6376 §8.2): 'policy'
     * records it as dkim=policy and it carries no DMARC; 'pass' counts it as mailauth does
     * (mailing lists that append footers to l= mail, at the price of letting anyone append text).
     */
    partialBody: z.enum(['policy', 'pass']).default('policy'),
    /**
     * DKIM signatures verified per message (OpenDKIM's MaximumSignaturesToVerify is 3): those whose
     * d= is the From: domain (or related to it) first, then the topmost. The rest are recorded as
     * `dkim=neutral (not verified: limit)`.
     */
    maxSignatures: z.number().int().min(1).default(5),
    /** The worker threads that run the DKIM/ARC/DMARC checks and ARC seals off the event loop. */
    workers: z
      .object({
        /** Threads. Default: the CPUs but one, at least 1, at most 4. */
        threads: z
          .number()
          .int()
          .min(1)
          .default(() => Math.max(1, Math.min(4, os.availableParallelism() - 1))),
        /** Checks one thread runs at once (they mostly wait for DNS). */
        jobsPerThread: z.number().int().min(1).default(8),
        /** Checks waiting for a thread; beyond this a message gets 451 4.3.2 (try again later). */
        maxQueue: z.number().int().min(0).default(200),
        /** Longest a check (or seal) may take; then its thread is ended and the message gets 451 4.3.0. */
        timeout: duration.default(20_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()

export type MailAuthOptions = z.output<typeof options>
