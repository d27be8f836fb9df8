// Where the core's own policies (core/policies) meet the config's plugins. `first` and `last` are
// on the main bus around the config's plugins (core/relay.ts hands them to loadPlugins as
// `builtins`); `accepted` runs here, for each recipient that got through the rcpt stage.
import path from 'node:path'
import { HookBus, type Decision } from '../hooks/bus.js'
import type { HookContexts, HookName, Plugin, PluginContext } from '../hooks/types.js'
import { corePolicies, type PolicyEnv } from '../policies/index.js'

/** The core's policies keep no shared state: they call nothing across processes. */
const CORE_PROCESSES: PluginContext<unknown>['processes'] = {
  role: 'single',
  handle: () => undefined,
  call: () => Promise.reject(new Error('core policies make no cross-process calls')),
}

export class PolicyStages {
  private readonly accepted: HookBus

  constructor(
    env: PolicyEnv,
    private readonly hooks: HookBus,
    /** What core policies see besides their hook data (no options, no state). */
    base: Pick<PluginContext<unknown>, 'log' | 'resolver' | 'hostname' | 'configDir' | 'isLocalDomain'>,
    timeoutMs: number,
  ) {
    const policies = corePolicies(env)
    const ctx = (): PluginContext<unknown> => ({ ...base, options: {}, state: undefined, resolvePath: (f) => path.resolve(base.configDir, f), processes: CORE_PROCESSES })
    const bus = (list: Plugin[]) => new HookBus(list.map((plugin) => ({ plugin, ctx: ctx(), at: 'core', optionsKey: '' })), timeoutMs, base.log)
    this.accepted = bus(policies.accepted)
  }

  /** Runs a hook stage: the deciding verdict, or undefined when nobody decided. */
  run<K extends HookName>(hook: K, data: HookContexts[K]): Promise<Decision<K> | undefined> {
    return this.hooks.run(hook, data)
  }

  /** Does any plugin take part in `hook`? (A stage nobody hooks costs nothing: its data is not built.) */
  has(hook: HookName): boolean {
    return this.hooks.has(hook)
  }

  /** Checks on a recipient that passed the rcpt stage (accepted by a plugin or not): suppression. */
  recipientPassed(data: HookContexts['rcpt']): Promise<Decision<'rcpt'> | undefined> {
    return this.accepted.run('rcpt', data)
  }
}
