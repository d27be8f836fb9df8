// What `relay user …` passes around: shared by the verb declarations (cli.ts) and the work (commands.ts).
import type { CommandEnv } from '../../core/index.js'

/** What the verbs use of the core's CommandEnv (`commands` on the plugin object). */
export type CliEnv = Pick<CommandEnv, 'loadConfig'>

export interface UserCommandOptions {
  file?: string
  config?: string
  passwordStdin?: boolean
  sender?: string[]
}
