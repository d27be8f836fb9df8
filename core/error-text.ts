// What a thrown value says, whatever was thrown. Config files and plugins are user code: they may
// throw a string, null, or an object with no toString (Object.create(null)), and the relay's own
// reporting of that failure (an exit 2 naming the plugin, a worker's reply, a doctor line) must not
// fail on it with a TypeError of its own.

/** Longest text kept: a thrown value may be a whole file. */
const MAX = 500

/** The first line of a thrown value's message (an Error's, or the value itself), at most 500 characters. */
export function errorText(err: unknown): string {
  try {
    return textOf(err)
  } catch {
    // A `message` getter or a toString that throws.
    return 'a thrown value that cannot be read'
  }
}

function textOf(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message
  let text: string
  if (typeof message === 'string' && message) text = message
  else if (err instanceof Error) text = err.name || 'Error'
  else if (typeof err === 'string') text = err || "'' (an empty string, not an Error)"
  else if (err === null || (typeof err !== 'object' && typeof err !== 'function')) text = `${String(err)} (not an Error)`
  else text = printable(err)
  const line = text.split('\n')[0]!.trimEnd() || 'an Error without a message'
  return line.length > MAX ? `${line.slice(0, MAX)}…` : line
}

/** A thrown value as an Error: the value itself when it is one, otherwise one that says it (the value as its cause). */
export function asError(err: unknown): Error {
  if (err instanceof Error) return err
  return Object.assign(new Error(errorText(err)), { cause: err })
}

function printable(value: unknown): string {
  try {
    const s = String(value)
    if (s !== '[object Object]') return s
  } catch {
    // No toString (Object.create(null)), or one that throws.
  }
  return `${json(value)} (not an Error)`
}

function json(value: unknown): string {
  try {
    return JSON.stringify(value)?.slice(0, MAX) ?? typeof value
  } catch {
    return typeof value
  }
}
