import { randomBytes } from 'node:crypto'

const ALPHABET = '0123456789BCDFGHJKLMNPQRSTVWXYZ'

/** A queue id: time-ordered, 16 characters, no vowels (no accidental words), safe as a file name. */
export function newQueueId(now = Date.now()): string {
  let time = ''
  for (let t = now; time.length < 9; t = Math.floor(t / 31)) time = ALPHABET[t % 31] + time
  const rand = randomBytes(7)
  let tail = ''
  for (const b of rand) tail += ALPHABET[b % 31]
  return time + tail
}
