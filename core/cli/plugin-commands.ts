// CLI verbs that plugins declare (`commands` on the plugin object): the bundled plugins' and those
// of the plugins in the config, third-party ones included. Loaded only when the verb is not one of
// the core's own (or for --help), so `relay start` imports no plugin twice.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Command } from 'commander'
import { loadConfig, requireConfig } from '../config/load.js'
import { loadPlugins, resolvePlugin, teardownAll } from '../hooks/load-plugins.js'
import { createResolver } from '../dns/resolver.js'
import pino from 'pino'
import { openQueue, SQLITE_QUEUE_FILE } from '../queue/open.js'
import { Spool } from '../queue/spool.js'
import { queueOperations } from '../relay-operations.js'
import { livePid } from '../pid-file.js'
import type { Plugin } from '../hooks/types.js'

const BUNDLED_DIR = fileURLToPath(new URL('../../plugins/', import.meta.url))

/** The value of -c/--config in argv, if given. */
function configArg(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '-c' || a === '--config') return argv[i + 1]
    if (a.startsWith('--config=')) return a.slice('--config='.length)
  }
  return undefined
}

async function bundledPlugins(): Promise<Plugin[]> {
  const names = fs.existsSync(BUNDLED_DIR) ? fs.readdirSync(BUNDLED_DIR).sort() : []
  const out: Plugin[] = []
  for (const name of names) {
    if (!['index.js', 'index.ts'].some((f) => fs.existsSync(path.join(BUNDLED_DIR, name, f)))) continue
    try {
      out.push(await resolvePlugin(name, BUNDLED_DIR, name))
    } catch (err) {
      process.stderr.write(`relay: the commands of plugin ${name} are unavailable: ${(err as Error).message}\n`)
    }
  }
  return out
}

/** The config's plugins (those not given inline as objects are imported, not set up). */
async function configuredPlugins(argv: string[]): Promise<Plugin[]> {
  let config
  try {
    config = await loadConfig(configArg(argv))
  } catch {
    return [] // no usable config: the core's verbs still work, and they report the config error
  }
  const out: Plugin[] = []
  for (const [i, entry] of config.plugins.entries()) {
    const ref = Array.isArray(entry) ? entry[0] : entry
    try {
      out.push(typeof ref === 'string' ? await resolvePlugin(ref, config.configDir, `plugins[${i}]`, config.configFile) : (ref as Plugin))
    } catch {
      // `relay check-config` / `relay start` name what is wrong with it
    }
  }
  return out
}

/** Adds every plugin's verbs to `program`; one plugin's broken verbs never take the CLI down. */
export async function registerPluginCommands(program: Command, argv: string[]): Promise<void> {
  const seen = new Set<string>()
  for (const plugin of [...(await bundledPlugins()), ...(await configuredPlugins(argv))]) {
    if (!plugin.commands || seen.has(plugin.name)) continue
    seen.add(plugin.name)
    try {
      plugin.commands(program, { loadConfig, loadPlugins: pluginsForCommand, openQueue: queueForCommand })
    } catch (err) {
      process.stderr.write(`relay: the commands of plugin ${plugin.name} are unavailable: ${(err as Error).message}\n`)
    }
  }
}

/** CommandEnv.loadPlugins: the config's plugins set up in 'check' mode. */
async function pluginsForCommand(configFile?: string) {
  const config = await loadConfig(configFile)
  const logger = pino({ level: 'silent' })
  const loaded = await loadPlugins({ config, logger, resolver: createResolver(config), mode: 'check' })
  return { plugins: loaded.map(({ plugin, ctx }) => ({ plugin, ctx })), close: () => teardownAll(loaded, logger) }
}

/**
 * CommandEnv.openQueue: the configured queue, for verbs that work on it directly. No config file
 * found is a ConfigError (exit 2) that says where it looked: the defaults' data directory is
 * wherever the command runs, and an empty queue there would be believed.
 */
async function queueForCommand(configFile?: string, opts: { create?: boolean } = {}) {
  const config = await requireConfig(configFile)
  if (opts.create === false && config.queue.driver === 'sqlite' && !fs.existsSync(path.join(config.dataDir, SQLITE_QUEUE_FILE))) {
    // A data directory no relay has used yet: nothing in it, and looking creates nothing.
    throw Object.assign(new Error(`no queue in ${config.dataDir}`), { kind: 'not-found' as const })
  }
  const log = pino({ level: 'silent' })
  const queue = await openQueue(config, { spool: new Spool(config.dataDir), log })
  return {
    queue: queueOperations({ queue, log, config: () => config }),
    config: { dataDir: config.dataDir, configFile: config.configFile },
    running: livePid(config.dataDir),
    close: () => queue.close(),
  }
}
