// A scripted SMTP server on one loopback address (a smarthost or MX that misbehaves on purpose):
// its EHLO keywords (before and after STARTTLS), how it answers STARTTLS, AUTH, MAIL, RCPT, DATA
// and the final dot. Every line it reads is recorded ('TLS ' in front once inside TLS).
import net from 'node:net'
import tls from 'node:tls'

export interface Script {
  /** The EHLO reply's lines after the 250 (the first is the server's name). */
  ehlo: string[]
  /** The EHLO reply inside TLS (default: `ehlo`). */
  ehloTls?: string[]
  /** TLS key and certificate (PEM) for STARTTLS; without them STARTTLS gets 454. */
  tls?: { key: Buffer; cert: Buffer }
  /** 220 to STARTTLS, then plain text where the TLS handshake should be: in the same packet ('garbage') or a moment later ('garbage-later'). */
  starttls?: 'garbage' | 'garbage-later'
  /** Reply to each AUTH command line and each line of an AUTH exchange (default 235). */
  auth?: (line: string) => string
  mail?: (line: string) => string
  rcpt?: (line: string) => string
  data?: string
  dot?: string
}

export interface ScriptedServer {
  port: number
  /** Every line received, per connection. */
  sessions: string[][]
  close(): Promise<void>
}

export async function startScripted(host: string, script: Script, port = 0): Promise<ScriptedServer> {
  const sessions: string[][] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((plain) => {
    const lines: string[] = []
    sessions.push(lines)
    sockets.add(plain)
    plain.on('close', () => sockets.delete(plain))
    plain.on('error', () => undefined)
    let sock: net.Socket = plain
    let secure = false
    let buf = ''
    let inData = false
    let inAuth = false
    const w = (x: string) => sock.write(`${x}\r\n`)
    const onLine = (line: string) => {
      lines.push(`${secure ? 'TLS ' : ''}${line}`)
      if (inData) {
        if (line === '.') {
          inData = false
          w(script.dot ?? '250 2.0.0 queued')
        }
        return
      }
      if (inAuth) {
        const r = script.auth ? script.auth(line) : '235 2.7.0 ok'
        inAuth = r.startsWith('334')
        return w(r)
      }
      const verb = line.split(' ')[0]!.toUpperCase()
      if (verb === 'EHLO' || verb === 'LHLO') {
        const keywords = secure && script.ehloTls ? script.ehloTls : script.ehlo
        keywords.forEach((k, i) => w(`250${i === keywords.length - 1 ? ' ' : '-'}${k}`))
      } else if (verb === 'STARTTLS' && script.starttls) {
        if (script.starttls === 'garbage') return sock.end('220 2.0.0 ready\r\nthis is not TLS\r\n')
        w('220 2.0.0 ready')
        setTimeout(() => sock.end('this is not TLS\r\n'), 100)
      } else if (verb === 'STARTTLS' && script.tls && !secure) {
        w('220 2.0.0 ready')
        plain.removeAllListeners('data')
        const t = new tls.TLSSocket(plain, { isServer: true, ...script.tls })
        t.on('error', () => undefined)
        t.on('data', onData)
        sock = t
        secure = true
        buf = ''
      } else if (verb === 'STARTTLS') w('454 4.7.0 TLS not available')
      else if (verb === 'AUTH') {
        const r = script.auth ? script.auth(line) : '235 2.7.0 ok'
        inAuth = r.startsWith('334')
        w(r)
      } else if (verb === 'MAIL') w(script.mail?.(line) ?? '250 2.1.0 ok')
      else if (verb === 'RCPT') w(script.rcpt?.(line) ?? '250 2.1.5 ok')
      else if (verb === 'DATA') {
        const r = script.data ?? '354 go ahead'
        inData = r.startsWith('354')
        w(r)
      } else if (verb === 'RSET' || verb === 'NOOP') w('250 2.0.0 ok')
      else if (verb === 'QUIT') {
        w('221 2.0.0 bye')
        sock.end()
      } else w('502 5.5.2 command not recognized')
    }
    const onData = (d: Buffer) => {
      buf += d.toString('latin1')
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 2)
        onLine(line)
      }
    }
    plain.on('data', onData)
    w(`220 ${script.ehlo[0] ?? 'scripted.test'} ESMTP`)
  })
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    sessions,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
