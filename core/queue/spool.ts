import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { privateDir } from './private-files.js'

/**
 * Large message bodies live in files under `<dataDir>/spool`; small ones go inline in the queue
 * database. A file is durable once its data and its directory entry are fsync'd; directory fsyncs
 * are shared by everyone waiting at the same time.
 */
export class Spool {
  readonly dir: string
  private dirSync: Promise<void> | undefined
  private dirSyncAgain: Promise<void> | undefined

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, 'spool')
    privateDir(this.dir)
  }

  pathFor(id: string): string {
    return path.join(this.dir, id)
  }

  async create(id: string): Promise<SpoolFile> {
    const file = this.pathFor(id)
    return new SpoolFile(file, await fsp.open(file, 'wx', 0o600), this)
  }

  /** fsyncs the spool directory; callers arriving while one runs share the next one. */
  syncDir(): Promise<void> {
    if (!this.dirSync) {
      this.dirSync = this.fsyncDir().finally(() => (this.dirSync = undefined))
      return this.dirSync
    }
    this.dirSyncAgain ??= this.dirSync.then(() => {
      this.dirSyncAgain = undefined
      return this.syncDir()
    })
    return this.dirSyncAgain
  }

  private async fsyncDir(): Promise<void> {
    const handle = await fsp.open(this.dir, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  async remove(file: string): Promise<void> {
    await fsp.rm(file, { force: true })
  }

  /** The spool's files now (before any session can add one: what a sweep may consider). */
  async list(): Promise<string[]> {
    return (await fsp.readdir(this.dir)).map((name) => path.join(this.dir, name))
  }

  /** Of `files`, those the queue does not know (left by a crash before the queue write) are removed. */
  async sweep(files: readonly string[], known: (file: string) => boolean): Promise<number> {
    let removed = 0
    for (const file of files) {
      if (!known(file)) {
        await fsp.rm(file, { force: true })
        removed++
      }
    }
    return removed
  }
}

const FLUSH_AT = 256 * 1024

/** A body file being written: buffered writes, then fsync before the queue takes it. */
export class SpoolFile {
  private pending: Buffer[] = []
  private pendingBytes = 0
  size = 0

  constructor(
    readonly path: string,
    private readonly handle: fsp.FileHandle,
    private readonly spool: Spool,
  ) {}

  async write(chunk: Buffer): Promise<void> {
    this.pending.push(chunk)
    this.pendingBytes += chunk.length
    this.size += chunk.length
    if (this.pendingBytes >= FLUSH_AT) await this.flush()
  }

  private async flush(): Promise<void> {
    if (!this.pendingBytes) return
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending)
    this.pending = []
    this.pendingBytes = 0
    await this.handle.write(data)
  }

  /** Writes what is buffered, so that the file can be read as it stands. */
  async flushPending(): Promise<void> {
    await this.flush()
  }

  /** Writes what is buffered, fsyncs the file and its directory entry, closes it. */
  async commit(): Promise<void> {
    await this.flush()
    await this.handle.sync()
    await this.handle.close()
    await this.spool.syncDir()
  }

  async discard(): Promise<void> {
    await this.handle.close().catch(() => undefined)
    await this.spool.remove(this.path)
  }
}
