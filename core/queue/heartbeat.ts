// Cluster liveness: every node beats in the shared queue each `interval`; a beat also finds the
// nodes silent for longer than `deadAfter` and makes the work they held leased due at once
// (Queue.heartbeat), so a node killed hard holds its mail for about `deadAfter`, not for the whole
// `delivery.lease`. The timer runs on its own, whatever deliveries do, one beat at a time; the
// PostgreSQL queue sends beats on a connection of their own.
import type { Logger } from 'pino'
import type { Queue } from './types.js'

export interface HeartbeatSettings {
  interval: number
  deadAfter: number
}

export class NodeHeartbeat {
  private timer: NodeJS.Timeout | undefined
  private beating: Promise<void> | undefined
  /** When the last beat was recorded (this node's clock). */
  private lastBeat = Date.now()
  private beaten = false

  constructor(
    private readonly queue: Queue,
    private readonly settings: HeartbeatSettings,
    private readonly log: Logger,
    /** Work of a dead node became due: the scheduler should claim now, not at its next idle scan. */
    private readonly onTakeover: () => void,
  ) {}

  /**
   * The first beat, awaited: the node is on record before it claims any work. A database not
   * reachable at start fails it; the node starts all the same and the timer's beats go on trying.
   */
  async start(): Promise<void> {
    await this.beat().catch((err: unknown) => this.log.warn({ err }, 'heartbeat: recording this node as alive failed'))
    this.timer = setInterval(() => {
      if (this.beating) return
      this.beating = this.beat()
        .catch((err: unknown) => {
          const silent = Date.now() - this.lastBeat
          // Past deadAfter the other nodes take this node for dead and its leases over.
          const level = silent >= this.settings.deadAfter ? 'error' : 'warn'
          this.log[level]({ err, silentMs: silent, deadAfterMs: this.settings.deadAfter }, 'heartbeat: recording this node as alive failed')
        })
        .finally(() => (this.beating = undefined))
    }, this.settings.interval)
    this.timer.unref()
  }

  private async beat(): Promise<void> {
    const r = await this.queue.heartbeat(Date.now(), this.settings.deadAfter)
    const silent = Date.now() - this.lastBeat
    // Missing at its first recorded beat is how a node joins, not a takeover.
    const first = !this.beaten
    this.beaten = true
    this.lastBeat = Date.now()
    if (r.wasMissing && !first) {
      this.log.error(
        { silentMs: silent, deadAfterMs: this.settings.deadAfter },
        'heartbeat: other nodes declared this node dead and took its leased work over; results of deliveries it had in flight are not recorded (they are attempted again)',
      )
    }
    if (r.otherProcessBeatMsAgo !== undefined && !first) {
      this.log.error(
        { beatMsAgo: r.otherProcessBeatMsAgo },
        'heartbeat: another process beats as this cluster node (the same hostname on the same machine name): each takes the other for itself and mail is delivered twice; give each node its own identity (docs/cluster.md)',
      )
    }
    for (const d of r.dead) {
      if (d.left) this.log.info({ node: d.nodeId, recipients: d.recipients }, 'heartbeat: a node left the cluster (stopped); what it still held is due again')
      else this.log.warn({ node: d.nodeId, silentMs: d.silentMs, recipients: d.recipients }, 'heartbeat: a node stopped beating; its leased work is due again')
    }
    if (r.dead.some((d) => d.recipients > 0)) this.onTakeover()
  }

  /** After deliveries have stopped: the node stops beating and leaves the record; others take over what it still held at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    await this.beating
    // Its record goes: the others would report it as a node that died (the log line of a crash).
    if (this.beaten) await this.queue.leave().catch((err: unknown) => this.log.warn({ err }, 'heartbeat: removing this node from the cluster record failed (the others will report it as stopped beating)'))
  }
}
