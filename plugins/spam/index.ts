// spam: content scanning at `data` with SpamAssassin (spamd) or rspamd. Every message on the
// scanned listeners (default: 'mx' only, unauthenticated sessions only) up to `maxSize` is sent to
// the scanner; its answer rejects (550 5.7.1), tempfails (451 4.7.1) or marks the message with
// X-Spam-Status / X-Spam-Score / X-Spam-Flag headers. A scanner that is down or slow fails open
// (`onError: 'accept'`, the default: `X-Spam-Status: unknown (scanner unavailable)`) or closed
// (`onError: 'tempfail'`: 451 4.7.1). See README.md.
//
//   plugins: [['spam', { backend: { spamassassin: { host: '127.0.0.1', port: 783 } }, actions: { reject: 15 } }]]
import type { Readable } from 'node:stream'
import { definePlugin, reject, tempfail, type MessageHeaders, type SessionInfo } from '../../core/index.js'
import { decide, formatScore, statusValue } from './decide.js'
import { options, type SpamOptions } from './options.js'
import { checkRspamd, checkUrl } from './rspamd.js'
import { ScanError, type ScanEnvelope, type ScanResult } from './scanner.js'
import { checkSpamd } from './spamd.js'

/**
 * Fields that carry a spam verdict: this plugin's own (X-Spam-Flag, -Status, -Score), the rest of
 * the family SpamAssassin and others write (X-Spam-Level, -Report, X-Spam, ...) and rspamd's
 * milter_headers (X-Spamd-Result, X-Spamd-Bar, X-Rspamd-Action, -Score, -Server, ...), which a mail
 * store may file on. Copies that came with the message are removed first.
 */
const VERDICT_FIELD = /^x-(spam|spamd|rspamd)(-|$)/i

const REJECT_TEXT = 'Message considered spam'
const TEMPFAIL_TEXT = 'Message temporarily refused as possible spam, try again later'
const UNAVAILABLE_TEXT = 'Spam scanner unavailable, try again later'

async function collect(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stream) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array)
    size += b.length
    if (size > limit) {
      stream.destroy()
      throw new Error(`message grew past ${limit} bytes while being read`)
    }
    chunks.push(b)
  }
  return Buffer.concat(chunks)
}

function rfc5322Date(d = new Date()): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
  const p = (n: number) => String(n).padStart(2, '0')
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
}

/**
 * The Received field this relay will add, for the scanner's copy only: SpamAssassin finds the
 * connecting client (for its network and HELO rules) in the topmost Received header, and at `data`
 * the relay has not added its own yet.
 */
function receivedForScanner(session: SessionInfo, hostname: string): Buffer {
  const proto = `ESMTP${session.secure ? 'S' : ''}${session.user ? 'A' : ''}`
  const rdns = session.clientHostname.startsWith('[') ? '' : `${session.clientHostname} `
  const ip = session.remoteAddress.includes(':') ? `IPv6:${session.remoteAddress}` : session.remoteAddress
  const clean = (s: string) => s.replace(/[^\x21-\x7e]/g, '')
  const value = `from ${clean(session.helo ?? 'unknown')} (${clean(rdns)}[${ip}])\r\n\tby ${clean(hostname)} (Relay) with ${proto}; ${rfc5322Date()}`
  return Buffer.from(`Received: ${value}\r\n`, 'latin1')
}

/** RFC 2047 encoded-word for a Subject with non-ASCII text. */
function encodeSubject(text: string): string {
  if (/^[\x20-\x7e]*$/.test(text)) return text
  return `=?UTF-8?B?${Buffer.from(text, 'utf8').toString('base64')}?=`
}

function markSubject(headers: MessageHeaders, result: ScanResult, subjectTag: string | undefined): void {
  if (result.backend === 'rspamd' && result.action === 'rewrite subject' && result.subject) {
    headers.set('Subject', encodeSubject(result.subject))
    return
  }
  const tag = subjectTag ?? (result.action === 'rewrite subject' ? '***SPAM***' : undefined)
  if (!tag) return
  const current = headers.get('Subject') ?? ''
  if (!current.startsWith(tag)) headers.set('Subject', current ? `${tag} ${current}` : tag)
}

export default definePlugin<SpamOptions>({
  name: 'spam',
  options,
  hooks: {
    async data({ session, envelope, headers, size, readMessage, options, log, hostname }) {
      if (!options.listeners.includes(session.listener.role)) return
      if (session.user && !options.scanAuthenticated) return

      // A sender's own X-Spam-* fields must not pass for this relay's verdict.
      headers.fields = headers.fields.filter((f) => !VERDICT_FIELD.test(f.name))

      if (size > options.maxSize) {
        log.info({ session: session.id, size, maxSize: options.maxSize }, 'message not scanned: larger than maxSize')
        headers.prepend('X-Spam-Status', 'skipped (too large)')
        return
      }

      const env: ScanEnvelope = {
        ip: session.remoteAddress,
        helo: session.helo,
        clientHostname: session.clientHostname,
        sender: envelope.sender.address,
        recipients: envelope.recipients.map((r) => r.address),
        user: session.user,
        hostname,
      }
      const started = Date.now()
      let result: ScanResult
      try {
        const message = await collect(readMessage(), options.maxSize + 64 * 1024)
        const { spamassassin, rspamd } = options.backend
        if (spamassassin) {
          result = await checkSpamd(spamassassin, Buffer.concat([receivedForScanner(session, hostname), message]), options.timeout)
        } else {
          result = await checkRspamd(rspamd!, message, env, options.timeout)
        }
      } catch (err) {
        const reason = err instanceof ScanError ? err.message : String((err as Error)?.message ?? err)
        const where = options.backend.spamassassin
          ? `spamd ${options.backend.spamassassin.host}:${options.backend.spamassassin.port}`
          : `rspamd ${checkUrl(options.backend.rspamd!.url).origin}`
        log.error({ session: session.id, scanner: where, reason, ms: Date.now() - started, onError: options.onError }, 'spam scan failed')
        if (options.onError === 'tempfail') return tempfail({ code: 451, status: '4.7.1', message: UNAVAILABLE_TEXT })
        headers.prepend('X-Spam-Status', 'unknown (scanner unavailable)')
        return
      }

      const { outcome, why } = decide(result, options.actions)
      const logFields = {
        session: session.id,
        client: session.remoteAddress,
        from: envelope.sender.address,
        score: result.score,
        required: result.required,
        action: result.action,
        symbols: result.symbols.slice(0, 50),
        outcome,
        why,
        ms: Date.now() - started,
      }
      if (outcome === 'reject') {
        log.info(logFields, 'message rejected as spam')
        return reject({ code: 550, status: '5.7.1', message: REJECT_TEXT })
      }
      if (outcome === 'tempfail') {
        log.info(logFields, 'message tempfailed as possible spam')
        return tempfail({ code: 451, status: '4.7.1', message: TEMPFAIL_TEXT })
      }
      const spam = outcome === 'mark'
      log.info(logFields, spam ? 'message marked as spam' : 'message scanned: not spam')
      // prepend() puts each on top: the result reads X-Spam-Flag, X-Spam-Status, X-Spam-Score.
      headers.prepend('X-Spam-Score', formatScore(result.score))
      headers.prepend('X-Spam-Status', statusValue(spam, result, options.actions))
      if (spam) {
        headers.prepend('X-Spam-Flag', 'YES')
        markSubject(headers, result, options.subjectTag)
      }
    },
  },
})
