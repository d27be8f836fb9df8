// What the plugin's CLI verbs print: lines, JSON, times, aligned tables; and how they fail.
import { AdminFailed } from './client.js'

/**
 * Text from outside (a client's Message-ID and addresses, a remote server's reply, kept in the queue)
 * printed as is could drive the operator's terminal: ESC sequences clear the screen, retitle the
 * window, rewrite earlier lines. Control characters other than newline and tab print as `?`, as
 * Postfix's printable() does; JSON keeps every character, escaped (DEL and C1 too, which
 * JSON.stringify leaves raw).
 */
export const printable = (s: string): string => s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?')
export const out = (s: string): void => void process.stdout.write(printable(s.endsWith('\n') ? s : `${s}\n`))
export const json = (v: unknown): void =>
  void process.stdout.write(JSON.stringify(v, null, 2).replace(/[\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n')
export const time = (ms?: number) => (ms === undefined ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'))

/** Columns padded to their widest cell; the last column is not padded. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n'
}

/** A verb that cannot be done, as the queue verbs say it (their `kind`: the admin API's 404/409/400). */
export class VerbError extends Error {
  constructor(
    readonly kind: 'not-found' | 'conflict' | 'bad-input',
    message: string,
  ) {
    super(message)
  }
}

/**
 * Known failures (a queue verb's `kind`, an admin API answer, the queue database's own state such
 * as a corrupt file: an SQLITE_ code) print their message; others their stack. Exit code 1, or 2
 * for `bad-input` (a usage error: an option's value, no id or filter), as commander's own errors.
 */
export function fail(err: unknown): void {
  const e = err as { kind?: unknown; code?: unknown; syscall?: unknown } | null
  // A failed system call (EACCES: permission denied, open '…') says it all too.
  const known = err instanceof AdminFailed || typeof e?.kind === 'string' || (typeof e?.code === 'string' && (e.code.startsWith('SQLITE_') || typeof e.syscall === 'string'))
  process.stderr.write(printable(`relay: ${known ? (err as Error).message : ((err as Error)?.stack ?? String(err))}\n`))
  process.exitCode = e?.kind === 'bad-input' ? 2 : 1
}
