// The whole relay's client counts under config `workers` (core/workers/client-counts.ts, kept by the
// primary) as an SMTP worker moves them (core/smtp/session-limits.ts). The primary reads each worker's
// messages in turn, so another worker's arrival can land between any two of them: at every such
// point the counts must hold every connection the worker has (the end to end flood is in
// test/e2e/client-connections.test.ts; there this point is met only now and then).
import { describe, expect, it } from 'vitest'
import pino from 'pino'
import type { SMTPServerSession } from 'smtp-server'
import { ClientCounts } from '../../core/workers/client-counts.js'
import { SessionLimits } from '../../core/smtp/session-limits.js'

const LISTENER = 'clients 127.0.0.1:25'
const config = () => ({ hostname: 'relay.test', smtp: { maxClients: 8, maxConnectionsPerClient: 5, clientIpv6Prefix: 64, maxTlsHandshakeFailures: 0, tlsHandshakeFailurePeriod: 60 } })

describe('ClientCounts with a worker’s SessionLimits', () => {
  it('a connection that becomes a session is never counted as neither: another worker’s arrival from its client at the limit is refused at every message', async () => {
    const primary = new ClientCounts()
    const gaps: string[] = []
    // Worker 2's arrival from the same client, tried after each of worker 1's messages (undone if admitted).
    let probing = false
    const probe = (after: string) => {
      if (!probing || primary.admit(2, [[LISTENER, 8], ['arriving 127.0.0.7', 5, '127.0.0.7']]) >= 0) return
      gaps.push(after)
      primary.release(2, LISTENER)
      primary.release(2, 'arriving 127.0.0.7')
    }
    const limits = new SessionLimits(pino({ level: 'silent' }))
    limits.shared = {
      admit: async (counts, release) => {
        const full = primary.admit(1, counts, release)
        probe(`admit ${counts.map(([k]) => k).join(', ')}`)
        return full
      },
      release: (...keys) => {
        for (const key of keys) primary.release(1, key)
        probe(`release ${keys.join(', ')}`)
      },
      processes: 2,
    }
    const checks = limits.clients(config, () => false, '127.0.0.1:25')
    const sessions = ['s1', 's2', 's3', 's4', 's5'].map((id) => ({ id }) as SMTPServerSession)
    for (const { id } of sessions) expect(await checks.arrive(id, '127.0.0.7')).toBeUndefined()
    // The sixth is refused on its way in, nothing counted for it.
    expect(await checks.arrive('s6', '127.0.0.7')).toMatchObject({ code: 421, rule: 'core:max-connections-per-client' })
    probing = true
    for (const session of sessions) expect(await limits.admit(session, '127.0.0.7', 5, 'relay.test')).toBeUndefined()
    probing = false
    expect(gaps).toEqual([])
    // Five open: three more clients fill smtp.maxClients (8), a fourth is refused.
    for (const id of ['o1', 'o2', 'o3']) expect(await checks.arrive(id, '127.0.0.6')).toBeUndefined()
    expect(await checks.arrive('o4', '127.0.0.6')).toMatchObject({ code: 421, rule: 'core:max-clients' })
    // One closes: its slot and its client's count go.
    checks.settle('s1', true)
    limits.release(sessions[0]!)
    expect(await checks.arrive('s7', '127.0.0.7')).toBeUndefined()
    expect(await checks.arrive('o5', '127.0.0.6')).toMatchObject({ rule: 'core:max-clients' })
  })
})
