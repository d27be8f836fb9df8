// The dashboard's queue views, as a part of the dashboard script (dashboard-script.ts joins the
// parts into one function scope: they share its helpers): the overview with actions per
// destination (GET /api/queue-summary), held and deferred messages with each recipient's last
// reply, category, attempts and next attempt (GET /api/queue), search by address, domain or queue
// id, and the recent events (GET /api/events). Plain browser JavaScript, no backticks.
export const QUEUE_VIEW_JS = String.raw`
  // Queue overview (GET /api/queue-summary). Per destination: retry, and hold, release or bounce
  // every message with a recipient there (POST /api/queue/bulk).
  function renderSummary(s) {
    var box = $('summary');
    clear(box);
    var cards = [
      ['messages', s.messages], ['queued', s.recipients.queued], ['deferred', s.recipients.deferred], ['held', s.recipients.held],
      ['oldest', s.oldestReceivedAt ? age(s.oldestReceivedAt) : '–'],
    ];
    cards.forEach(function (c) {
      box.appendChild(el('div', { cls: 'card', data: { kind: c[0] } }, [el('b', { text: c[1] }), el('span', { text: c[0] === 'messages' ? 'messages' : c[0] === 'oldest' ? 'oldest message' : c[0] + ' recipients' })]));
    });
    fill($('destinations-queue').tBodies[0], s.domains.map(function (d) {
      var active = d.queued + d.deferred > 0;
      return el('tr', { data: { domain: d.domain } }, [el('td', { text: d.domain }), num(d.queued), num(d.deferred), num(d.held),
        el('td', { cls: 'actions' }, [
          active ? button('Retry now', { action: 'flush-domain', domain: d.domain }) : null,
          active ? button('Hold', { action: 'bulk', bulk: 'hold', domain: d.domain }) : null,
          d.held ? button('Release', { action: 'bulk', bulk: 'release', domain: d.domain }) : null,
          button('Bounce', { action: 'bulk', bulk: 'bounce', domain: d.domain }, 'danger'),
        ])]);
    }), 5, 'nothing queued');
  }

  function isPending(r) { return r.state === 'queued' || r.state === 'deferred'; }

  /** One line per pending recipient (all recipients when none is pending). */
  function perRecipient(m, cls, render) {
    var list = m.recipients.filter(isPending);
    if (!list.length) list = m.recipients;
    return el('td', { cls: cls }, list.map(function (r) {
      var line = render(r);
      var div = el('div', { cls: 'rcpt', data: { address: r.address } }, typeof line === 'object' && line ? [line] : []);
      if (typeof line !== 'object') div.textContent = line === undefined || line === null ? '' : shown(String(line));
      return div;
    }));
  }

  function nextAttempt(m, r) {
    if (m.heldAt) return 'held';
    if (r.delivering) return 'delivering now';
    if (!isPending(r) || !r.nextAttemptAt) return '–';
    var wait = r.nextAttemptAt - Date.now();
    return wait <= 0 ? 'due now' : 'in ' + span(wait);
  }

  function messageRow(m) {
    var held = !!m.heldAt;
    var buttons = held
      ? [button('Release', { action: 'release', id: m.id }), button('Delete', { action: 'delete', id: m.id }, 'danger')]
      : [button('Retry now', { action: 'flush', id: m.id }), button('Hold', { action: 'hold', id: m.id }), button('Delete', { action: 'delete', id: m.id }, 'danger')];
    return el('tr', { data: { id: m.id } }, [
      el('td', {}, [idButton(m.id)]),
      el('td', { text: m.sender || '<>' }),
      perRecipient(m, '', function (r) { return r.address; }),
      perRecipient(m, 'reply', function (r) { return r.lastResponse || '–'; }),
      perRecipient(m, '', function (r) { return r.category ? badge(r.category, 'category') : '–'; }),
      perRecipient(m, 'num', function (r) { return r.attempts; }),
      perRecipient(m, '', function (r) { return nextAttempt(m, r); }),
      el('td', { text: when(m.receivedAt), title: age(m.receivedAt) + ' ago' }),
      el('td', { cls: 'actions' }, buttons),
    ]);
  }

  // Held and deferred messages (GET /api/queue?state=).
  function renderMessages(held, deferred) {
    fill($('held').tBodies[0], held.messages.map(messageRow), 9, 'no held messages');
    // A held message keeps its deferred recipients: it belongs to the held list only.
    var waiting = deferred.messages.filter(function (m) { return !m.heldAt; });
    fill($('deferred').tBodies[0], waiting.map(messageRow), 9, 'no deferred messages');
  }

  // Search: an address (sender, or recipient through its domain), a recipient domain, or a queue id.
  function searchQueue(term) {
    var t = term.toLowerCase().replace(/^<|>$/g, '');
    var byDomain = function (domain) { return api('GET', '/api/queue' + query({ domain: domain, limit: '500' })).then(function (r) { return r.messages; }); };
    if (t.indexOf('@') >= 0) {
      var domain = t.slice(t.lastIndexOf('@') + 1);
      return Promise.all([
        api('GET', '/api/queue' + query({ sender: t, limit: '500' })).then(function (r) { return r.messages; }),
        domain ? byDomain(domain) : Promise.resolve([]),
      ]).then(function (r) {
        var seen = {};
        var toIt = r[1].filter(function (m) { return m.recipients.some(function (x) { return x.address.toLowerCase() === t; }); });
        return r[0].concat(toIt).filter(function (m) { return seen[m.id] ? false : (seen[m.id] = true); });
      });
    }
    if (t.indexOf('.') >= 0) return byDomain(t.replace(/\.$/, ''));
    return api('GET', '/api/queue/' + encodeURIComponent(term.toUpperCase())).then(function (m) { return [m]; }, function (err) {
      if (err.status === 404) return [];
      throw err;
    });
  }

  function renderSearch(term, messages) {
    var box = $('search-box');
    if (messages === null) {
      box.hidden = true;
      $('search-status').textContent = 'Search the whole queue by sender or recipient address, recipient domain or queue id.';
      return;
    }
    box.hidden = false;
    $('search-status').textContent = messages.length + (messages.length === 1 ? ' message matches ' : ' messages match ') + '"' + term + '"';
    fill($('search-results').tBodies[0], messages.map(messageRow), 9, 'nothing in the queue matches');
  }

  // Recent events (GET /api/events): attempts from the queue's log, the rest from this node's memory.
  function renderEvents(r) {
    fill($('events').tBodies[0], r.events.map(function (e) {
      var details = e.text + (e.category ? ' [' + e.category + ']' : '') + (e.remoteHost ? ' (' + e.remoteHost + ')' : '') + (e.client ? ' (client ' + e.client + ')' : '');
      return el('tr', { data: { type: e.type } }, [el('td', { text: clock(e.at), title: when(e.at) }), el('td', {}, [badge(e.type, e.type)]),
        el('td', {}, e.queueId ? [idButton(e.queueId)] : []), el('td', { text: e.sender === '' ? '<>' : e.sender || '' }),
        el('td', { text: e.recipient || e.domain || '' }), el('td', { cls: 'reply', text: details })]);
    }), 6, 'no events');
  }
`
