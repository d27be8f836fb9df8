// Moved to testing/smtp-client.ts (exported to plugin authors as `relay-mta/testing`); kept so existing tests import it unchanged.
export * from '../../testing/smtp-client.js'
