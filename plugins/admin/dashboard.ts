// The admin dashboard: one page, its stylesheet and script, served by the admin listener (GET / and
// /dashboard). No build step, no external requests: the page holds no data itself and fetches the
// admin API with the bearer token it keeps in sessionStorage (given once as `#token=…` in the URL).
// A strict Content-Security-Policy (self only, nothing inline) is set on all three.
import type { AdminServer } from './server.js'
import { DASHBOARD_JS } from './dashboard-script.js'

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
    <h3>Held</h3>
    <table id="held"><thead><tr><th>Queue id</th><th>From</th><th>Recipients</th><th>Received</th><th></th></tr></thead><tbody></tbody></table>
    <h3>Deferred</h3>
    <table id="deferred"><thead><tr><th>Queue id</th><th>From</th><th>Recipients</th><th>Received</th><th></th></tr></thead><tbody></tbody></table>
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
</body>
</html>
`

export const DASHBOARD_CSS = `
:root { --fg: #1d2329; --muted: #66717c; --line: #dde2e6; --bg: #f6f7f8; --card: #fff;
  --delivered: #2e8b57; --deferred: #d49a00; --bounced: #c8372d; --complaints: #7b3fb5; --warn-bg: #fff3cd; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1.2em; background: #20262c; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
header .status { color: #b9c2ca; flex: 1; }
header .refresh { color: #dfe5ea; }
main { padding: 1em 1.2em; display: grid; gap: 1em; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8em 1em; }
h2 { font-size: 1.05em; margin: 0 0 .6em; display: flex; gap: .8em; align-items: center; }
h3 { font-size: .95em; margin: .9em 0 .3em; color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .9em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: var(--muted); font-style: italic; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
button { font: inherit; padding: .15em .6em; border: 1px solid #aab4bd; border-radius: 4px; background: #fff; cursor: pointer; }
button:hover { background: #eef1f3; }
button:disabled { opacity: .5; cursor: default; }
button.danger { border-color: var(--bounced); color: var(--bounced); }
td.actions { white-space: nowrap; }
td.actions button + button { margin-left: .3em; }
.cards { display: flex; gap: .8em; flex-wrap: wrap; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .4em .9em; min-width: 7em; }
.card b { display: block; font-size: 1.5em; }
.card span { color: var(--muted); font-size: .85em; }
.notice { margin: .8em 1.2em 0; padding: .5em .9em; border-radius: 6px; background: #fde2e0; border: 1px solid #f0b4ae; }
.notice.ok { background: #e3f4e8; border-color: #a9d8b8; }
.warnings { margin: 0; padding: 0; list-style: none; }
.warnings li { background: var(--warn-bg); border: 1px solid #f1d27a; border-radius: 4px; padding: .3em .7em; margin-bottom: .3em; }
.warnings li.none { background: none; border: none; color: var(--muted); padding-left: 0; }
tr.warn td { background: var(--warn-bg); }
.period button.active { background: #20262c; color: #fff; border-color: #20262c; }
.filters { display: flex; gap: .5em; margin-bottom: .5em; }
.filters input, .filters select { font: inherit; padding: .15em .4em; }
.badge { display: inline-block; padding: 0 .45em; border-radius: 3px; font-size: .85em; background: #e8ecef; }
.badge.delivered { background: #d6efdf; } .badge.deferred { background: #fbecc0; } .badge.bounced, .badge.rejected { background: #f8d5d2; }
.badge.complaint { background: #e8dcf5; } .badge.accepted { background: #dfe9f7; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 1em; }
figure { margin: 0; }
figcaption { font-size: .9em; color: var(--muted); margin-bottom: .3em; }
.legend i { display: inline-block; width: .8em; height: .8em; margin: 0 .25em 0 .7em; vertical-align: -1px; }
.k-delivered { background: var(--delivered); } .k-deferred { background: var(--deferred); } .k-bounced { background: var(--bounced); }
.k-complaints { background: var(--complaints); } .k-threshold { background: none; border-top: 2px dashed var(--muted); height: 0 !important; }
.chart svg { width: 100%; height: auto; display: block; }
svg .axis { stroke: var(--line); stroke-width: 1; }
svg text { fill: var(--muted); font-size: 10px; }
svg .delivered { fill: var(--delivered); } svg .deferred { fill: var(--deferred); } svg .bounced { fill: var(--bounced); } svg .complaints { fill: var(--complaints); }
svg .line-bounced { fill: none; stroke: var(--bounced); stroke-width: 2; }
svg .line-complaints { fill: none; stroke: var(--complaints); stroke-width: 2; }
svg .threshold-bounced { stroke: var(--bounced); stroke-dasharray: 4 3; stroke-width: 1; opacity: .7; }
svg .threshold-complaints { stroke: var(--complaints); stroke-dasharray: 4 3; stroke-width: 1; opacity: .7; }
`
