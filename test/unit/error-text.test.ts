// core/error-text.ts and its users that carry a failure across a boundary: whatever user code throws
// (a string, null, an object without toString, a getter that throws) becomes one bounded line of
// text, and the worker IPC and the plugin option/port checks report it instead of failing themselves.
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { asError, errorText } from '../../core/error-text.js'
import { declaredPorts, pluginOptions } from '../../core/hooks/plugin-options.js'
import type { Plugin } from '../../core/hooks/types.js'
import { serializeError } from '../../core/workers/ipc.js'

describe('errorText', () => {
  it('an Error gives the first line of its message', () => {
    expect(errorText(new Error('connect ECONNREFUSED 127.0.0.1:5432\n    at TCPConnectWrap'))).toBe('connect ECONNREFUSED 127.0.0.1:5432')
    expect(errorText(new TypeError(''))).toBe('TypeError')
    expect(errorText({ message: 'an error-like object' })).toBe('an error-like object')
  })

  it('anything else that can be thrown says what it was', () => {
    expect(errorText('backend down')).toBe('backend down')
    expect(errorText('')).toBe("'' (an empty string, not an Error)")
    expect(errorText(null)).toBe('null (not an Error)')
    expect(errorText(undefined)).toBe('undefined (not an Error)')
    expect(errorText(42)).toBe('42 (not an Error)')
    expect(errorText(Symbol('s'))).toBe('Symbol(s) (not an Error)')
    expect(errorText(Object.create(null))).toBe('{} (not an Error)')
    expect(errorText({ code: 'E1', message: 7 })).toBe('{"code":"E1","message":7} (not an Error)')
    expect(errorText({ toString: () => 'custom text' })).toBe('custom text')
  })

  it('never throws itself, and is bounded', () => {
    const hostile = { get message() { throw new Error('no') } }
    expect(errorText(hostile)).toBe('a thrown value that cannot be read')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect(errorText(Object.assign(Object.create(null), cyclic))).toBe('object (not an Error)')
    expect(errorText('x'.repeat(100_000))).toHaveLength(501)
  })

  it('asError keeps an Error and wraps anything else with the value as its cause', () => {
    const e = new Error('kept')
    expect(asError(e)).toBe(e)
    const wrapped = asError(null)
    expect(wrapped).toBeInstanceOf(Error)
    expect(wrapped.message).toBe('null (not an Error)')
    expect(wrapped.cause).toBe(null)
  })
})

describe('a worker call whose handler throws no Error', () => {
  it('is serialized with its text instead of throwing while answering', () => {
    expect(serializeError(Object.create(null)).message).toBe('{} (not an Error)')
    expect(serializeError('busy')).toMatchObject({ message: 'busy' })
    expect(serializeError(Object.assign(new Error('refused'), { responseCode: 550 }))).toMatchObject({ message: 'refused', responseCode: 550 })
  })
})

describe("a plugin's options and ports, run as its own code", () => {
  const plugin = (p: Partial<Plugin>) => ({ name: 'p', hooks: {}, ...p }) as Plugin
  const fails = (f: () => unknown) => {
    try {
      f()
    } catch (err) {
      return String((err as Error).message)
    }
    throw new Error('did not fail')
  }

  it('options through the schema, defaults filled in; failing or throwing schemas are named', () => {
    const options = z.object({ port: z.number().default(2526) })
    expect(pluginOptions(plugin({ options }), {}, 'plugins[0] (p)')).toEqual({ port: 2526 })
    expect(fails(() => pluginOptions(plugin({ options }), { port: 'x' }, 'plugins[0] (p)'))).toContain('plugins[0] (p) options.port')
    const refine = z.object({}).refine(() => {
      throw null
    })
    expect(fails(() => pluginOptions(plugin({ options: refine }), {}, 'plugins[0] (p)'))).toContain("plugins[0] (p): options: the plugin's schema threw: null (not an Error) [RELAY_ERR_PLUGIN_OPTIONS]")
  })

  it('ports: a list of { host, port, key }, anything else named with RELAY_ERR_PLUGIN_PORTS', () => {
    const ok = [{ host: '127.0.0.1', port: 0, key: 'port' }]
    expect(declaredPorts(plugin({ ports: () => ok }), {}, 'plugins[0] (p)')).toEqual(ok)
    expect(declaredPorts(plugin({}), {}, 'plugins[0] (p)')).toEqual([])
    for (const [ports, text] of [
      [() => { throw 'no' }, 'ports(options) threw: no'],
      [() => undefined, 'ports(options) returned undefined'],
      [() => ({ host: 'x', port: 1, key: 'k' }), 'ports(options) returned object'],
      [() => [ok[0], { host: 'h', port: 70_000, key: 'k' }], 'ports(options)[1] is not'],
      [() => [{ host: 'h', port: 1.5, key: 'k' }], 'ports(options)[0] is not'],
      [() => [{ host: 'h', port: 25 }], 'ports(options)[0] is not'],
    ] as const) {
      const message = fails(() => declaredPorts(plugin({ ports: ports as Plugin['ports'] }), {}, 'plugins[0] (p)'))
      expect(message).toContain(`plugins[0] (p): ${text}`)
      expect(message).toContain('[RELAY_ERR_PLUGIN_PORTS]')
    }
  })
})
