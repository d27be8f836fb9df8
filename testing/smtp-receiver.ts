/**
 * A programmable receiving SMTP server for tests (smtp-server underneath).
 *
 * Records every accepted message byte-for-byte (after dot-unstuffing, without
 * the terminating '.\r\n') and can misbehave per stage: custom replies (which
 * may depend on the recipient and on how many times the stage has been reached
 * over the receiver's life), dropping the connection, or stalling forever.
 *
 * Listens on any 127/8 address; several receivers on different loopback
 * addresses can share one explicit port.
 */
import type * as net from 'node:net';
import type { Readable } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerSession } from 'smtp-server';

export interface ReceivedMessage {
  from: string;
  to: string[];
  /** the message exactly as received: dot-unstuffed, without the final '.\r\n' */
  raw: Buffer;
  remoteAddress: string;
  secure: boolean;
  heloName: string;
  /** MAIL FROM parameters, upper-case keys; a keyword without value maps to '' */
  mailParams: Record<string, string>;
  /** RCPT TO parameters of each recipient, in the order of `to` (same form as mailParams) */
  rcptParams: Record<string, string>[];
  /** the user name the client authenticated as (AUTH) in this session; undefined without AUTH */
  authUser?: string;
}

export type Stage = 'connect' | 'mail' | 'rcpt' | 'data';

export interface Behaviour {
  /**
   * Reply for a stage; for rcpt it may depend on the address. Returning
   * undefined (or a code < 400) accepts. `attempt` is 1-based and counts how
   * many times the stage was reached over the receiver's life.
   * For 'data' the function is called after the whole message was received.
   */
  reply?: Partial<Record<Stage, (arg: { address?: string; attempt: number }) => { code: number; message: string } | undefined>>;
  /** destroy the socket when this stage is reached (data: after receiving the whole message, before replying) */
  drop?: Stage;
  /** never answer at this stage (the socket stays open; data: after receiving the whole message) */
  stall?: Stage;
  /** do not advertise STARTTLS (and refuse the command) */
  noStartTls?: boolean;
}

/** A message whose DATA was received completely but not accepted. */
export interface RefusedMessage extends ReceivedMessage {
  outcome: 'reply' | 'drop' | 'stall';
  reply?: { code: number; message: string };
}

export interface TestReceiver {
  port: number;
  host: string;
  /** messages accepted with a 2xx reply to the final dot */
  messages: ReceivedMessage[];
  /** extra: messages fully received but then rejected, dropped or stalled */
  refused: RefusedMessage[];
  /** number of TCP connections accepted so far */
  connections: number;
  /** how many times each stage has been reached (the `attempt` counter) */
  attempts: Record<Stage, number>;
  behaviour: Behaviour;
  setBehaviour(b: Behaviour): void;
  /** resolves once messages.length >= n (with the messages), rejects after timeoutMs (default 5000) */
  waitForMessages(n: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  /**
   * More text for waitForMessages' timeout error: why nothing came. startTestRelay sets it to the
   * relay's recent delivery events and errors (a deferral with its response, a bounce, ...).
   */
  explainTimeout?: () => string;
  close(): Promise<void>;
}

interface SmtpError extends Error {
  responseCode?: number;
}

function smtpError(code: number, message: string): SmtpError {
  const err: SmtpError = new Error(message);
  err.responseCode = code;
  return err;
}

function paramsOf(addr: SMTPServerAddress | false | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!addr || !addr.args) return out;
  for (const [k, v] of Object.entries(addr.args)) out[k.toUpperCase()] = v === true ? '' : String(v);
  return out;
}

function collect(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.once('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** AUTH on a test receiver: user name → password. AUTH is offered without TLS too (loopback tests). */
export type ReceiverUsers = Record<string, string>;

type AuthCallback = (err: Error | null | undefined, response?: { user?: unknown }) => void;
type OnAuth = (auth: SMTPServerAuthentication, session: SMTPServerSession, callback: AuthCallback) => void;

/** An onAuth that accepts the listed users with their passwords and answers 535 otherwise. */
function checkUsers(users: ReceiverUsers): OnAuth {
  return (auth, _session, callback) => {
    const user = auth.username ?? '';
    if (Object.hasOwn(users, user) && users[user] === auth.password) return callback(null, { user });
    callback(smtpError(535, '5.7.8 Authentication credentials invalid'));
  };
}

export async function startReceiver(
  opts: {
    host?: string;
    port?: number;
    behaviour?: Behaviour;
    /** offer AUTH (PLAIN, LOGIN) and accept these users; each message records its `authUser` */
    users?: ReceiverUsers;
    /** extra smtp-server options (TLS versions, certs, an own onAuth: its accepted user is recorded too) */
    serverOptions?: Record<string, unknown>;
  } = {},
): Promise<TestReceiver> {
  const host = opts.host ?? '127.0.0.1';
  const attempts: Record<Stage, number> = { connect: 0, mail: 0, rcpt: 0, data: 0 };
  const messages: ReceivedMessage[] = [];
  const refused: RefusedMessage[] = [];
  const waiters = new Set<() => void>();
  const rawSockets = new Set<net.Socket>();
  const socketsByPeer = new Map<string, net.Socket>();
  // the AUTH user name of each session (smtp-server's session.user is whatever onAuth returned)
  const authUsers = new Map<string, string>();
  const onAuth = (opts.serverOptions?.onAuth as OnAuth | undefined) ?? (opts.users ? checkUsers(opts.users) : undefined);
  const recordingAuth: OnAuth | undefined =
    onAuth &&
    ((auth, session, callback) =>
      onAuth(auth, session, (err, response) => {
        if (!err && response?.user && auth.username) authUsers.set(session.id, auth.username);
        callback(err, response);
      }));

  // connection state that the server closure needs; `receiver` is filled in below
  const state = { behaviour: opts.behaviour ?? {}, connections: 0 };

  const peerKey = (address: string, port: number): string =>
    `${address.replace(/^::ffff:/, '')}:${port}`;

  const dropSession = (session: SMTPServerSession): void => {
    const sock = socketsByPeer.get(peerKey(session.remoteAddress, session.remotePort));
    if (sock) {
      sock.destroy();
      return;
    }
    // fallback: smtp-server's connection objects carry the (possibly TLS) socket
    const conns = (server as unknown as { connections: Set<{ session?: SMTPServerSession; _socket?: net.Socket }> }).connections;
    for (const c of conns) if (c.session?.id === session.id) c._socket?.destroy();
  };

  /**
   * Decide what happens at a stage. Returns 'accept', 'handled' (dropped or
   * stalled: the callback must not be called) or an error to pass back.
   */
  const decide = (
    stage: Stage,
    session: SMTPServerSession,
    address?: string,
  ): { kind: 'accept' } | { kind: 'drop' } | { kind: 'stall' } | { kind: 'reply'; code: number; message: string } => {
    attempts[stage] += 1;
    const attempt = attempts[stage];
    const b = state.behaviour;
    if (b.drop === stage) {
      dropSession(session);
      return { kind: 'drop' };
    }
    if (b.stall === stage) return { kind: 'stall' };
    const fn = b.reply?.[stage];
    const r = fn?.(address === undefined ? { attempt } : { address, attempt });
    if (r && r.code >= 400) return { kind: 'reply', code: r.code, message: r.message };
    return { kind: 'accept' };
  };

  const server: SMTPServer = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    size: 50 * 1024 * 1024,
    socketTimeout: 60_000,
    closeTimeout: 100,
    ...(opts.users ? { authMethods: ['PLAIN', 'LOGIN'], allowInsecureAuth: true } : {}),
    ...opts.serverOptions,
    ...(recordingAuth ? { onAuth: recordingAuth } : {}),
    onConnect(session, callback) {
      const d = decide('connect', session);
      if (d.kind === 'drop' || d.kind === 'stall') return;
      if (d.kind === 'reply') return callback(smtpError(d.code, d.message));
      // per-connection STARTTLS switch: follows the behaviour at connect time
      session.disabledCommands = state.behaviour.noStartTls ? ['STARTTLS'] : [];
      callback();
    },
    onMailFrom(address, session, callback) {
      const d = decide('mail', session, address.address);
      if (d.kind === 'drop' || d.kind === 'stall') return;
      if (d.kind === 'reply') return callback(smtpError(d.code, d.message));
      callback();
    },
    onRcptTo(address, session, callback) {
      const d = decide('rcpt', session, address.address);
      if (d.kind === 'drop' || d.kind === 'stall') return;
      if (d.kind === 'reply') return callback(smtpError(d.code, d.message));
      callback();
    },
    onData(stream, session, callback) {
      const env = session.envelope;
      const base = {
        from: env.mailFrom ? env.mailFrom.address : '',
        to: env.rcptTo.map((r) => r.address),
        remoteAddress: (session.remoteAddress ?? '').replace(/^::ffff:/, ''),
        secure: !!session.secure,
        heloName: typeof session.hostNameAppearsAs === 'string' ? session.hostNameAppearsAs : '',
        mailParams: paramsOf(env.mailFrom),
        rcptParams: env.rcptTo.map((r) => paramsOf(r)),
        ...(authUsers.has(session.id) ? { authUser: authUsers.get(session.id) } : {}),
      };
      collect(stream).then(
        (raw) => {
          const msg: ReceivedMessage = { ...base, raw };
          const d = decide('data', session);
          if (d.kind === 'drop' || d.kind === 'stall') {
            refused.push({ ...msg, outcome: d.kind });
            return;
          }
          if (d.kind === 'reply') {
            refused.push({ ...msg, outcome: 'reply', reply: { code: d.code, message: d.message } });
            return callback(smtpError(d.code, d.message));
          }
          messages.push(msg);
          for (const w of [...waiters]) w();
          callback(null, 'OK: message queued');
        },
        (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
      );
    },
  });
  server.on('error', () => undefined);
  server.server.on('connection', (sock: net.Socket) => {
    state.connections += 1;
    rawSockets.add(sock);
    const key = peerKey(sock.remoteAddress ?? '', sock.remotePort ?? 0);
    socketsByPeer.set(key, sock);
    sock.on('error', () => undefined);
    sock.once('close', () => {
      rawSockets.delete(sock);
      if (socketsByPeer.get(key) === sock) socketsByPeer.delete(key);
    });
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.server.once('error', onError);
    server.listen(opts.port ?? 0, host, () => {
      server.server.removeListener('error', onError);
      resolve();
    });
  });
  const addr = server.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;

  let closing: Promise<void> | undefined;

  const receiver: TestReceiver = {
    port,
    host,
    messages,
    refused,
    get connections() {
      return state.connections;
    },
    attempts,
    get behaviour() {
      return state.behaviour;
    },
    set behaviour(b: Behaviour) {
      state.behaviour = b;
    },
    setBehaviour(b: Behaviour) {
      state.behaviour = b;
    },
    waitForMessages(n: number, timeoutMs = 5000): Promise<ReceivedMessage[]> {
      if (messages.length >= n) return Promise.resolve(messages.slice());
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (messages.length >= n) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(messages.slice());
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const why = receiver.explainTimeout?.();
          reject(new Error(`waitForMessages(${n}): only ${messages.length} message(s) on ${host}:${port} after ${timeoutMs} ms${why ? `\n${why}` : ''}`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2000); // never hang a test on close
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        for (const s of rawSockets) s.destroy();
      });
      return closing;
    },
  };
  return receiver;
}
