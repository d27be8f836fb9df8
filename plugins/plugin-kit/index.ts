// plugin-kit: `relay plugin new <name>`, a bundled plugin that only adds a CLI verb (no hooks), so
// the verb is there whether or not it is in the config. The scaffolding (new.ts) is loaded when the
// verb runs.
import { definePlugin } from '../../core/index.js'

export default definePlugin({
  name: 'plugin-kit',
  commands(program) {
    program
      .command('plugin')
      .description('write your own plugins')
      .command('new')
      .description('create relay-plugin-<name>/: a plugin with one hook, its test (relay-mta/testing), package.json, tsconfig, README')
      .argument('<name>', "plugin name, e.g. 'block-list' (the npm package is relay-plugin-<name>)")
      .option('--dir <dir>', 'where to create the folder', '.')
      .action(async (name: string, opts: { dir?: string }) => (await import('./new.js')).pluginNew(name, opts))
  },
})
