// The dashboard's charts (last 24 hours, hourly) and reputation tables (GET /api/stats), as a part
// of the dashboard script (dashboard-script.ts joins the parts into one function scope: they share
// its helpers). Plain browser JavaScript, no backticks (it lives in a TS template).
export const CHARTS_JS = String.raw`
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
`
