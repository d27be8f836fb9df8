// The floor of the chosen stack (`npm run bench -- --floor`): the least a relay built on smtp-server
// and nodemailer can do per message and still be an MTA. It takes a message in, appends it to one
// journal file and fdatasyncs before the 250 (group commit: one sync for what arrived meanwhile),
// sends it over reused outbound connections, and journals the completion the same way. No hooks, no
// plugins, no logs, no queue tables, no retries: what it spends per message is what Relay cannot go
// below without replacing a library. Speaks the bench's start/stop lines so bench.ts measures it
// exactly as it measures the relay.
// Usage: node --import tsx bench/floor.ts <listen port> <sink host> <sink port> <journal file>
import fs from 'node:fs'
import { SMTPServer } from 'smtp-server'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import { SMTPConnection as InboundConnection } from 'smtp-server/lib/smtp-connection.js'

// smtp-server waits 100 ms before the greeting to catch early talkers; Relay's default greets at
// once (core/smtp/patches.ts), and so does the floor.
const inbound = (InboundConnection as unknown as { prototype: { init(): void; _setListeners(cb: () => void): void; connectionReady(): void } }).prototype
inbound.init = function () {
  this._setListeners(() => this.connectionReady())
}

const [port, sinkHost, sinkPort, journal] = process.argv.slice(2) as [string, string, string, string]
const fd = fs.openSync(journal, 'a')

// Group commit: records that arrive while a sync runs are written and synced together next.
let pending: { record: Buffer; done: () => void }[] = []
let syncing = false
function durable(record: Buffer): Promise<void> {
  return new Promise((done) => {
    pending.push({ record, done })
    if (!syncing) void commit()
  })
}
async function commit(): Promise<void> {
  syncing = true
  while (pending.length) {
    const batch = pending
    pending = []
    await new Promise<void>((ok, fail) => fs.writev(fd, batch.map((p) => p.record), (err) => (err ? fail(err) : ok())))
    await new Promise<void>((ok, fail) => fs.fdatasync(fd, (err) => (err ? fail(err) : ok())))
    for (const p of batch) p.done()
  }
  syncing = false
}

// Outbound: up to 20 connections to the sink, each reused with RSET between messages.
interface Job { from: string; to: string[]; body: Buffer; id: number }
const idle: SMTPConnection[] = []
const waiting: Job[] = []
let open = 0
function deliver(job: Job): void {
  const conn = idle.pop()
  if (conn) return send(conn, job)
  if (open >= 20) return void waiting.push(job)
  open++
  const c = new SMTPConnection({ host: sinkHost, port: Number(sinkPort), name: 'floor.bench.test', ignoreTLS: true })
  c.once('error', () => open--)
  c.connect(() => send(c, job))
}
function send(conn: SMTPConnection, job: Job): void {
  conn.send({ from: job.from, to: job.to }, job.body, () => {
    void durable(Buffer.from(`done ${job.id}\n`))
    conn.reset(() => {
      const next = waiting.shift()
      if (next) send(conn, next)
      else idle.push(conn)
    })
  })
}

let seq = 0
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  banner: 'floor',
  name: 'floor.bench.test',
  disableReverseLookup: true,
  onData(stream, session, callback) {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      const body = Buffer.concat(chunks)
      const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : ''
      const to = session.envelope.rcptTo.map((r) => r.address)
      const id = ++seq
      const head = Buffer.from(`msg ${id} ${from} ${to.join(',')} ${body.length}\n`)
      void durable(Buffer.concat([head, body])).then(() => {
        callback(null, `2.0.0 Ok: queued as ${id}`)
        deliver({ from, to, body, id })
      })
    })
  },
})
// As Relay does: replies go out at once (no Nagle wait for the client's ACK).
;(server as unknown as { server: import('node:net').Server }).server.on('connection', (s) => s.setNoDelay(true))
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(JSON.stringify({ msg: 'relay started' }) + '\n'))
process.on('SIGTERM', () => {
  process.stdout.write(JSON.stringify({ msg: 'relay stopped' }) + '\n')
  process.exit(0)
})
