// What `relay dkim keygen` passes around: shared by the verb declaration (cli.ts) and the work (keygen.ts).
import type { CommandEnv } from '../../core/index.js'

/** What the verbs use of the core's CommandEnv (`commands` on the plugin object). */
export type CliEnv = Pick<CommandEnv, 'loadConfig'>

export interface KeygenOptions {
  selector?: string
  type: string
  out: string
}
