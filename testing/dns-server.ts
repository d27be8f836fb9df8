/**
 * A real, programmable DNS server on loopback for tests (dns2 underneath).
 *
 * - Listens on UDP *and* TCP on the same random free port on 127.0.0.1, so a
 *   resolver that falls back to TCP after a truncated (TC=1) UDP answer works.
 * - Zone data is a Map from lower-case names (no trailing dot) to records or to
 *   a failure mode: 'NXDOMAIN', 'SERVFAIL' or 'TIMEOUT' (never answered).
 * - A name in no zone answers NXDOMAIN; a name that exists but has no record of
 *   the asked type answers NOERROR with no answers (NODATA).
 * - CNAME: for a query of another type, the CNAME is answered and chased inside
 *   the test zones (up to 8 hops), like a recursive resolver would.
 *
 * Use with node:   const r = new dns.promises.Resolver({ timeout: 1000, tries: 1 });
 *                  r.setServers([testDns.server]);
 */
import * as net from 'node:net';
import type * as dgram from 'node:dgram';
import type Dns2 from 'dns2';

// dns2 is loaded by the first startDns, not by importing relay-mta/testing: a plugin's tests
// that start no DNS server do not need it installed.
let Packet: typeof Dns2.Packet;
type DnsPacket = InstanceType<typeof Dns2.Packet>;
type DnsResource = DnsPacket['answers'][number];

export interface ZoneRecords {
  MX?: { exchange: string; priority: number }[];
  A?: string[];
  AAAA?: string[];
  TXT?: string[];
  CNAME?: string;
  PTR?: string[];
  /** Queries of these types fail this way while the name's other records answer (a server that mishandles AAAA). */
  fail?: Partial<Record<'MX' | 'A' | 'AAAA' | 'TXT', 'SERVFAIL' | 'TIMEOUT'>>;
  /** Answer questions for this name this many ms late (a slow authoritative server). */
  delayMs?: number;
}

/** TIMEOUT = never answer (the query is recorded, then dropped). */
export type ZoneEntry = ZoneRecords | 'NXDOMAIN' | 'SERVFAIL' | 'TIMEOUT';

export interface TestDns {
  port: number;
  address: '127.0.0.1';
  /** '127.0.0.1:PORT', ready for Resolver#setServers([...]) */
  server: string;
  /** keys are normalised: lower case, no trailing dot (use set() to add) */
  zones: Map<string, ZoneEntry>;
  set(name: string, entry: ZoneEntry): void;
  /**
   * every question received, in order; name normalised, type e.g. 'MX', 'A', 'TYPE65'; id is the
   * DNS message id (a resolver's retransmission of one query, after its own timeout, repeats it)
   */
  queries: { name: string; type: string; id: number }[];
  close(): Promise<void>;
}

const TTL = 60;
const MAX_CNAME_HOPS = 8;

function normaliseName(name: string): string {
  return name.trim().toLowerCase().replace(/\.+$/, '');
}

function typeName(code: number): string {
  return Packet.typeName(code);
}

/** Expand an IPv6 address (any textual form, incl. embedded IPv4) to 8 full groups. */
function expandIPv6(address: string): string {
  if (!net.isIPv6(address)) throw new Error(`invalid IPv6 address ${JSON.stringify(address)}`);
  let addr = address.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(addr);
  if (v4) {
    const o = v4[1]!.split('.').map(Number);
    const hi = ((o[0]! << 8) | o[1]!).toString(16);
    const lo = ((o[2]! << 8) | o[3]!).toString(16);
    addr = addr.slice(0, addr.length - v4[1]!.length) + `${hi}:${lo}`;
  }
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const headParts = head ? head.split(':') : [];
  const tailParts = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail !== undefined ? 8 - headParts.length - tailParts.length : 0;
  const groups = [...headParts, ...Array<string>(fill).fill('0'), ...tailParts];
  return groups.map((g) => g.padStart(4, '0')).join(':');
}

/** Split a TXT string into <character-string>s of at most 255 bytes. */
function splitTxt(text: string): Buffer[] {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length === 0) return [Buffer.alloc(0)];
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 255) out.push(bytes.subarray(i, i + 255));
  return out;
}

/** Records of one type at a name, as dns2 resources (the owner name as asked). */
function recordsOf(owner: string, rec: ZoneRecords, type: number): DnsResource[] {
  const T = Packet.TYPE;
  const base = { name: owner, class: Packet.CLASS.IN, ttl: TTL };
  const out: DnsResource[] = [];
  if ((type === T.A || type === T.ANY) && rec.A) {
    for (const address of rec.A) out.push({ ...base, type: T.A, address } as DnsResource);
  }
  if ((type === T.AAAA || type === T.ANY) && rec.AAAA) {
    for (const a of rec.AAAA) out.push({ ...base, type: T.AAAA, address: expandIPv6(a) } as DnsResource);
  }
  if ((type === T.MX || type === T.ANY) && rec.MX) {
    for (const mx of rec.MX) {
      // '' and '.' both encode as the root name (RFC 7505 null MX)
      const exchange = mx.exchange === '.' ? '' : mx.exchange;
      out.push({ ...base, type: T.MX, exchange, priority: mx.priority } as DnsResource);
    }
  }
  if ((type === T.TXT || type === T.ANY) && rec.TXT) {
    for (const t of rec.TXT) {
      out.push({ ...base, type: T.TXT, data: splitTxt(t) as unknown as string[] } as DnsResource);
    }
  }
  if ((type === T.PTR || type === T.ANY) && rec.PTR) {
    for (const domain of rec.PTR) out.push({ ...base, type: T.PTR, domain } as DnsResource);
  }
  if ((type === T.CNAME || type === T.ANY) && rec.CNAME !== undefined) {
    out.push({ ...base, type: T.CNAME, domain: rec.CNAME } as DnsResource);
  }
  return out;
}

type Answer =
  | { kind: 'timeout' }
  | { kind: 'reply'; rcode: number; answers: DnsResource[] };

function lookup(zones: Map<string, ZoneEntry>, name: string): ZoneEntry | undefined {
  const key = normaliseName(name);
  if (zones.has(key)) return zones.get(key);
  // tolerate keys put into the Map directly without normalisation
  for (const [k, v] of zones) if (normaliseName(k) === key) return v;
  return undefined;
}

function answer(zones: Map<string, ZoneEntry>, qname: string, qtype: number): Answer {
  const answers: DnsResource[] = [];
  let owner = qname;
  for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
    const entry = lookup(zones, owner);
    if (entry === 'TIMEOUT') return { kind: 'timeout' };
    if (entry === 'SERVFAIL') return { kind: 'reply', rcode: Packet.RCODE.SERVFAIL, answers };
    if (entry === undefined || entry === 'NXDOMAIN') {
      return { kind: 'reply', rcode: Packet.RCODE.NXDOMAIN, answers };
    }
    const rec = entry;
    if (
      rec.CNAME !== undefined &&
      qtype !== Packet.TYPE.CNAME &&
      qtype !== Packet.TYPE.ANY
    ) {
      answers.push(...recordsOf(owner, { CNAME: rec.CNAME }, Packet.TYPE.CNAME));
      owner = normaliseName(rec.CNAME);
      continue;
    }
    const failure = rec.fail?.[({ [Packet.TYPE.MX]: 'MX', [Packet.TYPE.A]: 'A', [Packet.TYPE.AAAA]: 'AAAA', [Packet.TYPE.TXT]: 'TXT' } as Record<number, 'MX' | 'A' | 'AAAA' | 'TXT'>)[qtype]!];
    if (failure === 'TIMEOUT') return { kind: 'timeout' };
    if (failure === 'SERVFAIL') return { kind: 'reply', rcode: Packet.RCODE.SERVFAIL, answers };
    answers.push(...recordsOf(owner, rec, qtype));
    return { kind: 'reply', rcode: Packet.RCODE.NOERROR, answers };
  }
  // CNAME loop / chain too long
  return { kind: 'reply', rcode: Packet.RCODE.SERVFAIL, answers: [] };
}

function listenUdp(sock: dgram.Socket, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    sock.once('error', onError);
    sock.bind(port, '127.0.0.1', () => {
      sock.removeListener('error', onError);
      resolve();
    });
  });
}

function listenTcp(srv: net.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    srv.once('error', onError);
    srv.listen(port, '127.0.0.1', () => {
      srv.removeListener('error', onError);
      resolve();
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export async function startDns(initial: Record<string, ZoneEntry> = {}): Promise<TestDns> {
  const { default: dns2 } = await import('dns2');
  Packet = dns2.Packet;
  const zones = new Map<string, ZoneEntry>();
  for (const [name, entry] of Object.entries(initial)) zones.set(normaliseName(name), entry);
  const queries: { name: string; type: string; id: number }[] = [];

  const handle = (
    request: DnsPacket,
    send: (response: DnsPacket | Buffer) => Promise<Buffer>,
  ): void => {
    const response = Packet.createResponseFromRequest(request);
    response.header.aa = 1;
    response.header.ra = 1;
    const [question] = request.questions;
    if (!question || request.questions.length !== 1) {
      response.header.rcode = Packet.RCODE.FORMERR;
      send(response).catch(() => undefined);
      return;
    }
    queries.push({ name: normaliseName(question.name), type: typeName(question.type), id: request.header.id });
    let result: Answer;
    try {
      result = answer(zones, question.name, question.type);
    } catch {
      result = { kind: 'reply', rcode: Packet.RCODE.SERVFAIL, answers: [] };
    }
    if (result.kind === 'timeout') return; // never answer
    response.header.rcode = result.rcode;
    response.answers = result.answers;
    const entry = zones.get(normaliseName(question.name));
    const delayMs = typeof entry === 'object' ? entry.delayMs : undefined;
    if (delayMs) setTimeout(() => send(response).catch(() => undefined), delayMs);
    else send(response).catch(() => undefined);
  };

  // Bind UDP on a random port first, then TCP on the same port; retry on clash.
  let udp: InstanceType<typeof Dns2.UDPServer> | undefined;
  let tcp: InstanceType<typeof Dns2.TCPServer> | undefined;
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    udp = dns2.createUDPServer({ type: 'udp4' });
    tcp = dns2.createTCPServer();
    try {
      await withTimeout(listenUdp(udp, 0), 2000, 'dns udp bind');
      port = udp.address().port;
      await withTimeout(listenTcp(tcp, port), 2000, 'dns tcp listen');
      break;
    } catch (err) {
      try { udp.close(); } catch { /* not bound */ }
      try { tcp.close(); } catch { /* not listening */ }
      if (attempt >= 20) throw err;
    }
  }
  const udpServer = udp;
  const tcpServer = tcp;

  const sockets = new Set<net.Socket>();
  tcpServer.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
  });
  for (const srv of [udpServer, tcpServer] as const) {
    srv.on('request', handle);
    srv.on('requestError', () => undefined);
    srv.on('error', () => undefined);
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const udpClosed = new Promise<void>((resolve) => {
        try {
          udpServer.close(() => resolve());
        } catch {
          resolve();
        }
      });
      const tcpClosed = new Promise<void>((resolve) => tcpServer.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await withTimeout(Promise.all([udpClosed, tcpClosed]), 2000, 'dns close').catch(() => undefined);
    })();
    return closing;
  };

  return {
    port,
    address: '127.0.0.1',
    server: `127.0.0.1:${port}`,
    zones,
    set(name: string, entry: ZoneEntry) {
      zones.set(normaliseName(name), entry);
    },
    queries,
    close,
  };
}
