// Matching a route's `match` against a message's recipient domain and envelope sender.
import { parseAddress } from '../../core/index.js'
import { regexOf, type RouteOption } from './options.js'

type Test = (value: string) => boolean

function domainTest(pattern: string): Test {
  const re = regexOf(pattern)
  if (re) return (d) => re.test(d)
  const p = pattern.toLowerCase().replace(/\.$/, '')
  if (p.startsWith('*.')) {
    const suffix = p.slice(1) // '.example.com'
    return (d) => d.length > suffix.length && d.endsWith(suffix)
  }
  return (d) => d === p
}

function senderTest(pattern: string): Test {
  if (pattern === '<>') return (s) => s === ''
  const re = regexOf(pattern)
  if (re) return (s) => re.test(s)
  if (pattern.includes('@')) {
    const want = pattern.toLowerCase()
    return (s) => s.toLowerCase() === want
  }
  const domain = domainTest(pattern)
  return (s) => {
    const parsed = s === '' ? undefined : parseAddress(s)
    return parsed !== undefined && domain(parsed.domain.toLowerCase())
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
