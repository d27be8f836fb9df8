// Moved to testing/smtp-receiver.ts (exported to plugin authors as `relay-mta/testing`); kept so existing tests import it unchanged.
export * from '../../testing/smtp-receiver.js'
