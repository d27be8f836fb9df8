// Checks plugins add: every loaded plugin with a `doctor(ctx)` function is asked about the domain
// (DKIM signing lives in a plugin, so DKIM is checked this way). No DKIM line from any plugin is
// itself worth a warning.
import { errorText } from '../../core/index.js'
import { error, warning, type DoctorCheck, type DoctorEnv, type LoadedPlugin } from './types.js'

const STATUSES = new Set(['ok', 'warning', 'error'])

function isCheck(v: unknown): v is DoctorCheck {
  const c = v as DoctorCheck
  return (
    typeof c === 'object' && c !== null && typeof c.name === 'string' && c.name !== '' && STATUSES.has(c.status) && typeof c.message === 'string' && (c.fix === undefined || typeof c.fix === 'string')
  )
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer))
}

export async function pluginChecks(env: DoctorEnv, plugins: LoadedPlugin[], timeoutMs: number): Promise<DoctorCheck[]> {
  const results = await Promise.all(
    plugins
      .filter((p) => typeof p.plugin.doctor === 'function')
      .map(async ({ plugin, ctx }): Promise<DoctorCheck[]> => {
        try {
          const checks: unknown = await withTimeout(Promise.resolve(plugin.doctor!({ ...ctx, domain: env.domain })), timeoutMs)
          if (!Array.isArray(checks)) return [error(`plugin ${plugin.name}`, 'its doctor() did not return a list of checks')]
          return checks.map((c) => (isCheck(c) ? { name: c.name, status: c.status, message: c.message, ...(c.fix ? { fix: c.fix } : {}) } : error(`plugin ${plugin.name}`, `its doctor() returned an invalid check: ${JSON.stringify(c)}`)))
        } catch (err) {
          return [error(`plugin ${plugin.name}`, `its doctor check failed: ${errorText(err)}`)]
        }
      }),
  )
  const checks = results.flat()
  if (!checks.some((c) => /^dkim\b/i.test(c.name))) {
    checks.push(
      warning(
        'DKIM',
        `no DKIM signing configured for ${env.domain}: without a DKIM signature, DMARC rests on SPF alone, which breaks when mail is forwarded`,
        `add the dkim-sign plugin to the config with a key for ${env.domain}, and publish its public key in DNS`,
      ),
    )
  }
  return checks
}
