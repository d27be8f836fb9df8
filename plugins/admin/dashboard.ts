// The admin dashboard: one page, its stylesheet and script, served by the admin listener (GET / and
// /dashboard). No build step, no external requests: the page holds no data itself and fetches the
// admin API with the bearer token it keeps in sessionStorage (given once as `#token=…` in the URL).
// A strict Content-Security-Policy (self only, nothing inline) is set on all three.
// For triage: held and deferred messages with their last reply, a detail view per message (envelope,
// headers, attempt history, actions), search by address, domain or queue id, actions per
// destination, recent events from the queue's attempt log; one column on a narrow screen.
import type { AdminServer } from './server.js'
import { DASHBOARD_JS } from './dashboard-script.js'
import { DASHBOARD_CSS } from './dashboard-style.js'

/** Self only; no inline script or style, no frames, no forms posting elsewhere. */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const SECURITY_HEADERS = {
  'Content-Security-Policy': DASHBOARD_CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
}

export function registerDashboard(server: Pick<AdminServer, 'route'>): void {
  const page = () => ({ body: DASHBOARD_HTML, contentType: 'text/html; charset=utf-8', headers: SECURITY_HEADERS })
  // Public: the page and its assets hold no data; every API call they make carries the token.
  server.route('GET', '/', page, { public: true })
  server.route('GET', '/dashboard', page, { public: true })
  server.route('GET', '/dashboard/app.js', () => ({ body: DASHBOARD_JS, contentType: 'text/javascript; charset=utf-8', headers: SECURITY_HEADERS }), { public: true })
  server.route('GET', '/dashboard/app.css', () => ({ body: DASHBOARD_CSS, contentType: 'text/css; charset=utf-8', headers: SECURITY_HEADERS }), { public: true })
  server.route('GET', '/dashboard/icon.svg', () => ({ body: ICON_SVG, contentType: 'image/svg+xml', headers: SECURITY_HEADERS }), { public: true })
}

const ICON_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#20262c"/><path d="M3 5h10v7H3z" fill="none" stroke="#fff"/><path d="M3 5l5 4 5-4" fill="none" stroke="#fff"/></svg>'

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Relay dashboard</title>
<link rel="icon" href="/dashboard/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard/app.css">
<script src="/dashboard/app.js" defer></script>
</head>
<body>
<header>
  <h1>Relay</h1>
  <span id="status" class="status">loading…</span>
  <label class="refresh"><input type="checkbox" id="auto-refresh" checked> auto refresh</label>
  <button type="button" id="refresh-now">Refresh</button>
</header>
<div id="notice" class="notice" hidden></div>
<main>
  <section id="queue-section">
    <h2>Queue</h2>
    <div id="summary" class="cards"></div>
    <h3>By destination</h3>
    <table id="destinations-queue"><thead><tr><th>Domain</th><th class="num">Queued</th><th class="num">Deferred</th><th class="num">Held</th><th></th></tr></thead><tbody></tbody></table>
    <p class="hint">Hold, release and bounce act on every message with a recipient at that domain.</p>
  </section>

  <section id="charts-section">
    <h2>Last 24 hours</h2>
    <div class="charts">
      <figure><figcaption>Messages per hour <span class="legend"><i class="k-delivered"></i>delivered <i class="k-deferred"></i>deferred <i class="k-bounced"></i>bounced <i class="k-complaints"></i>complaints</span></figcaption><div id="chart-volume" class="chart"></div></figure>
      <figure><figcaption>Rates per hour <span class="legend"><i class="k-bounced"></i>bounce rate <i class="k-complaints"></i>complaint rate <i class="k-threshold"></i>warning level</span></figcaption><div id="chart-rates" class="chart"></div></figure>
    </div>
  </section>

  <section id="reputation-section">
    <h2>Reputation <span class="period"><button type="button" data-period="hour">last hour</button><button type="button" data-period="day">last day</button></span></h2>
    <ul id="warnings" class="warnings"></ul>
    <h3>Sending domains</h3>
    <table id="senders"><thead><tr><th>Domain</th><th class="num">Delivered</th><th class="num">Deferred</th><th class="num">Bounced</th><th class="num">Bounce rate</th><th class="num">Complaints</th><th class="num">Complaint rate</th></tr></thead><tbody></tbody></table>
    <h3>Destination domains</h3>
    <table id="destinations"><thead><tr><th>Domain</th><th class="num">Delivered</th><th class="num">Deferred</th><th class="num">Bounced</th><th class="num">Bounce rate</th><th class="num">Complaints</th><th class="num">Complaint rate</th></tr></thead><tbody></tbody></table>
  </section>

  <section id="messages-section">
    <h2>Held and deferred messages <button type="button" id="flush-all" data-action="flush-all">Retry all now</button></h2>
    <div class="search">
      <input id="search" type="search" placeholder="address, domain or queue id" aria-label="search the queue" autocomplete="off">
      <span id="search-status" class="hint">Search the whole queue by sender or recipient address, recipient domain or queue id.</span>
    </div>
    <div id="search-box" hidden>
      <h3>Search results</h3>
      <table id="search-results"><thead><tr><th>Queue id</th><th>From</th><th>Recipients</th><th>Last reply</th><th>Category</th><th class="num">Attempts</th><th>Next attempt</th><th>Received</th><th></th></tr></thead><tbody></tbody></table>
    </div>
    <h3>Held</h3>
    <table id="held"><thead><tr><th>Queue id</th><th>From</th><th>Recipients</th><th>Last reply</th><th>Category</th><th class="num">Attempts</th><th>Next attempt</th><th>Received</th><th></th></tr></thead><tbody></tbody></table>
    <h3>Deferred</h3>
    <table id="deferred"><thead><tr><th>Queue id</th><th>From</th><th>Recipients</th><th>Last reply</th><th>Category</th><th class="num">Attempts</th><th>Next attempt</th><th>Received</th><th></th></tr></thead><tbody></tbody></table>
  </section>

  <section id="events-section">
    <h2>Recent events</h2>
    <div class="filters">
      <select id="event-type" aria-label="event type">
        <option value="">all types</option>
        <option>accepted</option><option>delivered</option><option>deferred</option><option>bounced</option>
        <option>rejected</option><option>suppressed</option><option>authFailed</option><option>complaint</option>
      </select>
      <input id="event-domain" placeholder="domain" aria-label="domain">
      <input id="event-text" placeholder="text" aria-label="text">
    </div>
    <table id="events"><thead><tr><th>Time</th><th>Type</th><th>Queue id</th><th>From</th><th>To / domain</th><th>Details</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<dialog id="detail" aria-labelledby="detail-title">
  <div class="detail-head">
    <h2 id="detail-title">Message <code id="detail-id"></code></h2>
    <div id="detail-actions" class="detail-actions"></div>
    <button type="button" id="detail-close">Close</button>
  </div>
  <div class="detail-body">
    <h3>Envelope</h3>
    <dl id="detail-envelope" class="envelope"></dl>
    <h3>Recipients</h3>
    <table id="detail-recipients"><thead><tr><th>Recipient</th><th>State</th><th class="num">Attempts</th><th>Next attempt</th><th>Last reply</th><th>Category</th><th>Remote host</th></tr></thead><tbody></tbody></table>
    <h3>Attempt history</h3>
    <table id="detail-history"><thead><tr><th>Time</th><th>Recipient</th><th>Result</th><th>Reply</th><th>Category</th><th>Remote host</th></tr></thead><tbody></tbody></table>
    <h3>Headers</h3>
    <pre id="detail-headers" class="headers"></pre>
  </div>
</dialog>
</body>
</html>
`
