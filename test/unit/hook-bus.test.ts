// The hook bus in-process: config order, first decisive verdict, pass-through, a throw or a
// non-verdict or a timeout becoming a tempfail, the abort signal, events to every listener, and
// the swap at reload (carried-over plugins are not torn down).
import { describe, expect, it } from 'vitest'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { parseConfig } from '../../core/config/load.js'
import { createResolver } from '../../core/dns/resolver.js'
import { HookBus } from '../../core/hooks/bus.js'
import { loadPlugins } from '../../core/hooks/load-plugins.js'
import { accept, definePlugin, reject, type HookContexts, type Plugin } from '../../core/index.js'
import { pluginHarness, runHook } from '../../testing/run-hook.js'

const log = pino({ level: 'silent' })

async function busOf(plugins: Plugin[], extra: Record<string, unknown> = {}) {
  const config = parseConfig({ hostname: 'relay.test', dataDir: path.join(os.tmpdir(), 'relay-bus-test'), plugins, ...extra }, process.cwd())
  const loaded = await loadPlugins({ config, logger: log, resolver: createResolver(config) })
  return { bus: new HookBus(loaded, config.hookTimeout, log), loaded, config }
}

const session = { id: 's1', remoteAddress: '192.0.2.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 25, clientHostname: '[192.0.2.1]', listener: { host: '127.0.0.1', port: 25, role: 'mx' as const }, secure: false, trusted: false }
const notes = () => ({ session: new Map(), message: new Map() })
const rcpt = (address: string): HookContexts['rcpt'] => ({ session, envelope: { sender: { address: 'a@b.test', args: {} }, recipients: [] }, recipient: { address, args: {} }, domain: address.split('@')[1]!, isLocal: false, notes: notes() })

describe('HookBus.run', () => {
  it('runs plugins in config order; the first verdict decides and later plugins are not called', async () => {
    const calls: string[] = []
    const first = definePlugin({ name: 'first', hooks: { rcpt: () => void calls.push('first') } })
    const second = definePlugin({ name: 'second', hooks: { rcpt: () => (calls.push('second'), reject('5.7.1', 'no')) } })
    const third = definePlugin({ name: 'third', hooks: { rcpt: () => (calls.push('third'), accept()) } })
    const { bus } = await busOf([first, second, third])
    const d = await bus.run('rcpt', rcpt('x@y.test'))
    expect(calls).toEqual(['first', 'second'])
    expect(d).toEqual({ plugin: 'second', verdict: { action: 'reject', status: '5.7.1', message: 'no' } })
  })

  it('undefined when every plugin passes, or none has the hook', async () => {
    const { bus } = await busOf([definePlugin({ name: 'quiet', hooks: { rcpt: () => undefined } })])
    expect(await bus.run('rcpt', rcpt('x@y.test'))).toBeUndefined()
    expect(await bus.run('mail', { session, sender: { address: '', args: {} }, notes: notes() })).toBeUndefined()
  })

  it('a throw, or a result that is not a verdict, is a tempfail by that plugin', async () => {
    const throws = definePlugin({ name: 'throws', hooks: { rcpt: () => { throw new Error('boom') } } })
    const odd = definePlugin({ name: 'odd', hooks: { mail: () => ({ action: 'maybe' }) as never } })
    const { bus } = await busOf([throws, odd])
    expect(await bus.run('rcpt', rcpt('x@y.test'))).toEqual({ plugin: 'throws', verdict: { action: 'tempfail', code: 451, status: '4.3.0', message: 'Temporary local problem, try again later' } })
    expect((await bus.run('mail', { session, sender: { address: '', args: {} }, notes: notes() }))?.verdict.action).toBe('tempfail')
  })

  it('a route verdict is only valid from deliver', async () => {
    const router = definePlugin({ name: 'router', hooks: { rcpt: () => ({ action: 'route', route: { hosts: ['h'] } }) as never } })
    const { bus } = await busOf([router])
    expect((await bus.run('rcpt', rcpt('x@y.test')))?.verdict.action).toBe('tempfail')
  })

  it('past hookTimeout: a tempfail, and the signal the hook read is aborted', async () => {
    let seen: AbortSignal | undefined
    const slow = definePlugin({
      name: 'slow',
      hooks: {
        rcpt: ({ signal }) => {
          seen = signal
          return new Promise<undefined>(() => undefined)
        },
      },
    })
    const { bus } = await busOf([slow], { hookTimeout: '200ms' })
    const began = Date.now()
    const d = await bus.run('rcpt', rcpt('x@y.test'))
    expect(d?.verdict.action).toBe('tempfail')
    expect(Date.now() - began).toBeLessThan(2000)
    expect(seen?.aborted).toBe(true)
  })

  it("setup's state is ctx.state in hooks; each plugin has its own", async () => {
    const counter = (name: string) =>
      definePlugin({
        name,
        setup: () => ({ n: 0 }),
        hooks: { rcpt: ({ state }) => void state.n++ },
      })
    const { bus, loaded } = await busOf([counter('a'), counter('b')])
    await bus.run('rcpt', rcpt('x@y.test'))
    await bus.run('rcpt', rcpt('x@y.test'))
    expect(loaded.map((p) => p.ctx.state)).toEqual([{ n: 2 }, { n: 2 }])
  })
})

describe('HookBus.emit and replace', () => {
  it('every listener hears an event; a failing one does not stop the others', async () => {
    const heard: string[] = []
    const a = definePlugin({ name: 'a', hooks: { sessionClosed: () => { throw new Error('x') } } })
    const b = definePlugin({ name: 'b', hooks: { sessionClosed: (e) => void heard.push(e.session.id) } })
    const { bus } = await busOf([a, b])
    const observed: string[] = []
    bus.observe('sessionClosed', (e) => observed.push(e.session.id))
    await bus.emit('sessionClosed', { session })
    expect(heard).toEqual(['s1'])
    expect(observed).toEqual(['s1'])
  })

  it("listeners share one frozen copy of the event: none changes what the next hears, or the caller's object", async () => {
    const seen: unknown[] = []
    const meddler = definePlugin({
      name: 'meddler',
      hooks: {
        accepted: (e) => {
          for (const write of [() => (e.recipients as string[]).push('x@evil.test'), () => ((e as { sender: string }).sender = 'forged@evil.test')]) {
            try {
              write()
            } catch (err) {
              seen.push((err as Error).name)
            }
          }
        },
      },
    })
    const reader = definePlugin({ name: 'reader', hooks: { accepted: (e) => void seen.push([e.sender, [...e.recipients]]) } })
    const { bus } = await busOf([meddler, reader])
    const event = { queueId: 'q1', sender: 'a@b.test', recipients: ['c@d.test'], size: 10, session }
    await bus.emit('accepted', event)
    expect(seen).toEqual(['TypeError', 'TypeError', ['a@b.test', ['c@d.test']]])
    // The core's own object stays its own (not frozen under it).
    event.recipients.push('e@f.test')
    expect(event.recipients).toHaveLength(2)
  })

  it('replace tears down the old generation but not plugins carried over', async () => {
    const downs: string[] = []
    const plain = definePlugin({ name: 'plain', setup: () => ({}), teardown: () => void downs.push('plain'), hooks: {} })
    const kept = definePlugin({ name: 'kept', keepOnReload: true, setup: () => ({}), teardown: () => void downs.push('kept'), hooks: {} })
    const { bus, loaded, config } = await busOf([plain, kept])
    const next = await loadPlugins({ config, logger: log, resolver: createResolver(config), previous: loaded })
    expect(next[1]).toBe(loaded[1])
    expect(next[0]).not.toBe(loaded[0])
    await bus.replace(next)
    expect(downs).toEqual(['plain'])
    await bus.close()
    expect(downs).toEqual(['plain', 'kept', 'plain'])
  })
})

describe('relay-mta/testing runHook', () => {
  it('runs one hook of a plugin with validated options', async () => {
    const { z } = await import('../../core/index.js')
    const block = definePlugin({
      name: 'block',
      options: z.object({ blocked: z.array(z.string()) }),
      hooks: { rcpt: ({ recipient, options }) => (options.blocked.includes(recipient.address) ? reject('5.7.1', 'blocked') : undefined) },
    })
    expect(await runHook(block, 'rcpt', rcpt('bad@y.test'), { options: { blocked: ['bad@y.test'] } })).toEqual({ action: 'reject', status: '5.7.1', message: 'blocked' })
    expect(await runHook(block, 'rcpt', rcpt('good@y.test'), { options: { blocked: ['bad@y.test'] } })).toBeUndefined()
    await expect(pluginHarness(block, { options: { blocked: 'nope' } })).rejects.toThrow(/RELAY_ERR_PLUGIN_OPTIONS/)
  })

  it('a hook that never settles gives the timeout tempfail in a plain node script too (the bus timer is unref-ed)', async () => {
    const { execFile } = await import('node:child_process')
    const script =
      `import { runHook } from ${JSON.stringify(path.join(process.cwd(), 'dist/testing/index.js'))}\n` +
      `const v = await runHook({ name: 'stuck', hooks: { rcpt: () => new Promise(() => {}) } }, 'rcpt', { recipient: { address: 'x@y.test' } }, { config: { hookTimeout: '1s' } })\n` +
      `console.log(JSON.stringify(v))\n`
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout }))
      child.stdin?.end()
    })
    expect(out).toEqual({ code: 0, stdout: '{"action":"tempfail","code":451,"status":"4.3.0","message":"Temporary local problem, try again later"}\n' })
  }, 30_000)

  it('a hook that throws is a tempfail, and the harness says why: in its logs and on stderr', async () => {
    const broken = definePlugin({
      name: 'broken',
      hooks: {
        rcpt: ({ recipient, log }) => {
          log.info({ to: recipient.address }, 'checking')
          return (undefined as unknown as { lookup(a: string): undefined }).lookup(recipient.address)
        },
      },
    })
    const said: string[] = []
    const write = process.stderr.write.bind(process.stderr)
    process.stderr.write = ((chunk: string | Uint8Array) => said.push(String(chunk)) > 0) as typeof process.stderr.write
    let h: Awaited<ReturnType<typeof pluginHarness>> | undefined
    try {
      h = await pluginHarness(broken)
      expect(await h.run('rcpt', rcpt('x@y.test'))).toMatchObject({ action: 'tempfail' })
    } finally {
      process.stderr.write = write
      await h?.close()
    }
    expect(said.join('')).toMatch(/^\[relay-mta\/testing\] plugin broken failed in hook rcpt: Cannot read properties of undefined \(reading 'lookup'\)\n$/)
    expect(h!.logs.map((l) => l.msg)).toEqual(['checking', 'plugin broken failed in hook rcpt'])
  })

  it('a teardown that fails is said on stderr once, its reason not repeated', async () => {
    const p = definePlugin({ name: 'stuck', setup: () => ({}), teardown: () => Promise.reject(new Error('socket gone')), hooks: { rcpt: () => undefined } })
    const h = await pluginHarness(p)
    const said: string[] = []
    const write = process.stderr.write.bind(process.stderr)
    process.stderr.write = ((chunk: string | Uint8Array) => said.push(String(chunk)) > 0) as typeof process.stderr.write
    try {
      await h.close()
    } finally {
      process.stderr.write = write
    }
    expect(said).toEqual(['[relay-mta/testing] plugin stuck teardown failed: socket gone\n'])
  })

  it("a verdict field the stage does not read (senders outside auth, handled outside data) is said once per plugin and hook, and the verdict still counts", async () => {
    const p = definePlugin({ name: 'misplaced', hooks: { rcpt: () => ({ action: 'accept', handled: true }), mail: () => ({ action: 'accept', senders: ['*'] }) } })
    const h = await pluginHarness(p)
    const quiet = process.stderr.write.bind(process.stderr)
    process.stderr.write = (() => true) as typeof process.stderr.write
    try {
      for (let i = 0; i < 3; i++) expect(await h.run('rcpt', rcpt('x@y.test'))).toEqual({ action: 'accept', handled: true })
      expect(await h.run('mail', { session: rcpt('x@y.test').session, sender: { address: 'a@y.test', args: {} }, notes: rcpt('x@y.test').notes } as never)).toEqual({ action: 'accept', senders: ['*'] })
    } finally {
      process.stderr.write = quiet
      await h.close()
    }
    expect(h.logs.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      "plugin misplaced returned 'handled' from hook rcpt: only the data hook reads it, so it does nothing here",
      "plugin misplaced returned 'senders' from hook mail: only the auth hook reads it, so it does nothing here",
    ])
  })

  it('refuses what a test of nothing would pass on: an unknown hook or event name, an event given to run, a hook to emit, a module namespace for the plugin', async () => {
    const p = definePlugin({ name: 'p', hooks: { rcpt: () => reject('5.7.1', 'no'), delivered: () => undefined } })
    const h = await pluginHarness(p)
    try {
      await expect(h.run('rpct' as 'rcpt', rcpt('x@y.test'))).rejects.toThrow("run: 'rpct' is not a hook (hooks: connect, helo")
      await expect(h.run('RCPT' as 'rcpt', rcpt('x@y.test'))).rejects.toThrow("run: 'RCPT' is not a hook")
      await expect(h.run('delivered' as 'rcpt', rcpt('x@y.test'))).rejects.toThrow("'delivered' is an event: use emit")
      await expect(h.emit('deliverd' as 'delivered', {} as never)).rejects.toThrow("emit: 'deliverd' is not an event")
      await expect(h.emit('rcpt' as 'delivered', {} as never)).rejects.toThrow("'rcpt' is a hook: use run")
    } finally {
      await h.close()
    }
    await expect(runHook({ default: p } as unknown as typeof p, 'rcpt', rcpt('x@y.test'))).rejects.toThrow('pluginHarness: expected a plugin object with a name, got object (a module namespace? pass its default export)')
  })
})
