// From a scan result to an outcome (reject, tempfail, mark, pass) and the X-Spam-* header values.
import type { ScanResult } from './scanner.js'
import type { SpamOptions } from './options.js'

export type Outcome = 'reject' | 'tempfail' | 'mark' | 'pass'
const RANK: Record<Outcome, number> = { pass: 0, mark: 1, tempfail: 2, reject: 3 }

/** rspamd actions, as outcomes. */
const RSPAMD: Record<string, Outcome> = {
  'no action': 'pass',
  greylist: 'tempfail',
  'add header': 'mark',
  'rewrite subject': 'mark',
  'soft reject': 'tempfail',
  reject: 'reject',
}

export function decide(result: ScanResult, actions: SpamOptions['actions']): { outcome: Outcome; why: string } {
  const candidates: { outcome: Outcome; why: string }[] = [{ outcome: 'pass', why: 'below every threshold' }]
  if (actions.scanner) {
    if (result.backend === 'rspamd') candidates.push({ outcome: RSPAMD[result.action ?? 'no action'] ?? 'pass', why: `rspamd action "${result.action}"` })
    else if (result.spam) candidates.push({ outcome: 'mark', why: `spamd: score ${result.score} >= required ${result.required}` })
  }
  const thresholds: [Outcome, number | undefined][] = [
    ['reject', actions.reject],
    ['tempfail', actions.tempfail],
    ['mark', actions.header],
  ]
  for (const [outcome, limit] of thresholds) {
    if (limit !== undefined && result.score >= limit) candidates.push({ outcome, why: `score ${result.score} >= ${outcome === 'mark' ? 'header' : outcome} threshold ${limit}` })
  }
  return candidates.reduce((best, c) => (RANK[c.outcome] > RANK[best.outcome] ? c : best))
}

/** The threshold shown as `required=`: the configured header score, else the scanner's own. */
export function requiredScore(result: ScanResult, actions: SpamOptions['actions']): number {
  return actions.header ?? result.required
}

export function formatScore(n: number): string {
  return (Math.round(n * 10) / 10).toFixed(1)
}

/**
 * `Yes, score=15.0 required=5.0 tests=GTUBE,MSGID_SHORT` as SpamAssassin writes it, the tests list
 * folded onto continuation lines so that no line grows past 78 characters.
 */
export function statusValue(spam: boolean, result: ScanResult, actions: SpamOptions['actions']): string {
  const head = `${spam ? 'Yes' : 'No'}, score=${formatScore(result.score)} required=${formatScore(requiredScore(result, actions))}`
  const tests = result.symbols.slice(0, 200)
  if (tests.length === 0) return `${head} tests=none`
  const lines: string[] = []
  let line = `${head} tests=`
  let width = 'X-Spam-Status: '.length + line.length
  for (const [i, t] of tests.entries()) {
    const piece = t + (i < tests.length - 1 ? ',' : '')
    if (width + piece.length > 78 && !line.endsWith('=')) {
      lines.push(line)
      line = ''
      width = 1 // the tab that starts a continuation line
    }
    line += piece
    width += piece.length
  }
  lines.push(line)
  return lines.join('\r\n\t')
}
