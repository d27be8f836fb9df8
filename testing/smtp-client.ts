/**
 * A raw SMTP client on a plain net.Socket, for tests that must control the
 * exact bytes on the wire (smuggling probes, malformed commands, pipelining).
 *
 * A "reply" is every line up to and including the first line whose 3-digit
 * code is followed by a space (or by nothing); lines are returned joined with
 * '\r\n', without the final CRLF, e.g. '250-relay.test\r\n250 PIPELINING'.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

export interface RawSmtp {
  /** write bytes verbatim */
  send(bytes: string | Buffer): void;
  /** send line + CRLF, resolve with the next full (possibly multi-line) reply */
  command(line: string, timeoutMs?: number): Promise<string>;
  /** next full reply; rejects on timeout (default 5000 ms) or when the connection closes first */
  read(timeoutMs?: number): Promise<string>;
  /** resolves when the socket has closed (never rejects) */
  closed: Promise<void>;
  isClosed(): boolean;
  /** destroy the socket */
  close(): void;
  /**
   * Extra: after the server answered 220 to STARTTLS, run a TLS handshake on the
   * same connection (certificate not verified) and continue over TLS.
   */
  /** with `ca`, the server certificate must verify against it (and match servername) */
  startTls(opts?: { servername?: string; timeoutMs?: number; ca?: Buffer }): Promise<void>;
  /** protocol and cipher once secure */
  tlsInfo(): { protocol: string | null; cipher: string; authorized: boolean } | undefined;
  /** true once startTls() completed */
  isSecure(): boolean;
}

const DEFAULT_TIMEOUT = 5000;

class RawSmtpClient implements RawSmtp {
  readonly closed: Promise<void>;
  private buffer = '';
  private lines: string[] = [];
  private replies: string[] = [];
  private waiters: { resolve: (r: string) => void; reject: (e: Error) => void }[] = [];
  private ended = false;
  private lastError: Error | undefined;

  private secure = false;
  private readonly dataListener = (chunk: Buffer): void => this.onData(chunk);

  constructor(private socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', this.dataListener);
    socket.on('error', (err: Error) => {
      this.lastError = err;
    });
    this.closed = new Promise<void>((resolve) => {
      socket.once('close', () => {
        this.ended = true;
        const err = new Error(
          `connection closed before a full reply${this.lastError ? ` (${this.lastError.message})` : ''}` +
            (this.buffer || this.lines.length ? `; partial: ${JSON.stringify([...this.lines, this.buffer].join('\r\n'))}` : ''),
        );
        for (const w of this.waiters.splice(0)) w.reject(err);
        resolve();
      });
    });
  }

  private onData(chunk: Buffer): void {
    // latin1 keeps every byte as one char, so odd bytes never get mangled
    this.buffer += chunk.toString('latin1');
    let idx: number;
    while ((idx = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, idx).replace(/\r$/, '');
      this.buffer = this.buffer.slice(idx + 1);
      this.lines.push(line);
      if (!/^\d{3}-/.test(line)) {
        // final line of a reply ('250 ok', '250', or anything non-conforming)
        const reply = this.lines.join('\r\n');
        this.lines = [];
        const w = this.waiters.shift();
        if (w) w.resolve(reply);
        else this.replies.push(reply);
      }
    }
  }

  send(bytes: string | Buffer): void {
    if (this.ended || this.socket.destroyed) return;
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes);
  }

  command(line: string, timeoutMs = DEFAULT_TIMEOUT): Promise<string> {
    const p = this.read(timeoutMs);
    this.send(line + '\r\n');
    return p;
  }

  read(timeoutMs = DEFAULT_TIMEOUT): Promise<string> {
    const queued = this.replies.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.ended) return Promise.reject(new Error('connection closed'));
    return new Promise<string>((resolve, reject) => {
      const waiter = {
        resolve: (r: string) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no SMTP reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  isClosed(): boolean {
    return this.ended;
  }

  isSecure(): boolean {
    return this.secure;
  }

  tlsInfo(): { protocol: string | null; cipher: string; authorized: boolean } | undefined {
    if (!this.secure) return undefined;
    const t = this.socket as tls.TLSSocket;
    return { protocol: t.getProtocol(), cipher: t.getCipher().name, authorized: t.authorized };
  }

  async startTls(opts: { servername?: string; timeoutMs?: number; ca?: Buffer } = {}): Promise<void> {
    if (this.ended) throw new Error('connection closed');
    if (this.buffer || this.lines.length || this.replies.length) {
      throw new Error('startTls: unread plaintext data pending (possible STARTTLS injection)');
    }
    const plain = this.socket;
    plain.removeListener('data', this.dataListener);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT;
    const secureSocket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const t = tls.connect({
        socket: plain,
        rejectUnauthorized: Boolean(opts.ca),
        ...(opts.ca ? { ca: opts.ca } : {}),
        ...(opts.servername && !net.isIP(opts.servername) ? { servername: opts.servername } : {}),
      });
      const timer = setTimeout(() => {
        t.destroy();
        reject(new Error(`TLS handshake timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      t.once('secureConnect', () => {
        clearTimeout(timer);
        t.removeAllListeners('error');
        resolve(t);
      });
      t.once('error', (err) => {
        clearTimeout(timer);
        t.destroy();
        reject(err);
      });
    });
    secureSocket.on('error', (err: Error) => {
      this.lastError = err;
    });
    secureSocket.on('data', this.dataListener);
    this.socket = secureSocket;
    this.secure = true;
  }

  close(): void {
    this.socket.destroy();
  }
}

export async function connectRaw(
  port: number,
  host = '127.0.0.1',
  timeoutMs = DEFAULT_TIMEOUT,
  /** implicit TLS (port 465 style); `ca` verifies the server */
  implicitTls?: { ca?: Buffer; servername?: string },
  /** connect from this local address (e.g. 127.0.0.77, an untrusted client) */
  localAddress?: string,
): Promise<{ client: RawSmtp; greeting: string }> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = implicitTls
      ? tls.connect({ port, host, rejectUnauthorized: Boolean(implicitTls.ca), ca: implicitTls.ca, servername: implicitTls.servername, ...(localAddress ? { localAddress } : {}) } as tls.ConnectionOptions)
      : net.connect({ port, host, localAddress });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    s.once(implicitTls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    });
  });
  const client = new RawSmtpClient(socket);
  if (implicitTls) (client as unknown as { secure: boolean }).secure = true;
  try {
    const greeting = await client.read(timeoutMs);
    return { client, greeting };
  } catch (err) {
    client.close();
    throw new Error(`no greeting from ${host}:${port}: ${(err as Error).message}`);
  }
}

/** Dot-stuff message data and append the terminator (CRLF.CRLF). */
export function dotStuff(data: string | Buffer): Buffer {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const out: number[] = [];
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i]!;
    // a '.' at the start of the data or after any LF (smtp-server also
    // unstuffs after a bare LF, so stuffing there keeps the bytes intact)
    if (b === 0x2e && (i === 0 || buf[i - 1] === 0x0a)) out.push(0x2e);
    out.push(b);
  }
  const body = Buffer.from(out);
  const endsWithCrlf = body.length >= 2 && body[body.length - 2] === 0x0d && body[body.length - 1] === 0x0a;
  const terminator = body.length === 0 || endsWithCrlf ? '.\r\n' : '\r\n.\r\n';
  return Buffer.concat([body, Buffer.from(terminator, 'latin1')]);
}

export class SmtpTransactionError extends Error {
  constructor(
    message: string,
    readonly replies: string[],
  ) {
    super(message);
    this.name = 'SmtpTransactionError';
  }
}

/**
 * One full transaction: EHLO, MAIL, RCPT..., DATA, the data (dot-stuffed here,
 * terminated with CRLF.CRLF), QUIT. Returns early (after a best-effort QUIT)
 * when a reply is 4xx/5xx. `replies` starts with the greeting and does not
 * include the reply to QUIT. Rejects with SmtpTransactionError (carrying the
 * replies so far) if the connection closes or a reply times out.
 */
export async function sendMail(
  port: number,
  opts: {
    from: string; to: string[]; data: string | Buffer; host?: string; helo?: string; timeoutMs?: number;
    /** STARTTLS after EHLO (then EHLO again); `ca` verifies the server, `servername` for SNI */
    starttls?: { ca?: Buffer; servername?: string } | boolean;
    /** AUTH PLAIN after EHLO (and after STARTTLS, when asked for) */
    auth?: { user: string; pass: string };
    /** connect from this local address (127.x), e.g. to be an untrusted client */
    localAddress?: string;
  },
): Promise<{ replies: string[]; lastReply: string }> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT;
  const replies: string[] = [];
  let client: RawSmtp;
  try {
    const c = await connectRaw(port, opts.host ?? '127.0.0.1', timeoutMs, undefined, opts.localAddress);
    client = c.client;
    replies.push(c.greeting);
  } catch (err) {
    throw new SmtpTransactionError((err as Error).message, replies);
  }
  const failed = (reply: string): boolean => /^[45]/.test(reply);
  const done = async (): Promise<{ replies: string[]; lastReply: string }> => {
    if (!client.isClosed()) {
      await client.command('QUIT', Math.min(timeoutMs, 1000)).catch(() => undefined);
    }
    client.close();
    return { replies, lastReply: replies[replies.length - 1] ?? '' };
  };
  const step = async (line: string | Buffer, what: string): Promise<boolean> => {
    let reply: string;
    try {
      if (typeof line === 'string') {
        reply = await client.command(line, timeoutMs);
      } else {
        const p = client.read(timeoutMs);
        client.send(line);
        reply = await p;
      }
    } catch (err) {
      client.close();
      throw new SmtpTransactionError(`${what}: ${(err as Error).message}`, replies);
    }
    replies.push(reply);
    return !failed(reply);
  };

  if (failed(replies[0]!)) return done();
  if (!(await step(`EHLO ${opts.helo ?? 'client.test'}`, 'EHLO'))) return done();
  if (opts.starttls) {
    if (!(await step('STARTTLS', 'STARTTLS'))) return done();
    const t = typeof opts.starttls === 'object' ? opts.starttls : {};
    await client.startTls({ servername: t.servername, ca: t.ca } as Parameters<RawSmtp['startTls']>[0]);
    if (!(await step(`EHLO ${opts.helo ?? 'client.test'}`, 'EHLO'))) return done();
  }
  if (opts.auth) {
    const token = Buffer.from(`\0${opts.auth.user}\0${opts.auth.pass}`).toString('base64');
    if (!(await step(`AUTH PLAIN ${token}`, 'AUTH'))) return done();
  }
  if (!(await step(`MAIL FROM:<${opts.from}>`, 'MAIL'))) return done();
  for (const rcpt of opts.to) {
    if (!(await step(`RCPT TO:<${rcpt}>`, 'RCPT'))) return done();
  }
  if (!(await step('DATA', 'DATA'))) return done();
  await step(dotStuff(opts.data), 'end of data');
  return done();
}
