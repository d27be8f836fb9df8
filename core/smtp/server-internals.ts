// What the relay reads of smtp-server beyond its public API: the open connections of a server
// (pinned at 3.21.x with core/smtp/patches.ts; see STACK.md).
import type { SMTPServer, SMTPServerSession } from 'smtp-server'
import { OWN_LINE } from './session.js'

interface OpenConnection {
  session?: SMTPServerSession
  send(code: number, message: string, context?: string): void
}

const connections = (server: SMTPServer) => (server as unknown as { connections: Set<OpenConnection> }).connections

/** How many connections the server has open now. */
export const openConnections = (server: SMTPServer): number => connections(server).size

/** Sends a reply to the connection of `session` (a 421 closes it); false when it is not open here. */
export function sendToSession(server: SMTPServer, session: SMTPServerSession, code: number, message: string): boolean {
  for (const conn of connections(server)) {
    if (conn.session !== session) continue
    conn.send(code, message)
    return true
  }
  return false
}

/** Sends a reply to the connections of all `sessions` in one pass (a 421 closes them); those reached. */
export function sendToSessions(server: SMTPServer, sessions: Set<SMTPServerSession>, code: number, message: string): SMTPServerSession[] {
  const reached: SMTPServerSession[] = []
  for (const conn of connections(server)) {
    if (!conn.session || !sessions.has(conn.session)) continue
    conn.send(code, message, OWN_LINE)
    reached.push(conn.session)
  }
  return reached
}
