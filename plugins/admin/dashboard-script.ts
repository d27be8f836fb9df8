// The dashboard's script (served as /dashboard/app.js by dashboard.ts).
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
