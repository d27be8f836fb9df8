// `log.format: 'line'`: each pino JSON line rewritten as one Postfix-like maillog line, for people
// and for tools that know Postfix's log (fail2ban, pflogsumm-style greps). The audit events get
// Postfix's shapes; any other line is `<level>: <msg> (key=value, ...)`. docs/logging.md shows both.
import os from 'node:os'

type Line = Record<string, unknown>

const HOST = os.hostname().split('.')[0] || 'localhost'
const LEVELS: Record<number, string> = { 10: 'trace: ', 20: 'debug: ', 40: 'warning: ', 50: 'error: ', 60: 'fatal: ' }
/** The SMTP command each refusal stage answers (a HELO name is checked at the first MAIL). */
const COMMANDS: Record<string, string> = { connect: 'CONNECT', helo: 'MAIL', auth: 'AUTH', mail: 'MAIL', rcpt: 'RCPT', data: 'DATA' }
const STATUS: Record<string, string> = { delivered: 'sent', deferred: 'deferred', bounced: 'bounced' }
/** Fields the line shapes below already show, or that only the JSON needs. */
const SHOWN = new Set(['level', 'time', 'pid', 'msg', 'event'])

/** One value on one line: no control characters (a client's HELO or a reply text could carry them). */
const flat = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v) ?? '').replace(/[\x00-\x1f\x7f]+/g, ' ')
const str = (v: unknown) => (v === undefined || v === null ? '' : flat(v))
/** `name[ip]` as Postfix writes a client: `unknown[ip]` without a reverse name. */
const clientOf = (l: Line) => {
  const name = str(l.clientHostname)
  return `${!name || name.startsWith('[') ? 'unknown' : name}[${str(l.client)}]`
}
const seconds = (ms: unknown) => (typeof ms === 'number' ? (ms / 1000).toFixed(ms < 10_000 ? 2 : 1) : '?')

function refused(l: Line): string {
  const reply = [l.code, l.dsn, l.text].filter((x) => x !== undefined && x !== '').map(str).join(' ')
  const to = l.recipient ?? (Array.isArray(l.recipients) && l.recipients.length ? l.recipients.join(',') : undefined)
  const parts = [
    l.sender !== undefined ? `from=<${str(l.sender)}>` : '',
    to !== undefined ? `to=<${str(to)}>` : '',
    `proto=${str(l.proto) || 'SMTP'}`,
    l.helo ? `helo=<${str(l.helo)}>` : '',
    l.user ? `sasl_username=${str(l.user)}` : '',
    `by=${str(l.plugin ?? l.rule)}`,
  ].filter(Boolean)
  return `NOQUEUE: reject: ${str(l.command) || COMMANDS[str(l.stage)] || str(l.stage).toUpperCase()} from ${clientOf(l)}: ${reply}; ${parts.join(' ')}`
}

function delivery(l: Line): string {
  const fields = [
    `to=<${str(l.recipient)}>`,
    `relay=${str(l.remoteHost) || 'none'}`,
    `delay=${seconds(l.queuedMs)}`,
    `dsn=${str(l.dsn) || '-'}`,
    `attempts=${str(l.attempts)}`,
  ]
  const next = l.nextAttemptAt ? `, next=${str(l.nextAttemptAt)}` : ''
  return `${str(l.queueId)}: ${fields.join(', ')}, status=${STATUS[str(l.event)]} (${str(l.response)})${next}`
}

function accepted(l: Line): string {
  const rcpts = Array.isArray(l.recipients) ? l.recipients : []
  const user = l.user ? `, sasl_username=${str(l.user)}` : ''
  return `${str(l.queueId)}: client=${clientOf(l)}${user}, from=<${str(l.sender)}>, to=<${rcpts.map(str).join(',')}>, size=${str(l.size)}, nrcpt=${rcpts.length}, status=queued`
}

function other(l: Line): string {
  const rest = Object.entries(l)
    .filter(([k, v]) => !SHOWN.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${k === 'err' && v && typeof v === 'object' ? str((v as { message?: unknown }).message) : str(v)}`)
  return `${LEVELS[l.level as number] ?? ''}${str(l.msg)}${rest.length ? ` (${rest.join(', ')})` : ''}`
}

/** What Postfix would call the daemon: smtpd for the receiving side, smtp (lmtp) for delivery. */
function body(l: Line): [daemon: string, text: string] {
  switch (l.event) {
    case 'rejected':
      return ['relay/smtpd', refused(l)]
    case 'accepted':
      return ['relay/smtpd', accepted(l)]
    case 'delivered':
    case 'deferred':
    case 'bounced':
      return [l.route === 'lmtp' ? 'relay/lmtp' : 'relay/smtp', delivery(l)]
    case 'suppressed':
      return ['relay/smtpd', `NOQUEUE: suppressed: to=<${str(l.recipient)}>, client=${clientOf(l)}, source=${str(l.source)} (${str(l.reason)})`]
    default:
      return ['relay', other(l)]
  }
}

/** One pino JSON line (with its newline) as a maillog line: `<ISO time> <host> relay/<daemon>[pid]: <text>`. */
export function toMaillogLine(json: string): string {
  let l: Line
  try {
    l = JSON.parse(json) as Line
  } catch {
    return json
  }
  const [daemon, text] = body(l)
  return `${str(l.time)} ${HOST} ${daemon}[${str(l.pid)}]: ${text}\n`
}
