// The parts of smtp-server's connection and command parser that core/smtp/patches.ts touches:
// private, so typed here; patches.ts checks at load that they are still there.
import type { Socket } from 'node:net'
import type { Writable } from 'node:stream'
import type { REFUSAL_LOGGED } from './session.js'
import type { REPLIES_TO } from './reply-groups.js'

/** The parser's last command-mode read, and how far its lines have reached the connection (patch 11). */
export const READ = Symbol('relay.parserRead')
export const AT = Symbol('relay.parserAt')

export interface ParserInternals extends Writable {
  _dataMode: boolean
  _remainder: string
  isClosed?: boolean
  _write(chunk: Buffer, encoding: BufferEncoding, next: (err?: Error | null) => void): void
  [READ]?: string
  [AT]?: number
  [REPLIES_TO]?: ConnectionInternals
}

export interface ConnectionInternals {
  _parser: Writable | false
  needsUpgrade?: boolean
  upgrade(callback: () => unknown, secureCallback: () => void): void
  _onCloseEvent(hadError: boolean): void
  _onError(err: Error): void
  send(code: number, data: unknown, context?: unknown): void
  init(): void
  _setListeners(cb: () => void): void
  connectionReady(): void
  _onCommand(command: Buffer, callback: () => void): void
  _isDisabled(command: string): boolean
  _isSupported(command: string): boolean
  _getEnhancedStatusCode(code: number, context: unknown): string
  secure: boolean
  _onClose(): void
  close(): void
  _resetSession(): void
  handler_RCPT(command: Buffer, callback: () => void): void
  handler_AUTH(command: Buffer, callback: () => void): void
  handler_DATA(command: Buffer, callback: () => void): void
  handler_RSET(command: Buffer, callback: () => void): void
  _parseAddressCommand(name: string, command: Buffer | string): false | { address: string; args: Record<string, unknown> | false }
  _armTimeout(socket?: Socket): void
  _onTimeout(): void
  _createParser(): Writable
  _whenWritable(next: () => void): void
  _validateMailParams(parsed: { args?: Record<string, unknown> | false }): { code: number; message: string } | null
  _socket: Socket
  _xClient: Map<string, unknown>
  _xForward: Map<string, unknown>
  _rcptIndex: Map<string, number>
  _server: {
    options: {
      maxClients?: number
      hideREQUIRETLS?: boolean
      greetingDelay?: number
      maxErrors?: number
      trustedClient?: (ip: string) => boolean
      onTooManyErrors?: (session: unknown) => void
      authOptional?: boolean
      authAfterStartTls?: boolean
      firstCommandTimeout?: number
      onFirstCommandTimeout?: (session: unknown) => void
      onIdleTimeout?: (session: unknown, after: string | undefined) => void
      onImproperPipelining?: (session: unknown) => void
      onRefused?: (session: unknown, command: string, reply: { code: number; status: string; message: string }) => void
      useXClient?: unknown
      useXForward?: unknown
      socketTimeout?: number
      stressTimeout?: number
      minDataRate?: number
      /** Sessions on the listener (in this process) from which it is under stress (core/smtp/deadlines.ts). */
      stressAt?: number
      onStress?: (stressed: boolean, sessions: number) => void
      onInputTooSlow?: (session: unknown, after: string | undefined, inData: boolean) => void
    }
    connections: Set<unknown>
  }
  name: string
  session: { user?: unknown; envelope: { mailFrom?: unknown; rcptTo: unknown[] }; [REFUSAL_LOGGED]?: string }
  /** The command being answered (patch 15). */
  _relayVerb?: string
  /** The session's last command, answered or not (patch 5: "timeout after EHLO"). */
  _relayLastVerb?: string
  _ready?: boolean
  _upgrading?: boolean
  _nextHandler?: unknown
  _maxAllowedUnauthenticatedCommands: number | false
  _unauthenticatedCommands: number
  _relayErrors?: number
  _relayOvershoot?: number
  _relayJunk?: number
  _relayTrusted?: boolean
  remoteAddress: string
  _closing?: boolean
  _closed?: boolean
  _firstCommandTimer?: NodeJS.Timeout
  /** When the relay's last reply went out (undefined while it works on a command): core/smtp/deadlines.ts. */
  _relayWaitFrom?: number
  /** Time (ms) earned by message data received since then. */
  _relayCredit?: number
  /** The idle limit the socket's timer runs with. */
  _relayIdle?: number
}
