import { loadConfig } from '../config/load.js'

/** `relay check-config`: validates the config (plugins and their options included) without starting. */
export async function checkConfig(opts: { config?: string }): Promise<void> {
  const config = await loadConfig(opts.config)
  const { loadPlugins } = await import('../hooks/load-plugins.js')
  const { createResolver } = await import('../dns/resolver.js')
  const pino = (await import('pino')).default
  const plugins = await loadPlugins({ config, logger: pino({ level: 'silent' }), resolver: createResolver(config) })
  process.stdout.write(
    `config ok${config.configFile ? `: ${config.configFile}` : ' (defaults, no config file found)'}\n` +
      `  hostname ${config.hostname}\n` +
      config.listen.map((l) => `  listen ${l.host}:${l.port} (${l.role})\n`).join('') +
      `  localDomains ${config.localDomains.join(', ') || '(none)'}\n` +
      `  dataDir ${config.dataDir}\n` +
      `  plugins ${plugins.map((p) => p.plugin.name).join(', ') || '(none)'}\n`,
  )
  for (const p of plugins) await p.teardown?.()
}
