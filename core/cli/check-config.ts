import { loadConfig } from '../config/load.js'

/**
 * `relay check-config`: validates the config (plugins, their options and their setup in 'check'
 * mode) without starting. Always ends with a verdict: `config ok …` (exit 0), or the error naming
 * the key or plugin (exit 2, printed by main.ts).
 */
export async function checkConfig(opts: { config?: string }): Promise<void> {
  const config = await loadConfig(opts.config)
  const { loadPlugins } = await import('../hooks/load-plugins.js')
  const { createResolver } = await import('../dns/resolver.js')
  const pino = (await import('pino')).default
  const plugins = await loadPlugins({ config, logger: pino({ level: 'silent' }), resolver: createResolver(config), mode: 'check' })
  process.stdout.write(
    `config ok${config.configFile ? `: ${config.configFile}` : ' (defaults, no config file found)'}\n` +
      `  hostname ${config.hostname}\n` +
      config.listen.map((l) => `  listen ${l.host}:${l.port} (${l.role})\n`).join('') +
      `  localDomains ${config.localDomains.join(', ') || '(none)'}\n` +
      `  dataDir ${config.dataDir}\n` +
      `  plugins ${plugins.map((p) => p.plugin.name).join(', ') || '(none)'}\n`,
  )
  for (const p of plugins) await p.teardown?.()
  // A verdict was printed: exit even if a plugin left a timer or socket open.
  process.exit(0)
}
