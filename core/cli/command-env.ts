// What a plugin's CLI verb gets to work with when it runs (CommandEnv.loadPlugins and openQueue): the
// config's plugins set up in 'check' mode, and the queue opened on the data directory. Imported only
// when a verb asks for them, so the help and the verbs that talk to a running relay load no queue,
// logger or plugin set-up code.
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import { loadConfig, requireConfig } from '../config/load.js'
import type { RelayConfig } from '../config/schema.js'
import { createResolver } from '../dns/resolver.js'
import { HookBus } from '../hooks/bus.js'
import { loadPlugins, teardownAll } from '../hooks/load-plugins.js'
import { handlesScanSignal, livePid, noRelayRuns } from '../pid-file.js'
import { openQueue, SQLITE_QUEUE_FILE } from '../queue/open.js'
import { Spool } from '../queue/spool.js'
import { queueOperations } from '../relay-operations.js'

/** CommandEnv.loadPlugins: the config's plugins set up in 'check' mode. */
export async function pluginsForCommand(configFile?: string) {
  const config = await loadConfig(configFile)
  const logger = pino({ level: 'silent' })
  const loaded = await loadPlugins({ config, logger, resolver: createResolver(config), mode: 'check' })
  return { plugins: loaded.map(({ plugin, ctx }) => ({ plugin, ctx })), close: () => teardownAll(loaded, logger) }
}

/**
 * Whether the SQLite queue file exists. Only "no such file" is no queue: a data directory this user
 * may not read (the relay's own, 0750) hid a full queue behind "queue is empty", exit 0.
 */
function queueFileExists(dataDir: string): boolean {
  const file = path.join(dataDir, SQLITE_QUEUE_FILE)
  try {
    fs.accessSync(file, fs.constants.R_OK)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return false
    const why = code === 'EACCES' || code === 'EPERM' ? `permission denied (${code}); run it as the relay's user, or with sudo` : (err as Error).message
    throw Object.assign(new Error(`cannot read the queue in ${dataDir}: ${why}`), { kind: 'no-access' as const })
  }
}

/**
 * CommandEnv.openQueue: the configured queue, for verbs that work on it directly. No config file
 * found is a ConfigError (exit 2) that says where it looked: the defaults' data directory is
 * wherever the command runs, and an empty queue there would be believed.
 */
export async function queueForCommand(configFile?: string, opts: { create?: boolean } = {}) {
  const config = await requireConfig(configFile)
  if (config.queue.driver === 'sqlite' && !queueFileExists(config.dataDir)) {
    const stat = fs.statSync(config.dataDir, { throwIfNoEntry: false })
    if (stat && !stat.isDirectory()) throw Object.assign(new Error(`${config.dataDir} (config dataDir) is not a directory`), { kind: 'no-access' as const })
    // A data directory no relay has used yet: nothing in it, and looking creates nothing. Said on
    // stderr all the same: a misspelt dataDir looks just like it, and its empty answer would be believed.
    if (opts.create === false) {
      process.stderr.write(`note: no queue in ${config.dataDir} (config dataDir): no relay has run with this data directory yet\n`)
      throw Object.assign(new Error(`no queue in ${config.dataDir}`), { kind: 'not-found' as const })
    }
    process.stderr.write(`note: there was no queue in ${config.dataDir} (config dataDir): a new one is made there, which a relay started with this config will use\n`)
  }
  const log = pino({ level: 'silent' })
  const queue = await openQueue(config, { spool: new Spool(config.dataDir), log })
  const running = livePid(config.dataDir)
  // No relay runs on this SQLite queue: what is still leased was in flight when it died, and is
  // nobody's now (its start would free it first): not "being delivered", to show, bounce or flush.
  if (config.queue.driver === 'sqlite' && running === undefined && noRelayRuns(config.dataDir)) await queue.recover(Date.now()).catch(() => 0)
  // A DSN a verb queues (`relay queue bounce`) passes the plugins' generated hook as the relay's
  // own do (dkim-sign signs it): the plugins are set up ('check' mode) only for that.
  let plugins: Promise<HookBus | undefined> | undefined
  const generated = () => (plugins ??= hooksForDsn(config))
  // One scan request per command, after its last change (a bulk release wakes once per message).
  let scanWanted = false
  return {
    queue: queueOperations({ queue, log, config: () => config, generated, wake: running === undefined ? undefined : () => void (scanWanted = true) }),
    config: { dataDir: config.dataDir, configFile: config.configFile },
    running,
    close: async () => {
      await queue.close()
      await (await plugins)?.close()
      if (scanWanted && running !== undefined) askToScan(config.dataDir, running)
    },
  }
}

/**
 * A verb released, flushed or bounced on the queue itself while a relay runs on it: the relay scans
 * now (SIGUSR2, core/cli/start.ts), as `postqueue -f` triggers Postfix's queue manager.
 */
function askToScan(dataDir: string, pid: number): void {
  const later = (why: string) => void process.stderr.write(`note: relay ${pid} ${why}; it picks this up at its next queue scan (within 30 s)\n`)
  // A relay from before SIGUSR2 would die of it (the default action): it has no relay.signals.
  if (!handlesScanSignal(dataDir, pid)) return later('runs without an admin listener')
  try {
    process.kill(pid, 'SIGUSR2')
  } catch (err) {
    later(`could not be told to scan the queue (${(err as NodeJS.ErrnoException).code})`)
  }
}

/** The config's plugins on a bus, for the generated hook; undefined (said on stderr) when they cannot be set up. */
async function hooksForDsn(config: RelayConfig): Promise<HookBus | undefined> {
  const logger = pino({ level: 'silent' })
  try {
    return new HookBus(await loadPlugins({ config, logger, resolver: createResolver(config), mode: 'check' }), config.hookTimeout, logger)
  } catch (err) {
    process.stderr.write(`relay: the plugins could not be set up (${(err as Error).message}); the DSN is queued without their generated hook (unsigned)\n`)
    return undefined
  }
}
