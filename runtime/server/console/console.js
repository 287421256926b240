/* Weir operator console: the script of the page the admin endpoint serves
 * at `/`, built into the binary with include_str! beside index.html and
 * console.css. Plain ES2020 with no build step, so the binary carries the
 * whole console and the page runs under a CSP that allows only 'self'.
 * Everything the server answers may quote row values, so it only ever
 * reaches the page as textContent, never as markup. */
(() => {
  'use strict';

  const TOKEN_KEY = 'weir.token';
  const POLL_MS = 1000;
  const POLL_TIMEOUT_MS = 10000;
  // A promote can wait for a transaction boundary; give actions longer.
  const ACTION_TIMEOUT_MS = 120000;
  const HOUR_MS = 3600 * 1000;
  // Points further apart than this (the server reads once a second) are
  // not joined.
  const GAP_MS = 2500;
  const ROW_H = 56;
  const MAX_SINK_SERIES = 6;
  const PAGES = ['overview', 'snapshots', 'plugins', 'dead-letters'];

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  // Writing only on change keeps selections and screen readers calm.
  function setText(node, text) {
    const t = text == null ? '' : String(text);
    if (node.textContent !== t) node.textContent = t;
  }

  function setAttr(node, name, value) {
    const v = value == null ? '' : String(value);
    if (node.getAttribute(name) !== v) node.setAttribute(name, v);
  }

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const obj = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {});
  const word = (v) => String(v == null ? 'unknown' : v).toLowerCase().replace(/[^a-z0-9-]+/g, '-') || 'unknown';

  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const fmtInt = (v) => (isNum(v) ? intFmt.format(v) : '–');
  const fmtRate = (v) => (isNum(v) ? (Math.abs(v) >= 100 ? intFmt : decFmt).format(v) : '–');

  function fmtBytes(v) {
    if (!isNum(v)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let x = Math.abs(v);
    let i = 0;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i += 1;
    }
    return (v < 0 ? '-' : '') + (i ? decFmt : intFmt).format(x) + ' ' + units[i];
  }

  function fmtDuration(s) {
    if (!isNum(s)) return '–';
    if (s < 0) s = 0;
    if (s < 10) return decFmt.format(s) + ' s';
    s = Math.round(s);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h ${m % 60}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  function fmtAgo(ms) {
    if (!isNum(ms)) return '';
    const s = (Date.now() - ms) / 1000;
    return s < 1.5 ? 'just now' : fmtDuration(Math.round(s)) + ' ago';
  }

  function parseTime(v) {
    if (typeof v !== 'string' && !isNum(v)) return null;
    const t = new Date(v).getTime();
    return Number.isFinite(t) ? t : null;
  }

  const localTime = (ms) => new Date(ms).toLocaleString();

  function clock(ms, withSeconds) {
    const opts = { hour: '2-digit', minute: '2-digit' };
    if (withSeconds) opts.second = '2-digit';
    return new Date(ms).toLocaleTimeString([], opts);
  }

  function pretty(v) {
    try {
      return JSON.stringify(v, null, 2);
    } catch (e) {
      return String(v);
    }
  }

  // Keeps `nodes` as the children of `parent`, in order, moving only what
  // is out of place so focus and open <details> survive.
  function placeInOrder(parent, nodes) {
    nodes.forEach((n, i) => {
      if (parent.children[i] !== n) parent.insertBefore(n, parent.children[i] || null);
    });
    while (parent.children.length > nodes.length) parent.lastElementChild.remove();
  }

  // ------------------------------------------------------------------- http

  class HttpError extends Error {
    constructor(status, data) {
      super((data && typeof data.error === 'string' && data.error) || `the server answered ${status}`);
      this.status = status;
    }
  }

  let token = sessionStorage.getItem(TOKEN_KEY) || '';

  async function request(method, path, body, tok = token, timeout = POLL_TIMEOUT_MS) {
    const headers = { Accept: 'application/json' };
    if (tok) headers.Authorization = 'Bearer ' + tok;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', signal: AbortSignal.timeout(timeout) };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = { error: text.slice(0, 500) };
      }
    }
    return { status: res.status, ok: res.ok, data };
  }

  async function getJSON(path) {
    const r = await request('GET', path);
    if (!r.ok) throw new HttpError(r.status, r.data);
    return r.data;
  }

  const answerError = (r) => (r.data && typeof r.data.error === 'string' ? r.data.error : `The server answered ${r.status}.`);
  function reachError(e) {
    const why = String((e && e.message) || e).replace(/[.\s]*$/, '');
    return `Cannot reach the server: ${why}.`;
  }

  // ------------------------------------------------------------------ state

  let data = { status: null, deadLetters: null };
  let hist = [];
  let shadowReports = {};
  let lastUpdated = null;
  let page = 'overview';
  // Bumped on every login and logout: answers from an older session are dropped.
  let session = 0;

  // ---------------------------------------------------------- login, logout

  let bootTimer = null;

  async function boot() {
    clearTimeout(bootTimer);
    const mine = session;
    let r;
    try {
      r = await request('GET', '/status');
    } catch (e) {
      if (mine !== session) return;
      showLogin(reachError(e) + ' Retrying…');
      bootTimer = setTimeout(boot, 3000);
      return;
    }
    // Logged in by hand meanwhile.
    if (mine !== session) return;
    if (r.status === 401) {
      forgetToken();
      showLogin('');
    } else if (!r.ok) {
      showLogin(answerError(r));
      bootTimer = setTimeout(boot, 3000);
    } else {
      enterApp(r.data);
    }
  }

  function forgetToken() {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
  }

  function showLogin(message) {
    $('loading').hidden = true;
    $('app').hidden = true;
    $('login').hidden = false;
    setText($('login-error'), message);
    $('token').focus();
  }

  function enterApp(status) {
    clearTimeout(bootTimer);
    session += 1;
    $('loading').hidden = true;
    $('login').hidden = true;
    $('app').hidden = false;
    data.status = status;
    lastUpdated = Date.now();
    route();
  }

  // Drops every value shown, so a logged-out page keeps nothing readable.
  function toLogin(message) {
    session += 1;
    clearTimeout(timer);
    timer = null;
    forgetToken();
    data = { status: null, deadLetters: null };
    hist = [];
    shadowReports = {};
    lastUpdated = null;
    $('snapshot-search').value = '';
    snap.query = '';
    for (const id of ['snapshot-result', 'conn-error']) {
      setText($(id), '');
      $(id).hidden = true;
    }
    PAGES.forEach(renderPage);
    renderHeader();
    showLogin(message);
  }

  $('login').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const tok = $('token').value.trim();
    const button = $('login-submit');
    // A header value can only carry printable ASCII, which any token is.
    if (/[^\x21-\x7e]/.test(tok)) {
      setText($('login-error'), 'That is the wrong token.');
      return;
    }
    button.disabled = true;
    setText($('login-error'), '');
    try {
      const r = await request('GET', '/status', undefined, tok);
      if (r.status === 401) {
        setText($('login-error'), 'That is the wrong token.');
        $('token').select();
      } else if (!r.ok) {
        setText($('login-error'), answerError(r));
      } else {
        token = tok;
        if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
        $('token').value = '';
        enterApp(r.data);
      }
    } catch (e) {
      setText($('login-error'), reachError(e));
    } finally {
      button.disabled = false;
    }
  });

  $('logout').addEventListener('click', () => {
    sessionStorage.clear();
    toLogin('');
  });

  // ---------------------------------------------------------------- polling

  let timer = null;
  let busy = false;
  let again = false;

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  }

  function refreshSoon() {
    if (!$('app').hidden) schedule(0);
  }

  async function tick() {
    timer = null;
    if (busy) {
      again = true;
      return;
    }
    const mine = session;
    if (document.hidden) {
      schedule(POLL_MS);
      return;
    }
    busy = true;
    try {
      await refresh(mine);
      if (mine === session) showConnError(null);
    } catch (e) {
      if (mine !== session) return;
      if (e.status === 401) {
        toLogin('The server no longer accepts the token; log in again.');
        return;
      }
      showConnError(e);
    } finally {
      busy = false;
      const rerun = again;
      again = false;
      if (mine === session) {
        renderUpdated();
        schedule(rerun ? 0 : POLL_MS);
      } else if (rerun && !$('app').hidden) {
        // A new session asked for a refresh while this old one was out.
        schedule(0);
      }
    }
  }

  async function refresh(mine) {
    const status = await getJSON('/status');
    if (mine !== session) return;
    data.status = status;
    lastUpdated = Date.now();
    const current = page;
    const extra = [];
    if (current === 'overview') extra.push(fetchHistory(mine));
    if (current === 'plugins') extra.push(fetchShadows(mine, status));
    if (current === 'dead-letters') extra.push(fetchDeadLetters(mine));
    const results = await Promise.allSettled(extra);
    if (mine !== session) return;
    renderHeader();
    renderPage(current);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  async function fetchHistory(mine) {
    const last = hist.length ? hist[hist.length - 1].t : null;
    const h = await getJSON(last == null ? '/history' : '/history?since=' + encodeURIComponent(last));
    if (mine !== session) return;
    let newest = last;
    for (const s of Array.isArray(h && h.samples) ? h.samples : []) {
      if (s && isNum(s.t) && (newest == null || s.t > newest)) {
        hist.push(s);
        newest = s.t;
      }
    }
    if (!hist.length) return;
    const cutoff = hist[hist.length - 1].t - HOUR_MS;
    const keepFrom = hist.findIndex((s) => s.t >= cutoff);
    if (keepFrom > 0) hist.splice(0, keepFrom);
  }

  async function fetchShadows(mine, status) {
    const plugins = obj(status && status.plugins);
    const names = Object.keys(plugins).filter((n) => plugins[n] && plugins[n].shadow);
    for (const n of Object.keys(shadowReports)) if (!names.includes(n)) delete shadowReports[n];
    await Promise.all(
      names.map(async (n) => {
        const r = await request('GET', `/plugins/${encodeURIComponent(n)}/shadow`);
        if (mine !== session) return;
        // Gone between /status and now: promoted or discarded.
        if (r.status === 404) delete shadowReports[n];
        else if (!r.ok) throw new HttpError(r.status, r.data);
        else shadowReports[n] = r.data;
      }),
    );
  }

  async function fetchDeadLetters(mine) {
    const d = await getJSON('/dead-letters');
    if (mine === session) data.deadLetters = d;
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refreshSoon();
  });

  // ----------------------------------------------------------------- header

  function showConnError(e) {
    const box = $('conn-error');
    if (!e) {
      box.hidden = true;
      setText(box, '');
      return;
    }
    const what = e instanceof HttpError ? `The server answered ${e.status}: ${e.message}` : reachError(e);
    setText(box, what + (lastUpdated ? ` Showing data from ${clock(lastUpdated, true)}.` : ''));
    box.hidden = false;
  }

  function renderUpdated() {
    const u = $('updated');
    if (!lastUpdated) {
      setText(u, 'not updated yet');
      return;
    }
    const stale = Date.now() - lastUpdated > 3 * POLL_MS;
    setText(u, `Updated ${clock(lastUpdated, true)}` + (stale ? ` (${fmtAgo(lastUpdated)})` : ''));
    setAttr(u, 'title', localTime(lastUpdated));
    u.classList.toggle('stale', stale);
  }

  function pipeline() {
    const p = obj(data.status && data.status.pipeline);
    return { state: typeof p.state === 'string' ? p.state : null, reason: p.reason == null ? null : String(p.reason) };
  }

  function renderState(node, state) {
    setText(node, state || '–');
    const want = 'state-' + word(state);
    for (const c of [...node.classList]) if (c.startsWith('state-') && c !== 'state-badge' && c !== want) node.classList.remove(c);
    node.classList.add(want);
  }

  function renderHeader() {
    const { state } = pipeline();
    renderState($('header-state'), state);
    document.title = state ? `Weir · ${state}` : 'Weir';
    renderUpdated();
  }

  // ---------------------------------------------------------------- routing

  function route() {
    const h = location.hash.slice(1);
    page = PAGES.includes(h) ? h : 'overview';
    for (const p of PAGES) $('page-' + p).hidden = p !== page;
    for (const a of document.querySelectorAll('nav a')) {
      if (a.getAttribute('href') === '#' + page) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    renderHeader();
    renderPage(page);
    refreshSoon();
  }

  function renderPage(p) {
    if (p === 'overview') renderOverview();
    else if (p === 'snapshots') renderSnapshots();
    else if (p === 'plugins') renderPlugins();
    else if (p === 'dead-letters') renderDeadLetters();
  }

  window.addEventListener('hashchange', route);

  // --------------------------------------------------------------- overview

  function renderOverview() {
    const s = obj(data.status);
    const slot = s.slot && typeof s.slot === 'object' ? s.slot : {};
    const { state, reason } = pipeline();
    renderState($('pipeline-state'), state);
    const r = $('pipeline-reason');
    setText(r, reason);
    r.hidden = !reason;
    r.classList.toggle('alert', state === 'halted' || state === 'degraded');

    setText($('server-lsn'), slot.server_lsn || '–');
    setText($('acked-lsn'), s.acked_lsn || '–');
    const lag = $('lag-bytes');
    setText(lag, fmtBytes(slot.lag_bytes));
    setAttr(lag, 'title', isNum(slot.lag_bytes) ? fmtInt(slot.lag_bytes) + ' bytes' : 'not read yet');
    setText($('lag-seconds'), fmtDuration(slot.lag_seconds));
    setText($('changes-rate'), fmtRate(s.changes_per_second));
    setText($('changes-in'), fmtInt(s.changes_in));

    renderSinks(obj(s.sinks));
    renderCharts();
  }

  const sinkRows = new Map();
  const SINK_CELLS = ['state', 'rate', 'records', 'errors', 'rejected', 'error', 'since'];
  const NUM_CELLS = ['rate', 'records', 'errors', 'rejected'];

  function renderSinks(sinks) {
    const body = $('sinks').tBodies[0];
    const names = Object.keys(sinks).sort();
    for (const [name, row] of sinkRows) if (!names.includes(name)) sinkRows.delete(name), row.remove();
    const rows = names.map((name) => {
      let row = sinkRows.get(name);
      if (!row) {
        row = document.createElement('tr');
        row.dataset.sink = name;
        const th = el('th', 'name', name);
        th.scope = 'row';
        row.append(th);
        for (const c of SINK_CELLS) row.append(el('td', NUM_CELLS.includes(c) ? c + ' num' : c));
        sinkRows.set(name, row);
      }
      updateSink(row, obj(sinks[name]));
      return row;
    });
    placeInOrder(body, rows);
    $('sinks-empty').hidden = rows.length > 0;
    $('sinks').parentNode.hidden = rows.length === 0;
  }

  function updateSink(row, k) {
    const cell = (c) => row.querySelector('.' + c);
    const state = k.degraded ? 'degraded' : k.last_error ? 'failing' : 'ok';
    setText(cell('state'), state);
    setAttr(row, 'class', 'sink-' + state);
    setText(cell('rate'), fmtRate(k.records_per_second));
    setText(cell('records'), fmtInt(k.records));
    setText(cell('errors'), fmtInt(k.errors));
    setText(cell('rejected'), fmtInt(k.rejected));
    setText(cell('error'), k.last_error || '');
    const since = parseTime(k.failing_since);
    setText(cell('since'), since == null ? '' : `${localTime(since)} (for ${fmtDuration((Date.now() - since) / 1000)})`);
  }

  // ----------------------------------------------------------------- charts

  const SVG = 'http://www.w3.org/2000/svg';

  function svgNode(tag, attrs, text) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text != null) n.textContent = String(text);
    return n;
  }

  // A round axis maximum: 1, 2, 2.5 or 5 times a power of ten, counted in
  // KiB/MiB/… for bytes so the label reads "2 MiB", not "1.9 MiB".
  function niceCeil(v, base) {
    if (!(v > 0)) return 1;
    let unit = 1;
    if (base === 1024) while (v / unit >= 1024) unit *= 1024;
    const x = v / unit;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x * 0.999999) return m * p * unit;
    return 10 * p * unit;
  }

  const tablesWord = (n) => `${fmtInt(n)} ${n === 1 ? 'table' : 'tables'}`;

  function points(field, sub) {
    const out = [];
    for (const s of hist) {
      const v = sub == null ? s[field] : obj(s[field])[sub];
      if (isNum(v)) out.push([s.t, v]);
    }
    return out;
  }

  function renderCharts() {
    // Hidden charts measure as zero; only empty ones (after a logout) are drawn unseen.
    if ($('page-overview').hidden && hist.length) return;
    const sinkNames = [];
    for (const s of hist) for (const n of Object.keys(obj(s.sinks))) if (!sinkNames.includes(n)) sinkNames.push(n);
    const changes = [{ name: 'changes in', points: points('changes_per_second') }];
    for (const n of sinkNames.sort().slice(0, MAX_SINK_SERIES)) changes.push({ name: 'sink ' + n, points: points('sinks', n) });
    drawChart($('chart-changes'), changes, { fmt: fmtRate, floor: 10, empty: 'No samples yet' });
    drawChart($('chart-lag'), [{ name: 'lag', points: points('lag_bytes') }], {
      fmt: fmtBytes,
      base: 1024,
      floor: 64 * 1024,
      empty: 'No slot reading yet',
    });
    drawChart($('chart-lag-seconds'), [{ name: 'lag', points: points('lag_seconds') }], {
      fmt: fmtDuration,
      floor: 1,
      empty: 'No slot reading yet',
    });
  }

  function drawChart(svg, series, opt) {
    const box = svg.getBoundingClientRect();
    const W = Math.max(240, Math.round(box.width) || 600);
    const H = Math.max(100, Math.round(box.height) || 150);
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const legend = svg.parentNode.querySelector('.legend');
    const nodes = [];
    let t0 = Infinity;
    let t1 = -Infinity;
    let vmax = 0;
    for (const s of series) {
      for (const [t, v] of s.points) {
        if (t < t0) t0 = t;
        if (t > t1) t1 = t;
        if (v > vmax) vmax = v;
      }
    }
    if (!series[0].points.length) {
      svg.setAttribute('data-points', '0');
      nodes.push(svgNode('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle', 'dominant-baseline': 'middle' }, opt.empty));
      svg.replaceChildren(...nodes);
      if (legend) legend.replaceChildren();
      return;
    }
    // The last hour, or since the first sample; never under a minute, so
    // the first few samples do not stretch across the whole width.
    t0 = Math.max(t0, t1 - HOUR_MS);
    if (t1 - t0 < 60000) t0 = t1 - 60000;
    // A floor keeps a flat line at the bottom, with labels that differ.
    const ymax = niceCeil(Math.max(vmax, opt.floor || 0), opt.base);
    const padL = 66;
    const padR = 12;
    const padT = 10;
    const padB = 22;
    const pw = W - padL - padR;
    const ph = H - padT - padB;
    const x = (t) => padL + ((t - t0) / (t1 - t0)) * pw;
    const y = (v) => padT + ph - (Math.min(Math.max(v, 0), ymax) / ymax) * ph;

    for (const f of [0, 0.5, 1]) {
      const yy = y(ymax * f).toFixed(1);
      nodes.push(svgNode('line', { x1: padL, x2: W - padR, y1: yy, y2: yy, class: f ? 'grid' : 'axis' }));
      const cls = f === 1 ? 'label y-max' : 'label';
      nodes.push(svgNode('text', { x: padL - 6, y: yy, class: cls, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, opt.fmt(ymax * f)));
    }
    const withSeconds = t1 - t0 < 5 * 60000;
    for (const [t, anchor] of [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]) {
      nodes.push(svgNode('text', { x: x(t).toFixed(1), y: H - 5, class: 'label time', 'text-anchor': anchor }, clock(t, withSeconds)));
    }

    let drawn = 0;
    series.forEach((s, i) => {
      const pts = s.points.filter(([t]) => t >= t0);
      if (i === 0) drawn = pts.length;
      // A missing reading, or a restart, leaves a gap: no line across it.
      const segments = [];
      pts.forEach((p, k) => {
        if (!k || p[0] - pts[k - 1][0] > GAP_MS) segments.push([]);
        segments[segments.length - 1].push(p);
      });
      for (const seg of segments) {
        const line = svgNode('polyline', {
          class: `series s${i}`,
          fill: 'none',
          points: seg.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
        });
        line.append(svgNode('title', null, s.name));
        nodes.push(line);
      }
      if (i === 0 && pts.length) {
        const [lt, lv] = pts[pts.length - 1];
        nodes.push(svgNode('circle', { class: 'last', cx: x(lt).toFixed(1), cy: y(lv).toFixed(1), r: 2.5 }));
      }
    });
    svg.setAttribute('data-points', String(drawn));
    const last = series[0].points[series[0].points.length - 1][1];
    svg.setAttribute('aria-label', `${svg.parentNode.querySelector('figcaption').textContent}: now ${opt.fmt(last)}, at most ${opt.fmt(vmax)} since ${clock(t0)}`);
    svg.replaceChildren(...nodes);

    if (legend) {
      if (series.length < 2) legend.replaceChildren();
      else {
        legend.replaceChildren(
          ...series.map((s, i) => {
            const item = el('span', 'key s' + i, s.name);
            item.prepend(el('i'));
            return item;
          }),
        );
      }
    }
  }

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      renderCharts();
      renderVirtual();
    }, 150);
  });

  // -------------------------------------------------------------- snapshots

  const snap = { all: [], filtered: [], query: '', pool: [], names: '' };
  const spacer = el('div', 'spacer');
  $('snapshot-list').append(spacer);

  function renderSnapshots() {
    const sn = data.status && data.status.snapshot;
    const summary = $('snapshot-summary');
    snap.all = sn && Array.isArray(sn.tables) ? sn.tables.filter((t) => t && typeof t === 'object') : [];
    if (!data.status) setText(summary, '–');
    else if (!sn) setText(summary, 'No snapshot has been taken since the pipeline started.');
    else setText(summary, snapshotSummary(sn));
    updateDatalist();
    applyFilter();
  }

  function snapshotSummary(sn) {
    const by = {};
    for (const t of snap.all) by[t.state] = (by[t.state] || 0) + 1;
    const parts = ['copying', 'queued', 'delivered', 'failed'].filter((k) => by[k]).map((k) => `${fmtInt(by[k])} ${k}`);
    const initial = snap.all.some((t) => t.request === 0)
      ? sn.initial_delivered
        ? 'initial snapshot delivered'
        : 'initial snapshot not delivered yet'
      : null;
    return [
      `${sn.state || 'unknown'}: ${fmtInt(sn.rows)} rows in ${fmtDuration(sn.elapsed_seconds)}`,
      tablesWord(snap.all.length) + (parts.length ? ` (${parts.join(', ')})` : ''),
      initial,
    ]
      .filter(Boolean)
      .join(' · ');
  }

  function updateDatalist() {
    const names = [...new Set(snap.all.map((t) => String(t.table)))].sort();
    const key = names.join('\n');
    if (key === snap.names) return;
    snap.names = key;
    $('snapshot-table-names').replaceChildren(...names.map((n) => {
      const o = document.createElement('option');
      o.value = n;
      return o;
    }));
  }

  function applyFilter() {
    const q = snap.query;
    snap.filtered = q ? snap.all.filter((t) => String(t.table).toLowerCase().includes(q)) : snap.all;
    const total = snap.all.length;
    const n = snap.filtered.length;
    setText($('snapshot-count'), q ? `${fmtInt(n)} of ${tablesWord(total)} match` : tablesWord(total));
    const empty = $('snapshot-empty');
    setText(empty, total === 0 ? 'No tables in any snapshot yet.' : `No table name contains “${q}”.`);
    empty.hidden = n > 0;
    $('snapshot-list').hidden = n === 0;
    renderVirtual();
  }

  function makeSnapRow() {
    const row = el('div', 'snapshot-row');
    row.style.height = ROW_H + 'px';
    const top = el('div', 'line');
    const parts = {
      table: el('span', 'table'),
      request: el('span', 'request'),
      state: el('span', 'state'),
      error: el('span', 'error'),
      bar: el('div', 'bar'),
      fill: el('div', 'fill'),
      rows: el('span', 'rows'),
      chunks: el('span', 'chunks'),
      eta: el('span', 'eta'),
    };
    parts.bar.append(parts.fill);
    parts.bar.setAttribute('role', 'progressbar');
    parts.bar.setAttribute('aria-valuemin', '0');
    parts.bar.setAttribute('aria-valuemax', '100');
    top.append(parts.table, parts.request, parts.state, parts.error);
    const bottom = el('div', 'line');
    bottom.append(parts.bar, parts.rows, parts.chunks, parts.eta);
    row.append(top, bottom);
    return { row, ...parts };
  }

  function fillSnapRow(r, t, index) {
    const rows = isNum(t.rows) ? t.rows : 0;
    const est = isNum(t.estimated_rows) && t.estimated_rows > 0 ? t.estimated_rows : null;
    const chunks = isNum(t.chunks) ? t.chunks : 0;
    const done = isNum(t.chunks_done) ? t.chunks_done : 0;
    let frac = 0;
    if (t.state === 'delivered') frac = 1;
    else if (est) frac = rows / est;
    else if (chunks > 0) frac = done / chunks;
    const pct = Math.round(Math.min(Math.max(frac, 0), 1) * 1000) / 10;

    r.row.style.transform = `translateY(${index * ROW_H}px)`;
    setAttr(r.row, 'data-table', t.table);
    setAttr(r.row, 'data-request', t.request);
    setAttr(r.row, 'data-rows', rows);
    setAttr(r.row, 'data-estimate', t.estimated_rows == null ? '' : t.estimated_rows);
    setAttr(r.row, 'class', 'snapshot-row snap-' + word(t.state));
    setText(r.table, t.table);
    setAttr(r.table, 'title', t.table);
    setText(r.request, t.request === 0 ? 'initial' : `request ${fmtInt(t.request)}`);
    setText(r.state, t.state || 'unknown');
    const failed = t.state === 'failed';
    setText(r.error, failed ? t.error || 'failed' : '');
    setAttr(r.error, 'title', failed ? t.error || '' : '');
    r.error.hidden = !failed;
    r.fill.style.width = pct + '%';
    setAttr(r.bar, 'aria-valuenow', pct);
    setAttr(r.bar, 'aria-label', `${t.table} ${pct}%`);
    setText(r.rows, est ? `${fmtInt(rows)} of ~${fmtInt(est)} rows` : `${fmtInt(rows)} rows`);
    setText(r.chunks, chunks > 0 ? `chunks ${fmtInt(done)}/${fmtInt(chunks)}` : 'chunks –');
    setText(r.eta, isNum(t.eta_seconds) && t.state !== 'delivered' ? `ETA ${fmtDuration(t.eta_seconds)}` : '–');
    const rate = isNum(t.rows_per_second) && t.rows_per_second > 0 ? `${fmtInt(t.rows_per_second)} rows/s` : '';
    setAttr(r.rows, 'title', rate);
  }

  // Draws only the rows in view (and a few around), reusing the same nodes.
  function renderVirtual() {
    const box = $('snapshot-list');
    const n = snap.filtered.length;
    spacer.style.height = n * ROW_H + 'px';
    const view = box.clientHeight;
    let first = 0;
    let count = 0;
    if (view > 0 && n > 0) {
      first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - 4);
      const last = Math.min(n, Math.ceil((box.scrollTop + view) / ROW_H) + 4);
      count = Math.max(0, last - first);
    }
    while (snap.pool.length < count) snap.pool.push(makeSnapRow());
    // Rows out of view leave the DOM, so what is there is what is seen.
    snap.pool.forEach((r, i) => {
      if (i < count) {
        fillSnapRow(r, snap.filtered[first + i], first + i);
        if (!r.row.isConnected) spacer.append(r.row);
      } else if (r.row.isConnected) {
        r.row.remove();
      }
    });
  }

  let scrollFrame = 0;
  $('snapshot-list').addEventListener('scroll', () => {
    if (!scrollFrame) {
      scrollFrame = requestAnimationFrame(() => {
        scrollFrame = 0;
        renderVirtual();
      });
    }
  });

  $('snapshot-search').addEventListener('input', (ev) => {
    snap.query = ev.target.value.trim().toLowerCase();
    $('snapshot-list').scrollTop = 0;
    applyFilter();
  });

  function showResult(node, text, ok) {
    setText(node, text);
    node.classList.toggle('ok', ok);
    node.classList.toggle('err', !ok);
    node.hidden = false;
  }

  $('snapshot-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const out = $('snapshot-result');
    const tables = $('snapshot-tables').value.split(/[\s,]+/).filter(Boolean);
    const where = $('snapshot-where').value.trim();
    if (!tables.length) {
      showResult(out, 'Name at least one table, as schema.table.', false);
      $('snapshot-tables').focus();
      return;
    }
    const body = { tables };
    if (where) body.where = where;
    const button = $('snapshot-submit');
    const mine = session;
    button.disabled = true;
    out.hidden = true;
    try {
      const r = await request('POST', '/snapshots', body, token, ACTION_TIMEOUT_MS);
      if (mine !== session) return;
      if (r.status === 401) return toLogin('The server no longer accepts the token; log in again.');
      if (r.ok) {
        const d = obj(r.data);
        const list = Array.isArray(d.tables) ? d.tables.join(', ') : tables.join(', ');
        showResult(out, `Snapshot request ${d.request != null ? d.request : '?'} for ${list}: ${d.state || 'accepted'}`, true);
        refreshSoon();
      } else {
        showResult(out, answerError(r), false);
      }
    } catch (e) {
      if (mine === session) showResult(out, reachError(e), false);
    } finally {
      button.disabled = false;
    }
  });

  // ---------------------------------------------------------------- plugins

  const cards = new Map();

  function fact(dl, label, cls) {
    const wrap = el('div');
    const dd = el('dd', cls);
    wrap.append(el('dt', null, label), dd);
    dl.append(wrap);
    return dd;
  }

  function makeCard(name) {
    const card = el('div', 'plugin');
    card.dataset.plugin = name;
    const head = el('header');
    const c = { card, name, samplesKey: null, busy: false };
    c.kind = el('span', 'kind');
    c.contract = el('span', 'contract muted');
    head.append(el('h3', 'name', name), c.kind, c.contract);

    const dl = el('dl', 'facts');
    c.version = fact(dl, 'Running', 'version mono');
    c.pending = fact(dl, 'Pending', 'pending mono');
    c.deploys = fact(dl, 'Deploys', 'deploys');
    c.refused = fact(dl, 'Refused', 'refused');
    c.failures = fact(dl, 'Failures', 'failures');
    c.perCall = fact(dl, 'Per call', 'per-call');
    c.lastRefusal = el('p', 'last-refusal');

    c.shadow = el('div', 'shadow');
    const sh = el('h4', null, 'Shadow ');
    c.shadowVersion = el('code', 'shadow-version');
    c.shadowState = el('span', 'shadow-state');
    sh.append(c.shadowVersion, c.shadowState);
    c.counts = el('p', 'counts');
    c.countN = {};
    for (const k of ['same', 'changed', 'dropped', 'failed', 'skipped']) {
      const item = el('span', 'count-' + k);
      c.countN[k] = el('b');
      item.append(c.countN[k], ' ' + k);
      c.counts.append(item);
    }
    c.lastFailure = el('p', 'last-failure');
    const actions = el('div', 'actions');
    c.promote = el('button', 'promote', 'Promote');
    c.discard = el('button', 'discard quiet', 'Discard');
    c.promote.type = c.discard.type = 'button';
    actions.append(c.promote, c.discard);
    c.samples = el('div', 'samples');
    c.shadow.append(sh, c.counts, c.lastFailure, actions, c.samples);

    c.result = el('p', 'action-result');
    c.result.setAttribute('role', 'status');
    c.result.hidden = true;
    card.append(head, dl, c.lastRefusal, c.shadow, c.result);

    const base = `/plugins/${encodeURIComponent(name)}`;
    c.promote.addEventListener('click', () => act(c, 'POST', base + '/promote'));
    c.discard.addEventListener('click', () => act(c, 'DELETE', base + '/shadow'));
    return c;
  }

  async function act(c, method, path) {
    const mine = session;
    c.busy = true;
    c.promote.disabled = c.discard.disabled = true;
    showResult(c.result, method === 'POST' ? 'Promoting…' : 'Discarding…', true);
    try {
      const r = await request(method, path, undefined, token, ACTION_TIMEOUT_MS);
      if (mine !== session) return;
      if (r.status === 401) return toLogin('The server no longer accepts the token; log in again.');
      const d = obj(r.data);
      if (!r.ok) showResult(c.result, answerError(r), false);
      else if (method === 'POST') {
        const prev = d.previous ? ` (replacing ${d.previous})` : '';
        showResult(c.result, `Promoted ${d.version || 'the shadow'}${prev}: ${d.state || 'done'}`, true);
      } else {
        const v = d.discarded || d.version;
        showResult(c.result, `Discarded ${v ? 'shadow ' + v : 'the shadow'}.`, true);
      }
      delete shadowReports[c.name];
      c.samplesKey = null;
      refreshSoon();
    } catch (e) {
      if (mine === session) showResult(c.result, reachError(e), false);
    } finally {
      c.busy = false;
      c.promote.disabled = c.discard.disabled = false;
    }
  }

  function renderPlugins() {
    const plugins = obj(data.status && data.status.plugins);
    const names = Object.keys(plugins).sort();
    for (const [name, c] of cards) if (!names.includes(name)) cards.delete(name), c.card.remove();
    const list = names.map((name) => {
      let c = cards.get(name);
      if (!c) cards.set(name, (c = makeCard(name)));
      updateCard(c, obj(plugins[name]));
      return c.card;
    });
    placeInOrder($('plugin-list'), list);
    $('plugins-empty').hidden = list.length > 0 || !data.status;
  }

  function updateCard(c, p) {
    setText(c.kind, p.kind || '');
    setText(c.contract, p.contract ? `contract ${p.contract}` : 'no contract');
    setText(c.version, p.version || '–');
    setText(c.pending, p.pending_version || 'none');
    setText(c.deploys, fmtInt(p.deploys));
    setText(c.refused, fmtInt(p.refused));
    setText(c.lastRefusal, p.last_refusal ? `Last refusal: ${p.last_refusal}` : '');
    c.lastRefusal.hidden = !p.last_refusal;
    setText(c.failures, `${fmtInt(p.skipped)} skipped · ${fmtInt(p.dead_lettered)} dead-lettered · on failure: ${p.on_failure || '–'}`);
    setText(c.perCall, isNum(p.per_call) ? `up to ${fmtInt(p.per_call)} changes` : 'no limit');

    const s = p.shadow && typeof p.shadow === 'object' ? p.shadow : null;
    c.shadow.hidden = !s;
    if (!s) {
      c.samplesKey = null;
      c.samples.replaceChildren();
      return;
    }
    setText(c.shadowVersion, s.version || '');
    setText(c.shadowState, s.state || '');
    setAttr(c.shadowState, 'class', 'shadow-state shadow-' + word(s.state));
    const counts = obj(s.counts);
    for (const k of Object.keys(c.countN)) setText(c.countN[k], fmtInt(counts[k] || 0));
    setText(c.lastFailure, s.last_failure ? `Last failure: ${s.last_failure}` : '');
    c.lastFailure.hidden = !s.last_failure;

    const report = shadowReports[c.name];
    if (!report || report.version !== s.version) {
      if (c.samplesKey == null) c.samples.replaceChildren(el('p', 'muted', 'Loading samples…'));
      return;
    }
    const samples = Array.isArray(report.samples) ? report.samples : [];
    const key = JSON.stringify(samples);
    if (key !== c.samplesKey) {
      c.samplesKey = key;
      renderSamples(c.samples, samples);
    }
  }

  function renderSamples(box, samples) {
    // Keep what the operator opened: the server only appends samples.
    const open = [...box.querySelectorAll('details')].map((d) => d.open);
    if (!samples.length) {
      box.replaceChildren(el('p', 'muted', 'No answers differ so far.'));
      return;
    }
    const nodes = [el('p', 'muted', `${fmtInt(samples.length)} answers that differ, the first ones kept:`)];
    samples.forEach((raw, i) => {
      const s = obj(raw);
      const item = el('div', 'sample verdict-' + word(s.verdict));
      item.append(el('p', 'verdict', s.verdict || 'unknown'));
      const input = s.change !== undefined ? ['Change', s.change] : s.commit !== undefined ? ['Commit', s.commit] : null;
      if (input) {
        const d = el('details', 'input');
        d.open = !!open[i];
        d.append(el('summary', null, input[0]), el('pre', null, pretty(input[1])));
        item.append(d);
      }
      const cols = el('div', 'columns');
      for (const [cls, label] of [['running', 'Running'], ['shadow', 'Shadow']]) {
        const col = el('div', cls);
        col.append(el('h5', null, label), el('pre', null, pretty(s[cls])));
        cols.append(col);
      }
      item.append(cols);
      nodes.push(item);
    });
    box.replaceChildren(...nodes);
  }

  // ----------------------------------------------------------- dead letters

  let lettersKey = null;
  let letterTimes = [];

  function renderDeadLetters() {
    const d = data.deadLetters;
    const list = $('dead-letter-list');
    const letters = d && Array.isArray(d.letters) ? d.letters : [];
    if (!d) {
      setText($('dead-letter-count'), data.status ? 'Loading…' : '');
    } else {
      const total = isNum(d.total) ? d.total : letters.length;
      setText(
        $('dead-letter-count'),
        `${fmtInt(letters.length)} kept (the newest, of ${fmtInt(total)} since start; the server keeps at most ${fmtInt(d.capacity)})`,
      );
    }
    $('dead-letter-empty').hidden = !d || letters.length > 0;
    const key = d ? JSON.stringify(letters) : null;
    if (key !== lettersKey) {
      lettersKey = key;
      letterTimes = [];
      list.replaceChildren(...letters.map((l) => deadLetter(obj(l))));
    }
    for (const [node, t] of letterTimes) setText(node, fmtAgo(t));
  }

  function deadLetter(l) {
    const item = el('div', 'dead-letter');
    const head = el('div', 'head');
    const t = parseTime(l.at);
    const time = el('time', 'at', t == null ? String(l.at || '–') : localTime(t));
    if (typeof l.at === 'string') time.dateTime = l.at;
    const ago = el('span', 'ago muted');
    if (t != null) letterTimes.push([ago, t]);
    let by = l.by || 'unknown';
    if (l.by === 'plugin') by = `plugin ${l.plugin || '?'}` + (l.plugin_version ? ` (${l.plugin_version})` : '');
    else if (l.by === 'sink') by = `sink ${l.sink || '?'}`;
    head.append(time, ago, el('span', 'by', by));
    item.append(head, el('p', 'error', l.error || ''));
    let body = '(neither the event nor the record was kept)';
    if (l.event != null) body = pretty(l.event);
    else if (l.record != null) body = pretty(l.record);
    item.append(el('pre', 'event', body));
    return item;
  }

  // ------------------------------------------------------------------ start

  renderHeader();
  PAGES.forEach(renderPage);
  boot();
})();
