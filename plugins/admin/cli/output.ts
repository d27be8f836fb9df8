// What the plugin's CLI verbs print: lines, JSON, times, aligned tables; and how they fail.
import { AdminFailed } from './client.js'

export const out = (s: string): void => void process.stdout.write(s.endsWith('\n') ? s : `${s}\n`)
export const json = (v: unknown): void => out(JSON.stringify(v, null, 2))
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
  const e = err as { kind?: unknown; code?: unknown } | null
  const known = err instanceof AdminFailed || typeof e?.kind === 'string' || (typeof e?.code === 'string' && e.code.startsWith('SQLITE_'))
  process.stderr.write(`relay: ${known ? (err as Error).message : ((err as Error)?.stack ?? String(err))}\n`)
  process.exitCode = e?.kind === 'bad-input' ? 2 : 1
}
