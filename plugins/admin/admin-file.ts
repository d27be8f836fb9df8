// `<dataDir>/admin.json`: how a running relay's admin listener is reached. The server writes it at
// start (mode 0600, its owner's only) and removes it at stop; the plugin's CLI verbs read it.
export const ADMIN_FILE = 'admin.json'

export interface AdminFile {
  url: string
  pid: number
  /** The bearer token the listener requires (absent when it runs without one). */
  token?: string
}
