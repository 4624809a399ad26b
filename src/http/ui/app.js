// hamlet web console: one page over the JSON API under /ui/api/.
// No libraries, no inline styles (the CSP forbids them): visibility is the
// `hidden` property, looks are classes, charts are SVG built with
// createElementNS/setAttribute. Server data is only ever set as text.
'use strict';
(() => {
  const API = '/ui/api/';
  const SVGNS = 'http://www.w3.org/2000/svg';
  const PAGES = ['status', 'history', 'try', 'eval'];
  const $ = (id) => document.getElementById(id);

  const state = {
    signedIn: false, readOnly: false, csrf: null, page: null,
    entries: new Map(), openId: null, openRow: null,
    tryBody: null, tryFile: null, evalTimer: null, rocKey: null,
  };

  // ---- helpers ------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  /** Calls the API; throws ApiError with the server's message. A 401 (other
   *  than a refused sign-in) ends the session in the page. */
  async function api(path, { method = 'GET', json, body, type } = {}) {
    const headers = {};
    const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(json);
    } else if (body !== undefined) {
      headers['Content-Type'] = type || 'message/rfc822';
      opts.body = body;
    }
    if (method !== 'GET' && path !== 'login' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
    let resp;
    try {
      resp = await fetch(API + path, opts);
    } catch (e) {
      throw new ApiError(0, 'cannot reach the server (' + e.message + ')');
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const msg = (data && data.error && data.error.message) || (resp.status + ' ' + resp.statusText);
      if (resp.status === 401 && path !== 'login') signedOut(msg);
      throw new ApiError(resp.status, msg);
    }
    return data;
  }

  /** An element with attributes (class, title, ...) and text/element children. */
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  const clear = (node) => { node.replaceChildren(); return node; };
  const setText = (id, text) => { $(id).textContent = text; };

  function showError(id, err) {
    const node = $(id);
    node.textContent = err ? (err.message || String(err)) : '';
  }

  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(ts, full) {
    const d = new Date(ts * 1000);
    const hms = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    const day = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate());
    if (full) return day + ' ' + hms;
    return d.toDateString() === new Date().toDateString() ? hms : day + ' ' + hms;
  }
  const hhmm = (ts) => { const d = new Date(ts * 1000); return pad(d.getHours()) + ':' + pad(d.getMinutes()); };

  function fmtBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function fmtDuration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + ' d ' + h + ' h';
    if (h) return h + ' h ' + m + ' min';
    if (m) return m + ' min ' + (s % 60) + ' s';
    return s + ' s';
  }

  const fmtProb = (p) => (typeof p === 'number' ? p.toFixed(3) : '–');
  const orDash = (v) => (v === null || v === undefined || v === '' ? '—' : String(v));

  /** A verdict as a coloured badge that also says it in words. */
  function verdictBadge(v) {
    const known = ['spam', 'ham', 'unsure'].includes(v);
    return el('span', { class: 'verdict ' + (known ? 'v-' + v : 'v-other') }, orDash(v));
  }

  // ---- session, sign-in, routing --------------------------------------------

  function updateHeader() {
    $('signout').hidden = !state.signedIn;
    $('signin-open').hidden = state.signedIn || !state.readOnly;
    $('mode').textContent = !state.signedIn && state.readOnly ? 'view only' : '';
    // Every action needs a session; titles say why a button is off.
    for (const b of document.querySelectorAll('button.act')) {
      b.disabled = !state.signedIn;
      if (!state.signedIn) b.title = 'Sign in to do this'; else b.removeAttribute('title');
    }
    if (state.openId !== null && state.entries.has(state.openId)) setLearnButtons(state.entries.get(state.openId));
  }

  function showSignIn(message) {
    for (const p of PAGES) $('page-' + p).hidden = true;
    $('tabs').hidden = true;
    $('loading').hidden = true;
    $('signin').hidden = false;
    $('signin-cancel').hidden = !state.readOnly;
    $('login-error').textContent = message || '';
    updateHeader();
    $('login-secret').focus();
  }

  function showApp() {
    $('signin').hidden = true;
    $('loading').hidden = true;
    $('tabs').hidden = false;
    updateHeader();
    route(false);
  }

  function signedOut(message) {
    const was = state.signedIn;
    state.signedIn = false;
    state.csrf = null;
    stopEvalPoll();
    showSignIn(was ? 'Your session has ended (' + message + '): sign in again.' : message);
  }

  async function boot() {
    try {
      const s = await api('session');
      state.signedIn = !!s.signed_in;
      state.readOnly = !!s.read_only;
      state.csrf = s.csrf || null;
      setText('version', s.version ? 'v' + s.version : '');
      if (state.signedIn || state.readOnly) showApp(); else showSignIn('');
    } catch (e) {
      if (e.status !== 401) setText('loading', 'The console cannot start: ' + e.message);
    }
  }

  async function login(ev) {
    ev.preventDefault();
    const secret = $('login-secret').value;
    if (!secret) { setText('login-error', 'Enter the learn token or the console password.'); return; }
    $('login-submit').disabled = true;
    setText('login-error', '');
    try {
      const r = await api('login', { method: 'POST', json: { secret } });
      state.signedIn = true;
      state.csrf = r.csrf;
      $('login-secret').value = '';
      showApp();
    } catch (e) {
      setText('login-error', e.status === 401 ? 'Sign-in refused: ' + e.message : e.message);
      $('login-secret').select();
    } finally {
      $('login-submit').disabled = false;
    }
  }

  async function logout() {
    try {
      await api('logout', { method: 'POST' });
    } catch (e) {
      if (e.status === 401) return; // already shown the sign-in form
    }
    state.signedIn = false;
    state.csrf = null;
    stopEvalPoll();
    if (state.readOnly) showApp(); else showSignIn('');
  }

  /** Shows the page named by the hash; `user` moves focus to its heading. */
  function route(user) {
    if (!$('signin').hidden) return;
    const want = location.hash.replace('#', '');
    const page = PAGES.includes(want) ? want : 'status';
    state.page = page;
    for (const p of PAGES) $('page-' + p).hidden = p !== page;
    for (const a of document.querySelectorAll('#tabs a')) {
      if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    if (page !== 'eval') stopEvalPoll();
    if (page === 'status') loadStatus();
    else if (page === 'history') loadHistory();
    else if (page === 'eval') loadEval();
    if (user) $(page + '-title').focus();
  }

  // ---- status -----------------------------------------------------------------

  async function loadStatus() {
    try {
      const s = await api('status');
      showError('status-error', null);
      renderStatus(s);
    } catch (e) {
      if (e.status !== 401) showError('status-error', e);
    }
  }

  function renderStatus(s) {
    const n = (v) => (typeof v === 'number' ? String(v) : '–');
    const v = s.verdicts || {}, m = s.model || {};
    setText('stat-checks', n(s.checks));
    setText('stat-learns', n(s.learns));
    setText('stat-v-spam', n(v.spam));
    setText('stat-v-ham', n(v.ham));
    setText('stat-v-unsure', n(v.unsure));
    setText('stat-model-spam', n(m.spam));
    setText('stat-model-ham', n(m.ham));
    setText('stat-tokens', n(m.tokens));
    setText('stat-db', fmtBytes(s.db_bytes || 0) + (s.backend ? ' · ' + s.backend : ''));
    setText('stat-uptime', fmtDuration(s.uptime_s || 0));
    setText('stat-history', s.history ? s.history.kept + ' of ' + s.history.capacity : '–');
    if (s.version) setText('version', 'v' + s.version);

    const actions = Object.entries(s.actions || {}).sort((a, b) => b[1] - a[1]);
    const atb = clear($('actions-table').tBodies[0]);
    if (!actions.length) atb.append(el('tr', {}, el('td', { colspan: 2, class: 'muted' }, 'No actions yet.')));
    for (const [name, count] of actions) atb.append(el('tr', {}, el('td', {}, name), el('td', { class: 'num' }, count)));

    const stb = clear($('stages-table').tBodies[0]);
    for (const st of s.stages || []) {
      const err = st.last_error;
      stb.append(el('tr', {},
        el('th', { scope: 'row' }, st.name),
        el('td', {}, el('span', { class: 'state ' + (st.enabled ? 'on' : 'off') }, st.enabled ? 'on' : 'off')),
        el('td', {}, orDash(st.detail)),
        el('td', { class: err ? 'error-cell' : 'muted' }, err ? fmtTime(err.at, true) + ': ' + err.message : 'none')));
    }
    drawMinutes(s.minutes || []);
  }

  /** The nice axis maximum at or above `v`: 1, 2, 5 times a power of ten. */
  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const k of [1, 2, 5, 10]) if (k * p >= v) return k * p;
    return 10 * p;
  }

  /** Stacked bars (ham, unsure, spam) per minute and a line of learns. */
  function drawMinutes(minutes) {
    const box = clear($('minute-chart'));
    if (!minutes.length) {
      box.append(el('p', { class: 'muted' }, 'No minutes recorded yet.'));
      setText('chart-summary', '');
      return;
    }
    const W = 960, H = 220, L = 46, R = 14, T = 16, B = 30;
    const pw = W - L - R, ph = H - T - B;
    const n = minutes.length, slots = Math.max(n, 30), bw = pw / slots;
    const top = niceMax(Math.max(1, ...minutes.map((m) => Math.max(m.checks, m.spam + m.ham + m.unsure, m.learns))));
    const y = (v) => T + ph - (v / top) * ph;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-labelledby': 'chart-title chart-summary' });
    for (const g of [0, top / 2, top]) {
      root.append(svg('line', { x1: L, x2: W - R, y1: y(g), y2: y(g), class: g ? 'grid' : 'axis' }));
      root.append(svg('text', { x: L - 6, y: y(g) + 4, 'text-anchor': 'end', class: 'tick' }, Number.isInteger(g) ? g : g.toFixed(1)));
    }
    root.append(svg('line', { x1: L, x2: L, y1: T, y2: T + ph, class: 'axis' }));
    const x0 = L + (slots - n) * bw;
    const points = [];
    minutes.forEach((m, i) => {
      const x = x0 + i * bw, g = svg('g', {});
      g.append(svg('title', {}, `${hhmm(m.t)}: ${m.checks} checks (${m.spam} spam, ${m.ham} ham, ${m.unsure} unsure), ${m.learns} learns`));
      let base = 0;
      for (const k of ['ham', 'unsure', 'spam']) {
        const v = m[k] || 0;
        if (v > 0) {
          g.append(svg('rect', { x: x + bw * 0.1, width: Math.max(bw * 0.8, 0.6), y: y(base + v), height: y(base) - y(base + v), class: 'bar-' + k }));
        }
        base += v;
      }
      root.append(g);
      points.push([x + bw / 2, y(m.learns || 0)]);
    });
    root.append(svg('polyline', { points: points.map((p) => p.map((c) => c.toFixed(1)).join(',')).join(' '), class: 'learns-line' }));
    if (n <= 60) for (const [cx, cy] of points) root.append(svg('circle', { cx, cy, r: 2.5, class: 'learns-dot' }));
    const label = (i, anchor) => root.append(svg('text', { x: points[i][0], y: H - 12, 'text-anchor': anchor, class: 'tick' }, hhmm(minutes[i].t)));
    label(0, n === 1 ? 'middle' : 'start');
    if (n > 2) label(Math.floor(n / 2), 'middle');
    if (n > 1) label(n - 1, 'end');
    root.append(svg('text', { x: W - R, y: T - 5, 'text-anchor': 'end', class: 'tick' }, 'per minute'));
    box.append(root);

    const sum = (k) => minutes.reduce((a, m) => a + (m[k] || 0), 0);
    const busiest = minutes.reduce((a, m) => (m.checks > a.checks ? m : a), minutes[0]);
    setText('chart-summary', `Over the ${n} minute${n === 1 ? '' : 's'} since ${hhmm(minutes[0].t)}: ` +
      `${sum('checks')} checks (${sum('spam')} spam, ${sum('ham')} ham, ${sum('unsure')} unsure) and ${sum('learns')} learns; ` +
      `the busiest minute, ${hhmm(busiest.t)}, had ${busiest.checks} checks.`);
  }

  // ---- clues chart (history detail and try) ----------------------------------

  /** One bar per clue: length |f(w) - 0.5| x |weight| (scaled to the
   *  longest), rightwards in red for spam-ward, leftwards in green for
   *  ham-ward; the token on the left, f(w) on the right. A table follows. */
  function renderClues(box, clues) {
    clear(box);
    if (!clues || !clues.length) {
      box.append(el('p', { class: 'muted no-clues' }, 'No clues: no token of this message is far enough from neutral (a young model has few).'));
      return;
    }
    let mag = clues.map((c) => Math.abs(c.prob - 0.5) * Math.abs(c.weight ?? 1));
    if (!mag.some((m) => m > 0)) mag = clues.map((c) => Math.abs(c.prob - 0.5));
    const most = Math.max(...mag) || 1;
    const W = 720, row = 22, T = 22, labelW = 250, valW = 56;
    const mid = labelW + 10 + (W - labelW - valW - 20) / 2, half = (W - labelW - valW - 20) / 2 - 2;
    const H = T + clues.length * row + 4;
    const spamward = clues.filter((c) => c.prob > 0.5).length;
    const root = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, class: 'clue-svg', role: 'img',
      'aria-label': `Clues: ${clues.length} tokens, ${spamward} spam-ward, ${clues.length - spamward} ham-ward (listed in the table below)`,
    });
    root.append(svg('text', { x: mid - 6, y: 14, 'text-anchor': 'end', class: 'tick' }, '← ham'));
    root.append(svg('text', { x: mid + 6, y: 14, class: 'tick' }, 'spam →'));
    root.append(svg('text', { x: W - 4, y: 14, 'text-anchor': 'end', class: 'tick' }, 'f(w)'));
    clues.forEach((c, i) => {
      const yy = T + i * row, len = Math.max(1, (mag[i] / most) * half), spam = c.prob > 0.5;
      const g = svg('g', { class: 'clue' });
      g.append(svg('title', {}, `${c.token}: f(w) ${c.prob.toFixed(4)}, in ${c.spam} spam and ${c.ham} ham, weight ${c.weight}`));
      const label = c.token.length > 34 ? c.token.slice(0, 33) + '…' : c.token;
      g.append(svg('text', { x: labelW, y: yy + 15, 'text-anchor': 'end', class: 'token' }, label));
      g.append(svg('rect', { x: spam ? mid : mid - len, y: yy + 3, width: len, height: row - 6, class: 'bar ' + (spam ? 'spamward' : 'hamward') }));
      g.append(svg('text', { x: W - 4, y: yy + 15, 'text-anchor': 'end', class: 'tick' }, c.prob.toFixed(3)));
      root.append(g);
    });
    root.append(svg('line', { x1: mid, x2: mid, y1: T, y2: H - 2, class: 'axis' }));
    const wrap = el('div', { class: 'chart-scroll' }, root);
    const body = el('tbody', {});
    for (const c of clues) {
      body.append(el('tr', {}, el('td', { class: 'token-cell' }, c.token), el('td', { class: 'num' }, c.prob.toFixed(4)),
        el('td', { class: 'num' }, c.spam), el('td', { class: 'num' }, c.ham), el('td', { class: 'num' }, c.weight)));
    }
    const table = el('table', { class: 'clue-table' },
      el('thead', {}, el('tr', {}, ...['Token', 'f(w)', 'Spam', 'Ham', 'Weight'].map((h, i) => el('th', { scope: 'col', class: i ? 'num' : null }, h)))),
      body);
    box.append(wrap, el('details', { class: 'clue-list' }, el('summary', {}, 'The clues as a table'), el('div', { class: 'table-wrap' }, table)));
  }

  // ---- history ----------------------------------------------------------------

  async function loadHistory() {
    try {
      const r = await api('history?limit=100');
      showError('history-error', null);
      renderHistory(r.entries || []);
    } catch (e) {
      if (e.status !== 401) showError('history-error', e);
    }
  }

  function renderHistory(entries) {
    const tb = clear($('history-table').tBodies[0]);
    state.entries = new Map(entries.map((e) => [e.id, e]));
    $('history-empty').hidden = entries.length > 0;
    state.openRow = null;
    for (const e of entries) {
      const tr = el('tr', { tabindex: 0, 'data-id': e.id, class: 'row', 'aria-label': `Check ${e.id}: ${e.subject ?? 'no subject kept'}, ${e.verdict}` },
        el('td', { class: 'c-time', title: fmtTime(e.at, true) }, fmtTime(e.at)),
        el('td', { class: 'c-via' }, e.via),
        el('td', { class: 'c-sender', title: e.sender === null ? 'not kept' : null }, orDash(e.sender)),
        el('td', { class: 'c-rcpt', title: e.rcpt === null ? 'not kept' : null }, orDash(e.rcpt)),
        el('td', { class: 'c-subject', title: e.subject ?? 'not kept' }, orDash(e.subject)),
        el('td', { class: 'c-score num' }, fmtProb(e.probability)),
        el('td', { class: 'c-verdict' }, verdictBadge(e.verdict)),
        el('td', { class: 'c-action' }, orDash(e.action)),
        el('td', { class: 'c-outcomes' }, (e.outcomes || []).join(', ')));
      if (e.id === state.openId) { tr.classList.add('selected'); tr.setAttribute('aria-current', 'true'); state.openRow = tr; }
      tb.append(tr);
    }
  }

  function rowEvent(ev) {
    const tr = ev.target.closest('tr[data-id]');
    if (!tr) return;
    if (ev.type === 'keydown' && ev.key !== 'Enter' && ev.key !== ' ') return;
    ev.preventDefault();
    openDetail(Number(tr.dataset.id), tr);
  }

  async function openDetail(id, tr) {
    if (state.openRow) { state.openRow.classList.remove('selected'); state.openRow.removeAttribute('aria-current'); }
    state.openId = id;
    state.openRow = tr;
    tr.classList.add('selected');
    tr.setAttribute('aria-current', 'true');
    const panel = $('detail');
    panel.hidden = false;
    setText('detail-title', 'Check ' + id);
    showError('detail-error', null);
    setText('learn-result', '');
    clear($('detail-fields'));
    clear($('detail-clues')).append(el('p', { class: 'muted' }, 'Loading…'));
    try {
      const d = await api('history/' + id);
      if (state.openId !== id) return;
      state.entries.set(id, d);
      renderDetail(d);
    } catch (e) {
      if (e.status !== 401) { showError('detail-error', e); clear($('detail-clues')); }
    }
    $('detail-title').focus();
  }

  function field(dl, name, value, id) {
    dl.append(el('div', {}, el('dt', {}, name), el('dd', id ? { id } : {}, value)));
  }

  function renderDetail(d) {
    const dl = clear($('detail-fields'));
    field(dl, 'Time', fmtTime(d.at, true));
    field(dl, 'Via', d.via);
    field(dl, 'Sender', d.sender ?? 'not kept');
    field(dl, 'Recipient', d.rcpt ?? 'not kept');
    field(dl, 'Subject', d.subject ?? 'not kept');
    field(dl, 'Score', typeof d.probability === 'number' ? d.probability.toFixed(6) : '–');
    field(dl, 'Verdict', verdictBadge(d.verdict));
    field(dl, 'Action', d.action ?? 'decided by the client');
    field(dl, 'Learned', d.learned ?? 'no', 'detail-learned');
    if (typeof d.ham_cutoff === 'number') field(dl, 'Cutoffs', `ham below ${d.ham_cutoff}, spam from ${d.spam_cutoff}`);
    const c = d.content;
    if (c) {
      const f = (v) => (typeof v === 'number' ? v.toFixed(2) : '–');
      field(dl, 'Content', `logits: Fisher ${f(c.fisher_logit)}, word regression ${f(c.lr_logit)}, 4-grams ${f(c.gram_logit)}; ${c.tokens} tokens`);
    }
    const details = d.details || [];
    const tb = clear($('detail-outcomes').tBodies[0]);
    for (const o of details) tb.append(el('tr', {}, el('td', {}, o.rule), el('td', {}, orDash(o.detail)), el('td', {}, orDash(o.action))));
    $('detail-outcomes').hidden = !details.length;
    $('detail-no-outcomes').hidden = details.length > 0;
    renderClues($('detail-clues'), d.clues);
    setLearnButtons(d);
  }

  function setLearnButtons(d) {
    for (const b of document.querySelectorAll('#detail button.learn')) {
      const why = !state.signedIn ? 'Sign in to learn'
        : d.learnable === false ? 'The message itself is no longer kept, so it cannot be learned' : null;
      b.disabled = !!why;
      if (why) b.title = why; else b.removeAttribute('title');
    }
  }

  function learnText(r) {
    const m = r.model || {};
    return `${r.result}: the model now holds ${m.spam} spam and ${m.ham} ham messages, ${m.tokens} tokens.`;
  }

  async function learnFromHistory(ev) {
    const how = ev.currentTarget.dataset.as, id = state.openId;
    if (id === null) return;
    const buttons = document.querySelectorAll('#detail button.learn');
    buttons.forEach((b) => { b.disabled = true; });
    const out = $('learn-result');
    out.className = '';
    out.textContent = 'Learning…';
    try {
      const r = await api(`history/${id}/learn`, { method: 'POST', json: { as: how } });
      out.textContent = learnText(r);
      const e = state.entries.get(id);
      if (e) e.learned = how;
      if ($('detail-learned')) setText('detail-learned', how);
    } catch (e) {
      out.className = 'error';
      out.textContent = e.message;
    } finally {
      const e = state.entries.get(id);
      if (e) setLearnButtons(e);
    }
  }

  function closeDetail() {
    $('detail').hidden = true;
    state.openId = null;
    const tr = state.openRow;
    state.openRow = null;
    if (tr) { tr.classList.remove('selected'); tr.removeAttribute('aria-current'); tr.focus(); }
  }

  // ---- try --------------------------------------------------------------------

  async function tryFileChosen() {
    const f = $('try-file').files[0];
    if (!f) return;
    try {
      const text = await f.text();
      $('try-text').value = text;
      state.tryFile = { text: $('try-text').value, blob: f };
    } catch (e) {
      showError('try-error', e);
    }
  }

  async function tryCheck(ev) {
    ev.preventDefault();
    const text = $('try-text').value;
    showError('try-error', null);
    if (!text.trim()) { setText('try-error', 'Paste a message or choose a file first.'); return; }
    // A file sent as read keeps its exact bytes (and line ends).
    const body = state.tryFile && state.tryFile.text === text ? state.tryFile.blob : text;
    $('try-check').disabled = true;
    setText('try-learn-result', '');
    try {
      const r = await api('try', { method: 'POST', body });
      state.tryBody = body;
      clear($('try-verdict')).append(verdictBadge(r.verdict));
      setText('try-prob', `probability ${typeof r.probability === 'number' ? r.probability.toFixed(6) : '–'}` +
        (typeof r.logit === 'number' ? `, logit ${r.logit.toFixed(2)}` : ''));
      renderClues($('try-clues'), r.clues);
      $('try-output').hidden = false;
    } catch (e) {
      showError('try-error', e);
    } finally {
      $('try-check').disabled = !state.signedIn;
    }
  }

  async function tryLearn(ev) {
    const how = ev.currentTarget.dataset.as;
    if (!state.tryBody) return;
    const out = $('try-learn-result');
    out.className = '';
    out.textContent = 'Learning…';
    try {
      out.textContent = learnText(await api('learn?as=' + how, { method: 'POST', body: state.tryBody }));
    } catch (e) {
      out.className = 'error';
      out.textContent = e.message;
    }
  }

  // ---- evaluate ---------------------------------------------------------------

  async function loadEval() {
    showError('eval-error', null);
    try {
      const f = await api('eval/folders');
      const sel = clear($('eval-folder'));
      for (const name of f.folders || []) sel.append(el('option', { value: name }, name));
      const none = !(f.folders && f.folders.length);
      if (none) sel.append(el('option', { value: '' }, f.root ? 'no labelled folders' : 'no eval_root configured'));
      sel.disabled = none;
      setText('eval-root', f.root ? 'Under ' + f.root + ': folders with spam/ and ham/ inside, or a TREC index.'
        : 'No [ui] eval_root is configured: upload messages instead.');
      $('eval-run').dataset.none = none ? '1' : '';
      $('eval-run').disabled = none || !state.signedIn;
      await pollEval();
    } catch (e) {
      if (e.status !== 401) showError('eval-error', e);
    }
  }

  function stopEvalPoll() {
    if (state.evalTimer) clearTimeout(state.evalTimer);
    state.evalTimer = null;
  }

  async function pollEval() {
    stopEvalPoll();
    let st;
    try {
      st = await api('eval');
    } catch (e) {
      if (e.status !== 401) showError('eval-error', e);
      return;
    }
    renderEval(st);
    if (st.state === 'running' && state.page === 'eval' && $('signin').hidden) state.evalTimer = setTimeout(pollEval, 1000);
  }

  function renderEval(st) {
    const running = st.state === 'running';
    const bar = $('eval-progress');
    bar.hidden = !running;
    for (const id of ['eval-run', 'eval-upload']) $(id).disabled = running || !state.signedIn || ($(id).dataset.none === '1');
    if (running) {
      bar.max = Math.max(1, st.total || 0);
      bar.value = st.done || 0;
      bar.textContent = `${st.done} of ${st.total}`;
      setText('eval-status-line', `Running${st.source ? ' on ' + st.source : ''}: ${st.done} of ${st.total} messages.`);
    } else if (st.state === 'failed') {
      setText('eval-status-line', 'The evaluation failed: ' + (st.error || 'unknown error'));
    } else if (st.state === 'done') {
      setText('eval-status-line', 'The last evaluation finished.');
    } else {
      setText('eval-status-line', 'No evaluation has run since the server started.');
    }
    const r = st.result;
    $('eval-output').hidden = !(st.state === 'done' && r);
    if (st.state !== 'done' || !r) return;
    const dl = clear($('eval-figures'));
    const pc = (v) => (typeof v === 'number' ? v.toFixed(3) + ' %' : '–');
    field(dl, 'Source', r.source);
    field(dl, 'Messages', `${r.messages} (${r.spam} spam, ${r.ham} ham)`);
    field(dl, '(1 − ROCA) %', pc(r.roca));
    field(dl, 'LAM %', pc(r.lam));
    field(dl, `Ham misclassified at ${r.threshold}`, pc(r.hm));
    field(dl, `Spam misclassified at ${r.threshold}`, pc(r.sm));
    field(dl, 'Time', typeof r.seconds === 'number' ? r.seconds.toFixed(1) + ' s' : '–');
    const key = `${r.source}|${r.seconds}|${r.messages}`;
    if (key !== state.rocKey) {
      state.rocKey = key;
      const img = $('eval-roc');
      img.alt = `ROC curve of the evaluation on ${r.source}: (1 − ROCA) ${pc(r.roca)}`;
      img.src = API + 'eval/roc.svg?run=' + encodeURIComponent(key);
    }
  }

  function base64(buf) {
    const bytes = new Uint8Array(buf);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  async function startEval(payload) {
    showError('eval-error', null);
    try {
      await api('eval', { method: 'POST', json: payload });
      state.rocKey = null;
      await pollEval();
    } catch (e) {
      if (e.status !== 401) showError('eval-error', e);
    }
  }

  function runFolder(ev) {
    ev.preventDefault();
    const folder = $('eval-folder').value;
    if (!folder) { setText('eval-error', 'Choose a folder first.'); return; }
    startEval({ folder });
  }

  async function runUpload(ev) {
    ev.preventDefault();
    const messages = [];
    setText('eval-status-line', 'Reading the files…');
    try {
      for (const [id, label] of [['eval-spam-files', 'spam'], ['eval-ham-files', 'ham']]) {
        for (const f of $(id).files) messages.push({ label, data: base64(await f.arrayBuffer()) });
      }
    } catch (e) {
      showError('eval-error', e);
      return;
    }
    if (!messages.length) { setText('eval-status-line', ''); setText('eval-error', 'Choose spam and ham messages first.'); return; }
    startEval({ messages });
  }

  // ---- wiring -----------------------------------------------------------------

  function init() {
    for (const id of ['try-check', 'try-learn-spam', 'try-learn-ham', 'eval-run', 'eval-upload']) $(id).classList.add('act');
    for (const h of document.querySelectorAll('.page h1')) h.setAttribute('tabindex', '-1');
    $('login-form').addEventListener('submit', login);
    $('signout').addEventListener('click', logout);
    $('signin-open').addEventListener('click', () => showSignIn(''));
    $('signin-cancel').addEventListener('click', showApp);
    window.addEventListener('hashchange', () => route(true));
    $('status-refresh').addEventListener('click', loadStatus);
    $('history-refresh').addEventListener('click', loadHistory);
    const tbody = $('history-table').tBodies[0];
    tbody.addEventListener('click', rowEvent);
    tbody.addEventListener('keydown', rowEvent);
    $('detail-close').addEventListener('click', closeDetail);
    for (const b of document.querySelectorAll('#detail button.learn')) b.addEventListener('click', learnFromHistory);
    $('try-form').addEventListener('submit', tryCheck);
    $('try-file').addEventListener('change', tryFileChosen);
    $('try-learn-spam').addEventListener('click', tryLearn);
    $('try-learn-ham').addEventListener('click', tryLearn);
    $('eval-folder-form').addEventListener('submit', runFolder);
    $('eval-upload-form').addEventListener('submit', runUpload);
    setInterval(() => {
      if (state.page === 'status' && !$('page-status').hidden && !document.hidden) loadStatus();
    }, 10000);
    boot();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
