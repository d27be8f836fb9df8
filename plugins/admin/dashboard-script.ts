// The dashboard's script (served as /dashboard/app.js by dashboard.ts): the helpers, the refresh
// loop and the actions, here; the views in parts of their own (charts, queue views, the detail
// view), joined into one function scope. Plain browser JavaScript (no backticks or template
// interpolation: it lives in TS templates).
import { CHARTS_JS } from './dashboard-charts.js'
import { DETAIL_JS } from './dashboard-detail.js'
import { QUEUE_VIEW_JS } from './dashboard-queue-view.js'

const HELPERS_JS = String.raw`
  var TOKEN_KEY = 'relay-admin-token';
  var REFRESH_MS = 5000;
  var SVG = 'http://www.w3.org/2000/svg';
  var period = 'day';
  var timer = null;
  var noticeTimer = null;
  var searchTimer = null;
  /** Each refresh renders only if no newer one started meanwhile (an action refreshes at once). */
  var generation = 0;

  // The token comes once in the fragment (never sent to the server), then lives in sessionStorage.
  var m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    // A malformed escape (%zz) is taken as written: the API then says whether the token is right.
    var given = m[1];
    try { given = decodeURIComponent(given); } catch (e) { /* as written */ }
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, '', location.pathname + location.search);
  }

  function $(id) { return document.getElementById(id); }

  /**
   * Text from outside (a remote reply, a client's Subject or address) with its control and
   * bidirectional-override characters as '?', as the CLI prints them: U+202E would show
   * '…gnp.exe' as '…exe.png'.
   */
  function shown(text) { return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, '?'); }

  function el(tag, opts, children) {
    var e = document.createElement(tag);
    opts = opts || {};
    if (opts.cls) e.className = opts.cls;
    if (opts.text !== undefined && opts.text !== null) e.textContent = shown(String(opts.text));
    if (opts.title) e.title = shown(String(opts.title));
    if (opts.data) for (var k in opts.data) if (opts.data[k] !== undefined) e.dataset[k] = opts.data[k];
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  /** A button the click handler below dispatches on its data-action. */
  function button(text, data, cls) {
    var b = el('button', { text: text, cls: cls, data: data });
    b.type = 'button';
    return b;
  }

  /** A queue id that opens the detail view. */
  function idButton(id) {
    var b = button(id, { action: 'open', id: id }, 'link');
    b.title = 'open ' + id;
    return b;
  }

  function badge(text, kind) { return el('span', { cls: 'badge ' + (kind || ''), text: text }); }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) {
      var t = document.createElementNS(SVG, 'title');
      t.textContent = shown(String(text));
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
    n.textContent = shown(String(text));
    if (ok) noticeTimer = setTimeout(function () { notice(''); }, 8000);
  }

  function pad(n) { return n < 10 ? '0' + n : String(n); }
  function clock(ms) { var d = new Date(ms); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
  function when(ms) { var d = new Date(ms); return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + clock(ms); }
  function span(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }
  function age(ms) { return span(Date.now() - ms); }
  function pct(r) { return r === null || r === undefined ? '–' : (Math.round(r * 1000) / 10) + '%'; }

  /** Replaces a table body's rows; each cell is labelled with its column (the narrow layout shows it). */
  function fill(tbody, rows, columns, emptyText) {
    clear(tbody);
    if (!rows.length) {
      tbody.appendChild(el('tr', {}, [el('td', { cls: 'empty', text: emptyText }, [])]));
      tbody.firstChild.firstChild.colSpan = columns;
      return;
    }
    var head = tbody.parentNode.tHead;
    var labels = head ? Array.prototype.map.call(head.rows[0].cells, function (th) { return th.textContent.trim(); }) : [];
    rows.forEach(function (r) {
      Array.prototype.forEach.call(r.cells, function (td, i) { if (labels[i]) td.dataset.label = labels[i]; });
      tbody.appendChild(r);
    });
  }

  function num(n) { return el('td', { cls: 'num', text: n }); }

  function query(params) {
    var q = [];
    for (var k in params) if (params[k]) q.push(encodeURIComponent(k) + '=' + encodeURIComponent(params[k]));
    return q.length ? '?' + q.join('&') : '';
  }
`

const MAIN_JS = String.raw`
  function refresh() {
    var mine = ++generation;
    var current = function (render) { return function (data) { if (mine === generation) render(data); }; };
    clearTimeout(timer);
    var events = query({ type: $('event-type').value, domain: $('event-domain').value.trim(), text: $('event-text').value.trim(), limit: '100' });
    var term = $('search').value.trim();
    var calls = [
      api('GET', '/api/queue-summary').then(current(renderSummary)),
      api('GET', '/api/stats' + query({ period: period })).then(current(renderStats)),
      Promise.all([api('GET', '/api/queue?state=held&limit=200'), api('GET', '/api/queue?state=deferred&limit=200')]).then(current(function (r) { renderMessages(r[0], r[1]); })),
      api('GET', '/api/events' + events).then(current(renderEvents)),
      (term ? searchQueue(term) : Promise.resolve(null)).then(current(function (list) { renderSearch(term, list); })),
    ];
    return Promise.allSettled(calls).then(function (results) {
      if (mine !== generation) return;
      var failed = results.filter(function (r) { return r.status === 'rejected'; }).map(function (r) { return r.reason; });
      var auth = failed.find(function (e) { return e.status === 401 || e.status === 403; });
      if (auth) {
        $('status').textContent = 'not authorized';
        notice(auth.status === 401 ? 'This relay needs its admin token: open the dashboard as ' + location.pathname + '#token=<token>.' : 'The admin token is wrong: open the dashboard again as ' + location.pathname + '#token=<token>.');
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

  function plural(n, what) { return n + ' ' + what + (n === 1 ? '' : 's'); }

  var BULK_DONE = { hold: 'held', release: 'released', bounce: 'bounced' };

  var ACTIONS = {
    open: function (d) { return openDetail(d.id); },
    hold: function (d) { return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/hold').then(function () { return d.id + ' held'; }); },
    release: function (d) { return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/release').then(function () { return d.id + ' released'; }); },
    'delete': function (d) {
      if (!window.confirm('Delete message ' + d.id + ' without a bounce?')) return Promise.resolve(null);
      return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/delete').then(function () {
        if (detailId === d.id) closeDetail();
        return d.id + ' deleted';
      });
    },
    bounce: function (d) {
      if (!window.confirm('Bounce message ' + d.id + '? Its pending recipients fail now and the sender gets a DSN.')) return Promise.resolve(null);
      return api('POST', '/api/queue/' + encodeURIComponent(d.id) + '/bounce').then(function (r) {
        // Its pending recipients were all it had left (unless some are in flight): it left the queue.
        if (detailId === d.id && !r.inFlight) closeDetail();
        return d.id + ': ' + plural(r.bounced.length, 'recipient') + ' bounced' + (r.inFlight ? '; in flight, left to their delivery: ' + r.inFlight.join(', ') : '') +
          (r.dsn ? ', DSN ' + r.dsn + ' to the sender' : r.dsnWaits ? '; the DSN goes once that delivery is done' : '');
      });
    },
    flush: function (d) { return api('POST', '/api/queue/flush', { id: d.id }).then(function (r) { return d.id + ': ' + r.flushed + ' recipient(s) due now'; }); },
    'flush-domain': function (d) { return api('POST', '/api/queue/flush', { domain: d.domain }).then(function (r) { return d.domain + ': ' + r.flushed + ' recipient(s) due now'; }); },
    'flush-all': function () { return api('POST', '/api/queue/flush', {}).then(function (r) { return r.flushed + ' recipient(s) due now'; }); },
    // Every message with a recipient at the domain (POST /api/queue/bulk); a bounce is counted first and confirmed.
    bulk: function (d) {
      var run = function (dryRun) { return api('POST', '/api/queue/bulk', { action: d.bulk, filter: { domain: d.domain }, dryRun: dryRun }); };
      var done = function (r) {
        var left = r.skipped && r.skipped.length ? '; ' + plural(r.skipped.length, 'message') + ' left as ' + (r.skipped.length === 1 ? 'it was' : 'they were') + ': ' + r.skipped.map(function (s) { return s.reason; }).join('; ') : '';
        return d.domain + ': ' + plural(r.done, 'message') + ' ' + BULK_DONE[d.bulk] + left;
      };
      if (d.bulk !== 'bounce') return run(false).then(done);
      return run(true).then(function (r) {
        if (!r.matched.length) return d.domain + ': no message to bounce';
        if (!window.confirm('Bounce ' + plural(r.matched.length, 'message') + ' with recipients at ' + d.domain + '? Their senders get a DSN.')) return null;
        return run(false).then(done);
      });
    },
  };

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest ? ev.target.closest('button') : null;
    if (!b) return;
    if (b.dataset.period) { period = b.dataset.period; refresh(); return; }
    var action = ACTIONS[b.dataset.action];
    if (!action) return;
    var opening = b.dataset.action === 'open';
    b.disabled = true;
    action(b.dataset).then(function (text) {
      b.disabled = false;
      // null: nothing done (not confirmed, or the view opened).
      if (text === null) return;
      notice(text, !/no longer in the queue/.test(text));
      if (opening) return;
      // The detail view shows the message as the action left it.
      if (detailId) openDetail(detailId).then(function (t) { if (t) notice(t, true); }, function (err) { notice(err.message); });
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
  $('search').addEventListener('input', function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(refresh, 250);
  });
  refresh();
`

export const DASHBOARD_JS = ["'use strict';\n(function () {", HELPERS_JS, QUEUE_VIEW_JS, CHARTS_JS, DETAIL_JS, MAIN_JS, '})();\n'].join('\n')
