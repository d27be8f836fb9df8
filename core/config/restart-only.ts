// Settings read once at start (sockets, the queue, the resolver, server options, pools) are marked
// where they are declared, in the schema, so the list hot reload keeps cannot drift from it.
import { z } from 'zod'

/**
 * The config fields read once at start: a hot reload keeps their running value and names them as
 * needing a restart. Mark a field with `.register(restartOnly)` last in its chain (after
 * `.default()`, `.optional()`, `.prefault()`: each of those makes a new schema).
 */
export const restartOnly = z.registry<undefined>()

type Def = { type: string; shape?: Record<string, z.core.$ZodType>; innerType?: z.core.$ZodType; in?: z.core.$ZodType }
const defOf = (schema: z.core.$ZodType): Def => schema._zod.def as unknown as Def

/** The schema a wrapper (optional, default, prefault, nullable, readonly, catch, pipe) wraps. */
function unwrap(schema: z.core.$ZodType): z.core.$ZodType | undefined {
  const def = defOf(schema)
  return def.innerType ?? (def.type === 'pipe' ? def.in : undefined)
}

function isMarked(schema: z.core.$ZodType): boolean {
  for (let s: z.core.$ZodType | undefined = schema; s; s = unwrap(s)) if (restartOnly.has(s)) return true
  return false
}

function shapeOf(schema: z.core.$ZodType): Record<string, z.core.$ZodType> | undefined {
  for (let s: z.core.$ZodType | undefined = schema; s; s = unwrap(s)) if (defOf(s).type === 'object') return defOf(s).shape
  return undefined
}

/** Paths of the restart-only fields under an object schema ('listen', 'smtp.maxClients'), in schema order. */
export function restartOnlyPaths(schema: z.core.$ZodType, prefix = ''): string[] {
  const shape = shapeOf(schema)
  if (!shape) return []
  return Object.entries(shape).flatMap(([key, field]) => (isMarked(field) ? [`${prefix}${key}`] : restartOnlyPaths(field, `${prefix}${key}.`)))
}
