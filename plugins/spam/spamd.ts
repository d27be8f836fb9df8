// SpamAssassin's spamd protocol (what spamc speaks), over TCP:
//
//   SYMBOLS SPAMC/1.5\r\n                      SPAMD/1.1 0 EX_OK\r\n
//   Content-length: <bytes>\r\n          →     Content-length: 45\r\n
//   [User: <name>\r\n]                         Spam: True ; 15.0 / 5.0\r\n
//   \r\n                                       \r\n
//   <the message>                              GTUBE,MSGID_SHORT,...   (the rules that matched)
//
// spamd closes the connection after its answer (an answer complete by its Content-length also ends it). A non-zero code in the status line
// (e.g. `SPAMD/1.0 76 Bad header line`) is an error.
import net from 'node:net'
import { deadline, ScanError, type ScanResult } from './scanner.js'

/** Longest answer read from spamd (SYMBOLS answers are a line of rule names). */
const MAX_ANSWER = 256 * 1024

export interface SpamdTarget {
  host: string
  port: number
  user?: string
}

export function checkSpamd(target: SpamdTarget, message: Buffer, timeoutMs: number): Promise<ScanResult> {
  return deadline(timeoutMs, (signal) => exchange(target, message, signal)).then(parseAnswer)
}

function exchange(target: SpamdTarget, message: Buffer, signal: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let length = 0
    let settled = false
    const finish = (err?: Error) => {
      if (settled) return
      settled = true
      socket.destroy()
      if (err) reject(err)
      else resolve(Buffer.concat(chunks))
    }
    const socket = net.connect({ host: target.host, port: target.port })
    signal.addEventListener('abort', () => finish(new ScanError('aborted')), { once: true })
    socket.on('connect', () => {
      const head = [`SYMBOLS SPAMC/1.5`, `Content-length: ${message.length}`]
      if (target.user) head.push(`User: ${target.user}`)
      socket.write(`${head.join('\r\n')}\r\n\r\n`)
      // No half-close (spamc shuts down its side here): Content-length tells spamd where the
      // message ends, and a proxy in between may take a FIN as the end of the whole exchange.
      socket.write(message)
    })
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      length += chunk.length
      if (length > MAX_ANSWER) return finish(new ScanError(`answer longer than ${MAX_ANSWER} bytes`))
      // A complete answer (headers and Content-length bytes of body) ends the exchange even if
      // the server keeps the connection open.
      if (complete(Buffer.concat(chunks))) finish()
    })
    socket.on('end', () => finish())
    socket.on('close', () => finish())
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new ScanError(`${target.host}:${target.port}: ${err.code ?? err.message}`)))
  })
}

function complete(answer: Buffer): boolean {
  const end = answer.indexOf('\r\n\r\n')
  if (end < 0) return false
  const m = /^content-length:\s*(\d+)\s*$/im.exec(answer.subarray(0, end).toString('latin1'))
  return m !== null && answer.length - (end + 4) >= Number(m[1])
}

/** Parses spamd's answer to SYMBOLS; throws a ScanError when it is not one. */
export function parseAnswer(answer: Buffer): ScanResult {
  const text = answer.toString('latin1')
  if (text === '') throw new ScanError('spamd closed the connection without an answer')
  const split = text.indexOf('\r\n\r\n')
  const head = split < 0 ? text : text.slice(0, split)
  const body = split < 0 ? '' : text.slice(split + 4)
  const [status = '', ...lines] = head.split(/\r?\n/)
  const m = /^SPAMD\/\d+\.\d+\s+(\d+)\s*(.*)$/.exec(status)
  if (!m) throw new ScanError(`not a spamd answer: ${JSON.stringify(status.slice(0, 80))}`)
  if (m[1] !== '0') throw new ScanError(`spamd error ${m[1]} ${m[2]!.trim()}`.trim())
  // `Spam: True ; 15.0 / 5.0` (older spamd versions say Yes/No)
  const spamLine = lines.map((l) => /^spam:\s*(true|false|yes|no)\s*;\s*(-?\d+(?:\.\d+)?)\s*\/\s*(-?\d+(?:\.\d+)?)\s*$/i.exec(l)).find((x) => x)
  if (!spamLine) throw new ScanError('spamd answer has no "Spam: <bool> ; <score> / <required>" line')
  const symbols = body
    .split(',')
    .map((s) => s.trim())
    .filter((s) => /^[A-Za-z0-9_.:-]+$/.test(s))
  return {
    backend: 'spamassassin',
    spam: /^(true|yes)$/i.test(spamLine[1]!),
    score: Number(spamLine[2]),
    required: Number(spamLine[3]),
    symbols,
  }
}
