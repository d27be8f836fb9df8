// `relay dkim keygen <domain>`: writes a new private key (mode 0600, never over an existing file)
// and prints the TXT record to publish and the entry to add to the dkim-sign keys.
import fs from 'node:fs'
import path from 'node:path'
import { makeDirs } from '../../core/index.js'
import type { KeygenOptions } from './cli-types.js'
import { dnsRecordValue, generatePrivateKey, isDomainName, isSelector, loadPrivateKey, normalizeDomain, recordName, type KeyType } from './keys.js'

/** A mistake of the person at the keyboard: printed as `relay: <message>`, exit code 1. */
/** A mistake in the arguments (exit 2), or with `exit` 1 a failure to do what they ask (a file in the way). */
class UsageError extends Error {
  constructor(message: string, readonly exit: 1 | 2 = 2) {
    super(message)
  }
}

/** 's' + year and month (UTC), e.g. s202612: a new selector each month keeps rotation simple. */
export function defaultSelector(now = new Date()): string {
  return `s${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`
}

export async function keygen(domainArg: string, opts: KeygenOptions): Promise<void> {
  try {
    run(domainArg, opts)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`relay: ${err.message}\n`)
    process.exitCode = err.exit
  }
}

function run(domainArg: string, opts: KeygenOptions): void {
  const domain = normalizeDomain(domainArg)
  if (!isDomainName(domain)) throw new UsageError(`'${domainArg}' is not a domain name (expected something like example.com)`)
  const type = opts.type.toLowerCase()
  if (type !== 'rsa' && type !== 'ed25519') throw new UsageError(`--type ${opts.type}: expected rsa or ed25519`)
  const selector = opts.selector ?? defaultSelector()
  if (!isSelector(selector)) throw new UsageError(`--selector ${selector}: expected letters, digits and hyphens (dots between labels)`)

  const dir = path.resolve(opts.out)
  makeDirs(dir, 0o700)
  const file = path.join(dir, `${domain}.${selector}.${type}.pem`)
  // One selector names one TXT record: a key of the other type under it would replace the first's record.
  const other = path.join(dir, `${domain}.${selector}.${type === 'rsa' ? 'ed25519' : 'rsa'}.pem`)
  if (fs.existsSync(other)) throw new UsageError(`${other} already has the selector ${selector} for ${domain} (its DNS record is ${recordName({ selector, domain })}): choose another --selector for the ${type} key`, 1)
  const pem = generatePrivateKey(type as KeyType)
  try {
    fs.writeFileSync(file, pem, { flag: 'wx', mode: 0o600 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${file} already exists; not overwriting it (choose another --selector, or move the old key away)`, 1)
    throw new UsageError(`cannot write ${file}: ${(err as Error).message}`, 1)
  }
  fs.chmodSync(file, 0o600)
  const key = loadPrivateKey(file)

  process.stdout.write(
    `private key: ${file}\n` +
      `\n` +
      `Publish this DNS TXT record:\n` +
      `  name:  ${recordName({ selector, domain })}\n` +
      `  value: ${dnsRecordValue(key)}\n` +
      (type === 'rsa' ? `  (the value is over 255 characters: in a zone file write it as several quoted strings, which DNS joins)\n` : '') +
      `\n` +
      `Then add the key to the dkim-sign plugin's keys (activeFrom: a date after the record is visible):\n` +
      `  { domain: '${domain}', selector: '${selector}', privateKey: '${file}' }\n` +
      `\`relay doctor ${domain}\` tells whether the published record matches the key.\n`,
  )
}
