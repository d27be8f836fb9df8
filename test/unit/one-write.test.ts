// core/delivery/one-write.ts over a real socket to a real SMTP server: a message's header block, its
// body and the final dot leave in one write (one system call, one segment), not one write each; a
// message larger than the socket's buffer still goes through whole (the socket is uncorked when the
// data stream waits for it to drain: corked, it would never drain), and the next message on the
// connection is one write again.
import { Readable } from 'node:stream'
import type { Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import '../../core/delivery/one-write.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'

let rx: TestReceiver
beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.1', behaviour: { noStartTls: true } })
})
afterAll(async () => {
  await rx?.close()
})

/** Every write that leaves the socket's stream (one `_write`, or one `_writev` for what was corked), as text. */
function recordWrites(socket: Socket): string[] {
  const writes: string[] = []
  const s = socket as unknown as {
    _write: (chunk: Buffer, enc: BufferEncoding, cb: () => void) => void
    _writev: (chunks: { chunk: Buffer | string }[], cb: () => void) => void
  }
  const write = s._write.bind(socket)
  const writev = s._writev.bind(socket)
  s._write = (chunk, enc, cb) => {
    writes.push(Buffer.from(chunk as Buffer).toString('latin1'))
    write(chunk, enc, cb)
  }
  s._writev = (chunks, cb) => {
    writes.push(chunks.map((c) => Buffer.from(c.chunk as Buffer).toString('latin1')).join(''))
    writev(chunks, cb)
  }
  return writes
}

async function connect(): Promise<{ conn: SMTPConnection; writes: string[] }> {
  const conn = new SMTPConnection({ host: '127.0.0.1', port: rx.port, ignoreTLS: true, name: 'client.test' })
  await new Promise<void>((resolve, reject) => {
    conn.once('error', reject)
    conn.connect(() => resolve())
  })
  const writes = recordWrites((conn as unknown as { _socket: Socket })._socket)
  return { conn, writes }
}

function send(conn: SMTPConnection, message: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    conn.send({ from: 'a@client.test', to: ['b@dest.test'] }, message, (err, info) => (err ? reject(err) : resolve(info.response)))
  })
}

const headers = (subject: string) => Buffer.from(`From: a@client.test\r\nTo: b@dest.test\r\nSubject: ${subject}\r\n\r\n`)

describe('a message leaves in one write', () => {
  it('header block, body chunks and the final dot of a 5 KB message: one write; the server has the message as sent', async () => {
    const { conn, writes } = await connect()
    try {
      const body = Buffer.from('.leading dot\r\n' + 'x'.repeat(76).concat('\r\n').repeat(64))
      expect(await send(conn, Readable.from([headers('small one'), body.subarray(0, 1000), body.subarray(1000)], { objectMode: false }))).toMatch(/^250 /)
      const data = writes.filter((w) => w.includes('Subject: small one') || w.endsWith('\r\n.\r\n') || w.includes('xxxx'))
      expect(data).toHaveLength(1)
      expect(data[0]!.startsWith('From: a@client.test')).toBe(true)
      expect(data[0]!.endsWith('x\r\n.\r\n')).toBe(true)
      const got = rx.messages.find((m) => m.raw.toString().includes('Subject: small one'))
      expect(got?.raw.toString()).toContain('\r\n.leading dot\r\n') // dot-stuffed on the wire, unstuffed by the server
    } finally {
      conn.close()
    }
  })

  it('a 1 MB message (over the socket buffer: the data stream waits for a drain) goes through whole, and a small one after it on the same connection is one write again', async () => {
    const { conn, writes } = await connect()
    try {
      const line = 'y'.repeat(998) + '\r\n'
      const big = Buffer.from(line.repeat(1024))
      expect(await send(conn, Readable.from([headers('big one'), big], { objectMode: false }))).toMatch(/^250 /)
      const got = rx.messages.find((m) => m.raw.toString().includes('Subject: big one'))
      expect(got?.raw.toString().split(line).length - 1).toBe(1024)
      await new Promise<void>((resolve, reject) => conn.reset((err) => (err ? reject(err) : resolve())))
      const before = writes.length
      expect(await send(conn, Readable.from([headers('after the big one'), Buffer.from('short\r\n')], { objectMode: false }))).toMatch(/^250 /)
      const data = writes.slice(before).filter((w) => w.includes('Subject: after the big one') || w.includes('.\r\n'))
      expect(data).toHaveLength(1)
      expect(data[0]!.endsWith('short\r\n.\r\n')).toBe(true)
    } finally {
      conn.close()
    }
  })
})
