// LMTP answers the message once per recipient (RFC 2033 §4.2). When the connection is lost (or the
// store stalls) part way through those replies, each recipient keeps what the store already said:
// a 250 is a delivery (retrying it would put the message in the mailbox again), a refusal at RCPT
// is still a refusal; only recipients without a reply are deferred and tried again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import net from 'node:net'
import { listenRaw } from '../harness/raw-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

type Mode = 'drop' | 'stall' | 'odd'
let relay: RelayProcess
const servers: net.Server[] = []
/** What each store wrote into its mailboxes (the recipients it answered 250 for), per domain. */
const mailboxes: Record<string, string[]> = { 'drop.test': [], 'stall.test': [], 'odd.test': [] }

/**
 * A scripted LMTP store: after the first per-recipient reply it drops the connection, goes silent,
 * or (a moment later) answers with a code outside 2xx-5xx (RFC 5321 §4.2.1: a protocol error).
 */
function store(domain: string, mode: Mode) {
  return (sock: net.Socket) => {
    sock.write('220 store LMTP ready\r\n')
    let buffered = ''
    let inData = false
    let rcpts: string[] = []
    sock.on('data', (chunk) => {
      buffered += chunk.toString('latin1')
      for (let nl = buffered.indexOf('\r\n'); nl >= 0; nl = buffered.indexOf('\r\n')) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 2)
        if (inData) {
          if (line !== '.') continue
          inData = false
          for (const [i, r] of rcpts.entries()) {
            if (i === 1 && mode === 'drop') return void sock.destroy()
            if (i === 1 && mode === 'odd') return void setTimeout(() => sock.write('600 6.0.0 what\r\n'), 100)
            if (i === 1) return // stalls: the rest never answered
            mailboxes[domain]!.push(r)
            sock.write(`250 2.0.0 <${r}> delivered\r\n`)
          }
          continue
        }
        const verb = line.slice(0, 4).toUpperCase()
        if (verb === 'LHLO') sock.write('250-store\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n')
        else if (verb === 'MAIL') {
          rcpts = []
          sock.write('250 2.1.0 ok\r\n')
        } else if (verb === 'RCPT') {
          const a = /<([^>]*)>/.exec(line)![1]!
          if (a.startsWith('unknown')) sock.write('550 5.1.1 no such mailbox\r\n')
          else {
            rcpts.push(a)
            sock.write('250 2.1.5 ok\r\n')
          }
        } else if (verb === 'DATA') {
          inData = true
          sock.write('354 go\r\n')
        } else if (verb === 'RSET') sock.write('250 ok\r\n')
        else if (verb === 'QUIT') sock.end('221 bye\r\n')
        else sock.write('502 5.5.1 no\r\n')
      }
    })
  }
}

beforeAll(async () => {
  const dropPort = await listenRaw(servers, '127.0.6.1', 0, store('drop.test', 'drop'))
  const stallPort = await listenRaw(servers, '127.0.6.2', 0, store('stall.test', 'stall'))
  const oddPort = await listenRaw(servers, '127.0.6.3', 0, store('odd.test', 'odd'))
  relay = await startRelay({
    config: {
      delivery: { commandTimeout: '2s', dataDoneTimeout: '2s', retry: { base: '1s', factor: 1, max: '1s' }, delayWarning: false, mtaSts: { enabled: false } },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        ['routing', { routes: [
          { name: 'drop', match: { domain: 'drop.test' }, kind: 'lmtp', host: `127.0.6.1:${dropPort}` },
          { name: 'stall', match: { domain: 'stall.test' }, kind: 'lmtp', host: `127.0.6.2:${stallPort}` },
          { name: 'odd', match: { domain: 'odd.test' }, kind: 'lmtp', host: `127.0.6.3:${oddPort}` },
        ] }],
      ],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  for (const s of servers) s.close()
})

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\nbody\r\n`
const outcomes = (recipient: string) => relay.logs.filter((l: LogLine) => (l.event === 'delivered' || l.event === 'deferred' || l.event === 'bounced') && l.recipient === recipient)

describe('an LMTP store that fails part way through its per-recipient replies', () => {
  for (const [domain, how] of [['drop.test', 'drops the connection'], ['stall.test', 'stops answering'], ['odd.test', 'answers "600 6.0.0 what"']] as const) {
    it(`${how}: the recipient it answered 250 for is delivered once, the one refused at RCPT bounces, the rest are deferred and delivered at the retry`, async () => {
      await sendMail(relay.port, { from: 'a@sender.test', to: [`first@${domain}`, `unknown@${domain}`, `second@${domain}`], data: msg(`partial ${domain}`) })
      const first = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === `first@${domain}`, 10_000)
      expect(first.response).toMatch(/^250 2\.0\.0 <first@/)
      const unknown = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === `unknown@${domain}`, 10_000)
      expect(unknown.response).toMatch(/^550 5\.1\.1/)
      await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === `second@${domain}`, 10_000)
      // The retry (a second later) goes to `second` only, the store's first recipient of that transaction.
      await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === `second@${domain}`, 15_000)
      expect(mailboxes[domain]!.sort()).toEqual([`first@${domain}`, `second@${domain}`])
      expect(outcomes(`first@${domain}`).map((l) => l.event)).toEqual(['delivered'])
      // After a protocol error only the deliveries are taken as said; a refusal is asked for again.
      expect(outcomes(`unknown@${domain}`).map((l) => l.event)).toEqual(domain === 'odd.test' ? ['deferred', 'bounced'] : ['bounced'])
    }, 40_000)
  }
})
