/**
 * With config `workers: N` the relay runs as one primary process (queue, delivery, events,
 * operations plugins) and N SMTP worker processes. A plugin with session hooks (connect … queue)
 * is set up in every process; its memory is its own in each. State that must be one for the whole
 * relay lives in the primary's instance: it `handle`s a method at setup, and hooks `call` it
 * (in a single process, `call` runs the local handler, so the same code serves both).
 */
export interface PluginProcesses {
  /** 'single': one process (workers: 1); 'primary': the process with the queue; 'worker': an SMTP worker. */
  role: 'single' | 'primary' | 'worker'
  /** Answers calls from this plugin's instances (register in setup; ignored in a worker). */
  handle(method: string, fn: (...args: any[]) => unknown): void
  /** Runs this plugin's handler `method` in the primary (arguments and result are copied: plain data). */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T>
}
