// Moved to testing/relay.ts (exported to plugin authors as `relay-mta/testing`); kept so existing tests import it unchanged.
export * from '../../testing/relay.js'
