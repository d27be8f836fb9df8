import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import dns from 'node:dns';
import { startDns, type TestDns } from './harness/dns-server.js';
import { startReceiver, type TestReceiver } from './harness/smtp-receiver.js';
import { connectRaw, sendMail, dotStuff, SmtpTransactionError } from './harness/smtp-client.js';

function resolverFor(d: TestDns): dns.promises.Resolver {
  const r = new dns.promises.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([d.server]);
  return r;
}

async function errorCode(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

async function withReceiver<T>(
  opts: Parameters<typeof startReceiver>[0],
  fn: (r: TestReceiver) => Promise<T>,
): Promise<T> {
  const r = await startReceiver(opts);
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
}

describe('harness: dns-server', () => {
  let d: TestDns;
  let r: dns.promises.Resolver;

  beforeAll(async () => {
    d = await startDns({
      'Example.TEST.': {
        MX: [
          { exchange: 'mx2.example.test', priority: 20 },
          { exchange: 'mx1.example.test', priority: 10 },
        ],
        A: ['192.0.2.10', '192.0.2.11'],
        AAAA: ['2001:db8::10', '::ffff:192.0.2.12'],
        TXT: ['v=spf1 ip4:192.0.2.0/24 -all', 'x'.repeat(600)],
      },
      'nullmx.test': { MX: [{ exchange: '', priority: 0 }] },
      'nullmx-dot.test': { MX: [{ exchange: '.', priority: 0 }] },
      'alias.test': { CNAME: 'example.test' },
      'big.test': { TXT: Array.from({ length: 6 }, (_, i) => String(i).repeat(300)) },
      '10.2.0.192.in-addr.arpa': { PTR: ['host10.example.test'] },
      'nx.test': 'NXDOMAIN',
      'servfail.test': 'SERVFAIL',
      'timeout.test': 'TIMEOUT',
    });
    r = resolverFor(d);
  });
  afterAll(async () => {
    await d.close();
  });

  it('listens on 127.0.0.1 and reports its address', () => {
    expect(d.address).toBe('127.0.0.1');
    expect(d.port).toBeGreaterThan(0);
    expect(d.server).toBe(`127.0.0.1:${d.port}`);
  });

  it('answers MX, A, AAAA (case-insensitively, trailing dot ignored)', async () => {
    // Node 24 adds `type: 'MX'` to each record: compare what every Node gives.
    const mx = (await r.resolveMx('EXAMPLE.test.')).map(({ exchange, priority }) => ({ exchange, priority }));
    expect(mx.sort((a, b) => a.priority - b.priority)).toEqual([
      { exchange: 'mx1.example.test', priority: 10 },
      { exchange: 'mx2.example.test', priority: 20 },
    ]);
    expect((await r.resolve4('example.test')).sort()).toEqual(['192.0.2.10', '192.0.2.11']);
    expect((await r.resolve6('example.test')).sort()).toEqual(['2001:db8::10', '::ffff:192.0.2.12']);
  });

  it('answers TXT, splitting long strings into 255-byte chunks', async () => {
    const txt = await r.resolveTxt('example.test');
    const spf = txt.find((t) => t[0]!.startsWith('v=spf1'));
    expect(spf).toEqual(['v=spf1 ip4:192.0.2.0/24 -all']);
    const long = txt.find((t) => t[0]!.startsWith('x'))!;
    expect(long.map((s) => s.length)).toEqual([255, 255, 90]);
    expect(long.join('')).toBe('x'.repeat(600));
  });

  it('serves answers too big for UDP over TCP (truncation fallback)', async () => {
    const before = d.queries.filter((q) => q.name === 'big.test').length;
    const txt = await r.resolveTxt('big.test');
    expect(txt).toHaveLength(6);
    expect(txt.map((t) => t.join('').length)).toEqual([300, 300, 300, 300, 300, 300]);
    // UDP (truncated) then TCP
    expect(d.queries.filter((q) => q.name === 'big.test').length - before).toBe(2);
  });

  it('serves null MX (RFC 7505); node returns exchange "" for both spellings', async () => {
    const mx = async (name: string) => (await r.resolveMx(name)).map(({ exchange, priority }) => ({ exchange, priority }));
    expect(await mx('nullmx.test')).toEqual([{ exchange: '', priority: 0 }]);
    expect(await mx('nullmx-dot.test')).toEqual([{ exchange: '', priority: 0 }]);
  });

  it('follows CNAMEs inside the zone and answers CNAME/PTR', async () => {
    expect((await r.resolve4('alias.test')).sort()).toEqual(['192.0.2.10', '192.0.2.11']);
    expect(await r.resolveCname('alias.test')).toEqual(['example.test']);
    expect(await r.resolvePtr('10.2.0.192.in-addr.arpa')).toEqual(['host10.example.test']);
  });

  it('NODATA, NXDOMAIN, unknown name, SERVFAIL', async () => {
    expect(await errorCode(r.resolve4('nullmx.test'))).toBe('ENODATA');
    expect(await errorCode(r.resolveMx('nx.test'))).toBe('ENOTFOUND');
    expect(await errorCode(r.resolveMx('not-in-any-zone.test'))).toBe('ENOTFOUND');
    expect(await errorCode(r.resolveMx('servfail.test'))).toBe('ESERVFAIL');
  });

  it('TIMEOUT never answers (ETIMEOUT)', async () => {
    const t0 = Date.now();
    expect(await errorCode(r.resolveMx('timeout.test'))).toBe('ETIMEOUT');
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('set() changes answers live and queries are recorded', async () => {
    expect(await errorCode(r.resolve4('later.test'))).toBe('ENOTFOUND');
    d.set('LATER.test.', { A: ['192.0.2.99'] });
    expect(await r.resolve4('later.test')).toEqual(['192.0.2.99']);
    d.set('later.test', 'SERVFAIL');
    expect(await errorCode(r.resolve4('later.test'))).toBe('ESERVFAIL');
    const later = d.queries.filter((q) => q.name === 'later.test');
    expect(later.map(({ name, type }) => ({ name, type }))).toEqual([
      { name: 'later.test', type: 'A' },
      { name: 'later.test', type: 'A' },
      { name: 'later.test', type: 'A' },
    ]);
    expect(later.every((q) => Number.isInteger(q.id) && q.id >= 0 && q.id <= 0xffff)).toBe(true);
  });

  it('delayMs answers that name late', async () => {
    d.set('slow.test', { A: ['192.0.2.7'], delayMs: 300 });
    const t0 = Date.now();
    expect(await r.resolve4('slow.test')).toEqual(['192.0.2.7']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
  });

  it('close() is prompt and idempotent', async () => {
    const d2 = await startDns({ 'a.test': { A: ['192.0.2.1'] } });
    expect(await resolverFor(d2).resolve4('a.test')).toEqual(['192.0.2.1']);
    const t0 = Date.now();
    await Promise.all([d2.close(), d2.close()]);
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});

describe('harness: smtp-client helpers', () => {
  it('dotStuff stuffs leading dots (also after bare LF) and terminates', () => {
    expect(dotStuff('a\r\n.b\r\n').toString()).toBe('a\r\n..b\r\n.\r\n');
    expect(dotStuff('.x').toString()).toBe('..x\r\n.\r\n');
    expect(dotStuff('a\n.b').toString()).toBe('a\n..b\r\n.\r\n');
    expect(dotStuff('').toString()).toBe('.\r\n');
  });
});

describe('harness: smtp-receiver + smtp-client', () => {
  it('records a message sent with sendMail byte-for-byte', async () => {
    await withReceiver({}, async (rx) => {
      const data = Buffer.concat([
        Buffer.from('From: a@example.test\r\nTo: b@example.test\r\nSubject: t\r\n\r\n'),
        Buffer.from('.leading dot\r\n..two dots\r\n.\r\nbare lf\n.after lf\r\n'),
        Buffer.from([0xc3, 0xa9, 0xff, 0x00, 0x0d, 0x0a]),
        Buffer.from('last line\r\n'),
      ]);
      const res = await sendMail(rx.port, {
        from: 'a@example.test',
        to: ['b@example.test', 'c@example.test'],
        data,
        helo: 'sender.test',
      });
      expect(res.lastReply).toMatch(/^250 /);
      expect(res.replies[0]).toMatch(/^220 /);
      expect(res.replies).toHaveLength(1 + 1 + 1 + 2 + 1 + 1); // greeting EHLO MAIL RCPT*2 DATA dot
      const [msg] = await rx.waitForMessages(1, 1000);
      expect(msg!.raw.equals(data)).toBe(true);
      expect(msg!.from).toBe('a@example.test');
      expect(msg!.to).toEqual(['b@example.test', 'c@example.test']);
      expect(msg!.heloName).toBe('sender.test');
      expect(msg!.remoteAddress).toBe('127.0.0.1');
      expect(msg!.secure).toBe(false);
      expect(rx.connections).toBe(1);
    });
  });

  it('records MAIL FROM parameters and the null sender; multi-line EHLO reply', async () => {
    await withReceiver({}, async (rx) => {
      const { client, greeting } = await connectRaw(rx.port);
      expect(greeting).toMatch(/^220 /);
      const ehlo = await client.command('EHLO probe.test');
      const lines = ehlo.split('\r\n');
      expect(lines.length).toBeGreaterThan(1);
      expect(lines.slice(0, -1).every((l) => /^250-/.test(l))).toBe(true);
      expect(lines.at(-1)).toMatch(/^250 /);
      expect(ehlo).toMatch(/STARTTLS/);
      expect(await client.command('MAIL FROM:<> BODY=8BITMIME SIZE=123')).toMatch(/^250 /);
      expect(await client.command('RCPT TO:<x@example.test>')).toMatch(/^250 /);
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.send('Subject: p\r\n\r\nhi\r\n.\r\n');
      expect(await client.read()).toMatch(/^250 /);
      const [msg] = await rx.waitForMessages(1, 1000);
      expect(msg!.from).toBe('');
      expect(msg!.mailParams).toEqual({ BODY: '8BITMIME', SIZE: '123' });
      expect(msg!.raw.toString()).toBe('Subject: p\r\n\r\nhi\r\n');
      expect(await client.command('QUIT')).toMatch(/^221 /);
      await client.closed;
      expect(client.isClosed()).toBe(true);
    });
  });

  it('STARTTLS works by default and sets secure; noStartTls hides it', async () => {
    await withReceiver({}, async (rx) => {
      const { client } = await connectRaw(rx.port);
      await client.command('EHLO tls.test');
      expect(await client.command('STARTTLS')).toMatch(/^220 /);
      await client.startTls();
      expect(client.isSecure()).toBe(true);
      expect(await client.command('EHLO tls.test')).not.toMatch(/STARTTLS/);
      await client.command('MAIL FROM:<a@example.test>');
      await client.command('RCPT TO:<b@example.test>');
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.send('x\r\n.\r\n');
      expect(await client.read()).toMatch(/^250 /);
      const [msg] = await rx.waitForMessages(1, 1000);
      expect(msg!.secure).toBe(true);
      client.close();
      await client.closed;
    });
    await withReceiver({ behaviour: { noStartTls: true } }, async (rx) => {
      const { client } = await connectRaw(rx.port);
      expect(await client.command('EHLO tls.test')).not.toMatch(/STARTTLS/);
      expect(await client.command('STARTTLS')).toMatch(/^5\d\d /);
      client.close();
    });
  });

  it('reply: rejects a recipient by address, then 451 on the first DATA only', async () => {
    await withReceiver(
      {
        behaviour: {
          reply: {
            rcpt: ({ address }) => (address === 'bad@example.test' ? { code: 550, message: 'no such user' } : undefined),
            data: ({ attempt }) => (attempt === 1 ? { code: 451, message: 'try again later' } : undefined),
          },
        },
      },
      async (rx) => {
        const bad = await sendMail(rx.port, { from: 'a@example.test', to: ['bad@example.test'], data: 'x\r\n' });
        expect(bad.lastReply).toBe('550 no such user');
        const first = await sendMail(rx.port, { from: 'a@example.test', to: ['ok@example.test'], data: 'one\r\n' });
        expect(first.lastReply).toBe('451 try again later');
        expect(rx.messages).toHaveLength(0);
        expect(rx.refused).toHaveLength(1);
        expect(rx.refused[0]!.raw.toString()).toBe('one\r\n');
        const second = await sendMail(rx.port, { from: 'a@example.test', to: ['ok@example.test'], data: 'two\r\n' });
        expect(second.lastReply).toMatch(/^250 /);
        expect((await rx.waitForMessages(1, 1000))[0]!.raw.toString()).toBe('two\r\n');
        expect(rx.attempts).toEqual({ connect: 3, mail: 3, rcpt: 3, data: 2 });
        expect(rx.connections).toBe(3);
      },
    );
  });

  it('reply at connect makes the greeting fail; setBehaviour switches live', async () => {
    await withReceiver({ behaviour: { reply: { connect: () => ({ code: 421, message: 'too busy' }) } } }, async (rx) => {
      const { client, greeting } = await connectRaw(rx.port);
      expect(greeting).toBe('421 too busy');
      await client.closed;
      rx.setBehaviour({});
      const ok = await connectRaw(rx.port);
      expect(ok.greeting).toMatch(/^220 /);
      ok.client.close();
      const res = await sendMail(rx.port, { from: 'a@example.test', to: ['b@example.test'], data: 'x\r\n' });
      expect(res.lastReply).toMatch(/^250 /);
      rx.behaviour = { reply: { mail: () => ({ code: 452, message: 'out of space' }) } };
      const res2 = await sendMail(rx.port, { from: 'a@example.test', to: ['b@example.test'], data: 'x\r\n' });
      expect(res2.lastReply).toBe('452 out of space');
    });
  });

  it('drop: connect, mail and data close the socket', async () => {
    await withReceiver({ behaviour: { drop: 'connect' } }, async (rx) => {
      await expect(connectRaw(rx.port, '127.0.0.1', 1000)).rejects.toThrow(/closed/);
    });
    await withReceiver({ behaviour: { drop: 'mail' } }, async (rx) => {
      const { client } = await connectRaw(rx.port);
      await client.command('EHLO drop.test');
      await expect(client.command('MAIL FROM:<a@example.test>', 1000)).rejects.toThrow(/closed/);
      await client.closed;
      expect(client.isClosed()).toBe(true);
    });
    await withReceiver({ behaviour: { drop: 'data' } }, async (rx) => {
      const err = await sendMail(rx.port, {
        from: 'a@example.test',
        to: ['b@example.test'],
        data: 'dropped\r\n',
        timeoutMs: 1000,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SmtpTransactionError);
      expect((err as SmtpTransactionError).replies.at(-1)).toMatch(/^354 /);
      expect(rx.messages).toHaveLength(0);
      expect(rx.refused.map((m) => [m.outcome, m.raw.toString()])).toEqual([['drop', 'dropped\r\n']]);
    });
  });

  it('stall: the reply never comes but the socket stays open; close() is fast', async () => {
    const rx = await startReceiver({ behaviour: { stall: 'rcpt' } });
    const { client } = await connectRaw(rx.port);
    await client.command('EHLO stall.test');
    await client.command('MAIL FROM:<a@example.test>');
    await expect(client.command('RCPT TO:<b@example.test>', 300)).rejects.toThrow(/no SMTP reply within 300 ms/);
    expect(client.isClosed()).toBe(false);
    const t0 = Date.now();
    await rx.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    await client.closed;
    expect(client.isClosed()).toBe(true);
  });

  it('stall at connect: no greeting; stall at data: message received, no reply', async () => {
    await withReceiver({ behaviour: { stall: 'connect' } }, async (rx) => {
      await expect(connectRaw(rx.port, '127.0.0.1', 300)).rejects.toThrow(/no greeting/);
    });
    await withReceiver({ behaviour: { stall: 'data' } }, async (rx) => {
      const { client } = await connectRaw(rx.port);
      await client.command('EHLO stall.test');
      await client.command('MAIL FROM:<a@example.test>');
      await client.command('RCPT TO:<b@example.test>');
      expect(await client.command('DATA')).toMatch(/^354 /);
      client.send('body\r\n.\r\n');
      await expect(client.read(300)).rejects.toThrow(/no SMTP reply/);
      expect(client.isClosed()).toBe(false);
      expect(rx.refused.map((m) => m.outcome)).toEqual(['stall']);
      client.close();
    });
  });

  it('waitForMessages times out with a clear error', async () => {
    await withReceiver({}, async (rx) => {
      await expect(rx.waitForMessages(1, 100)).rejects.toThrow(/only 0 message/);
    });
  });

  it('two receivers on 127.0.0.2 and 127.0.0.3 share one port', async () => {
    const a = await startReceiver({ host: '127.0.0.2' });
    let b: TestReceiver | undefined;
    try {
      b = await startReceiver({ host: '127.0.0.3', port: a.port, behaviour: { reply: { rcpt: () => ({ code: 450, message: 'greylisted' }) } } });
      expect(b.port).toBe(a.port);
      expect([a.host, b.host]).toEqual(['127.0.0.2', '127.0.0.3']);
      const ra = await sendMail(a.port, { host: '127.0.0.2', from: 'x@example.test', to: ['y@example.test'], data: 'to a\r\n' });
      const rb = await sendMail(b.port, { host: '127.0.0.3', from: 'x@example.test', to: ['y@example.test'], data: 'to b\r\n' });
      expect(ra.lastReply).toMatch(/^250 /);
      expect(rb.lastReply).toBe('450 greylisted');
      expect((await a.waitForMessages(1, 1000))[0]!.raw.toString()).toBe('to a\r\n');
      expect(b.messages).toHaveLength(0);
      expect(b.connections).toBe(1);
      // and nothing listens on 127.0.0.4 at that port
      await expect(connectRaw(a.port, '127.0.0.4', 500)).rejects.toThrow();
    } finally {
      await Promise.all([a.close(), b?.close()]);
    }
  });
});
