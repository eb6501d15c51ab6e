// healgate dashboard: reads the admin API with the bearer token and shows it.
// Plain script, no build step. Every value from the API reaches the page through
// textContent or a property (never innerHTML). The token lives in sessionStorage
// (this tab only) and travels only in the Authorization header.
'use strict';
(() => {
  const KEY = 'healgate.token';
  const POLL_MS = 2000;
  const MAX_EVENTS = 300;
  const MAX_LOG_LINES = 500;
  // The optional routes this gateway serves (the rest show "no data yet").
  const meta = document.querySelector('meta[name="healgate-api"]');
  const API = new Set(((meta && meta.content) || '').split(/\s+/).filter(Boolean));
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(KEY);
  const st = {
    app: null,            // the app the charts, table and logs show
    range: '1s',          // history resolution: 1s = 15 min, 1m = 24 h
    since: 0,             // last event seq seen
    pollTimer: 0,
    historyAt: 0, historyDirty: true,
    incidentsAt: 0, incidentsDirty: true, incidents: null,
    diagAt: 0, diagBusy: false,
    envAt: 0,
    counters: new Map(),  // app -> {prev: Map(instance -> snapshot), cum, window: []}
    rows: new Map(),      // instance id -> {tr, detail, cells}
    tiles: new Map(),     // app name -> {button, fields}
    charts: [], chartKeys: '', marks: [],
    logs: null,           // {app, abort}
    status: null,
  };

  class Stop extends Error {}

  // ---- small helpers ----
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-')) e.setAttribute(k, v);
        else e[k] = v;
      }
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }
  const enc = encodeURIComponent;
  const num = (v) => (typeof v === 'number' && isFinite(v) ? v : null);
  function bytes(b) {
    if (num(b) === null) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : String(b)) + ' ' + u[i];
  }
  function dur(s) {
    if (num(s) === null) return '–';
    s = Math.floor(s);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }
  function clock(ts) {
    const d = typeof ts === 'number' ? new Date(ts * 1000) : new Date(ts);
    return isNaN(d) ? String(ts || '') : d.toLocaleTimeString([], { hour12: false });
  }
  const ms = (v) => (num(v) === null ? '–' : (v < 10 ? v.toFixed(1) : Math.round(v)) + ' ms');
  const pct = (v) => (num(v) === null ? '–' : v.toFixed(v < 10 ? 1 : 0) + ' %');
  function notice(text, cls) {
    const n = $('notice');
    n.textContent = text || '';
    n.className = cls || '';
  }
  function setConn(text, cls) {
    $('conn').textContent = text;
    $('conn').className = cls || 'muted';
  }

  // ---- API ----
  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({ Authorization: 'Bearer ' + token }, opts.headers || {});
    const resp = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store' }));
    if (resp.status === 401) {
      logout('The gateway refused the token; log in again.');
      throw new Stop();
    }
    return resp;
  }
  // JSON of a GET; null when the route is not there (404: not built yet).
  async function getJSON(path) {
    const resp = await api(path);
    if (resp.status === 404) return null;
    if (!resp.ok) throw new Error(path + ': ' + resp.status);
    return resp.json();
  }
  async function post(path, body) {
    const resp = await api(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body || {}),
    });
    const j = await resp.json().catch(() => ({}));
    return { ok: resp.ok, text: j.message || j.error || String(resp.status) };
  }

  // ---- login ----
  function showLogin(message) {
    $('main').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    setConn('not connected');
    $('token').focus();
  }
  function showMain() {
    $('login').hidden = true;
    $('main').hidden = false;
    $('logout').hidden = false;
  }
  function logout(message) {
    token = null;
    sessionStorage.removeItem(KEY);
    clearTimeout(st.pollTimer);
    stopLogs();
    showLogin(message);
  }
  async function exchangeCode(code) {
    try {
      const resp = await fetch('/api/v1/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ code }),
        cache: 'no-store',
      });
      const j = await resp.json().catch(() => ({}));
      if (resp.ok && j.token) return { token: j.token };
      return { error: j.error || 'login failed (' + resp.status + ')' };
    } catch (e) {
      return { error: 'login failed: ' + e.message };
    }
  }
  async function start() {
    const m = /(?:^#|&)login=([0-9A-Za-z_-]+)/.exec(location.hash);
    if (m) {
      // The fragment never reached the server; drop it from the address bar and history.
      history.replaceState(null, '', location.pathname + location.search);
      const got = await exchangeCode(m[1]);
      if (got.error) { showLogin(got.error); return; }
      token = got.token;
      sessionStorage.setItem(KEY, token);
    }
    if (!token) { showLogin(''); return; }
    showMain();
    poll();
  }
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const given = $('token').value.trim();
    if (!given) return;
    try {
      const resp = await fetch('/api/v1/status', {
        headers: { Authorization: 'Bearer ' + given }, cache: 'no-store',
      });
      if (!resp.ok) {
        $('login-error').textContent = resp.status === 401 ? 'wrong token' : 'the gateway answered ' + resp.status;
        return;
      }
    } catch (e) {
      $('login-error').textContent = 'cannot reach the gateway: ' + e.message;
      return;
    }
    token = given;
    sessionStorage.setItem(KEY, token);
    $('token').value = '';
    showMain();
    poll();
  });
  $('diagnose').addEventListener('click', () => diagnoseNow($('diagnose')));
  $('logout').addEventListener('click', () => logout(''));

  // ---- polling: status and new events every 2 s; history and incidents less often ----
  async function poll() {
    clearTimeout(st.pollTimer);
    if (!token) return;
    try {
      const [status, events] = await Promise.all([
        getJSON('/api/v1/status'),
        getJSON('/api/v1/events?since=' + st.since),
      ]);
      if (status) renderStatus(status);
      if (events) addEvents(events);
      setConn('live · ' + clock(Date.now() / 1000), 'ok');
      const now = Date.now();
      const every = st.range === '1s' ? 5000 : 60000;
      if (st.app && (st.historyDirty || now - st.historyAt > every)) await loadHistory();
      if (st.incidentsDirty || now - st.incidentsAt > 10000) await loadIncidents();
      if (st.diagBusy || now - st.diagAt > 15000) await loadDiagnostics();
      if (now - st.envAt > 10000) await loadEnvironment();
      // The tiles' latency and incident come from those two.
      if (st.status) renderTiles(st.status.apps || [], st.status);
    } catch (e) {
      if (e instanceof Stop) return;
      setConn('connection lost (' + e.message + '); retrying', 'bad');
    }
    if (token && !document.hidden) st.pollTimer = setTimeout(poll, POLL_MS);
  }
  // A hidden tab polls nothing; it catches up when shown.
  document.addEventListener('visibilitychange', () => { if (!document.hidden && token) poll(); });

  // ---- status: header, tiles, instance table ----
  function renderStatus(s) {
    st.status = s;
    $('gateway').textContent = 'v' + s.version + ' · pid ' + s.pid + ' · up ' + dur(s.uptime_s);
    const apps = s.apps || [];
    if (!st.app || !apps.some((a) => a.name === st.app)) {
      if (apps.length) selectApp(apps[0].name);
    }
    const now = Date.now() / 1000;
    for (const a of apps) countRequests(a, now);
    renderTiles(apps, s);
    const app = apps.find((a) => a.name === st.app);
    renderTable(app);
    if (!apps.length) notice('This gateway supervises no apps.');
  }

  // Request counters are per process; keep app totals across restarts and
  // compute rates over the last 30 s of polls.
  function countRequests(a, now) {
    let c = st.counters.get(a.name);
    if (!c) { c = { prev: new Map(), cum: { total: 0, errors: {} }, window: [] }; st.counters.set(a.name, c); }
    for (const i of a.instances || []) {
      const r = i.requests || {};
      const cur = { pid: i.pid, total: r.total || 0, errors: Object.assign({}, r.errors || {}) };
      cur.errors.app_5xx = (r.by_class || {})['5xx'] || 0;
      const prev = c.prev.get(i.id);
      const same = prev && prev.pid === cur.pid && cur.total >= prev.total;
      c.cum.total += same ? cur.total - prev.total : (prev ? cur.total : 0);
      for (const [k, v] of Object.entries(cur.errors)) {
        const before = same ? prev.errors[k] || 0 : 0;
        if (prev) c.cum.errors[k] = (c.cum.errors[k] || 0) + Math.max(0, v - before);
      }
      c.prev.set(i.id, cur);
    }
    c.window.push({ t: now, total: c.cum.total, errors: Object.assign({}, c.cum.errors) });
    while (c.window.length > 2 && now - c.window[0].t > 30) c.window.shift();
  }
  function rates(name) {
    const c = st.counters.get(name);
    if (!c || c.window.length < 2) return null;
    const a = c.window[0], b = c.window[c.window.length - 1];
    const dt = b.t - a.t, dn = b.total - a.total;
    const errors = {};
    for (const [k, v] of Object.entries(b.errors)) {
      const d = v - (a.errors[k] || 0);
      if (d > 0) errors[k] = dn > 0 ? (100 * d) / dn : 0;
    }
    return { rps: dt > 0 ? dn / dt : 0, errors };
  }

  function renderTiles(apps, s) {
    const box = $('tiles');
    for (const [name, t] of st.tiles) {
      if (!apps.some((a) => a.name === name)) { t.button.remove(); st.tiles.delete(name); }
    }
    for (const a of apps) {
      let t = st.tiles.get(a.name);
      if (!t) {
        const f = {};
        const row = (label, key) => [el('dt', { text: label }), (f[key] = el('dd'))];
        const button = el('button', { type: 'button', class: 'tile', 'data-app': a.name },
          el('h3', null, el('span', { text: a.name }), (f.state = el('span', { class: 'muted' }))),
          el('dl', null, ...row('requests/s', 'rps'), ...row('errors', 'errors'),
            ...row('latency', 'latency'), ...row('instances', 'instances'), ...row('incident', 'incident')));
        button.addEventListener('click', () => selectApp(a.name));
        box.append(button);
        t = { button, f };
        st.tiles.set(a.name, t);
      }
      const f = t.f;
      t.button.setAttribute('aria-pressed', String(a.name === st.app));
      f.state.textContent = a.state + ' · ' + a.ready + '/' + a.target + ' ready' + (a.queued ? ' · ' + a.queued + ' queued' : '');
      f.state.className = a.state === 'running' ? 'ok' : a.state === 'crash_loop' ? 'bad' : 'warn';
      const r = rates(a.name);
      f.rps.textContent = r ? r.rps.toFixed(r.rps < 10 ? 1 : 0) : '–';
      const errs = r ? Object.entries(r.errors) : [];
      f.errors.textContent = !r ? '–' : errs.length ? errs.map(([k, v]) => k + ' ' + v.toFixed(1) + ' %').join(', ') : 'none';
      f.errors.className = errs.length ? 'bad' : '';
      f.latency.textContent = latencyText(a);
      const counts = {};
      for (const i of a.instances || []) counts[i.state] = (counts[i.state] || 0) + 1;
      f.instances.textContent = Object.entries(counts).map(([k, v]) => v + ' ' + k).join(' · ') || 'none';
      const open = (st.incidents || []).find((x) => x.app === a.name && !x.ended);
      f.incident.textContent = open ? open.title : s.incidents_open ? s.incidents_open + ' open (gateway)' : 'none';
      f.incident.className = open || s.incidents_open ? 'incident' : '';
    }
  }
  // p50/p95/p99 from the app's history when there is one, else the worst instance's.
  function latencyText(a) {
    const h = a.name === st.app ? st.lastHistory : null;
    const last = (xs) => { if (!xs) return null; for (let i = xs.length - 1; i >= 0; i--) if (num(xs[i]) !== null) return xs[i]; return null; };
    if (h && h.app === a.name) {
      return 'p50 ' + ms(last(h.p50_ms)) + ' · p95 ' + ms(last(h.p95_ms)) + ' · p99 ' + ms(last(h.p99_ms));
    }
    let p50 = null, p99 = null;
    for (const i of a.instances || []) {
      const r = i.requests || {};
      if (num(r.p50_ms) !== null) p50 = Math.max(p50 || 0, r.p50_ms);
      if (num(r.p99_ms) !== null) p99 = Math.max(p99 || 0, r.p99_ms);
    }
    return 'p50 ' + ms(p50) + ' · p95 – · p99 ' + ms(p99);
  }

  function selectApp(name) {
    if (st.app === name) return;
    st.app = name;
    st.historyDirty = true;
    st.lastHistory = null;
    for (const [n, t] of st.tiles) t.button.setAttribute('aria-pressed', String(n === name));
    for (const id of ['chart-app', 'table-app', 'logs-app']) $(id).textContent = name;
    for (const r of st.rows.values()) { r.tr.remove(); r.detail.remove(); }
    st.rows.clear();
    if (st.status) renderTable((st.status.apps || []).find((a) => a.name === name));
    destroyCharts();
    followLogs(name);
    if (token && st.status) loadHistory().catch(() => {});
  }

  const COLUMNS = ['id', 'pid', 'port', 'state', 'uptime', 'memory', 'cpu', 'inflight', 'requests', 'errors5xx', 'restarts', 'health', 'exit'];
  const LABELS = ['instance', 'pid', 'port', 'state', 'uptime', 'memory', 'CPU', 'in-flight', 'requests', '5xx', 'restarts', 'health', 'last exit'];
  function renderTable(app) {
    const body = document.querySelector('#instances tbody');
    const seen = new Set();
    for (const i of (app && app.instances) || []) {
      seen.add(i.id);
      let r = st.rows.get(i.id);
      if (!r) r = addRow(body, i.id);
      const c = r.cells;
      const req = i.requests || {};
      c.id.textContent = i.id;
      c.pid.textContent = i.pid == null ? '–' : String(i.pid);
      c.port.textContent = i.port ? String(i.port) : '–';
      c.state.textContent = i.state;
      c.state.className = 'state ' + (i.state === 'ready' ? 'ok' : /crash|unhealthy|stopped/.test(i.state) ? 'bad' : 'warn');
      r.tr.dataset.state = i.state;
      c.uptime.textContent = i.pid == null ? '–' : dur(i.uptime_s);
      c.memory.textContent = i.pid == null ? '–' : bytes(i.memory_bytes);
      c.cpu.textContent = i.pid == null ? '–' : pct(i.cpu_pct);
      c.inflight.textContent = String(i.inflight);
      c.requests.textContent = String(req.total || 0);
      c.errors5xx.textContent = String((req.by_class || {})['5xx'] || 0);
      c.restarts.textContent = String(i.restarts);
      renderHealth(c.health, i);
      c.exit.textContent = i.last_exit || '';
      renderDetail(r.detailCell, i);
    }
    for (const [id, r] of st.rows) {
      if (!seen.has(id)) { r.tr.remove(); r.detail.remove(); st.rows.delete(id); }
    }
  }
  function addRow(body, id) {
    const cells = {};
    const tr = el('tr', { 'data-instance': id });
    for (const [n, k] of COLUMNS.entries()) {
      const td = el('td', { 'data-col': k, 'data-label': LABELS[n], class: k === 'exit' ? 'exit' : '' });
      if (k === 'state') { cells[k] = el('span', { class: 'state' }); td.append(cells[k]); } else cells[k] = td;
      tr.append(td);
    }
    const recycle = el('button', { type: 'button', class: 'recycle', text: 'recycle' });
    recycle.addEventListener('click', () => recycleInstance(id, recycle));
    const more = el('button', { type: 'button', class: 'more', text: 'details', ariaExpanded: 'false' });
    tr.append(el('td', { class: 'actions' }, el('div', null, recycle, more)));
    const detailCell = el('td', { colSpan: COLUMNS.length + 1 });
    const detail = el('tr', { class: 'detail', hidden: true }, detailCell);
    more.addEventListener('click', () => {
      detail.hidden = !detail.hidden;
      more.setAttribute('aria-expanded', String(!detail.hidden));
    });
    body.append(tr, detail);
    const r = { tr, detail, detailCell, cells };
    st.rows.set(id, r);
    return r;
  }
  function renderHealth(td, i) {
    td.textContent = '';
    const checks = i.health || [];
    if (!checks.length) { td.textContent = '–'; return; }
    const dots = el('span', { class: 'dots' });
    for (const h of checks) {
      dots.append(el('span', { class: h.ok ? 'ok' : 'bad', text: '●', title: clock(h.ts) + ' ' + (h.ok ? 'ok' : h.reason || 'failed') }));
    }
    const last = checks[checks.length - 1];
    td.append(dots, el('span', { class: last.ok ? 'ok' : 'bad', text: ' ' + (last.ok ? 'ok' : last.reason || 'failed') }));
  }
  function renderDetail(td, i) {
    td.textContent = '';
    const checks = i.health || [];
    const rotation = i.rotation || [];
    td.append(el('strong', { text: i.id + ' ' }),
      el('span', { class: 'muted', text: 'threads ' + i.threads + ' · open files ' + i.open_files + ' · CPU time ' + (num(i.cpu_s) === null ? '–' : i.cpu_s.toFixed(2) + ' s') }));
    td.append(el('div', { text: 'Health checks (newest last):' + (checks.length ? '' : ' none reported yet') }));
    if (checks.length) {
      td.append(el('ol', null, ...checks.map((h) => el('li', { class: h.ok ? 'ok' : 'bad', text: clock(h.ts) + '  ' + (h.ok ? 'ok' : h.reason || 'failed') }))));
    }
    td.append(el('div', { text: 'Rotation:' + (rotation.length ? '' : ' no changes reported yet') }));
    if (rotation.length) {
      td.append(el('ol', null, ...rotation.map((x) => el('li', { text: clock(x.ts) + '  ' + (x.in ? 'entered rotation' : 'left rotation') + (x.why ? ': ' + x.why : '') }))));
    }
    if (i.last_exit) td.append(el('div', { text: 'Last exit: ' + i.last_exit }));
  }

  // ---- actions (confirmed first) ----
  async function recycleInstance(id, button) {
    if (!confirm('Recycle ' + id + '?\nA new process starts; once it is ready the old one drains and stops.')) return;
    button.disabled = true;
    notice('recycling ' + id + '…');
    try {
      const r = await post('/api/v1/instances/' + enc(id) + '/recycle', { reason: 'from the dashboard' });
      notice(r.text, r.ok ? 'ok' : 'bad');
    } catch (e) {
      if (!(e instanceof Stop)) notice('recycle failed: ' + e.message, 'bad');
    } finally {
      button.disabled = false;
    }
    poll();
  }
  $('restart').addEventListener('click', async () => {
    const app = st.app;
    if (!app || !confirm('Restart every instance of ' + app + ', one at a time?')) return;
    notice('restarting ' + app + '…');
    try {
      const r = await post('/api/v1/apps/' + enc(app) + '/restart');
      notice(r.text, r.ok ? 'ok' : 'bad');
    } catch (e) {
      if (!(e instanceof Stop)) notice('restart failed: ' + e.message, 'bad');
    }
    poll();
  });

  // ---- events ----
  const QUIET = new Set(['ts', 'kind', 'app', 'instance', 'pid', 'stderr', 'error_context', 'reason', 'error_line', 'message']);
  function eventText(e) {
    const main = e.reason || e.message || e.error_line || e.title || '';
    const rest = Object.entries(e)
      .filter(([k, v]) => !QUIET.has(k) && v !== null && typeof v !== 'object')
      .map(([k, v]) => k + '=' + v).join(' ');
    return [main, rest].filter(Boolean).join(' · ');
  }
  function eventItem(e) {
    const li = el('li', { 'data-kind': e.kind || '', 'data-instance': e.instance || '' },
      el('time', { text: clock(e.ts) }),
      el('span', { class: 'kind ' + kindClass(e.kind), text: e.kind }),
      // A reason that starts with the instance names it already.
      String(e.reason || '').startsWith(e.instance || e.app || '\0') ? null
        : e.instance ? el('span', { text: e.instance + (e.pid ? ' (pid ' + e.pid + ')' : '') + ' ' })
          : e.app ? el('span', { text: e.app + ' ' }) : null,
      el('span', { class: 'muted', text: eventText(e) }));
    const lines = (e.stderr && e.stderr.length ? e.stderr : e.error_context) || [];
    if (lines.length) li.append(el('details', null, el('summary', { text: 'app output' }), el('pre', { class: 'logs', text: lines.join('\n') })));
    return li;
  }
  function kindClass(kind) {
    if (/exited|crash|ejected|fired|failed|opened|rejected|exhausted/.test(kind || '')) return 'bad';
    if (/ready|resolved|closed/.test(kind || '')) return 'ok';
    return '';
  }
  function addEvents(ev) {
    if (ev.last < st.since) {
      // The gateway restarted: its sequence started over.
      st.since = 0;
      $('events').textContent = '';
      return;
    }
    const list = $('events');
    const fresh = [];
    for (const { seq, event } of ev.events || []) {
      if (seq <= st.since) continue;
      fresh.push(eventItem(event));
      if (event.app === st.app) st.historyDirty = true;
      if (/incident|alert/.test(event.kind || '')) st.incidentsDirty = true;
    }
    st.since = Math.max(st.since, ev.last || 0);
    list.prepend(...fresh.reverse());
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    if (!list.children.length) list.append(el('li', { class: 'muted', text: 'no events yet' }));
    else if (list.lastChild.classList.contains('muted') && list.children.length > 1) list.lastChild.remove();
  }

  // ---- incidents ----
  async function loadIncidents() {
    st.incidentsAt = Date.now();
    st.incidentsDirty = false;
    const j = API.has('incidents') ? await getJSON('/api/v1/incidents') : null;
    const list = $('incidents');
    list.textContent = '';
    st.incidents = j ? j.incidents || [] : null;
    $('incidents-empty').textContent = !j ? 'no data yet' : st.incidents.length ? '' : 'no incidents';
    for (const x of (st.incidents || []).slice().reverse()) {
      const when = clock(x.started) + (x.ended ? ' – ' + clock(x.ended) : ' – open');
      list.append(el('li', { 'data-incident': String(x.id) },
        el('time', { text: when }),
        el('span', { class: 'kind ' + (x.ended ? '' : 'bad'), text: x.title || x.cause }),
        el('span', { class: 'muted', text: x.app + ' · ' + x.cause + ' · ' + (x.requests_affected || 0) + ' requests affected' }),
        el('details', null, el('summary', { text: 'timeline' }),
          el('ol', { class: 'feed' }, ...(x.timeline || []).map((e) => eventItem(e.event || e))))));
    }
  }

  // ---- the gateway itself (version, files, limits) and every process tree ----
  async function loadEnvironment() {
    st.envAt = Date.now();
    const env = API.has('environment') ? await getJSON('/api/v1/environment') : null;
    const procs = API.has('processes') ? await getJSON('/api/v1/processes') : null;
    $('env-empty').textContent = env ? '' : 'no data yet';
    const dl = $('env');
    dl.textContent = '';
    if (env) {
      const lim = env.limits || {};
      for (const [k, v] of [
        ['version', env.version], ['pid', env.pid], ['config', env.config_path || '(embedded)'],
        ['data dir', env.data_dir], ['open files', lim.open_files_soft + ' (hard ' + lim.open_files_hard + ')'],
        ['max connections', lim.max_connections],
      ]) dl.append(el('dt', { text: k }), el('dd', { text: String(v) }));
    }
    const body = $('procs').querySelector('tbody');
    body.textContent = '';
    if (!procs) return;
    const row = (who, p) => el('tr', { 'data-pid': String(p.pid) },
      el('td', { text: who }), el('td', { text: String(p.pid) }), el('td', { text: String(p.ppid) }),
      el('td', { text: bytes(p.rss_bytes) }), el('td', { text: (p.cpu_s || 0).toFixed(2) }),
      el('td', { text: String(p.threads) }), el('td', { text: String(p.open_files) }),
      el('td', { class: 'cmd', text: (p.cmdline || []).join(' ') }));
    if (procs.gateway) body.append(row('gateway', procs.gateway));
    for (const a of procs.apps || []) {
      for (const i of a.instances || []) {
        (i.processes || []).forEach((p, n) => body.append(row(n === 0 ? i.id : '  └ ' + i.id, p)));
      }
    }
  }

  // ---- diagnostic reports: the list, "diagnose now", a report opened with the token ----
  async function loadDiagnostics() {
    st.diagAt = Date.now();
    const j = API.has('diagnostics') ? await getJSON('/api/v1/diagnostics') : null;
    const list = $('diagnostics');
    list.textContent = '';
    const items = j ? j.diagnostics || [] : [];
    $('diag-empty').textContent = !j ? 'no data yet' : items.length ? '' : 'no reports yet: "diagnose now" collects one';
    st.diagBusy = items.some((d) => d.state === 'collecting');
    $('diag-state').textContent = st.diagBusy ? 'collecting…' : '';
    for (const d of items) {
      const steps = d.steps || [];
      const li = el('li', { 'data-bundle': d.name },
        el('time', { text: d.created ? clock(d.created) : d.name }),
        el('span', { class: 'kind ' + (d.state === 'done' ? '' : 'bad'), text: d.state === 'done' ? (d.app || 'all apps') : d.state + (steps.length ? ': ' + steps[steps.length - 1] : '') }),
        el('span', { text: d.headline || '' }));
      if (d.state === 'done') {
        const open = el('button', { type: 'button', text: 'open report' });
        open.addEventListener('click', () => openReport(d, false));
        const save = el('button', { type: 'button', text: 'download' });
        save.addEventListener('click', () => openReport(d, true));
        li.append(open, save);
      }
      list.append(li);
    }
  }
  // Links cannot carry the token: fetch the page with it and hand the browser a blob.
  // The dashboard's strict policy follows a blob into its tab (the report's chart
  // script does not run there); the downloaded file is the whole report.
  async function openReport(d, download) {
    const resp = await api(d.report);
    if (!resp.ok) { notice('report ' + d.name + ': ' + resp.status, 'bad'); return; }
    const url = URL.createObjectURL(new Blob([await resp.text()], { type: 'text/html' }));
    const a = el('a', { href: url, target: '_blank', rel: 'noopener' });
    if (download) a.download = 'healgate-report-' + d.name + '.html';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }
  async function diagnoseNow(button) {
    button.disabled = true;
    try {
      const r = await post('/api/v1/diagnose', st.app ? { app: st.app } : {});
      notice(r.ok ? 'collecting a diagnostic bundle' + (st.app ? ' of ' + st.app : '') + '…' : 'diagnose: ' + r.text, r.ok ? 'ok' : 'bad');
      await loadDiagnostics();
    } catch (e) {
      if (!(e instanceof Stop)) notice('diagnose: ' + e.message, 'bad');
    } finally {
      button.disabled = false;
    }
  }

  // ---- charts (uPlot) ----
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  const PALETTE = ['--c1', '--c2', '--c3', '--c4', '--c5', '--c6'];
  const MARK_COLOR = { restart: '--c2', instance_exited: '--c2', recycle: '--c3', instance_recycled: '--c3', reload: '--c4', config_reloaded: '--c4', scale: '--c5', scaled: '--c5' };
  function destroyCharts() {
    for (const c of st.charts) c.destroy();
    st.charts = [];
    st.chartKeys = '';
    $('charts').textContent = '';
    $('marks').textContent = '';
  }
  async function loadHistory() {
    st.historyAt = Date.now();
    st.historyDirty = false;
    const app = st.app;
    const h = API.has('history') && app ? await getJSON('/api/v1/history?app=' + enc(app) + '&res=' + st.range) : null;
    if (app !== st.app) return;
    if (!h || !h.t || !h.t.length || typeof uPlot === 'undefined') {
      destroyCharts();
      st.lastHistory = null;
      $('charts-empty').textContent = 'no data yet';
      return;
    }
    $('charts-empty').textContent = '';
    st.lastHistory = h;
    drawCharts(h);
  }
  function chartSpecs(h) {
    const errs = Object.keys(h.errors || {});
    const inst = Object.keys(h.instances || {});
    const perInstance = (field, fallback) => inst.length
      ? inst.map((id) => [id, h.instances[id][field] || []])
      : [[fallback, h[field] || []]];
    return [
      { title: 'Requests and errors by cause (per step)', series: [['requests', h.requests || []], ...errs.map((k) => [k, h.errors[k]])], fmt: (v) => String(v) },
      { title: 'Response time', series: [['p50', h.p50_ms || []], ['p95', h.p95_ms || []], ['p99', h.p99_ms || []]], fmt: (v) => ms(v) },
      { title: 'Memory working set per instance', series: perInstance('memory_bytes', 'app'), fmt: bytes },
      { title: 'CPU per instance', series: perInstance('cpu_pct', 'app'), fmt: pct },
    ];
  }
  function drawCharts(h) {
    const specs = chartSpecs(h);
    const keys = st.range + '|' + specs.map((s) => s.series.map((x) => x[0]).join(',')).join(';');
    st.marks = h.marks || [];
    if (keys === st.chartKeys) {
      specs.forEach((s, n) => st.charts[n].setData([h.t, ...s.series.map((x) => x[1])]));
    } else {
      destroyCharts();
      st.chartKeys = keys;
      const box = $('charts');
      for (const s of specs) {
        const holder = el('div', { class: 'chart' }, el('h3', { text: s.title }));
        box.append(holder);
        st.charts.push(makeChart(holder, s, h.t));
      }
      st.marks = h.marks || [];
    }
    renderMarks();
  }
  function makeChart(holder, spec, t) {
    const fg = css('--muted'), line = css('--line');
    const axis = { stroke: fg, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    const opts = {
      width: Math.max(240, holder.clientWidth || $('charts').clientWidth || 480),
      height: 180,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [axis, Object.assign({}, axis, { size: 76, values: (u, vals) => vals.map(spec.fmt) })],
      series: [{}, ...spec.series.map(([label], n) => ({
        label, stroke: css(PALETTE[n % PALETTE.length]), width: 1.5, spanGaps: false,
        value: (u, v) => (v == null ? '–' : spec.fmt(v)),
      }))],
      plugins: [marksPlugin()],
    };
    return new uPlot(opts, [t, ...spec.series.map((x) => x[1])], holder);
  }
  // Restarts, recycles, reloads and scale changes as vertical lines on the time axis.
  function marksPlugin() {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          const { top, height } = u.bbox;
          ctx.save();
          ctx.lineWidth = 1 * devicePixelRatio;
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          for (const m of st.marks) {
            const x = u.valToPos(m.t, 'x', true);
            if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) continue;
            ctx.strokeStyle = css(MARK_COLOR[m.kind] || '--c6');
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
  }
  function renderMarks() {
    const list = $('marks');
    list.textContent = '';
    for (const m of st.marks.slice(-20).reverse()) {
      list.append(el('li', { text: ' ' + clock(m.t) + '  ' + m.kind + (m.instance ? ' ' + m.instance : '') + (m.text ? ': ' + m.text : '') }));
    }
  }
  new ResizeObserver(() => {
    for (const c of st.charts) {
      const w = c.root.parentElement.clientWidth;
      if (w && Math.abs(w - c.width) > 2) c.setSize({ width: w, height: 180 });
    }
  }).observe($('charts'));
  for (const b of document.querySelectorAll('[data-range]')) {
    b.addEventListener('click', () => {
      st.range = b.dataset.range;
      for (const o of document.querySelectorAll('[data-range]')) o.setAttribute('aria-pressed', String(o === b));
      destroyCharts();
      if (token) loadHistory().catch(() => {});
    });
  }

  // ---- live tail of app output (fetch streaming: EventSource cannot send the token) ----
  function stopLogs() {
    if (st.logs) { st.logs.abort.abort(); st.logs = null; }
  }
  function addLogLine(l) {
    const pre = $('logs');
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(el('span', { class: l.stream || '', text: clock(l.ts) + ' ' + (l.instance || l.app || '') + ' ' + l.text + '\n' }));
    while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  async function followLogs(app) {
    stopLogs();
    $('logs').textContent = '';
    if (!API.has('logs')) { $('logs-state').textContent = 'no data yet'; return; }
    const abort = new AbortController();
    const mine = { app, abort };
    st.logs = mine;
    let retry = 5000;
    try {
      const resp = await api('/api/v1/logs?app=' + enc(app) + '&lines=200&follow=1', { signal: abort.signal });
      if (resp.status === 404) { $('logs-state').textContent = 'no data yet'; retry = 30000; }
      else if (!resp.ok || !resp.body) { $('logs-state').textContent = 'unavailable (' + resp.status + ')'; }
      else if (!/event-stream/.test(resp.headers.get('content-type') || '')) {
        const j = await resp.json();
        for (const l of j.lines || []) addLogLine(l);
        $('logs-state').textContent = 'last lines';
      } else {
        $('logs-state').textContent = 'live';
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let n;
          while ((n = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, n).replace(/\r$/, '');
            buf = buf.slice(n + 1);
            if (!line.startsWith('data:')) continue;
            try { addLogLine(JSON.parse(line.slice(5))); } catch (e) { /* a line that is not JSON: skip it */ }
          }
        }
        $('logs-state').textContent = 'reconnecting';
      }
    } catch (e) {
      if (abort.signal.aborted || e instanceof Stop) return;
      $('logs-state').textContent = 'reconnecting (' + e.message + ')';
    }
    setTimeout(() => { if (st.logs === mine && token) followLogs(app); }, retry);
  }

  start();
})();
