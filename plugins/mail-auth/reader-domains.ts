// The domains a mail reader shows for a From: field (core's readerAddresses: `a@bank .example` is
// a@bank.example to a reader), compared with those mailauth's address parser took for DMARC (`bank`).
import { domainToASCII } from 'node:url'
import { readerAddresses } from '../../core/index.js'

/** A domain as DMARC compares it: lower case, A-label, no trailing dot. */
export function comparableDomain(domain: string): string {
  const d = domain.trim().replace(/\.+$/, '').toLowerCase()
  return domainToASCII(d) || d
}

/** The domains (lower case, A-labels, no trailing dot) of the addresses in From: field values. */
export function readerDomains(fromValues: string[]): string[] {
  return [...new Set(readerAddresses(fromValues).map((a) => comparableDomain(a.slice(a.lastIndexOf('@') + 1))))]
}
