import type { DependencyContainer } from 'tsyringe'
import type { ReloadResult } from '../reload.js'

/** Whether the relay takes traffic: queue open and listeners up (not while starting or stopping). */
export interface Readiness {
  ready: boolean
  state: 'starting' | 'running' | 'stopping' | 'stopped'
  reason?: string
}

/** What the relay itself offers to admin routes, besides the services in its container. */
export interface RelayControl {
  readiness(): Readiness
  reload(): Promise<ReloadResult>
}

/** Given to every module that registers admin routes (core/admin/index.ts). */
export interface AdminContext {
  /** The relay's tsyringe container: resolve Tokens.Queue, Tokens.Config, Tokens.Hooks, ... per request. */
  container: DependencyContainer
  relay: RelayControl
}
