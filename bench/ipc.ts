// The bench scripts' one request/reply over a child process's IPC channel.
import type { ChildProcess } from 'node:child_process'

/** Sends `{ type }` (unless empty) and resolves with the first message whose type is `reply`. */
export function ask<T>(child: ChildProcess, type: string, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { type: string }) => {
      if (m.type !== reply) return
      child.off('message', on)
      resolve(m as T)
    }
    child.on('message', on)
    if (type) child.send({ type })
  })
}
