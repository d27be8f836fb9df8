// Matching a route's `match` against a message's recipient domain and envelope sender. The patterns
// come normalised from options.ts (domains lower case, in A-labels), as the relay keeps domains.
import { parseAddress } from '../../core/index.js'
import { regexOf, type RouteOption } from './options.js'

type Test = (value: string) => boolean

function domainTest(pattern: string): Test {
  const re = regexOf(pattern)
  if (re) return (d) => re.test(d)
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1) // '.example.com'
    return (d) => d.length > suffix.length && d.endsWith(suffix)
  }
  return (d) => d === pattern
}

function senderTest(pattern: string): Test {
  if (pattern === '<>') return (s) => s === ''
  const re = regexOf(pattern)
  if (re) return (s) => re.test(s)
  const address = pattern.includes('@')
  const domain = address ? undefined : domainTest(pattern)
  return (s) => {
    const parsed = s === '' ? undefined : parseAddress(s)
    if (!parsed) return false
    // A UTF-8 sender keeps its domain as given: compared, like the pattern, in its ASCII form.
    return domain ? domain(parsed.domain) : `${parsed.local.toLowerCase()}@${parsed.domain}` === pattern
  }
}

export interface CompiledMatch {
  (domain: string, sender: string): boolean
}

/** Both given criteria must fit (each a list: any entry fits); no criteria: always fits. */
export function compileMatch(route: RouteOption): CompiledMatch {
  const domains = route.match.domain?.map(domainTest)
  const senders = route.match.sender?.map(senderTest)
  return (domain, sender) => {
    const d = domain.toLowerCase().replace(/\.$/, '')
    if (domains && !domains.some((t) => t(d))) return false
    if (senders && !senders.some((t) => t(sender))) return false
    return true
  }
}
