// FerryMQ web UI, the core: API calls with basic auth, login/logout, the hash router,
// escaping, formatting, forms, paged lists and SVG line charts. Pages register
// themselves in UI.pages (pages.js, kafka.js, admin.js). Every string that comes from
// the broker or the user is escaped with esc() before it reaches innerHTML; names in
// paths go through encodeURIComponent.
'use strict';

const UI = {
  auth: sessionStorage.getItem('ferrymq.auth'),
  user: null,
  vhost: sessionStorage.getItem('ferrymq.vhost') || '',
  pages: {},
  timers: [],
  seq: 0, // bumped on every navigation: late answers for an old page are dropped
  hist: {}, // client-side sample series (counts, memory, group lag), kept while the tab lives
};

const REFRESH_MS = 5000;
const enc = encodeURIComponent;

function esc(s) {
  return String(s ?? '').replace(/[&<>"'`]/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;',
  })[c]);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.reason || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body, extraHeaders) {
  const headers = { 'X-Requested-With': 'XMLHttpRequest', Authorization: 'Basic ' + UI.auth };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  Object.assign(headers, extraHeaders || {});
  const r = await fetch('/api' + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = { reason: text }; } }
  if (r.status === 401 && (!data || data.error === 'not_authorized')) {
    // The credentials no longer work (RabbitMQ spells a missing tag `not_authorised`).
    logout('Session expired: log in again.');
    throw new ApiError(401, data);
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

const GET = (p) => api('GET', p);

function b64(s) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s)));
}

async function login(user, pass) {
  UI.auth = b64(user + ':' + pass);
  const r = await fetch('/api/whoami', {
    headers: { Authorization: 'Basic ' + UI.auth, 'X-Requested-With': 'XMLHttpRequest' },
  });
  if (!r.ok) {
    UI.auth = null;
    let reason = 'Login failed';
    try { const b = await r.json(); if (b.reason && b.reason !== 'Login failed') reason = b.reason; } catch (_) { /* keep */ }
    throw new Error(reason);
  }
  UI.user = await r.json();
  sessionStorage.setItem('ferrymq.auth', UI.auth);
}

function logout(message) {
  UI.auth = null;
  UI.user = null;
  sessionStorage.removeItem('ferrymq.auth');
  stopTimers();
  UI.seq++;
  $('#shell').classList.add('hidden');
  $('#login').classList.remove('hidden');
  $('#login-error').textContent = message || '';
  $('#login-pass').value = '';
  $('#login-user').focus();
}

const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => [...(root || document).querySelectorAll(sel)];

function isAdmin() { return !!UI.user && (UI.user.tags || []).includes('administrator'); }

// ---- formatting ----
function fmtNum(n) {
  if (n === undefined || n === null || n === '') return '';
  if (typeof n !== 'number') return esc(n);
  return n.toLocaleString('en-US', { maximumFractionDigits: 0 });
}
function fmtRate(r) {
  if (typeof r !== 'number') return '';
  return r.toLocaleString('en-US', { maximumFractionDigits: r < 10 ? 1 : 0 }) + '/s';
}
function fmtBytes(b) {
  if (typeof b !== 'number') return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + ' ' + u[i];
}
function fmtTime(ms) { return ms ? new Date(ms).toLocaleString() : ''; }
function dig(o, path) { return path.split('.').reduce((x, k) => (x == null ? x : x[k]), o); }
function vhostPath(v) { return '/' + enc(v); }
function json(v) { return esc(JSON.stringify(v ?? {})); }
function yes(b) { return b ? '●' : '○'; }

function flash(msg, kind) {
  const f = $('#flash');
  const div = document.createElement('div');
  div.className = 'flash ' + (kind || 'ok');
  div.textContent = msg;
  f.appendChild(div);
  setTimeout(() => div.remove(), kind === 'err' ? 8000 : 3500);
}

// Runs an action from a button or form, reports its outcome, then calls after().
async function act(what, fn, after) {
  try {
    await fn();
    flash(what);
    if (after) await after();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401 && !UI.auth)) flash(what + ' failed: ' + e.message, 'err');
  }
}

// Parses a JSON textarea (empty = {}), or throws a readable error.
function parseJson(text, what) {
  if (!text || !text.trim()) return {};
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what}: ${e.message}`); }
}

// Form field values by name.
function formValues(form) {
  const o = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    o[el.name] = el.type === 'checkbox' ? el.checked : el.value;
  }
  return o;
}

function onSubmit(sel, fn) {
  const form = $(sel);
  if (!form) return;
  form.addEventListener('submit', (ev) => { ev.preventDefault(); fn(formValues(form), form); });
}

function onClick(root, sel, fn) {
  root.addEventListener('click', (ev) => {
    const el = ev.target.closest(sel);
    if (el && root.contains(el)) { ev.preventDefault(); fn(el.dataset, el); }
  });
}

function vhostOptions(selected) {
  const vs = UI.vhosts || [];
  return vs.map((v) => `<option value="${esc(v)}"${v === selected ? ' selected' : ''}>${esc(v)}</option>`).join('');
}
function defaultVhost() { return UI.vhost || (UI.vhosts || ['/']).find((v) => v === '/') || (UI.vhosts || ['/'])[0]; }

// ---- charts: plain SVG ----
const COLORS = ['#1f6feb', '#2da44e', '#d4a72c', '#cf222e', '#8250df', '#0a7f8f', '#bc4c00'];

// series: [{name, points: [[t_ms, value], ...]}]; opts: {fmt, height}
function chart(series, opts) {
  opts = opts || {};
  const W = 560, H = opts.height || 170, L = 56, R = 8, T = 8, B = 20;
  const fmt = opts.fmt || fmtNum;
  const all = series.flatMap((s) => s.points);
  const legend = series.map((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : undefined;
    return `<span class="lg"><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)} <b>${last === undefined ? '–' : esc(fmt(last))}</b></span>`;
  }).join('');
  if (all.length < 2) {
    return `<div class="chart"><div class="nodata">collecting samples…</div><div class="legend">${legend}</div></div>`;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const top = niceCeil(vmax);
  const x = (t) => L + (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const grid = [0, 0.5, 1].map((f) => {
    const v = top * f;
    return `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" class="grid"/><text x="${L - 4}" y="${y(v) + 4}" text-anchor="end">${esc(fmt(v))}</text>`;
  }).join('');
  const lines = series.map((s, i) => {
    if (s.points.length < 1) return '';
    const pts = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    return `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2" points="${pts}"/>`;
  }).join('');
  const span = Math.round((t1 - t0) / 1000);
  const axis = `<text x="${L}" y="${H - 4}">−${span >= 120 ? Math.round(span / 60) + ' min' : span + ' s'}</text><text x="${W - R}" y="${H - 4}" text-anchor="end">now</text>`;
  return `<div class="chart"><svg viewBox="0 0 ${W} ${H}" role="img">${grid}${lines}${axis}</svg><div class="legend">${legend}</div></div>`;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Rates per second from RabbitMQ counter samples ([{sample, timestamp}], newest first).
function ratesFromSamples(samples) {
  const s = (samples || []).slice().sort((a, b) => a.timestamp - b.timestamp);
  const out = [];
  for (let i = 1; i < s.length; i++) {
    const dt = (s[i].timestamp - s[i - 1].timestamp) / 1000;
    if (dt > 0) out.push([s[i].timestamp, Math.max(0, (s[i].sample - s[i - 1].sample) / dt)]);
  }
  return out;
}
function pointsFromSamples(samples) {
  return (samples || []).map((x) => [x.timestamp, x.sample]).sort((a, b) => a[0] - b[0]);
}

// A client-side series: push a value now, keep the last `max` points.
function record(key, value, max) {
  const h = (UI.hist[key] = UI.hist[key] || []);
  h.push([Date.now(), value]);
  while (h.length > (max || 120)) h.shift();
  return h;
}

// ---- paged lists (server-side paging, filtering and sorting: never the whole list) ----
// spec: {id, path(vhost) -> '/queues/...', columns: [{key, label, sort?, render(item)}],
//        cols: API `columns` param, defaultSort, filter: bool, rowLink(item)}
function listShell(spec) {
  const st = listState(spec.id, spec.defaultSort);
  return `<div class="list" id="list-${spec.id}">
    <div class="list-tools">
      ${spec.filter === false ? '' : `<input class="filter" placeholder="Filter by name" value="${esc(st.name)}" aria-label="filter">
      <label class="chk"><input type="checkbox" class="regex"${st.regex ? ' checked' : ''}> Regex</label>`}
      <label>Page size <select class="psize">${[20, 50, 100, 500].map((n) => `<option${n === st.size ? ' selected' : ''}>${n}</option>`).join('')}</select></label>
      <span class="pager"></span>
    </div>
    <div class="tablewrap"><table><thead><tr>${spec.columns.map((c) => `<th${c.sort ? ` class="sortable" data-sort="${esc(c.sort)}"` : ''}>${esc(c.label)}${c.sort && st.sort === c.sort ? (st.rev ? ' ▼' : ' ▲') : ''}</th>`).join('')}</tr></thead>
    <tbody><tr><td colspan="${spec.columns.length}" class="muted">Loading…</td></tr></tbody></table></div>
  </div>`;
}

function listState(id, defaultSort) {
  UI.lists = UI.lists || {};
  return (UI.lists[id] = UI.lists[id] || { page: 1, size: 50, name: '', regex: false, sort: defaultSort || 'name', rev: false });
}

function bindList(spec) {
  const root = $('#list-' + spec.id);
  const st = listState(spec.id, spec.defaultSort);
  const reload = () => refreshList(spec);
  const filter = $('.filter', root);
  if (filter) {
    let t;
    filter.addEventListener('input', () => { clearTimeout(t); t = setTimeout(() => { st.name = filter.value; st.page = 1; reload(); }, 250); });
    $('.regex', root).addEventListener('change', (e) => { st.regex = e.target.checked; st.page = 1; reload(); });
  }
  $('.psize', root).addEventListener('change', (e) => { st.size = +e.target.value; st.page = 1; reload(); });
  onClick(root, 'th.sortable', (d, el) => {
    if (st.sort === d.sort) st.rev = !st.rev; else { st.sort = d.sort; st.rev = false; }
    $$('th.sortable', root).forEach((th) => { th.textContent = th.textContent.replace(/ [▲▼]$/, ''); });
    el.textContent += st.rev ? ' ▼' : ' ▲';
    reload();
  });
  onClick(root, '.pager button', (d) => { st.page = +d.page; reload(); });
  return reload();
}

async function refreshList(spec) {
  const root = $('#list-' + spec.id);
  if (!root) return;
  const st = listState(spec.id, spec.defaultSort);
  const q = new URLSearchParams({ page: st.page, page_size: st.size, sort: st.sort, sort_reverse: st.rev });
  if (st.name) { q.set('name', st.name); if (st.regex) q.set('use_regex', 'true'); }
  if (spec.cols) q.set('columns', spec.cols);
  const seq = UI.seq;
  let r;
  try {
    r = await GET(spec.path(UI.vhost) + '?' + q);
  } catch (e) {
    if (seq !== UI.seq) return;
    $('tbody', root).innerHTML = `<tr><td colspan="${spec.columns.length}" class="error">${esc(e.message)}</td></tr>`;
    return;
  }
  if (seq !== UI.seq) return;
  if (r.page_count && st.page > r.page_count) { st.page = r.page_count; return refreshList(spec); }
  window.ferrymqListLoaded = window.ferrymqListLoaded || performance.now();
  const rows = r.items.map((it) => `<tr>${spec.columns.map((c) => `<td class="${c.cls || ''}">${c.render(it)}</td>`).join('')}</tr>`).join('');
  $('tbody', root).innerHTML = rows || `<tr><td colspan="${spec.columns.length}" class="muted">Nothing here${st.name ? ' matches the filter' : ''}.</td></tr>`;
  const pages = Math.max(1, r.page_count);
  const btn = (p, label) => `<button type="button" data-page="${p}"${p < 1 || p > pages || p === r.page ? ' disabled' : ''}>${label}</button>`;
  $('.pager', root).innerHTML = `${btn(1, '«')}${btn(r.page - 1, '‹')} <span class="pageinfo">page ${r.page} of ${pages} · ${fmtNum(r.filtered_count)} shown of ${fmtNum(r.total_count)}</span> ${btn(r.page + 1, '›')}${btn(pages, '»')}`;
  root.dataset.filtered = r.filtered_count;
  root.dataset.total = r.total_count;
}

// ---- page plumbing ----
function stopTimers() { UI.timers.forEach(clearInterval); UI.timers = []; }
function every(fn) { UI.timers.push(setInterval(fn, REFRESH_MS)); }

function kv(rows) {
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join('')}</table>`;
}
function section(title, body, id) {
  return `<section${id ? ` id="${id}"` : ''}><h2>${esc(title)}</h2>${body}</section>`;
}
function link(href, text) { return `<a href="${esc(href)}">${esc(text)}</a>`; }
function table(heads, rows, empty) {
  return `<table><thead><tr>${heads.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.length ? rows.join('') : `<tr><td colspan="${heads.length}" class="muted">${esc(empty || 'None')}</td></tr>`}</tbody></table>`;
}

async function route() {
  stopTimers();
  const seq = ++UI.seq;
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter((p, i) => p !== '' || i > 0).map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
  const name = parts[0] || 'overview';
  const page = UI.pages[name] || UI.pages.notfound;
  $$('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.tab === (page.tab || name)));
  // A fresh element per page: listeners of the previous page go with the old one.
  const old = $('#main');
  const main = old.cloneNode(false);
  delete main.dataset.loaded;
  old.replaceWith(main);
  main.innerHTML = '<p class="muted">Loading…</p>';
  try {
    await page.show(main, parts.slice(1), seq);
  } catch (e) {
    if (seq === UI.seq && UI.auth) main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

UI.pages.notfound = { show: (main) => { main.innerHTML = '<p class="error">No such page.</p>'; } };

async function loadVhosts() {
  try {
    const vs = await GET('/vhosts?columns=name');
    UI.vhosts = vs.map((v) => v.name).sort();
  } catch (_) { UI.vhosts = ['/']; }
  const sel = $('#vhost-select');
  sel.innerHTML = '<option value="">All</option>' + vhostOptions(UI.vhost);
  if (UI.vhost && !UI.vhosts.includes(UI.vhost)) { UI.vhost = ''; sel.value = ''; }
}

async function startShell() {
  $('#login').classList.add('hidden');
  $('#shell').classList.remove('hidden');
  $('#whoami').textContent = `${UI.user.name} (${(UI.user.tags || []).join(', ') || 'no tags'})`;
  $('#nav-admin').classList.toggle('hidden', !isAdmin());
  await loadVhosts();
  route();
}

document.addEventListener('DOMContentLoaded', async () => {
  onSubmit('#login-form', async (v) => {
    $('#login-error').textContent = '';
    $('#login-submit').disabled = true;
    try {
      await login(v.username, v.password);
      await startShell();
    } catch (e) {
      $('#login-error').textContent = e.message;
    } finally {
      $('#login-submit').disabled = false;
    }
  });
  $('#logout').addEventListener('click', () => logout('Logged out.'));
  $('#vhost-select').addEventListener('change', (e) => {
    UI.vhost = e.target.value;
    sessionStorage.setItem('ferrymq.vhost', UI.vhost);
    Object.values(UI.lists || {}).forEach((s) => { s.page = 1; });
    route();
  });
  window.addEventListener('hashchange', () => { if (UI.auth) route(); });
  if (UI.auth) {
    try {
      UI.user = await GET('/whoami');
      await startShell();
      return;
    } catch (_) { /* fall through to the login form */ }
  }
  logout('');
});
