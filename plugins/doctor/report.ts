// `relay doctor <domain>`: the checks, run concurrently, reported in a fixed order.
import { errorText } from '../../core/index.js'
import { checkDmarc } from './dmarc.js'
import { checkMtaSts } from './mta-sts.js'
import { checkMx } from './mx.js'
import { pluginChecks } from './plugin-checks.js'
import { checkReverseDns } from './rdns.js'
import { checkSmarthosts } from './smarthost.js'
import { checkSpf } from './spf.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv, type LoadedPlugin } from './types.js'

/** Runs one check; a check that throws becomes an error line instead of ending the report. */
async function guarded(name: string, run: () => Promise<DoctorCheck[]>): Promise<DoctorCheck[]> {
  try {
    return await run()
  } catch (err) {
    return [error(name, `the check failed: ${errorText(err)}`)]
  }
}

/** All of the domain's mail goes through smarthosts: the relay's own addresses never reach receivers. */
const allViaSmarthosts = (env: DoctorEnv) => env.send?.direct === false

/** The providers sign such mail: "no DKIM signing configured" (advice to add dkim-sign) does not apply. */
async function dkimChecks(env: DoctorEnv, plugins: LoadedPlugin[], timeoutMs: number): Promise<DoctorCheck[]> {
  const checks = await pluginChecks(env, plugins, timeoutMs)
  return allViaSmarthosts(env) ? checks.filter((c) => !(c.name === 'DKIM' && c.status === 'warning' && c.message.startsWith('no DKIM signing configured'))) : checks
}

export async function runDoctor(env: DoctorEnv, plugins: LoadedPlugin[], pluginTimeoutMs: number): Promise<DoctorCheck[]> {
  const noAddresses = env.outboundAddresses.length === 0
  const groups = await Promise.all([
    guarded('MX', () => checkMx(env)),
    guarded('SPF', () => checkSpf(env)),
    guarded('smarthost', () => checkSmarthosts(env)),
    guarded('DKIM', () => dkimChecks(env, plugins, pluginTimeoutMs)),
    guarded('DMARC', () => checkDmarc(env)),
    guarded('MTA-STS', () => checkMtaSts(env)),
    allViaSmarthosts(env)
      ? Promise.resolve([ok('outbound addresses', `all mail from ${env.domain} goes through smarthost routes, so the SPF and reverse DNS of this relay's own addresses do not matter for it`)])
      : noAddresses
      ? Promise.resolve([
          warning(
            'outbound addresses',
            'none configured, so neither SPF coverage nor reverse DNS of the addresses this relay sends from can be checked',
            "list the relay's public sending addresses in the config: delivery: { outboundAddresses: ['203.0.113.5'] }",
          ),
        ])
      : guarded('rDNS', () => checkReverseDns(env)),
  ])
  return groups.flat()
}

/** The report as text: `status  name  message`, aligned, each fix indented on the next line. */
export function formatReport(checks: DoctorCheck[]): string {
  const statusWidth = 'warning'.length
  const nameWidth = Math.max(...checks.map((c) => c.name.length), 0)
  const lines: string[] = []
  for (const c of checks) {
    lines.push(`${c.status.padEnd(statusWidth)}  ${c.name.padEnd(nameWidth)}  ${c.message}`)
    if (c.fix) lines.push(`${' '.repeat(statusWidth + 2)}fix: ${c.fix}`)
  }
  const errors = checks.filter((c) => c.status === 'error').length
  const warnings = checks.filter((c) => c.status === 'warning').length
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`
  lines.push('', `${plural(errors, 'error')}, ${plural(warnings, 'warning')}, ${checks.length - errors - warnings} ok`)
  return lines.join('\n') + '\n'
}
