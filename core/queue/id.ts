import { randomBytes } from 'node:crypto'

const ALPHABET = '0123456789BCDFGHJKLMNPQRSTVWXYZ'
const base31 = (n: number, width: number) => {
  let out = ''
  for (let i = 0; i < width; i++, n = Math.floor(n / 31)) out = ALPHABET[n % 31] + out
  return out
}

// Unique across processes by a random part drawn once, within the process by a counter (no
// random draw per message: that is a system call here).
const processPart = base31(randomBytes(4).readUInt32BE(0), 5)
let counter = 0

/** A queue id: time-ordered, 16 characters, no vowels (no accidental words), safe as a file name. */
export function newQueueId(now = Date.now()): string {
  counter = (counter + 1) % 31 ** 2
  return base31(now, 9) + processPart + base31(counter, 2)
}
