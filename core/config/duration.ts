// Durations in config: '90s', '5m', '4h', '5d', '250ms' or a plain number of seconds.
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * The longest duration anything takes: 100 years. Longer ones are typos or "never", and past it a
 * date (now + a TTL) leaves JavaScript's range (8.64e15 ms), or the number becomes Infinity.
 */
export const MAX_DURATION_MS = 100 * 365.25 * UNITS.d!

/** Parses a duration to milliseconds; returns undefined when the text is not a duration (or is over 100 years). */
export function parseDuration(value: string | number): number | undefined {
  let ms: number
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return undefined
    ms = value * 1000
  } else {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value)
    if (!match) return undefined
    ms = Math.round(Number(match[1]) * UNITS[match[2] ?? 's']!)
  }
  return ms <= MAX_DURATION_MS ? ms : undefined
}

/**
 * Formats milliseconds the way config writes durations ('90s', '15m', '5d'): the largest unit that
 * divides the value exactly, else rounded to a unit that keeps two significant places ('2s', '95m').
 */
export function formatDuration(ms: number): string {
  const value = Math.max(0, Math.round(ms))
  for (const unit of ['d', 'h', 'm', 's'] as const) if (value >= UNITS[unit]! && value % UNITS[unit]! === 0) return `${value / UNITS[unit]!}${unit}`
  if (value < 1000) return `${value}ms`
  const unit = value < 120_000 ? 's' : value < 120 * 60_000 ? 'm' : value < 48 * 3_600_000 ? 'h' : 'd'
  return `${Math.round(value / UNITS[unit]!)}${unit}`
}

const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }

/** The largest size: 1 TB (anything larger is a typo, and SIZE in EHLO must stay a plain integer). */
export const MAX_SIZE_BYTES = 1024 ** 4

/** Parses a size ('50MB', '512kb', or a number of bytes) to bytes: from 1 byte to 1 TB, else undefined. */
export function parseSize(value: string | number): number | undefined {
  let bytes: number
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) return undefined
    bytes = value
  } else {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(value)
    if (!match) return undefined
    bytes = Math.round(Number(match[1]) * SIZE_UNITS[(match[2] ?? 'b').toLowerCase()]!)
  }
  return bytes >= 1 && bytes <= MAX_SIZE_BYTES ? bytes : undefined
}
