// The admin API's OpenAPI 3.1 document, served at GET /api/openapi.json. Its schemas come from the
// zod schemas the routes parse with (api-schemas.ts); test/e2e/admin-api.test.ts checks that every
// route the server registers is here and nothing else. Served without a token: it is the same for
// every installation (no queue data, addresses, hostnames, options or version), it describes what
// the source code already shows.
import { z } from '../../core/index.js'
import { apiSchemas } from './api-schemas.js'
import type { AdminServer } from './server.js'

type Json = Record<string, unknown>

const ref = (id: string) => ({ $ref: `#/components/schemas/${id}` })
const json = (id: string, description: string) => ({ description, content: { 'application/json': { schema: ref(id) } } })
const text = (type: string, description: string) => ({ description, content: { [type]: { schema: { type: 'string' } } } })
const error = (description: string) => json('Error', description)
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' }, description: 'queue id' }
const query = (name: string, description: string, schema: Json = { type: 'string' }) => ({ name, in: 'query', required: false, schema, description })

/** Every operation needs the bearer token but these (and says so with `security: []`). */
const PUBLIC = { security: [] }
const COMMON = { 401: error('no bearer token'), 403: error('wrong token, or the read-only token on a route that changes something') }
const QUEUE_VERB = { ...COMMON, 404: error('no such message'), 503: error('the relay is stopping') }

function op(summary: string, responses: Json, extra: Json = {}): Json {
  const isPublic = extra.security !== undefined
  return { summary, ...extra, responses: isPublic ? responses : { ...responses, ...COMMON } }
}

const PATHS: Record<string, Record<string, Json>> = {
  '/healthz': { get: op('The process answers', { 200: text('text/plain', 'ok') }, { ...PUBLIC, tags: ['probes'] }) },
  '/readyz': {
    get: op('Queue open and listeners up', { 200: json('Readiness', 'ready'), 503: json('Readiness', 'starting or stopping') }, { ...PUBLIC, tags: ['probes'] }),
  },
  '/api/openapi.json': { get: op('This document', { 200: { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } }, { ...PUBLIC, tags: ['meta'] }) },
  '/api/queue': {
    get: op('Queued messages, oldest first, a page at a time', { 200: json('QueuePage', 'a page'), 400: error('a bad parameter'), 503: error('the relay is stopping') }, {
      tags: ['queue'],
      parameters: [
        query('state', 'held, or messages with a recipient in that state', { type: 'string', enum: ['queued', 'deferred', 'held'] }),
        query('domain', 'messages with a recipient at this domain'),
        query('sender', "messages from this sender ('<>': the null sender)"),
        query('limit', 'at most this many (default: all)', { type: 'integer', minimum: 1, maximum: 100000 }),
        query('cursor', "the previous page's nextCursor: the messages after it"),
      ],
    }),
  },
  '/api/queue-summary': { get: op('Counts by state and destination domain', { 200: json('QueueSummary', 'the summary'), 503: error('the relay is stopping') }, { tags: ['queue'] }) },
  '/api/queue/flush': {
    post: op('Make pending recipients due now (all, one message, one domain)', { 200: json('FlushResult', 'flushed'), 400: error('a bad field'), 409: error('the message named is held'), ...QUEUE_VERB }, {
      tags: ['queue'],
      parameters: [query('domain', 'only this domain (also as a body field)'), query('id', 'only this message (also as a body field)')],
      requestBody: { required: false, content: { 'application/json': { schema: ref('FlushRequest') } } },
    }),
  },
  '/api/queue/bulk': {
    post: op('hold, release, flush, delete or bounce every message a filter selects', { 200: json('BulkResult', 'what matched and what was done'), 400: error('a bad action or filter'), 503: error('the relay is stopping') }, {
      tags: ['queue'],
      requestBody: { required: true, content: { 'application/json': { schema: ref('BulkRequest') } } },
    }),
  },
  '/api/queue/{id}': {
    get: op('One message: envelope, recipients with their attempt history, headers', { 200: json('MessageDetail', 'the message'), 400: error('not a queue id'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }),
    delete: op('Delete a message without a bounce', { 200: json('DeleteResult', 'deleted'), 409: error('being delivered right now (hold it, then delete)'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }),
  },
  '/api/queue/{id}/raw': {
    get: op('The message as queued (header section and body), like postcat -q', { 200: text('message/rfc822', 'the message'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }),
  },
  '/api/queue/{id}/hold': { post: op('Hold a message (not delivered until released)', { 200: json('HoldResult', 'held'), 409: error('already held'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }) },
  '/api/queue/{id}/release': { post: op('Release a held message (due now)', { 200: json('ReleaseResult', 'released'), 409: error('not held'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }) },
  '/api/queue/{id}/delete': { post: op('Delete a message without a bounce', { 200: json('DeleteResult', 'deleted'), 409: error('being delivered right now (hold it, then delete)'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }) },
  '/api/queue/{id}/bounce': { post: op('Bounce the pending recipients; a DSN goes to the sender', { 200: json('BounceResult', 'bounced'), 409: error('every pending recipient is being delivered right now'), ...QUEUE_VERB }, { tags: ['queue'], parameters: [idParam] }) },
  '/api/inject': {
    post: op(
      'Queue a message without SMTP, through the same checks as SMTP submission',
      {
        202: json('InjectResult', 'queued'),
        400: error('a bad body or envelope'),
        413: error('larger than the maxInjectSize option'),
        415: error('neither JSON nor message/rfc822'),
        422: json('InjectRefusal', 'refused for good (SMTP 5xx)'),
        503: json('InjectRefusal', 'refused for now (SMTP 4xx), or the relay is stopping'),
      },
      {
        tags: ['inject'],
        description: 'JSON `{ from, to, raw }` or `{ from, to, subject, text, headers? }`, or the message itself as `message/rfc822` with the envelope in the query (`?from=&to=`, `to` repeated or comma-separated). Full token only.',
        parameters: [query('from', 'envelope sender (message/rfc822 bodies)'), query('to', 'recipient(s) (message/rfc822 bodies)')],
        requestBody: {
          required: true,
          content: {
            'application/json': { schema: { oneOf: [ref('InjectRaw'), ref('InjectCompose')] } },
            'message/rfc822': { schema: { type: 'string' } },
          },
        },
      },
    ),
  },
  '/api/reload': { post: op('Reload the config, as SIGHUP does', { 200: json('ReloadResult', 'applied'), 422: json('ReloadResult', 'refused: nothing changed') }, { tags: ['control'] }) },
  '/api/stats': {
    get: op('Reputation figures', { 200: json('StatsResponse', 'figures'), 400: error('a bad period') }, { tags: ['stats'], parameters: [query('period', 'hour or day (default)', { type: 'string', enum: ['hour', 'day'] })] }),
  },
  '/api/events': {
    get: op('Recent events, newest first', { 200: json('EventsResponse', 'events'), 400: error('a bad parameter') }, {
      tags: ['stats'],
      parameters: [query('type', 'one event type'), query('domain', 'a domain'), query('text', 'text anywhere in the event'), query('after', 'events after this time (epoch ms)', { type: 'integer' }), query('limit', 'at most this many (default 200)', { type: 'integer' })],
    }),
  },
  '/metrics': { get: op('Prometheus metrics', { 200: text('text/plain', 'the Prometheus text format') }, { tags: ['metrics'] }) },
  '/': { get: op('The dashboard', { 200: text('text/html', 'the page') }, { ...PUBLIC, tags: ['dashboard'] }) },
  '/dashboard': { get: op('The dashboard', { 200: text('text/html', 'the page') }, { ...PUBLIC, tags: ['dashboard'] }) },
  '/dashboard/app.js': { get: op("The dashboard's script", { 200: text('text/javascript', 'script') }, { ...PUBLIC, tags: ['dashboard'] }) },
  '/dashboard/app.css': { get: op("The dashboard's style sheet", { 200: text('text/css', 'style sheet') }, { ...PUBLIC, tags: ['dashboard'] }) },
  '/dashboard/icon.svg': { get: op("The dashboard's icon", { 200: text('image/svg+xml', 'icon') }, { ...PUBLIC, tags: ['dashboard'] }) },
}

/** The named schemas as OpenAPI components (JSON Schema 2020-12, refs between them by component path). */
function componentSchemas(): Record<string, Json> {
  const { schemas } = z.toJSONSchema(apiSchemas, { io: 'input', uri: (id) => `#/components/schemas/${id}` }) as { schemas: Record<string, Json> }
  return Object.fromEntries(
    Object.entries(schemas).map(([id, { $schema: _s, $id: _i, ...schema }]) => [id, schema]),
  )
}

let cached: Json | undefined

/** The document (built once). */
export function openApiDocument(): Json {
  cached ??= {
    openapi: '3.1.0',
    info: {
      title: 'Relay admin API',
      version: '1',
      description:
        'The admin plugin\'s HTTP API. Every route but the probes, this document and the dashboard\'s page and assets wants `Authorization: Bearer <token>`: the full `token`, or the `readOnlyToken`, which may only GET (anything else is a 403) and reads no message content: `GET /api/queue/{id}/raw` (the message) is a 403 for it, and `GET /api/queue/{id}` gives it the envelope, recipients and attempts with `headers: null`. Errors are `{ "error": "..." }`.',
    },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'the admin plugin\'s token (full), or its readOnlyToken (GET only, no message content)' } },
      schemas: componentSchemas(),
    },
    paths: PATHS,
  }
  return cached
}

/** GET /api/openapi.json, without a token (see above). */
export function registerOpenApiRoute(server: Pick<AdminServer, 'route'>): void {
  server.route('GET', '/api/openapi.json', () => ({ json: openApiDocument() }), { public: true })
}
