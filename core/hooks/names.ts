// Hook and event names, declared once: the types derive from these lists, and a plugin object with
// a key that is in neither stops the start (RELAY_ERR_UNKNOWN_HOOK) instead of never being called.

/** Hooks that decide (a verdict), in the order a message meets them. */
export const HOOK_NAMES = Object.freeze(['connect', 'helo', 'auth', 'mail', 'rcpt', 'data', 'queue', 'generated', 'deliver'] as const)

/** Events that only tell (no verdict), also in a plugin's `hooks` object. */
export const EVENT_NAMES = Object.freeze([
  'accepted',
  'rejected',
  'suppressed',
  'delivered',
  'deferred',
  'bounced',
  'authFailed',
  'sessionClosed',
  'dnsFailed',
  'leaseTakenOver',
  'complaint',
  'reloaded',
] as const)

export type HookName = (typeof HOOK_NAMES)[number]
export type EventName = (typeof EVENT_NAMES)[number]

const KNOWN: ReadonlySet<string> = new Set([...HOOK_NAMES, ...EVENT_NAMES])
export const isHookOrEventName = (name: string): boolean => KNOWN.has(name)

/** The two kinds of listener: 'mx' takes mail for local domains, 'submission' from authenticated users. */
export type ListenerRole = 'mx' | 'submission'

/** What kind of failure a deferral or bounce was (core/delivery/classify.ts). */
export type BounceCategory = 'bad-mailbox' | 'mailbox-full' | 'policy' | 'dns' | 'tls' | 'auth' | 'throttled' | 'other'
