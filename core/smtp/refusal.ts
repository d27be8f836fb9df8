// One refused SMTP command: the audit log line, the `rejected` event, and the error smtp-server
// turns into the reply.
import type { SMTPServerSession } from 'smtp-server'
import type { Logger } from 'pino'
import type { HookBus } from '../hooks/bus.js'
import type { HookName, SessionInfo } from '../hooks/types.js'
import { replyError, type Reply } from '../hooks/verdict.js'
import { logRefusal, type Refusal } from '../events/log.js'
import { isCorePolicy } from '../policies/index.js'
import { coreRule } from './core-rules.js'
import { REFUSAL_LOGGED } from './session.js'

export interface RefusedCommand {
  /** The SMTP command refused. */
  command: Refusal['stage']
  /** The hook stage, or 'protocol' for the core's own checks. */
  stage: HookName | 'protocol'
  reply: Reply
  /** Whose verdict it was: a `core:` name for the core's policies and checks, which the event leaves out. */
  plugin?: string
  address?: string
  /** For the log line only. */
  detail?: Record<string, unknown>
}

/** Logs the refusal, tells observers and plugins (`rejected`), and returns the error that refuses the command. */
export function refusal(log: Logger, hooks: HookBus, session: SMTPServerSession, info: SessionInfo, r: RefusedCommand): Error {
  const { command, stage, reply, address } = r
  const core = isCorePolicy(r.plugin)
  const plugin = core ? undefined : r.plugin
  const rule = core ? r.plugin : r.plugin ? undefined : coreRule(reply)
  const sender = command === 'mail' || command === 'helo' ? address : session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined
  const recipients = command === 'data' ? session.envelope.rcptTo.map((a) => a.address) : undefined
  logRefusal(log, {
    session: info, stage: command, hook: stage, code: reply.code, status: reply.status, text: reply.message, plugin, rule,
    sender, recipient: command === 'rcpt' ? address : undefined, recipients, proto: session.transmissionType || undefined, detail: r.detail,
  })
  if (hooks.has('rejected')) void hooks.emit('rejected', { session: info, stage, code: reply.code, status: reply.status || undefined, message: reply.message, plugin, address, command })
  const err = replyError(reply)
  // Its reply is logged now: not again when smtp-server sends it (core/smtp/patches.ts 15).
  ;(session as { [REFUSAL_LOGGED]?: string })[REFUSAL_LOGGED] = err.message
  return err
}

/** The refusal stage of an SMTP command's name. */
const STAGES: Record<string, Refusal['stage']> = { HELO: 'helo', EHLO: 'helo', LHLO: 'helo', MAIL: 'mail', RCPT: 'rcpt', DATA: 'data', BDAT: 'data', AUTH: 'auth' }

/** A command smtp-server refused itself (bad HELO syntax, bad sequence, unknown command, ...): its `refused` line and `rejected` event. */
export function refusedCommand(log: Logger, hooks: HookBus, session: SMTPServerSession, info: SessionInfo, command: string, reply: Reply): void {
  refusal(log, hooks, session, info, { command: STAGES[command] ?? 'command', stage: 'protocol', reply, detail: { command } })
  ;(session as { [REFUSAL_LOGGED]?: string })[REFUSAL_LOGGED] = undefined
}
