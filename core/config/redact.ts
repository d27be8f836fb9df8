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

/** A redacted deep copy: plain data only (functions and class instances become a short description). */
export function redactConfig(value: unknown, name = '', underSecret = false): unknown {
  // Everything under a secret's name is secret (tokens: { full: '…', readOnly: '…' }); flags are not.
  if (typeof value === 'string') return underSecret ? REDACTED : redactString(name, value)
  if (typeof value === 'number' || typeof value === 'bigint') return underSecret || secretName(name) ? REDACTED : value
  if (typeof value === 'function') return '<function>'
  if (Array.isArray(value)) return value.map((v) => redactConfig(v, name, underSecret))
  if (value && typeof value === 'object') {
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null) return `<${(value as object).constructor?.name ?? 'object'}>`
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k, underSecret || secretName(k))]))
  }
  return value
}

/**
 * A config file's line as an error excerpt shows it (check-config, and `relay start`, whose stderr
 * is the journal under systemd): the value of a secret-named key (`token: "…"`, `"password": "…"`)
 * and the password in a URL (`postgres://relay:…@db`) starred out, the same length, so the caret
 * under the error still points at its column.
 */
export function maskSecretsInLine(line: string): string {
  const star = (s: string) => '*'.repeat(s.length)
  return line
    .replace(/([A-Za-z_$][\w$-]*)(["']?\s*[:=]\s*)(["'`])((?:(?!\3)[^\\\n]|\\.)*)/g, (all, key: string, sep: string, q: string, value: string) =>
      secretName(key) || (KEY_NAME.test(key) && !looksLikePath(value)) ? `${key}${sep}${q}${star(value)}` : all,
    )
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s"'`]*:)([^@\s"'`]+)(@)/gi, (_all, before: string, pass: string, at: string) => `${before}${star(pass)}${at}`)
}
