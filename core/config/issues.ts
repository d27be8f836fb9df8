// zod's issues as lines an operator can act on: the key's path and what it takes. zod's own words
// are "Invalid input" for a union (a duration, a size, `workers`) and "expected number, received
// undefined" for a key left out; these say "expected "auto" or a number, got a string" and
// "required: expected a number". The value given is never repeated (it may be a secret): only its
// type, unless a schema's own message already quotes it (a duration's `got "5 minutes"`).
import type { z } from 'zod'

type Issue = z.core.$ZodIssue

/** Formats a zod error path as `delivery.retry.base` or `plugins[0]`. */
export function formatPath(segments: readonly PropertyKey[]): string {
  return segments
    .map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? String(s) : `.${String(s)}`))
    .join('')
}

const ZOD_DEFAULT = /^Invalid (input|option)\b/

/** 'a string', 'a number', 'a list', 'true or false', ... */
function typeName(t: string): string {
  if (t === 'array') return 'a list'
  if (t === 'boolean') return 'true or false'
  if (t === 'object') return 'an object'
  if (t === 'undefined' || t === 'null') return t
  return `a ${t}`
}

function typeOf(v: unknown): string {
  if (Array.isArray(v)) return 'a list'
  if (v === null) return 'null'
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`
}

/** `"a" or "b"`, `one of "a", "b", "c"`. */
function oneOf(values: string[]): string {
  return values.length > 2 ? `one of ${values.join(', ')}` : values.join(' or ')
}

/** What one issue (at its own level) asks for, without "expected" and without what it got. */
function expectation(issue: Issue): string {
  if (issue.code === 'invalid_type') return typeName(issue.expected)
  if (issue.code === 'invalid_value') return oneOf(issue.values.map((v) => JSON.stringify(v)))
  // A discriminated union (queue.driver): zod names the values in its message.
  const discriminator = /^Invalid discriminator value\. Expected (.*)$/.exec(issue.message)?.[1]
  if (issue.code === 'invalid_union' && discriminator) return oneOf(discriminator.split(' | '))
  if (issue.code === 'invalid_union' && ZOD_DEFAULT.test(issue.message)) {
    const each = issue.errors.map((branch) => branch.filter((i) => i.path.length === 0).map(expectation).join(', '))
    return [...new Set(each.filter(Boolean))].join(' or ')
  }
  return issue.message.replace(/^expected /, '').replace(/, got .*$/s, '')
}

/** A schema's own `got …` (a duration's `got "5 minutes"`) anywhere in a union's branches. */
function quotedGot(issue: Issue): string | undefined {
  if (issue.code === 'invalid_union') {
    for (const branch of issue.errors) for (const i of branch) if (i.path.length === 0) {
      const got = quotedGot(i)
      if (got) return got
    }
    return undefined
  }
  return /, got (.*)$/s.exec(issue.message)?.[1]
}

/** The value at `path` in the raw input: 'missing' when its parent is an object without the key. */
function lookup(raw: unknown, path: readonly PropertyKey[]): { value: unknown } | 'missing' | 'unknown' {
  let v: unknown = raw
  for (const key of path) {
    if (v === null || typeof v !== 'object') return 'unknown'
    if (!Object.prototype.hasOwnProperty.call(v, key) || (v as Record<PropertyKey, unknown>)[key] === undefined) return 'missing'
    v = (v as Record<PropertyKey, unknown>)[key]
  }
  return { value: v }
}

/** What was given: its type; an enum's short string as written (`got "implicitt"`). */
function given(issue: Issue, value: unknown): string {
  const enumLike = issue.code === 'invalid_value' || issue.message.startsWith('Invalid discriminator value')
  if (enumLike && typeof value === 'string' && value.length <= 40) return JSON.stringify(value)
  return typeOf(value)
}

function describe(issue: Issue, raw: unknown): string {
  // A union (a duration: a string or a number) with its own message still gets what was given.
  const zodsOwn = issue.code === 'invalid_union' || (ZOD_DEFAULT.test(issue.message) && (issue.code === 'invalid_type' || issue.code === 'invalid_value'))
  if (!zodsOwn) return issue.message
  const expected = expectation(issue)
  if (!expected) return issue.message // a union of objects, each wrong deeper down: zod's words
  const at = lookup(raw, issue.path)
  const missing = at === 'missing' || (at === 'unknown' && / received undefined$/.test(issue.message))
  if (missing) return `required: expected ${expected}`
  const got = quotedGot(issue) ?? (at === 'unknown' ? undefined : given(issue, at.value))
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
