// `<dataDir>/maildrop/`: where `relay sendmail` leaves messages for the running relay's pickup
// (core/smtp/pickup.ts), as Postfix's postdrop does. One file per message: a magic line, the
// envelope as one JSON line, then the message bytes. Written atomically (a dot-file fsync'd, then
// renamed), so the pickup never sees half a message; dot-files are not picked up.
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { makeDirs } from './private-files.js'

export const MAILDROP_DIR = 'maildrop'
/**
 * rwx for the relay's user (it owns the directory), write+search for everyone else, sticky: any
 * local user may drop a file, nobody else may list the directory, and only the relay removes files.
 */
export const MAILDROP_MODE = 0o1733
/** The files: readable by the relay whichever user wrote them (their names are unguessable). */
const FILE_MODE = 0o644
const MAGIC = 'RELAY-MAILDROP 1\n'

export interface DroppedMessage {
  /** Envelope sender; '' is the null sender. */
  sender: string
  recipients: string[]
  /** The message as given (LF or CRLF line ends). */
  raw: Buffer
}

/** A maildrop file that cannot be read as one (the pickup sets it aside). */
export class CorruptDropError extends Error {}

export const maildropDir = (dataDir: string): string => path.join(dataDir, MAILDROP_DIR)

/** Creates the directory with MAILDROP_MODE if it is missing (the umask would narrow mkdir's mode). */
export function ensureMaildrop(dataDir: string): string {
  const dir = maildropDir(dataDir)
  if (!fs.existsSync(dir)) {
    makeDirs(dir)
    fs.chmodSync(dir, MAILDROP_MODE)
  }
  return dir
}

/** Writes one message into the maildrop; resolves with its file once it is durable. */
export async function dropMessage(dataDir: string, m: DroppedMessage): Promise<string> {
  const dir = ensureMaildrop(dataDir)
  const name = `${Date.now().toString(36)}-${randomBytes(12).toString('hex')}`
  const tmp = path.join(dir, `.tmp-${name}`)
  const file = path.join(dir, name)
  const handle = await fsp.open(tmp, 'wx', FILE_MODE)
  try {
    await handle.chmod(FILE_MODE)
    await handle.writeFile(Buffer.concat([Buffer.from(MAGIC + JSON.stringify({ sender: m.sender, recipients: m.recipients }) + '\n'), m.raw]))
    await handle.sync()
  } catch (err) {
    await handle.close().catch(() => undefined)
    await fsp.rm(tmp, { force: true })
    throw err
  }
  await handle.close()
  await fsp.rename(tmp, file)
  // The rename is durable once the directory is (it may not be readable by this user: then the
  // file's own fsync must do).
  await fsp
    .open(dir, 'r')
    .then(async (d) => {
      await d.sync().finally(() => d.close())
    })
    .catch(() => undefined)
  return file
}

/** Parses a maildrop file's contents. */
export function parseDropped(data: Buffer): DroppedMessage {
  if (!data.subarray(0, MAGIC.length).equals(Buffer.from(MAGIC))) throw new CorruptDropError('not a maildrop file')
  const eol = data.indexOf(10, MAGIC.length)
  if (eol < 0) throw new CorruptDropError('no envelope line')
  let envelope: { sender?: unknown; recipients?: unknown }
  try {
    envelope = JSON.parse(data.toString('utf8', MAGIC.length, eol)) as typeof envelope
  } catch {
    throw new CorruptDropError('the envelope line is not JSON')
  }
  const { sender, recipients } = envelope
  if (typeof sender !== 'string' || !Array.isArray(recipients) || recipients.some((r) => typeof r !== 'string')) throw new CorruptDropError('bad envelope')
  return { sender, recipients: recipients as string[], raw: data.subarray(eol + 1) }
}

/** Message files waiting, oldest name first (dot-files: being written, or set aside). */
export async function listDropped(dir: string): Promise<string[]> {
  const names = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? [] : Promise.reject(err)))
  return names.filter((n) => !n.startsWith('.')).sort()
}
