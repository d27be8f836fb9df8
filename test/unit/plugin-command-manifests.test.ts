// plugins/<name>/commands.json: the top-level CLI verbs of a bundled plugin, read by
// core/cli/plugin-commands.ts so a verb imports only the plugin that declares it. Each manifest
// must name exactly the verbs its plugin's `commands` registers (no manifest: none), else a verb
// would be missing from the CLI or import the wrong plugin.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { describe, expect, it } from 'vitest'
import { bundledFor, bundledVerbManifests, isTopLevelHelp, type VerbHelp } from '../../core/cli/plugin-commands.js'
import { resolvePlugin } from '../../core/hooks/find-plugin.js'
import type { CommandEnv } from '../../core/hooks/types.js'

const PLUGINS_DIR = fileURLToPath(new URL('../../plugins/', import.meta.url))
const names = fs.readdirSync(PLUGINS_DIR).filter((name) => fs.existsSync(path.join(PLUGINS_DIR, name, 'index.ts'))).sort()

// commands() only registers verbs; nothing here is called.
const env = new Proxy({}, { get: () => () => { throw new Error('not called while registering') } }) as unknown as CommandEnv

describe('bundled plugin command manifests', () => {
  it.each(names)('%s: commands.json names the verbs its commands() registers, each as the top-level help shows it', async (name) => {
    const plugin = await resolvePlugin(name, PLUGINS_DIR, name)
    const program = new Command('relay')
    plugin.commands?.(program, env)
    const help = program.createHelp()
    const registered = program.commands.map((c) => ({ name: c.name(), term: help.subcommandTerm(c), description: help.subcommandDescription(c) }))
    const file = path.join(PLUGINS_DIR, name, 'commands.json')
    const declared = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { verbs: VerbHelp[] }).verbs : []
    expect(declared).toEqual(registered)
  })

  it('plugin-commands reads the same manifests', () => {
    const manifests = bundledVerbManifests()
    expect(manifests).toBeDefined()
    for (const name of names) {
      const file = path.join(PLUGINS_DIR, name, 'commands.json')
      const declared = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { verbs: VerbHelp[] }).verbs : []
      expect(manifests!.get(name), name).toEqual(declared)
    }
  })

  it('a verb and its help import only the plugin that declares it; an unknown verb imports all; the top-level help none', () => {
    const declaring = (verb: string) => names.filter((name) => bundledVerbManifests()!.get(name)!.some((v) => v.name === verb))
    expect(declaring('queue')).toEqual(['admin'])
    for (const argv of [['queue', 'list'], ['queue', '--help'], ['queue', 'list', '-h'], ['help', 'queue']]) expect(bundledFor(argv), argv.join(' ')).toEqual(['admin'])
    for (const argv of [['help', '--all'], ['no-such-verb'], ['no-such-verb', '--help']]) expect(bundledFor(argv), argv.join(' ')).toEqual(names)
    for (const argv of [[], ['--help'], ['-h'], ['help'], ['--config', 'x.json', '--help'], ['-c', 'x.json'], ['--config=x.json', 'help']]) expect(isTopLevelHelp(argv), argv.join(' ')).toBe(true)
    for (const argv of [['queue'], ['--config', 'x.json', 'queue', 'list'], ['help', 'queue'], ['-h', 'queue'], ['help', '--all']]) expect(isTopLevelHelp(argv), argv.join(' ')).toBe(false)
  })
})
