// Where the config is: `--config`, then $RELAY_CONFIG, then the current directory, then /etc/relay/.
// The first that names or holds a file wins; the places looked in are kept for the messages that
// say no config was found.
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { cosmiconfig, getDefaultSearchPlaces, type Loader } from 'cosmiconfig'
import { asError } from '../error-text.js'
import { within } from '../within.js'
import { configExport } from './default-export.js'
import { parseDuration } from './duration.js'
import { importTypeScript } from './import-ts.js'
import { CONFIG_MARK, importsRelayMta, resolveRelayMtaImports } from './relay-mta-imports.js'
import { loadJson, loadYaml, moduleSyntaxError } from './syntax.js'

/** The system-wide directory (RELAY_SYSTEM_CONFIG_DIR overrides it, for packaging and tests). */
export function systemConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.RELAY_SYSTEM_CONFIG_DIR || '/etc/relay'
}

/** relay.config.* in any format Relay reads: the names looked for in the system directory. */
export const CONFIG_FILE_NAMES = ['ts', 'mts', 'js', 'mjs', 'cjs', 'json', 'yaml', 'yml'].map((ext) => `relay.config.${ext}`)

// A query makes each load a fresh module: a hot reload (core/reload.ts) must see the file as it is
// now. It also marks the file for the import hooks (relay-mta-imports.ts).
let loads = 0
const freshUrl = (filepath: string) => `${pathToFileURL(filepath).href}?${CONFIG_MARK}=${++loads}`

/**
 * The import hooks cost every later import of the process a round trip to the hooks thread (a
 * third more time for a CLI verb): registered only for a config that imports 'relay-mta'.
 */
function hooksFor(content: string): void {
  if (importsRelayMta(content)) resolveRelayMtaImports()
}

// TypeScript configs load through Node's type stripping or tsx (import-ts.ts; cosmiconfig's own .ts
// loader needs Node 22 or the TS API). A file that does not parse: its file, line and column
// (syntax.ts), not esbuild's bare "Transform failed".
const loadTs: Loader = async (filepath, content) => {
  hooksFor(content)
  let mod: unknown
  try {
    mod = await importTypeScript(freshUrl(filepath), content, import.meta.url)
  } catch (err) {
    throw moduleSyntaxError(err, filepath, content) ?? err
  }
  return configExport(mod, filepath, content)
}
// A CommonJS file (.cjs, or .js outside a "type": "module" package) is cached by path in the
// require cache, which the query does not reach: it is dropped so that a reload reads the file again.
const requireCache = createRequire(import.meta.url).cache
const loadEsm: Loader = async (filepath, content) => {
  hooksFor(content)
  delete requireCache[filepath]
  let mod: unknown
  try {
    mod = await import(freshUrl(filepath))
  } catch (err) {
    throw moduleSyntaxError(err, filepath, content) ?? err
  }
  return configExport(mod, filepath, content)
}

/** An empty config file, or one that parses to nothing (only comments, `null`): no config, not the defaults. */
const emptyFile = (filepath: string) => Object.assign(new Error('the file is empty: it holds no config ({} asks for the defaults)'), { filepath })
// cosmiconfig takes a data file that parses to nothing for no file at all, even one named by --config.
const nonEmpty =
  (load: Loader): Loader =>
  async (filepath, content) =>
    (await load(filepath, content)) ?? Promise.reject(emptyFile(filepath))

/** How long a config module may take to load (its top-level awaits): RELAY_CONFIG_LOAD_TIMEOUT ('10s', '500ms'), default 30 s. */
function loadTimeout(): number {
  const set = process.env.RELAY_CONFIG_LOAD_TIMEOUT
  if (!set) return DEFAULT_LOAD_TIMEOUT
  const ms = parseDuration(set)
  // A bad value is said, not replaced by the default without a word; past 2^31 - 1 ms a timer fires at once.
  if (ms === undefined || ms < 1 || ms > 2_147_483_647) throw new Error(`RELAY_CONFIG_LOAD_TIMEOUT: expected a duration from 1ms to 24 days ('10s', '2m'), got ${JSON.stringify(set)}`)
  return ms
}
const DEFAULT_LOAD_TIMEOUT = 30_000

/**
 * A config module's load, bounded and with an Error for whatever it throws. A top-level await
 * that never settles would hang `relay start` with no word (or end it with exit 0 when nothing
 * else is pending); a module may throw (or default-export a promise that rejects with) a string
 * or null, and cosmiconfig sets `filepath` on what was thrown, which fails on those with a
 * TypeError of its own.
 */
const guarded =
  (load: Loader): Loader =>
  async (filepath, content) => {
    const ms = loadTimeout()
    try {
      return await within(load(filepath, content), ms, () => new Error(`the file did not finish loading within ${ms} ms: a top-level await that never settles? (RELAY_CONFIG_LOAD_TIMEOUT sets the limit)`))
    } catch (err) {
      throw asError(err)
    }
  }

const options = {
  // .cjs too: cosmiconfig's own loader takes a missing default export for an empty file.
  loaders: { '.ts': guarded(loadTs), '.mts': guarded(loadTs), '.js': guarded(loadEsm), '.mjs': guarded(loadEsm), '.cjs': guarded(loadEsm), '.json': nonEmpty(loadJson), '.yaml': nonEmpty(loadYaml), '.yml': nonEmpty(loadYaml), noExt: nonEmpty(loadYaml) },
  searchStrategy: 'none' as const,
  // An empty config file found is an error (findConfig), not a reason to look further or run on the defaults.
  ignoreEmptySearchPlaces: false,
  // Hot reload reads the file again: no cached result.
  cache: false,
}
// cosmiconfig's defaults lack relay.config.json/.yaml/.yml and .mts, which the docs promise.
const CWD_PLACES = [...getDefaultSearchPlaces('relay'), ...CONFIG_FILE_NAMES.filter((n) => !getDefaultSearchPlaces('relay').includes(n))]
const inCwd = cosmiconfig('relay', { ...options, searchPlaces: CWD_PLACES })
// The same search without loading: only where the file is (its safety is checked before it runs).
// package.json counts only with a "relay" key: it is read (data, no code runs).
const whereOnly: Loader = (filepath, content) => (path.basename(filepath) === 'package.json' ? (JSON.parse(content) as unknown) : {})
const inCwdFind = cosmiconfig('relay', { ...options, searchPlaces: CWD_PLACES, loaders: Object.fromEntries(Object.keys(options.loaders).map((ext) => [ext, whereOnly])) })
const inSystemDir = cosmiconfig('relay', { ...options, searchPlaces: CONFIG_FILE_NAMES })

/**
 * Other config files beside `filepath` that a search of its directory would have found too: only
 * the first is read (in cosmiconfig's order), so an operator editing one of the others changes nothing.
 * package.json is left out (it holds a config only with a "relay" key, and is there for other reasons).
 */
export function otherConfigFiles(filepath: string): string[] {
  const dir = path.dirname(filepath)
  const places = dir === path.resolve(systemConfigDir()) ? CONFIG_FILE_NAMES : CWD_PLACES
  if (!places.includes(path.basename(filepath))) return []
  return places.filter((name) => name !== 'package.json' && name !== path.basename(filepath) && fs.existsSync(path.join(dir, name)))
}

const FORMATS = `it reads ${Object.keys(options.loaders).filter((e) => e.startsWith('.')).join(', ')}`

/**
 * A config in the current directory in a format Relay does not read (relay.config.toml): not run
 * on the defaults as if there were none, with the file the operator wrote left unread in silence.
 */
function refuseUnreadConfig(cwd: string): void {
  let names: string[]
  try {
    names = fs.readdirSync(cwd)
  } catch {
    return
  }
  const unread = names.find((n) => /^(relay\.config|\.relayrc)\.[^.]+$/.test(n) && !(path.extname(n) in options.loaders))
  if (unread) throw Object.assign(new Error(`${unread} in ${cwd} is in a format Relay does not read (${FORMATS}): write it as relay.config.json, .yaml or .ts, or name a config with --config`), { filepath: path.join(cwd, unread) })
}

export interface FoundConfig {
  config: unknown
  filepath: string
}

/** How a search goes: `searchCwd: false` skips the current directory (sendmail, run anywhere by anyone). */
export interface SearchOptions {
  searchCwd?: boolean
}

/** Where a search looks, in order, as the messages name them. */
export function searchPlaces(file?: string, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd(), opts: SearchOptions = {}): string[] {
  if (file) return [`--config ${path.resolve(cwd, file)}`]
  const places: string[] = []
  if (env.RELAY_CONFIG) return [`$RELAY_CONFIG ${path.resolve(cwd, env.RELAY_CONFIG)}`]
  places.push('--config (not given)', '$RELAY_CONFIG (not set)')
  if (opts.searchCwd !== false) places.push(`${cwd}/ (relay.config.ts/.js/.json/.yaml, .relayrc*, package.json "relay")`)
  places.push(`${systemConfigDir(env)}/ (${CONFIG_FILE_NAMES.join(', ')})`)
  return places
}

/**
 * Why a config found in the current directory is not read, if it is not: a config is code (a .ts
 * or .js module) and says where the data directory is, so one another user could write would run as
 * whoever runs `relay` there (root, in a user's directory). As git's safe.directory: the file and
 * its directory belong to the caller or root, and neither is writable by everyone (a sticky
 * directory, /tmp, excepted).
 */
function notSafe(filepath: string): string | undefined {
  const uid = process.getuid?.()
  if (uid === undefined) return undefined
  const file = fs.statSync(filepath)
  const dir = fs.statSync(path.dirname(filepath))
  if (file.uid !== uid && file.uid !== 0) return `it belongs to uid ${file.uid}, not to you (uid ${uid}) or root`
  if (file.mode & 0o002) return 'anyone may write to it'
  if (dir.uid !== uid && dir.uid !== 0) return `its directory belongs to uid ${dir.uid}, not to you (uid ${uid}) or root`
  if (dir.mode & 0o002 && !(dir.mode & 0o1000)) return 'anyone may write to its directory'
  return undefined
}

/**
 * The config file as written, not validated; null when none was found. A file named by `--config`
 * or $RELAY_CONFIG must exist (ENOENT is thrown as it is).
 */
export async function findConfig(file?: string, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd(), opts: SearchOptions = {}): Promise<FoundConfig | null> {
  const named = file ?? (env.RELAY_CONFIG || undefined)
  let found: Awaited<ReturnType<typeof inCwd.search>>
  if (named) {
    const ext = path.extname(named)
    if (ext && !(ext in options.loaders) && !named.endsWith('rc')) throw Object.assign(new Error(`${ext} is not a config format Relay reads (${FORMATS})`), { filepath: path.resolve(cwd, named) })
    found = await inCwd.load(path.resolve(cwd, named))
  } else {
    // Checked before it is loaded (a module runs as it loads): a file named by --config or
    // $RELAY_CONFIG is the caller's choice; one merely found here is not.
    const here = opts.searchCwd === false ? null : await inCwdFind.search(cwd)
    const unsafe = here && notSafe(here.filepath)
    if (here && unsafe) throw Object.assign(new Error(`not reading ${here.filepath}, found in the current directory: ${unsafe} (a config is code that runs as you); name it with --config if you trust it`), { filepath: here.filepath, unsafe: true })
    if (!here && opts.searchCwd !== false) refuseUnreadConfig(cwd)
    found = here ? await inCwd.load(here.filepath) : await inSystemDir.search(systemConfigDir(env))
  }
  // Empty, or only comments: a file meant as the config that says nothing (a truncated write, an
  // editor's new file) must not start a relay on the defaults. `{}` is how to ask for them.
  if (found?.isEmpty) throw emptyFile(found.filepath)
  return found
}
