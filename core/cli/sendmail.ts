// `relay sendmail` and the `sendmail` alias (bin/sendmail.js): the sendmail(1) interface cron, PHP
// and scripts use. Reads the message from stdin and leaves it, with its envelope, in
// <dataDir>/maildrop/ (core/queue/maildrop.ts); the running relay's pickup queues it through the
// same checks as SMTP submission. With no relay running, it waits there until one starts.
// Options as Postfix's sendmail: -t -i -oi -f -r -F -v -C, other -o options and -B -N -R -V -X ignored.
import { encodedWords } from '../mail/encoded-words.js'
import os from 'node:os'
import addressparser from 'nodemailer/lib/addressparser'
import { ConfigError, requireConfig } from '../config/load.js'
import { livePid } from '../pid-file.js'
import { dropMessage, maildropDir } from '../queue/maildrop.js'
import { parseAddress } from '../mail/address.js'

/** sysexits.h, as sendmail programs exit. */
const EX_USAGE = 64
const EX_UNAVAILABLE = 69
const EX_TEMPFAIL = 75
const EX_CONFIG = 78

export interface SendmailArgs {
  extractRecipients: boolean
  ignoreDots: boolean
  verbose: boolean
  sender?: string
  fullName?: string
  config?: string
  recipients: string[]
}

class UsageError extends Error {}

/** Options that take a value (attached, `-fme@x`, or the next argument). */
const WITH_VALUE = new Set(['f', 'r', 'F', 'C', 'B', 'N', 'R', 'V', 'X', 'O', 'h', 'L', 'q', 'o'])

/** getopt-style parsing: `-ti`, `-f sender`, `-fsender`, `-oi`, `--` ends the options. */
export function parseSendmailArgs(argv: string[]): SendmailArgs {
  const a: SendmailArgs = { extractRecipients: false, ignoreDots: false, verbose: false, recipients: [] }
  let i = 0
  for (; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      i++
      break
    }
    if (arg === '--config' || arg.startsWith('--config=')) {
      a.config = arg.includes('=') ? arg.slice('--config='.length) : argv[++i]
      if (!a.config) throw new UsageError('option --config needs a value')
      continue
    }
    if (arg.startsWith('--')) throw new UsageError(`unknown option ${arg}`)
    if (!arg.startsWith('-') || arg === '-') break
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j]!
      if (WITH_VALUE.has(flag)) {
        const rest = arg.slice(j + 1)
        const value = rest || argv[++i]
        if (value === undefined) throw new UsageError(`option -${flag} needs a value`)
        if (flag === 'f' || flag === 'r') a.sender = value
        else if (flag === 'F') a.fullName = value
        else if (flag === 'C') a.config = value
        // -oi (and -o i): ignore dots; every other -o option is ignored, as Postfix does.
        else if (flag === 'o' && value === 'i') a.ignoreDots = true
        else if (flag === 'q') throw new UsageError('-q (queue runs) is not supported; use `relay queue flush`')
        break
      }
      if (flag === 't') a.extractRecipients = true
      else if (flag === 'i') a.ignoreDots = true
      else if (flag === 'v') a.verbose = true
      else if (flag === 'b') {
        const mode = arg.slice(j + 1) || argv[++i]
        if (mode !== 'm') throw new UsageError(`-b${mode ?? ''} is not supported (only -bm, the default)`)
        break
      } else if (flag === 'n' || flag === 'm' || flag === 'U' || flag === 'G') continue
      else throw new UsageError(`unknown option -${flag}`)
    }
  }
  a.recipients.push(...argv.slice(i))
  // An address handed on by an application may come from a user: a line break in it would make
  // the rest a header of its own (`a@x\r\nBcc: b@y`), and the mail would go elsewhere.
  for (const [what, value] of [['sender (-f)', a.sender], ['full name (-F)', a.fullName], ...a.recipients.map((r) => ['recipient', r] as const)] as const) {
    if (value !== undefined && /[\x00-\x1f\x7f]/.test(value)) throw new UsageError(`${what} ${JSON.stringify(value)} contains a line break or control character`)
  }
  return a
}

/** The message as sendmail reads it: without -i, a line with a single dot ends it. */
export function readMessageText(input: Buffer, ignoreDots: boolean): Buffer {
  if (ignoreDots) return input
  const end = /(^|\n)\.\r?(\n|$)/.exec(input.toString('latin1'))
  return end ? input.subarray(0, end.index + end[1]!.length) : input
}

/** Addresses in header values or arguments (`a@x, B <b@y>`); bare names get `@domain`. */
function addresses(values: string[], domain: string): string[] {
  // A bare login name (`root`) is a name to addressparser: taken as the local part.
  const flat = (list: ReturnType<typeof addressparser>): string[] =>
    list.flatMap((x) => ('group' in x && x.group ? flat(x.group) : x.address ? [x.address] : x.name && /^[^\s"<>@]+$/.test(x.name) ? [x.name] : []))
  return values.flatMap((v) => flat(addressparser(v))).map((addr) => (addr.includes('@') ? addr : `${addr}@${domain}`))
}

/**
 * Splits the header section into fields with their continuation lines. It ends at the blank line
 * (LF or CRLF), or before the first line that is no header field (`echo text | sendmail`, or a
 * header with no blank line after it): that line starts the body.
 */
function headerFields(raw: Buffer): { fields: string[]; bodyStart: number; separated: boolean } {
  const text = raw.toString('latin1')
  const fields: string[] = []
  for (let pos = 0; pos < text.length; ) {
    const nl = text.indexOf('\n', pos)
    const end = nl < 0 ? text.length : nl + 1
    const line = text.slice(pos, end)
    if (line === '\n' || line === '\r\n') return { fields, bodyStart: end, separated: true }
    if (/^[ \t]/.test(line) && fields.length) fields[fields.length - 1] += line
    else if (/^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(line)) fields.push(line)
    else return { fields, bodyStart: pos, separated: false }
    pos = end
  }
  return { fields, bodyStart: text.length, separated: false }
}

const fieldName = (f: string) => /^([^:\s]+)\s*:/.exec(f)?.[1]?.toLowerCase()
const fieldValue = (f: string) => f.slice(f.indexOf(':') + 1).replace(/\r?\n[ \t]/g, ' ').trim()

/**
 * Envelope and message from the arguments and stdin: -t takes the recipients from To, Cc and Bcc
 * (Resent-To, -Cc and -Bcc when the message has them), added to those given as arguments as Postfix
 * does, and removes Bcc and Resent-Bcc; a From field is added when there is none.
 */
export function buildSubmission(args: SendmailArgs, input: Buffer, o: { hostname: string; user: string }): { sender: string; recipients: string[]; raw: Buffer } {
  let raw = readMessageText(input, args.ignoreDots)
  const given = args.sender === undefined ? `${o.user}@${o.hostname}` : args.sender.replace(/^<(.*)>$/, '$1')
  const sender = given === '' ? '' : given.includes('@') ? given : `${given}@${o.hostname}`
  const recipients = addresses(args.recipients, o.hostname)
  // A leading mbox separator ("From sender date", as mail(1) and mailbox tools write) is no header
  // field: Postfix's sendmail skips it.
  if (raw.subarray(0, 5).toString('latin1') === 'From ') {
    const nl = raw.indexOf(0x0a)
    raw = nl < 0 ? Buffer.alloc(0) : raw.subarray(nl + 1)
  }
  const { fields, bodyStart, separated } = headerFields(raw)
  // A resent message (RFC 5322 §3.6.6) goes to its Resent- recipients, not to the original ones.
  const resent = fields.some((f) => ['resent-to', 'resent-cc', 'resent-bcc'].includes(fieldName(f) ?? ''))
  const recipientFields = resent ? ['resent-to', 'resent-cc', 'resent-bcc'] : ['to', 'cc', 'bcc']
  if (args.extractRecipients) {
    recipients.push(...addresses(fields.filter((f) => recipientFields.includes(fieldName(f) ?? '')).map(fieldValue), o.hostname))
  }
  const kept = fields.filter((f) => !(args.extractRecipients && (fieldName(f) === 'bcc' || fieldName(f) === 'resent-bcc')))
  const eol = raw.includes('\r\n') ? '\r\n' : '\n'
  // RFC 5322 §3.6 wants a From: field; with the null sender (-f '') it names the mail system, as
  // Postfix's cleanup writes for a bounce (MAILER-DAEMON at this host).
  const addFrom = !kept.some((f) => fieldName(f) === 'from')
  const fromAddress = sender !== '' ? sender : `MAILER-DAEMON@${o.hostname}`
  if (addFrom) kept.push(`From: ${args.fullName ? `${displayName(args.fullName)} ` : sender === '' ? 'Mail Delivery System ' : ''}<${fromAddress}>${eol}`)
  // Rebuilt with the blank line that ends the header: the From field added goes into the header,
  // never after text that was meant as the body.
  if (addFrom || kept.length !== fields.length || (!separated && bodyStart < raw.length)) {
    const head = kept.map((f) => (f.endsWith('\n') ? f : f + eol)).join('')
    raw = Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(eol), raw.subarray(bodyStart)])
  }
  return { sender, recipients: [...new Set(recipients)], raw }
}

/**
 * The -F name as a From field's display name: quoted when it is ASCII; else RFC 2047 encoded-words
 * (the field is kept as bytes, latin1, so a UTF-8 name written into it as such came out as Latin-1).
 */
function displayName(name: string): string {
  const clean = name.replace(/["\\\r\n]/g, '')
  if (/^[\x20-\x7e]*$/.test(clean)) return `"${clean}"`
  return encodedWords(clean)
}

/** stdin, or undefined once it passes `limit` bytes (read no further: the input may never end). */
/** The message's size once queued: a CR added before every bare LF, and room for the fields the relay adds. */
function sizeAtPickup(raw: Buffer): number {
  let bareLf = 0
  for (let i = raw.indexOf(10); i >= 0; i = raw.indexOf(10, i + 1)) if (i === 0 || raw[i - 1] !== 13) bareLf++
  return raw.length + bareLf + ADDED_FIELDS
}
/** Received, Message-ID and Date as the relay writes them for a local message, with room to spare. */
const ADDED_FIELDS = 1024

async function readStdin(limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of process.stdin) {
    size += (c as Buffer).length
    if (size > limit) {
      process.stdin.destroy()
      return undefined
    }
    chunks.push(c as Buffer)
  }
  return Buffer.concat(chunks)
}

const USAGE = `Usage: sendmail [-t] [-i] [-f sender] [-F name] [-v] [-C config] [recipient ...] < message

Submits the message on stdin through the relay's maildrop (docs/sendmail.md).
  -t            recipients from the To, Cc and Bcc fields (Bcc is removed)
  -i, -oi       a line with a single dot does not end the message
  -f, -r ADDR   the envelope sender
  -F NAME       the sender's full name (for a From field the relay adds)
  -v            say where the message went
  -C FILE, --config FILE   the relay's config (else $RELAY_CONFIG, else /etc/relay/; never the current directory)
Exit codes (sysexits): 0 written, 64 usage, 69 too big, 75 cannot write (try again), 78 config.
`

/** Runs sendmail with `argv` (without the program name); resolves with the exit code. */
export async function sendmail(argv: string[]): Promise<number> {
  const say = (s: string) => process.stderr.write(`sendmail: ${s}\n`)
  if (argv[0] === '--help') {
    process.stdout.write(USAGE)
    return 0
  }
  let args: SendmailArgs
  try {
    args = parseSendmailArgs(argv)
  } catch (err) {
    say((err as Error).message)
    return EX_USAGE
  }
  let config
  try {
    // No config found is an error, not the defaults: a maildrop under the working directory
    // (a cron job's $HOME) would be read by no relay, and the mail lost without a word.
    // Nor from the current directory: sendmail runs wherever a program or a cron job stands, as
    // whoever runs it (Postfix's reads /etc/postfix only): -C, $RELAY_CONFIG or /etc/relay/.
    config = await requireConfig(args.config ?? process.env.RELAY_CONFIG, { searchCwd: false })
  } catch (err) {
    say(err instanceof ConfigError ? err.message : `cannot read the config: ${(err as Error).message}`)
    return EX_CONFIG
  }
  const input = await readStdin(config.smtp.maxMessageSize)
  if (!input) {
    // Postfix's words and exit code: the relay would refuse it, so nothing is written.
    say(`message file too big (over smtp.maxMessageSize, ${config.smtp.maxMessageSize} bytes): nothing written`)
    return EX_UNAVAILABLE
  }
  const m = buildSubmission(args, input, { hostname: config.hostname, user: os.userInfo().username })
  // As the relay counts it at pickup: CRLF line ends and the fields it adds (Received, Message-ID,
  // Date: under 1 KB). A message just under the limit as written was said "written" and bounced.
  if (sizeAtPickup(m.raw) > config.smtp.maxMessageSize) {
    say(`message file too big (over smtp.maxMessageSize, ${config.smtp.maxMessageSize} bytes, with CRLF line ends and the fields the relay adds): nothing written`)
    return EX_UNAVAILABLE
  }
  // Postfix qualifies a host name with no dot (myhostname) and warns; `user@buildbox` is refused by
  // every next hop, so this says what to set instead of writing mail that cannot go anywhere.
  const bare = [m.sender, ...m.recipients].find((a) => a.endsWith(`@${config.hostname}`))
  if (!config.hostname.includes('.') && bare) {
    say(`hostname '${config.hostname}' is not a fully qualified domain name: ${bare} is no address another mail server takes; set hostname in the config (e.g. ${config.hostname}.example.com), or give full addresses (-f user@example.com); nothing written`)
    return EX_CONFIG
  }
  if (m.sender !== '' && !parseAddress(m.sender)) {
    say(`sender ${JSON.stringify(m.sender)} is not an address (-f): nothing written`)
    return EX_USAGE
  }
  if (!m.recipients.length) {
    say(args.extractRecipients ? 'no recipient addresses found in the message header' : 'no recipients given (name them, or use -t)')
    return EX_USAGE
  }
  // One bad address would have the whole message refused at pickup, good recipients with it.
  const bad = m.recipients.find((r) => !parseAddress(r))
  if (bad !== undefined) {
    say(`recipient ${JSON.stringify(bad)}${args.extractRecipients ? ' (in the message header)' : ''} is not an address: nothing written`)
    return EX_USAGE
  }
  let file: string
  try {
    file = await dropMessage(config.dataDir, m)
  } catch (err) {
    say(`cannot write to ${maildropDir(config.dataDir)}: ${(err as Error).message}`)
    return EX_TEMPFAIL
  }
  if (args.verbose) {
    const pid = livePid(config.dataDir)
    say(`message for ${m.recipients.join(', ')} written to ${file}; ${pid ? `relay ${pid} picks it up` : 'no relay is running: it waits there until one starts'}`)
  }
  return 0
}
