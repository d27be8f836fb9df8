// Header sections are held in memory while they arrive: they are parsed before anything is queued.
// Each message holds its first FREE_HEADER_BYTES at no cost (what ordinary mail needs); beyond that
// every session in the process draws on one budget, `smtp.maxHeaderMemory`, so a thousand clients
// each trickling a header at `smtp.maxHeaderSize` cannot take gigabytes. Postfix bounds the same
// memory by keeping at most header_size_limit (100 KB) of each header.

/** Header bytes each message holds outside the shared budget. */
export const FREE_HEADER_BYTES = 64 * 1024

/** The budget one message draws on while its header section arrives. */
export interface HeaderBudget {
  /** Takes `bytes` more; false (nothing taken) when that would pass the limit. */
  take(bytes: number): boolean
  /** Gives back `bytes` taken. */
  release(bytes: number): void
}

export class HeaderMemory {
  private used = 0

  /** A message's budget under `limit` (the config in force when it began). */
  budget(limit: number): HeaderBudget {
    return {
      take: (bytes) => {
        if (this.used + bytes > limit) return false
        this.used += bytes
        return true
      },
      release: (bytes) => void (this.used = Math.max(0, this.used - bytes)),
    }
  }
}

/** One per process: every listener's sessions (and injected messages) share it. */
export const headerMemory = new HeaderMemory()

/** The header section needed more than the shared budget had left (452 4.3.1; the session goes on). */
export class HeaderMemoryError extends Error {
  constructor() {
    super('header memory of all sessions in use (smtp.maxHeaderMemory)')
  }
}
