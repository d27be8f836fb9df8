// The admin dashboard: one page, its stylesheet and script, served by the admin listener (GET / and
// /dashboard). No build step, no external requests: the page holds no data itself and fetches the
// admin API with the bearer token it keeps in sessionStorage (given once as `#token=…` in the URL).
// A strict Content-Security-Policy (self only, nothing inline) is set on all three.
import type { AdminServer } from './server.js'

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

// Plain browser JavaScript (no backticks or template interpolation: it lives in a TS template).
export const DASHBOARD_JS = String.raw`'use strict';
(function () {
  var TOKEN_KEY = 'relay-admin-token';
  var REFRESH_MS = 5000;
  var SVG = 'http://www.w3.org/2000/svg';
  var period = 'day';
  var timer = null;
  var noticeTimer = null;
  /** Each refresh renders only if no newer one started meanwhile (an action refreshes at once). */
  var generation = 0;

  // The token comes once in the fragment (never sent to the server), then lives in sessionStorage.
  var m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }

  function $(id) { return document.getElementById(id); }

  function el(tag, opts, children) {
    var e = document.createElement(tag);
    opts = opts || {};
    if (opts.cls) e.className = opts.cls;
    if (opts.text !== undefined && opts.text !== null) e.textContent = String(opts.text);
    if (opts.title) e.title = opts.title;
    if (opts.data) for (var k in opts.data) e.dataset[k] = opts.data[k];
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) {
      var t = document.createElementNS(SVG, 'title');
      t.textContent = text;
      e.appendChild(t);
    }
    return e;
  }

  function api(method, path, body) {
    var headers = { Accept: 'application/json' };
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(path, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          var err = new Error((data && data.error) || ('HTTP ' + res.status));
          err.status = res.status;
          throw err;
        }
        return data;
      });
    });
  }

  function notice(text, ok) {
    var n = $('notice');
    clearTimeout(noticeTimer);
    if (!text) { n.hidden = true; n.textContent = ''; return; }
    n.hidden = false;
    n.className = ok ? 'notice ok' : 'notice';
    n.textContent = text;
    if (ok) noticeTimer = setTimeout(function () { notice(''); }, 8000);
  }

  function pad(n) { return n < 10 ? '0' + n : String(n); }
  function clock(ms) { var d = new Date(ms); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
  function when(ms) { var d = new Date(ms); return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + clock(ms); }
  function age(ms) {
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }
  function pct(r) { return r === null || r === undefined ? '–' : (Math.round(r * 1000) / 10) + '%'; }

  function fill(tbody, rows, columns, emptyText) {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    if (!rows.length) {
      tbody.appendChild(el('tr', {}, [el('td', { cls: 'empty', text: emptyText }, [])]));
      tbody.firstChild.firstChild.colSpan = columns;
      return;
    }
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  function num(n) { return el('td', { cls: 'num', text: n }); }

  // Queue overview (GET /api/queue-summary).
  function renderSummary(s) {
    var box = $('summary');
    while (box.firstChild) box.removeChild(box.firstChild);
    var cards = [
      ['messages', s.messages], ['queued', s.recipients.queued], ['deferred', s.recipients.deferred], ['held', s.recipients.held],
      ['oldest', s.oldestReceivedAt ? age(s.oldestReceivedAt) : '–'],
    ];
    cards.forEach(function (c) {
      box.appendChild(el('div', { cls: 'card', data: { kind: c[0] } }, [el('b', { text: c[1] }), el('span', { text: c[0] === 'messages' ? 'messages' : c[0] === 'oldest' ? 'oldest message' : c[0] + ' recipients' })]));
    });
    fill($('destinations-queue').tBodies[0], s.domains.map(function (d) {
      return el('tr', {}, [el('td', { text: d.domain }), num(d.queued), num(d.deferred), num(d.held),
        el('td', { cls: 'actions' }, [el('button', { text: 'Retry now', data: { action: 'flush-domain', domain: d.domain } })])]);
    }), 5, 'nothing queued');
  }

  // Charts (GET /api/stats: series, thresholds).
  function axisLabels(g, series, x0, w, bottom) {
    series.forEach(function (p, i) {
      if (i % 3 !== 0) return;
      var d = new Date(p.hour);
      var t = svg('text', { x: x0 + i * w + w / 2, y: bottom + 12, 'text-anchor': 'middle' });
      t.textContent = pad(d.getHours()) + 'h';
      g.appendChild(t);
    });
  }

  function chartFrame(box) {
    while (box.firstChild) box.removeChild(box.firstChild);
    var root = svg('svg', { viewBox: '0 0 480 170', role: 'img' });
    box.appendChild(root);
    return root;
  }

  function renderVolume(series) {
    var root = chartFrame($('chart-volume'));
    var x0 = 36, top = 8, bottom = 148, w = (480 - x0 - 4) / series.length;
    var max = 1;
    series.forEach(function (p) { max = Math.max(max, p.delivered + p.deferred + p.bounced + p.complaints); });
    root.appendChild(svg('line', { x1: x0, y1: bottom, x2: 476, y2: bottom, 'class': 'axis' }));
    root.appendChild(svg('line', { x1: x0, y1: top, x2: 476, y2: top, 'class': 'axis' }));
    var lbl = svg('text', { x: x0 - 4, y: top + 4, 'text-anchor': 'end' }); lbl.textContent = String(max); root.appendChild(lbl);
    var zero = svg('text', { x: x0 - 4, y: bottom, 'text-anchor': 'end' }); zero.textContent = '0'; root.appendChild(zero);
    series.forEach(function (p, i) {
      var y = bottom;
      ['delivered', 'deferred', 'bounced', 'complaints'].forEach(function (k) {
        if (!p[k]) return;
        var h = (p[k] / max) * (bottom - top);
        y -= h;
        root.appendChild(svg('rect', { x: x0 + i * w + 1, y: y, width: Math.max(1, w - 2), height: h, 'class': k }, new Date(p.hour).toLocaleString() + ': ' + p[k] + ' ' + k));
      });
    });
    axisLabels(root, series, x0, w, bottom);
  }

  function renderRates(series, thresholds) {
    var root = chartFrame($('chart-rates'));
    var x0 = 36, top = 8, bottom = 148, w = (480 - x0 - 4) / series.length;
    var points = series.map(function (p) {
      var sent = p.delivered + p.bounced;
      return { hour: p.hour, bounce: sent ? p.bounced / sent : null, complaint: p.delivered ? p.complaints / p.delivered : null };
    });
    var max = Math.max(thresholds.bounceRateWarning * 2, thresholds.complaintRateWarning * 2, 0.01);
    points.forEach(function (p) { if (p.bounce !== null) max = Math.max(max, p.bounce); if (p.complaint !== null) max = Math.max(max, p.complaint); });
    max = Math.min(1, max);
    var y = function (r) { return bottom - (Math.min(r, max) / max) * (bottom - top); };
    root.appendChild(svg('line', { x1: x0, y1: bottom, x2: 476, y2: bottom, 'class': 'axis' }));
    var lbl = svg('text', { x: x0 - 4, y: top + 4, 'text-anchor': 'end' }); lbl.textContent = pct(max); root.appendChild(lbl);
    var zero = svg('text', { x: x0 - 4, y: bottom, 'text-anchor': 'end' }); zero.textContent = '0%'; root.appendChild(zero);
    root.appendChild(svg('line', { x1: x0, y1: y(thresholds.bounceRateWarning), x2: 476, y2: y(thresholds.bounceRateWarning), 'class': 'threshold-bounced' }, 'bounce rate warning level ' + pct(thresholds.bounceRateWarning)));
    root.appendChild(svg('line', { x1: x0, y1: y(thresholds.complaintRateWarning), x2: 476, y2: y(thresholds.complaintRateWarning), 'class': 'threshold-complaints' }, 'complaint rate warning level ' + pct(thresholds.complaintRateWarning)));
    [['bounce', 'bounced'], ['complaint', 'complaints']].forEach(function (k) {
      var d = '';
      points.forEach(function (p, i) {
        if (p[k[0]] === null) return;
        var cx = x0 + i * w + w / 2, cy = y(p[k[0]]);
        d += (d ? ' L' : 'M') + cx.toFixed(1) + ' ' + cy.toFixed(1);
        root.appendChild(svg('circle', { cx: cx, cy: cy, r: 2.5, 'class': k[1] }, new Date(p.hour).toLocaleString() + ': ' + k[0] + ' rate ' + pct(p[k[0]])));
      });
      if (d) root.appendChild(svg('path', { d: d, 'class': 'line-' + k[1] }));
    });
    axisLabels(root, series, x0, w, bottom);
  }

  // Reputation (GET /api/stats?period=).
  function figureRow(f) {
    var bounced = el('td', { cls: 'num', text: f.bounced, title: Object.keys(f.bouncedBy).map(function (c) { return c + ': ' + f.bouncedBy[c]; }).join(', ') });
    var row = el('tr', { cls: f.warnings.length ? 'warn' : '' }, [el('td', { text: f.domain || '(no sender domain)' }), num(f.delivered), num(f.deferred), bounced,
      num(pct(f.bounceRate)), num(f.complaints), num(pct(f.complaintRate))]);
    return row;
  }

  function renderStats(s) {
    var f = s.figures;
    var list = $('warnings');
    while (list.firstChild) list.removeChild(list.firstChild);
    if (!f.warnings.length) list.appendChild(el('li', { cls: 'none', text: 'No sending domain is over a warning level in the last ' + f.period + '.' }));
    f.warnings.forEach(function (w) {
      list.appendChild(el('li', { data: { domain: w.senderDomain, kind: w.kind }, text: '⚠ ' + w.senderDomain + ': ' + (w.kind === 'bounce-rate' ? 'bounce' : 'complaint') + ' rate ' + pct(w.rate) + ' is above ' + pct(w.threshold) + ' (' + w.volume + ' messages in the last ' + f.period + ')' }));
    });
    fill($('senders').tBodies[0], f.senders.map(figureRow), 7, 'nothing sent');
    fill($('destinations').tBodies[0], f.destinations.map(figureRow), 7, 'nothing sent');
    renderVolume(s.series);
    renderRates(s.series, f.thresholds);
    document.querySelectorAll('[data-period]').forEach(function (b) { b.classList.toggle('active', b.dataset.period === period); });
  }

  // Held and deferred messages (GET /api/queue?state=).
  function recipients(m) {
    return el('td', {}, m.recipients.filter(function (r) { return r.state === 'queued' || r.state === 'deferred'; }).map(function (r) {
      return el('div', { text: r.address + ' (' + r.state + (r.attempts ? ', ' + r.attempts + (r.attempts === 1 ? ' attempt' : ' attempts') : '') + ')', title: r.lastResponse || '' });
    }));
  }

  function messageRow(m, held) {
    var buttons = held
      ? [el('button', { text: 'Release', data: { action: 'release', id: m.id } }), el('button', { text: 'Delete', cls: 'danger', data: { action: 'delete', id: m.id } })]
      : [el('button', { text: 'Retry now', data: { action: 'flush', id: m.id } }), el('button', { text: 'Hold', data: { action: 'hold', id: m.id } }), el('button', { text: 'Delete', cls: 'danger', data: { action: 'delete', id: m.id } })];
    return el('tr', { data: { id: m.id } }, [el('td', {}, [el('code', { text: m.id })]), el('td', { text: m.sender || '<>' }), recipients(m), el('td', { text: when(m.receivedAt), title: age(m.receivedAt) + ' ago' }), el('td', { cls: 'actions' }, buttons)]);
  }

  function renderMessages(held, deferred) {
    fill($('held').tBodies[0], held.messages.map(function (m) { return messageRow(m, true); }), 5, 'no held messages');
    // A held message keeps its deferred recipients: it belongs to the held list only.
    var waiting = deferred.messages.filter(function (m) { return !m.heldAt; });
    fill($('deferred').tBodies[0], waiting.map(function (m) { return messageRow(m, false); }), 5, 'no deferred messages');
  }

  // Recent events (GET /api/events).
  function renderEvents(r) {
    fill($('events').tBodies[0], r.events.map(function (e) {
      return el('tr', { data: { type: e.type } }, [el('td', { text: clock(e.at), title: when(e.at) }), el('td', {}, [el('span', { cls: 'badge ' + e.type, text: e.type })]),
        el('td', {}, e.queueId ? [el('code', { text: e.queueId })] : []), el('td', { text: e.sender === '' ? '<>' : e.sender || '' }),
        el('td', { text: e.recipient || e.domain || '' }), el('td', { text: e.text + (e.category ? ' [' + e.category + ']' : '') + (e.client ? ' (client ' + e.client + ')' : '') })]);
    }), 6, 'no events');
  }

  function query(params) {
    var q = [];
    for (var k in params) if (params[k]) q.push(encodeURIComponent(k) + '=' + encodeURIComponent(params[k]));
    return q.length ? '?' + q.join('&') : '';
  }

  function refresh() {
    var mine = ++generation;
    var current = function (render) { return function (data) { if (mine === generation) render(data); }; };
    clearTimeout(timer);
    var events = query({ type: $('event-type').value, domain: $('event-domain').value.trim(), text: $('event-text').value.trim(), limit: '100' });
    var calls = [
      api('GET', '/api/queue-summary').then(current(renderSummary)),
      api('GET', '/api/stats' + query({ period: period })).then(current(renderStats)),
      Promise.all([api('GET', '/api/queue?state=held&limit=200'), api('GET', '/api/queue?state=deferred&limit=200')]).then(current(function (r) { renderMessages(r[0], r[1]); })),
      api('GET', '/api/events' + events).then(current(renderEvents)),
    ];
    return Promise.allSettled(calls).then(function (results) {
      if (mine !== generation) return;
      var failed = results.filter(function (r) { return r.status === 'rejected'; }).map(function (r) { return r.reason; });
      var auth = failed.find(function (e) { return e.status === 401 || e.status === 403; });
      if (auth) {
        $('status').textContent = 'not authorized';
        notice(auth.status === 401 ? 'This relay needs its admin token: open the dashboard as ' + location.pathname + '#token=<admin.token>.' : 'The admin token is wrong: open the dashboard again as ' + location.pathname + '#token=<admin.token>.');
      } else if (failed.length) {
        $('status').textContent = 'error at ' + clock(Date.now());
        notice('Could not load everything: ' + failed.map(function (e) { return e.message; }).join('; '));
      } else {
        $('status').textContent = 'updated ' + clock(Date.now());
        if (!$('notice').classList.contains('ok')) notice('');
      }
      schedule();
    });
  }

  function schedule() {
    clearTimeout(timer);
    if ($('auto-refresh').checked) timer = setTimeout(refresh, REFRESH_MS);
  }

  var ACTIONS = {
    hold: function (d) { return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/hold').then(function () { return d.id + ' held'; }); },
    release: function (d) { return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/release').then(function () { return d.id + ' released'; }); },
    'delete': function (d) {
      if (!window.confirm('Delete message ' + d.id + ' without a bounce?')) return Promise.resolve(null);
      return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/delete').then(function () { return d.id + ' deleted'; });
    },
    flush: function (d) { return api('POST', '/api/queue/flush', { id: d.id }).then(function (r) { return d.id + ': ' + r.flushed + ' recipient(s) due now'; }); },
    'flush-domain': function (d) { return api('POST', '/api/queue/flush', { domain: d.domain }).then(function (r) { return d.domain + ': ' + r.flushed + ' recipient(s) due now'; }); },
    'flush-all': function () { return api('POST', '/api/queue/flush', {}).then(function (r) { return r.flushed + ' recipient(s) due now'; }); },
  };

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest ? ev.target.closest('button') : null;
    if (!b) return;
    if (b.dataset.period) { period = b.dataset.period; refresh(); return; }
    var action = ACTIONS[b.dataset.action];
    if (!action) return;
    b.disabled = true;
    action(b.dataset).then(function (text) {
      if (text) notice(text, true);
      else b.disabled = false;
      return refresh();
    }, function (err) {
      b.disabled = false;
      notice(err.message);
    });
  });

  $('refresh-now').addEventListener('click', function () { refresh(); });
  $('auto-refresh').addEventListener('change', schedule);
  ['event-type', 'event-domain', 'event-text'].forEach(function (id) {
    $(id).addEventListener(id === 'event-type' ? 'change' : 'input', function () { refresh(); });
  });
  refresh();
})();
`
