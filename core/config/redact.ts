// Secrets out of a config before it is shown (`relay config show`): by the key's name (tokens,
// passwords, secrets, keys given inline) and in URLs and connection strings (redact-url.ts).
import { REDACTED, redactUrl } from './redact-url.js'

export { REDACTED, redactUrl }

/** Names whose value is a secret whatever it looks like. */
const SECRET_NAME = /(token|passw(or)?d|^pass$|secret|credential|authorization|cookie|apikey|api_key)/i
/** Names of keys: secret when given inline, not when they name a file (tls.key: '/etc/ssl/relay.key'). */
const KEY_NAME = /key$/i

function looksLikePath(value: string): boolean {
  return /^(\/|\.{1,2}\/|~\/|[A-Za-z]:\\)/.test(value) || /\.(pem|key|crt|der|txt)$/i.test(value)
}

/** `tokenFile`, `passwordPath`: where a secret is, not the secret. */
const NAMES_A_PATH = /(file|path|dir)$/i

function secretName(name: string): boolean {
  return SECRET_NAME.test(name) && !NAMES_A_PATH.test(name)
}

function redactString(name: string, value: string): string {
  if (secretName(name)) return REDACTED
  if (KEY_NAME.test(name) && !looksLikePath(value)) return REDACTED
  if (value.startsWith('-----BEGIN')) return REDACTED
  return redactUrl(value)
}

/**
 * A redacted deep copy: plain data only, as JSON can show it (functions and class instances become a
 * short description, a BigInt its digits, an object met again on its own path `<circular>`).
 */
export function redactConfig(value: unknown, name = '', underSecret = false, path: object[] = []): unknown {
  // Everything under a secret's name is secret (tokens: { full: '…', readOnly: '…' }); flags are not.
  if (typeof value === 'string') return underSecret ? REDACTED : redactString(name, value)
  if (typeof value === 'number') return underSecret || secretName(name) ? REDACTED : value
  // A plugin's option may be a BigInt (z.bigint()): JSON has none, so its digits.
  if (typeof value === 'bigint') return underSecret || secretName(name) ? REDACTED : `${value}n`
  if (typeof value === 'function') return '<function>'
  if (value && typeof value === 'object') {
    if (path.includes(value)) return '<circular>'
    const inner = [...path, value]
    if (Array.isArray(value)) return value.map((v) => redactConfig(v, name, underSecret, inner))
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null) return `<${(value as object).constructor?.name ?? 'object'}>`
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k, underSecret || secretName(k), inner)]))
  }
  return value
}

/**
 * A config file's line as an error excerpt shows it (check-config, and `relay start`, whose stderr
 * is the journal under systemd): the value of a secret-named key (`token: "…"`, `"password": "…"`)
 * and the password in a URL (`postgres://relay:…@db`) starred out, the same length, so the caret
 * under the error still points at its column. A line that does not parse may not quote the value
 * cleanly (`password: hunter2: x`, `token: "abc"def"`): then the rest of the line is starred.
 */
export function maskSecretsInLine(line: string): string {
  const star = (s: string) => '*'.repeat(s.length)
  const KEY = /([A-Za-z_$][\w$-]*)["']?\s*[:=]\s*/g
  let out = ''
  let done = 0
  for (let m: RegExpExecArray | null; (m = KEY.exec(line)); ) {
    const start = m.index + m[0].length
    const rest = line.slice(start)
    const quoted = /^(["'`])((?:(?!\1)[^\\]|\\.)*)\1/.exec(rest)
    const clean = quoted !== null && /^\s*(?:[,}\]);]|\/\/|#|$)/.test(rest.slice(quoted[0].length))
    const value = clean ? quoted[2]! : rest.trimEnd()
    if (!value || !(secretName(m[1]!) || (KEY_NAME.test(m[1]!) && !looksLikePath(value.replace(/^["'`]/, ''))))) continue
    const from = clean ? start + 1 : start
    out += line.slice(done, from) + star(value)
    done = from + value.length
    KEY.lastIndex = done
  }
  return (out + line.slice(done)).replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s"'`]*:)([^@\s"'`]+)(@)/gi, (_all, before: string, pass: string, at: string) => `${before}${star(pass)}${at}`)
}

/**
 * A parser's reason for a line it could not read quotes the text it stopped at (esbuild's `found
 * "abc"`, V8's `Unexpected identifier 'abc'`): any word of it that is part of a secret in `lines`
 * (what maskSecretsInLine stars out) is starred too.
 */
export function maskSecretsInReason(reason: string, lines: string[]): string {
  const secrets: string[] = []
  for (const line of lines) {
    const masked = maskSecretsInLine(line)
    for (const m of masked.matchAll(/\*+/g)) secrets.push(line.slice(m.index, m.index + m[0].length))
  }
  const secret = (word: string) => word.length >= 3 && secrets.some((s) => s !== '*'.repeat(s.length) && s.includes(word))
  return reason.replace(/[^\s"'`]+/g, (word) => (secret(word) ? '*'.repeat(word.length) : word))
}
