// Config generations: a parsed config is deep-frozen, the restart-only settings come from the
// schema, and a reload plan keeps their running values in a new frozen config.
import { describe, expect, it } from 'vitest'
import { parseConfig } from '../../core/config/load.js'
import { RESTART_ONLY, planReload } from '../../core/config/reload-plan.js'
import type { RelayConfig } from '../../core/config/schema.js'
import type { Plugin } from '../../core/hooks/types.js'

const base = { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: '/tmp/relay-unit' }
const parse = (extra: Record<string, unknown> = {}): RelayConfig => parseConfig({ ...base, ...extra }, '/tmp', '/tmp/relay.config.json')

describe('parsed config', () => {
  it('is frozen all the way down: assigning throws (ESM code is strict)', () => {
    const config = parse({ localDomains: ['example.test'] })
    expect(Object.isFrozen(config)).toBe(true)
    expect(() => {
      ;(config as { hostname: string }).hostname = 'other'
    }).toThrow(TypeError)
    expect(() => {
      ;(config.smtp as { maxRecipients: number }).maxRecipients = 1
    }).toThrow(TypeError)
    expect(() => (config.localDomains as string[]).push('x.test')).toThrow(TypeError)
    expect(() => {
      ;(config.listen[0] as { port: number }).port = 25
    }).toThrow(TypeError)
    expect(Object.isFrozen(config.delivery.throttle.backoff)).toBe(true)
  })

  it('resolves dataDir against the config directory before freezing', () => {
    expect(parseConfig({ ...base, dataDir: 'data' }, '/srv/relay').dataDir).toBe('/srv/relay/data')
  })

  it('leaves plugin objects given inline mutable; their options are frozen', () => {
    const plugin = { name: 'inline', hooks: {} } as Plugin
    const options = { list: ['a'] }
    const config = parse({ plugins: [plugin, [plugin, options]] })
    expect(Object.isFrozen(config.plugins)).toBe(true)
    expect(Object.isFrozen(config.plugins[1])).toBe(true)
    expect(Object.isFrozen(plugin)).toBe(false)
    expect(Object.isFrozen(options.list)).toBe(true)
  })
})

describe('local domains', () => {
  it('are kept in their ASCII form, an internationalized one as A-labels (addresses are compared so)', () => {
    const c = parseConfig({ hostname: 'relay.test', localDomains: ['Bücher.Test', 'xn--mnchen-3ya.test', 'Example.COM.'] }, process.cwd())
    expect(c.localDomains).toEqual(['xn--bcher-kva.test', 'xn--mnchen-3ya.test', 'example.com'])
  })
})

describe('restart-only settings', () => {
  it('are the fields marked in the schema', () => {
    expect([...RESTART_ONLY].sort()).toEqual(
      [
        'listen', 'dataDir', 'queue', 'dns', 'hostname', 'hookTimeout',
        'smtp.maxMessageSize', 'smtp.maxClients', 'smtp.socketTimeout', 'smtp.reverseLookup', 'smtp.greetingDelay',
        'smtp.maxErrors', 'smtp.maxUnauthenticatedCommands', 'smtp.firstCommandTimeout', 'smtp.stressTimeout', 'smtp.minDataRate',
        'delivery.concurrency', 'delivery.reuse', 'delivery.throttle', 'delivery.tlsCa', 'delivery.mtaSts', 'delivery.lease',
        'tls.minVersion', 'log.format', 'workers',
      ].sort(),
    )
  })
})

describe('planReload', () => {
  const tls = { cert: '/c.pem', key: '/k.pem' }

  it('takes live settings from the new config and keeps restart-only ones running, in a new frozen config', () => {
    const running = parse({ localDomains: ['a.test'] })
    const next = parse({ hostname: 'new.test', localDomains: ['b.test'], smtp: { maxRecipients: 5, maxClients: 7 }, delivery: { concurrency: { global: 3 } } })
    const plan = planReload(running, next)
    expect(plan.changed).toEqual(['delivery.concurrency', 'hostname', 'localDomains', 'smtp.maxClients', 'smtp.maxRecipients'])
    expect(plan.restartNeeded).toEqual(['hostname', 'smtp.maxClients', 'delivery.concurrency'])
    expect(plan.effective).not.toBe(running)
    expect(plan.effective).not.toBe(next)
    expect(plan.effective.hostname).toBe('relay.test')
    expect(plan.effective.localDomains).toEqual(['b.test'])
    expect(plan.effective.smtp.maxRecipients).toBe(5)
    expect(plan.effective.smtp.maxClients).toBe(running.smtp.maxClients)
    expect(plan.effective.delivery.concurrency).toBe(running.delivery.concurrency)
    expect(Object.isFrozen(plan.effective)).toBe(true)
    expect(Object.isFrozen(plan.effective.smtp)).toBe(true)
    // Neither input is touched.
    expect(next.smtp.maxClients).toBe(7)
    expect(running.localDomains).toEqual(['a.test'])
  })

  it('reports nothing when nothing changed', () => {
    const plan = planReload(parse(), parse())
    expect(plan).toMatchObject({ changed: [], restartNeeded: [] })
  })

  it('TLS turned on or off keeps the running state; a new certificate path applies', () => {
    const off = planReload(parse(), parse({ tls }))
    expect(off.restartNeeded).toEqual(['tls'])
    expect(off.effective.tls).toBeUndefined()
    // tls.minVersion is not named on its own when the whole section comes or goes.
    expect(planReload(parse({ tls }), parse()).restartNeeded).toEqual(['tls'])

    const moved = planReload(parse({ tls }), parse({ tls: { cert: '/c2.pem', key: '/k2.pem', minVersion: 'TLSv1.3' } }))
    expect(moved.changed).toEqual(['tls.cert', 'tls.key', 'tls.minVersion'])
    expect(moved.restartNeeded).toEqual(['tls.minVersion'])
    expect(moved.effective.tls).toMatchObject({ cert: '/c2.pem', key: '/k2.pem', minVersion: 'TLSv1.2' })
  })

  it('an optional restart-only setting added or removed keeps the running value', () => {
    const added = planReload(parse(), parse({ delivery: { tlsCa: '/ca.pem' } }))
    expect(added.restartNeeded).toEqual(['delivery.tlsCa'])
    expect(added.effective.delivery.tlsCa).toBeUndefined()
    const removed = planReload(parse({ delivery: { tlsCa: '/ca.pem' } }), parse())
    expect(removed.restartNeeded).toEqual(['delivery.tlsCa'])
    expect(removed.effective.delivery.tlsCa).toBe('/ca.pem')
  })

  it('a marked setting deeper than two levels is compared itself', () => {
    const running = parse()
    const next = parse({ delivery: { retry: { base: '1s' } } })
    expect(planReload(running, next, ['delivery.retry.max']).restartNeeded).toEqual([])
    const plan = planReload(running, next, ['delivery.retry.base'])
    expect(plan.restartNeeded).toEqual(['delivery.retry.base'])
    expect(plan.effective.delivery.retry.base).toBe(running.delivery.retry.base)
    expect(plan.effective.delivery.retry.factor).toBe(next.delivery.retry.factor)
  })
})
