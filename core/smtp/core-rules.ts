// The names refusals by the core's own checks carry in the audit log (`rule`), for SMTP and injection alike.
import { CORE_REPLIES, MADE_BY, type Reply } from '../hooks/verdict.js'

/** The core check a constant reply belongs to, as `core:<kebab-case name>` (for the audit log). */
const ruleName = (name: string) => `core:${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`
const CORE_RULES = new Map<Reply, string>(
  Object.entries(CORE_REPLIES)
    .filter((e): e is [string, Reply] => typeof e[1] === 'object')
    .map(([name, reply]) => [reply, ruleName(name)]),
)

/** A constant reply's row, or the row whose function made it (`core:unsupported-parameter`); else smtp-server's own refusal. */
export const coreRule = (reply: Reply): string => {
  const made = MADE_BY.get(reply)
  return CORE_RULES.get(reply) ?? (made ? ruleName(made) : 'core:protocol')
}
