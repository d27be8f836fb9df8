// The names refusals by the core's own checks carry in the audit log (`rule`), for SMTP and injection alike.
import { CORE_REPLIES, type Reply } from '../hooks/verdict.js'

/** The core check a constant reply belongs to, as `core:<kebab-case name>` (for the audit log). */
const CORE_RULES = new Map<Reply, string>(
  Object.entries(CORE_REPLIES)
    .filter((e): e is [string, Reply] => typeof e[1] === 'object')
    .map(([name, reply]) => [reply, `core:${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`]),
)

export const coreRule = (reply: Reply): string => CORE_RULES.get(reply) ?? 'core:protocol'
