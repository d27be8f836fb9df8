// zod's issues as lines an operator can act on: the key's path and what it takes. zod says "Invalid
// input" for a union (a duration, a size, `workers`) and "expected number, received undefined" for a
// key left out; these say `expected "auto" or a number, got a string` and `required: expected a
// number`. The value is never repeated (it may be a secret), only its type; an enum's short string
// and a schema's own `got …` (a duration's `got "5 minutes"`) are the exceptions.
import type { z } from 'zod'

type Issue = z.core.$ZodIssue
const ZOD_DEFAULT = /^Invalid (input|option)\b/
const DISCRIMINATOR = /^Invalid discriminator value\. Expected (.*)$/

/** Formats a zod error path as `delivery.retry.base` or `plugins[0]`. */
export function formatPath(segments: readonly PropertyKey[]): string {
  return segments.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? String(s) : `.${String(s)}`)).join('')
}

const TYPES: Record<string, string> = { array: 'a list', boolean: 'true or false', object: 'an object', undefined: 'undefined', null: 'null', int: 'a whole number', bigint: 'a whole number (BigInt)', record: 'an object (names as keys)' }
const typeOf = (v: unknown) => (Array.isArray(v) ? 'a list' : v === null ? 'null' : typeof v === 'object' ? 'an object' : Number.isNaN(v) ? 'NaN (not a number)' : `a ${typeof v}`)
const oneOf = (values: string[]) => (values.length > 2 ? `one of ${values.join(', ')}` : values.join(' or '))

/** What one issue asks for, without "expected" and without what it got. */
function expectation(issue: Issue): string {
  if (issue.code === 'invalid_type') return TYPES[issue.expected] ?? `a ${issue.expected}`
  if (issue.code === 'invalid_value') return oneOf(issue.values.map((v) => JSON.stringify(v)))
  const discriminator = DISCRIMINATOR.exec(issue.message)?.[1]
  if (discriminator) return oneOf(discriminator.split(' | '))
  if (issue.code === 'invalid_union' && ZOD_DEFAULT.test(issue.message)) {
    const each = issue.errors.map((branch) => branch.filter((i) => i.path.length === 0).map(expectation).join(', '))
    return [...new Set(each.filter(Boolean))].join(' or ')
  }
  return issue.message.replace(/^expected /, '').replace(/, got .*$/s, '')
}

/** A schema's own `got …` in the issue or a union's branches. */
function quotedGot(issue: Issue): string | undefined {
  if (issue.code !== 'invalid_union') return /, got (.*)$/s.exec(issue.message)?.[1]
  return issue.errors.flat().filter((i) => i.path.length === 0).map(quotedGot).find(Boolean)
}

/** The value at `path` in the raw input: 'missing' when its parent is an object without the key. */
function lookup(raw: unknown, path: readonly PropertyKey[]): { value: unknown } | 'missing' | 'unknown' {
  let v: unknown = raw
  for (const key of path) {
    if (v === null || typeof v !== 'object') return 'unknown'
    v = (v as Record<PropertyKey, unknown>)[key]
    if (v === undefined) return 'missing'
  }
  return { value: v }
}

function describe(issue: Issue, raw: unknown): string {
  // A union (a duration: a string or a number) with its own message still gets what was given.
  const zodsOwn = issue.code === 'invalid_union' || (ZOD_DEFAULT.test(issue.message) && (issue.code === 'invalid_type' || issue.code === 'invalid_value'))
  if (!zodsOwn) return issue.message
  const expected = expectation(issue)
  if (!expected) return issue.message // a union of objects, each wrong deeper down: zod's words
  const at = lookup(raw, issue.path)
  if (at === 'missing' || (at === 'unknown' && / received undefined$/.test(issue.message))) return `required: expected ${expected}`
  const enumLike = issue.code === 'invalid_value' || DISCRIMINATOR.test(issue.message)
  const value = at === 'unknown' ? undefined : at.value
  const got = quotedGot(issue) ?? (at === 'unknown' ? undefined : enumLike && typeof value === 'string' && value.length <= 40 ? JSON.stringify(value) : typeOf(value))
  return `expected ${expected}${got ? `, got ${got}` : ''}`
}

/**
 * One line per problem, `{ path, message }`; `raw` is what was validated (the config, or a
 * plugin's options), to tell a key left out from one of the wrong type.
 */
export function zodIssues(error: z.ZodError, prefix = '', raw?: unknown): { path: string; message: string }[] {
  const join = (p: string) => prefix + (prefix && p && !p.startsWith('[') ? '.' : '') + p
  return error.issues.flatMap((issue) =>
    // An unknown key is named by its own path (`delivery.retyr`), so a typo is easy to spot.
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((k) => ({ path: join(formatPath([...issue.path, k])), message: 'unknown key (misspelt, or not a setting of this section)' }))
      : [{ path: join(formatPath(issue.path)), message: describe(issue as Issue, raw) }],
  )
}
