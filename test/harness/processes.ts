// Which processes a relay runs (config `workers`: a primary and its SMTP worker processes), from /proc.
import fs from 'node:fs'

/** Live node processes whose parent is `pid` (the SMTP workers of a primary; zombies count as gone), sorted. */
export function childNodes(pid: number): number[] {
  const out: number[] = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // State and parent pid are the first two fields after the "(comm)" field of /proc/<pid>/stat.
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(ppid) === pid && state !== 'Z' && fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0] === process.execPath) out.push(Number(entry))
    } catch {
      // the process ended while being read
    }
  }
  return out.sort((a, b) => a - b)
}
