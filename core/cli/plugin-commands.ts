// CLI verbs that plugins declare (`commands` on the plugin object): the bundled plugins' and those
// of the plugins in the config, third-party ones included. Loaded only when the verb is not one of
// the core's own (or for --help), so `relay start` imports no plugin twice. A bundled plugin with
// verbs names them in plugins/<name>/commands.json, with the line the top-level help shows for each,
// so `relay queue list` imports plugins/admin only and `relay --help` no bundled plugin at all
// (test/unit/plugin-command-manifests.test.ts keeps the manifests true).
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { loadConfig, requireConfig } from '../config/load.js'
import { resolvePlugin } from '../hooks/find-plugin.js'
import { livePid } from '../pid-file.js'
import type { Plugin } from '../hooks/types.js'
import { errorText } from '../error-text.js'
import { within } from '../within.js'

/** How long a plugin's `commands` may take to declare its verbs (it may be async). */
const DECLARE_TIMEOUT_MS = 10_000

const BUNDLED_DIR = fileURLToPath(new URL('../../plugins/', import.meta.url))
// tsc does not copy the manifests to dist/plugins/: from dist/core/cli/ they are read in the source
// tree next to dist/ (../../../plugins/). Under tsx BUNDLED_DIR is the source tree itself.
const MANIFEST_DIRS = [BUNDLED_DIR, fileURLToPath(new URL('../../../plugins/', import.meta.url))]

/** The value of -c/--config in argv, if given. */
function configArg(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '-c' || a === '--config') return argv[i + 1]
    if (a.startsWith('--config=')) return a.slice('--config='.length)
  }
  return undefined
}

/** The bundled plugins: the directories of plugins/ with an index. */
function bundledNames(): string[] {
  const names = fs.existsSync(BUNDLED_DIR) ? fs.readdirSync(BUNDLED_DIR).sort() : []
  return names.filter((name) => ['index.js', 'index.ts'].some((f) => fs.existsSync(path.join(BUNDLED_DIR, name, f))))
}

/** A bundled plugin's top-level verb, and how the top-level help lists it. */
export interface VerbHelp {
  name: string
  /** What the help shows left of the description: `doctor [options] <domain>`. */
  term: string
  description: string
}

/**
 * The top-level verbs each bundled plugin declares in its commands.json (none: no file), read from
 * the first of MANIFEST_DIRS that has any; undefined when none has (an install without them): then
 * which plugin has a verb is only known by importing them all.
 */
export function bundledVerbManifests(names = bundledNames()): Map<string, VerbHelp[]> | undefined {
  for (const dir of MANIFEST_DIRS) {
    const files = new Map(names.map((name) => [name, path.join(dir, name, 'commands.json')]))
    if (![...files.values()].some((f) => fs.existsSync(f))) continue
    const out = new Map<string, VerbHelp[]>()
    for (const [name, file] of files) {
      try {
        out.set(name, fs.existsSync(file) ? verbsOf(JSON.parse(fs.readFileSync(file, 'utf8'))) : [])
      } catch {
        return undefined // an unreadable manifest: import everything rather than lose a verb
      }
    }
    return out
  }
  return undefined
}

function verbsOf(manifest: unknown): VerbHelp[] {
  const verbs = (manifest as { verbs?: unknown } | null)?.verbs
  const isVerb = (v: unknown) => ['name', 'term', 'description'].every((k) => typeof (v as Record<string, unknown> | null)?.[k] === 'string')
  if (!Array.isArray(verbs) || !verbs.every(isVerb)) throw new Error('commands.json: { "verbs": [{ "name", "term", "description" }] } expected')
  return verbs as VerbHelp[]
}

/**
 * The bundled plugins to import for argv: for a verb, or its help (`relay queue --help`, `relay help
 * queue`), only those that declare it; for the top-level help, or a verb no manifest names (a
 * third-party one, or a typo answered with the list), all.
 */
export function bundledFor(argv: string[]): string[] {
  const names = bundledNames()
  const verb = argv[0] === 'help' ? argv[1] : argv[0]
  if (verb === undefined || verb.startsWith('-')) return names
  const manifests = bundledVerbManifests(names)
  if (!manifests) return names
  const declaring = names.filter((name) => manifests.get(name)!.some((v) => v.name === verb))
  return declaring.length > 0 ? declaring : names
}

async function bundledPlugins(names: string[]): Promise<Plugin[]> {
  const out: Plugin[] = []
  for (const name of names) {
    try {
      out.push(await resolvePlugin(name, BUNDLED_DIR, name))
    } catch (err) {
      process.stderr.write(`relay: the commands of plugin ${name} are unavailable: ${errorText(err)}\n`)
    }
  }
  return out
}

/**
 * The config's plugins (those not given inline as objects are imported, not set up), except the
 * bundled ones named in it: bundledFor() decides which of those a verb needs. `problems` says why a
 * plugin's verbs are missing (said only when the verb asked for is then unknown).
 */
async function configuredPlugins(argv: string[], bundled: Set<string>, problems: string[]): Promise<Plugin[]> {
  let config
  try {
    config = await loadConfig(configArg(argv))
  } catch (err) {
    // No usable config: the core's verbs still work, and they report the config error.
    problems.push(`the config cannot be loaded, so its plugins' verbs are unavailable: ${whyText(err)}`)
    return []
  }
  const out: Plugin[] = []
  for (const [i, entry] of config.plugins.entries()) {
    const ref = Array.isArray(entry) ? entry[0] : entry
    if (typeof ref === 'string' && bundled.has(ref)) continue
    try {
      out.push(typeof ref === 'string' ? await resolvePlugin(ref, config.configDir, `plugins[${i}]`, config.configFile, config.setupTimeout) : (ref as Plugin))
    } catch (err) {
      // `relay check-config` / `relay start` name what is wrong with it too.
      problems.push(`plugins[${i}] cannot be loaded, so its verbs are unavailable: ${whyText(err)}`)
    }
  }
  return out
}

/** A load failure on one line: a config error's issues (its message's first line only says where), or the error's text. */
function whyText(err: unknown): string {
  const issues = (err as { issues?: { path: string; message: string }[] }).issues
  return issues?.length ? issues.map((x) => `${x.path || '(top level)'}: ${x.message}`).join('; ') : errorText(err)
}

/** `relay`, `relay --help`, `relay help` (with or without --config): the top-level help and nothing else. */
export function isTopLevelHelp(argv: string[]): boolean {
  const rest = argv.filter((a, i) => !['-c', '--config'].includes(a) && !a.startsWith('--config=') && !['-c', '--config'].includes(argv[i - 1] ?? ''))
  return rest.length === 0 || (rest.length === 1 && ['-h', '--help', 'help'].includes(rest[0]!))
}

/**
 * The bundled plugins' verbs as their manifests describe them, for the top-level help to list
 * without importing every bundled plugin and its dependencies (0.9 s of CPU). They are never run:
 * any other command line imports the plugin that declares the verb.
 */
function listBundledVerbs(program: Command, manifests: Map<string, VerbHelp[]>): void {
  const terms = new Map<Command, string>()
  for (const verbs of manifests.values()) {
    for (const v of verbs) {
      const listed = program.command(v.name).description(v.description)
      listed.action(() => Promise.reject(new Error(`${v.name}: listed for the help only`)))
      terms.set(listed, v.term)
    }
  }
  const help = program.createHelp()
  program.configureHelp({ subcommandTerm: (c) => terms.get(c) ?? help.subcommandTerm(c) })
}

/**
 * Adds every plugin's verbs to `program`; one plugin's broken verbs never take the CLI down.
 * Resolves with why some plugins' verbs are missing (for an unknown verb to explain itself).
 */
export async function registerPluginCommands(program: Command, argv: string[]): Promise<string[]> {
  // By the plugin object, not its name: two plugins of one name both keep their verbs (a clash
  // between their verbs is said below).
  const seen = new Set<Plugin>()
  const problems: string[] = []
  const manifests = isTopLevelHelp(argv) ? bundledVerbManifests() : undefined
  if (manifests) listBundledVerbs(program, manifests)
  const bundled = manifests ? [] : await bundledPlugins(bundledFor(argv))
  const plugins = [...bundled, ...(await configuredPlugins(argv, new Set(bundledNames()), problems))]
  const api = { loadConfig: (file?: string, o?: { required?: boolean }) => (o?.required ? requireConfig(file) : loadConfig(file)), loadPlugins: async (file?: string) => (await import('./command-env.js')).pluginsForCommand(file), openQueue: async (file?: string, o?: Parameters<typeof import('./command-env.js')['queueForCommand']>[1]) => (await import('./command-env.js')).queueForCommand(file, o), runningRelay: livePid }
  for (const plugin of plugins) {
    if (typeof plugin.commands !== 'function' || seen.has(plugin)) continue
    seen.add(plugin)
    try {
      // `commands` may be async (it awaits an import): its verbs count once it settles, and its
      // rejection is this plugin's alone, not an unhandled one that ends every verb of the CLI.
      // A program of its own, with the CLI's settings: a plugin adds its verbs, and cannot reach
      // the core's or another plugin's (replace an action, hook every verb). Its verbs move over after.
      const own = new Command().copyInheritedSettings(program)
      await within(Promise.resolve().then(() => plugin.commands!(own, api as Parameters<NonNullable<Plugin['commands']>>[1])), DECLARE_TIMEOUT_MS, () => new Error(`commands(program) did not finish within ${DECLARE_TIMEOUT_MS} ms`))
      for (const verb of own.commands) {
        const names = [verb.name(), ...verb.aliases()]
        const taken = program.commands.find((c) => [c.name(), ...c.aliases()].some((n) => names.includes(n)))
        if (taken) process.stderr.write(`relay: plugin ${plugin.name}'s verb '${verb.name()}' is not added: \`relay ${taken.name()}\` is there already\n`)
        else program.addCommand(verb)
      }
    } catch (err) {
      process.stderr.write(`relay: the commands of plugin ${plugin.name} are unavailable: ${errorText(err)}\n`)
    }
  }
  return problems
}
