// Injection tokens for the core services (tsyringe). Explicit tokens on every constructor
// parameter: esbuild (tsx, vitest) emits no decorator metadata. Plugins never see the container.
export const Tokens = {
  Config: Symbol('Config'),
  Logger: Symbol('Logger'),
  Resolver: Symbol('Resolver'),
  Queue: Symbol('Queue'),
  /** The door from SMTP into the queue (core/queue/intake.ts). */
  Intake: Symbol('Intake'),
  Spool: Symbol('Spool'),
  Hooks: Symbol('Hooks'),
  Delivery: Symbol('Delivery'),
  Listeners: Symbol('Listeners'),
} as const
