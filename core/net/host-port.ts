import net from 'node:net'

/** 'host:port' as it can be read back: an IPv6 address in brackets ('[::1]:25', not '::1:25'). */
export const hostPortText = (host: string, port?: number): string =>
  port === undefined ? host : `${net.isIPv6(host) ? `[${host}]` : host}:${port}`
