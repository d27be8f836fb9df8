// core/hooks/plugin-shape.ts: what a plugin object must look like. Each wrong part is named with
// its code (a typo'd key or hook, a part of the wrong kind); every bundled plugin passes.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { pluginShapeProblems } from '../../core/hooks/plugin-shape.js'
import type { Plugin } from '../../core/hooks/types.js'

const problems = (p: unknown) => pluginShapeProblems(p as Plugin).map((x) => `${x.code}: ${x.message}`)

describe('pluginShapeProblems', () => {
  it('a well-formed plugin has none', () => {
    expect(problems({ name: 'ok', options: z.object({ a: z.string() }), setup: () => 1, teardown() {}, hooks: { rcpt() {}, delivered: undefined }, ports: () => [], keepOnReload: true, commands() {}, doctor: async () => [] })).toEqual([])
  })

  it('names every wrong part, each with its code', () => {
    expect(problems({ name: 'x', hooks: { rpct() {}, rcpt: 'accept' }, setpu() {}, hook: {} })).toEqual([
      expect.stringMatching(/^RELAY_ERR_UNKNOWN_PLUGIN_KEY: unknown key 'setpu' \(a plugin has: name, options, setup,/),
      expect.stringMatching(/^RELAY_ERR_UNKNOWN_PLUGIN_KEY: unknown key 'hook' /),
      expect.stringMatching(/^RELAY_ERR_UNKNOWN_HOOK: unknown hook 'rpct' /),
      'RELAY_ERR_PLUGIN_SHAPE: hooks.rcpt is string, not a function',
    ])
    expect(problems({ name: '', hooks: {} })).toEqual(['RELAY_ERR_PLUGIN_SHAPE: name must be a non-empty string'])
    expect(problems({ name: 'x', options: { port: 1 }, hooks: {} })).toEqual([expect.stringMatching(/^RELAY_ERR_PLUGIN_SHAPE: options is object, not a zod schema/)])
    expect(problems({ name: 'x', options: { port: 1 } })).toContain('RELAY_ERR_PLUGIN_SHAPE: has no hooks, setup, commands or doctor: it would do nothing')
    expect(problems({ name: 'x', hooks: new Map() })).toEqual([expect.stringMatching(/^RELAY_ERR_PLUGIN_SHAPE: hooks is a Map, not a plain object of hook functions/)])
    expect(problems({ name: 'x', hooks: Object.create(null) })).toEqual([])
    expect(problems({ name: ' ', hooks: {} })).toEqual(['RELAY_ERR_PLUGIN_SHAPE: name must be a non-empty string'])
    expect(problems({ name: 'x', setup: 'x', teardown: 5, ports: [25], commands: 'queue', doctor: null, keepOnReload: 'yes' })).toEqual([
      'RELAY_ERR_PLUGIN_SHAPE: setup is string, not a function',
      'RELAY_ERR_PLUGIN_SHAPE: teardown is number, not a function',
      'RELAY_ERR_PLUGIN_SHAPE: ports is a list, not a function',
      'RELAY_ERR_PLUGIN_SHAPE: commands is string, not a function',
      'RELAY_ERR_PLUGIN_SHAPE: doctor is null, not a function',
      'RELAY_ERR_PLUGIN_SHAPE: keepOnReload is string, not true or false',
    ])
    expect(problems({ name: 'x', hooks: [() => undefined] })).toEqual(['RELAY_ERR_PLUGIN_SHAPE: hooks is a list, not an object of hook functions'])
  })

  it('every bundled plugin passes', async () => {
    const root = path.resolve(import.meta.dirname, '../../plugins')
    const names = fs.readdirSync(root).filter((d) => fs.existsSync(path.join(root, d, 'index.ts')))
    expect(names.length).toBeGreaterThan(10)
    for (const name of names) {
      const plugin = (await import(path.join(root, name, 'index.ts'))).default
      expect(problems(plugin), name).toEqual([])
    }
  })
})
