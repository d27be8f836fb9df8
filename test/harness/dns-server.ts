// Moved to testing/dns-server.ts (exported to plugin authors as `relay-mta/testing`); kept so existing tests import it unchanged.
export * from '../../testing/dns-server.js'
