// What a scanner tells about one message, whichever backend asked.

export interface ScanResult {
  backend: 'spamassassin' | 'rspamd'
  score: number
  /** The scanner's threshold: SpamAssassin's required score; rspamd's `required_score`. */
  required: number
  /** The scanner's own yes/no: SpamAssassin's `Spam: True`; rspamd: any action but `no action`. */
  spam: boolean
  /** Names of the rules that matched. */
  symbols: string[]
  /** rspamd only: `no action`, `greylist`, `add header`, `rewrite subject`, `soft reject`, `reject`. */
  action?: string
  /** rspamd only: the Subject it wants for `rewrite subject`. */
  subject?: string
}

/** The scanner could not be asked or gave no usable answer (network, timeout, protocol). */
export class ScanError extends Error {
  override name = 'ScanError'
}

/** What the relay knows about the message, for scanners that take it besides the message. */
export interface ScanEnvelope {
  ip: string
  helo?: string
  clientHostname: string
  sender: string
  recipients: string[]
  user?: string
  hostname: string
}

/**
 * Runs `run` with an AbortSignal; rejects with a ScanError (`no answer within <ms> ms`) when it has
 * not settled after `ms`, and aborts the signal then (and once it settled) so `run` lets go of its
 * socket.
 */
export function deadline<T>(ms: number, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new ScanError(`no answer within ${ms} ms`)) // settles the race before the abort's own error
      controller.abort()
    }, ms)
  })
  return Promise.race([run(controller.signal), timeout]).finally(() => {
    clearTimeout(timer)
    controller.abort()
  })
}
