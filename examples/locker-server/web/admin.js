// The operator's page (/admin): figures, charts, what-if, licences by rights holder, maintenance
// jobs and users, over the
// operator API of contract-web.md. No framework and no build step. The CSP forbids inline
// script and style attributes, so every handler is attached here and every size is either an SVG
// presentation attribute or a CSSOM property.
'use strict';

const API = '/api/v1/admin';
const SVG_NS = 'http://www.w3.org/2000/svg';
const REFRESH_MS = 10000;
const POLL_MS = 500;
const MODE_NOTE = { 'per-user-copy': 'no licence', 'single-master': 'licensed' };

const state = {
  csrf: null,       // the session's CSRF token; null while signed out
  polling: null,    // id of the job being polled
  timer: null,      // the auto-refresh interval
  current: null,    // the refresh under way (a promise)
  next: null,       // the one queued behind it
  editing: null,    // user whose quota form is open (auto-refresh leaves that table alone)
  holders: null,    // the last GET /holders
  holderLoads: 0,   // completed loads of it (#holders carries the count for scripts and tests)
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- formatting

// Decimal units, as the lockerstore CLI prints them (1 MB = 10^6 bytes).
function fmtBytes(n) {
  const abs = Math.abs(n);
  if (abs < 1e3) return `${n} B`;
  for (const [unit, size] of [['TB', 1e12], ['GB', 1e9], ['MB', 1e6], ['kB', 1e3]]) {
    if (abs >= size) return `${(n / size).toFixed(abs >= 100 * size ? 0 : 1)} ${unit}`;
  }
  return `${n} B`;
}

const fmtInt = (n) => Number(n).toLocaleString('en');

function fmtStat(key, value) {
  if (key === 'mode') return `${value} (${MODE_NOTE[value] || '?'})`;
  if (key === 'dedup_ratio') return `${Number(value).toFixed(3)}×`;
  if (key.includes('bytes')) return fmtBytes(value);
  return fmtInt(value);
}

const otherMode = (mode) => (mode === 'single-master' ? 'per-user-copy' : 'single-master');

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Every call goes through here: the cookie rides along by itself (same origin); state-changing
// calls add the CSRF token; a 401 anywhere but the sign-in itself means the session is gone.
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  const res = await fetch(API + path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
    if (res.status === 401 && path !== '/session') signedOut('Your session ended: sign in again.');
    throw new ApiError(res.status, message);
  }
  return res.status === 204 ? null : res.json();
}

// ---------------------------------------------------------------- session

function signedIn(session) {
  state.csrf = session.csrf;
  $('who-name').textContent = session.operator;
  $('who').hidden = false;
  $('signin').hidden = true;
  $('app').hidden = false;
  refreshAll();
  loadHolders();
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    if (document.visibilityState === 'visible') refreshAll();
  }, REFRESH_MS);
}

function signedOut(message) {
  state.csrf = null;
  state.polling = null;
  state.editing = null;
  clearInterval(state.timer);
  hideIssued();
  $('job').hidden = true;
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('operator-key').focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $('operator-key');
  try {
    const session = await api('POST', '/session', { operator_key: input.value.trim() });
    input.value = '';
    $('signin-error').textContent = '';
    signedIn(session);
  } catch (e) {
    $('signin-error').textContent = e.status === 401 ? 'That is not an operator key.' : `Sign-in failed: ${e.message}`;
  }
}

async function signOut() {
  try { await api('DELETE', '/session'); } catch (_) { /* signed out either way */ }
  signedOut('Signed out.');
}

// ---------------------------------------------------------------- figures

// One refresh at a time. A call while one runs queues exactly one more, which all such callers
// await: whoever asks after a change (a job's end) gets figures fetched after it.
function refreshAll() {
  if (!state.csrf) return Promise.resolve();
  if (!state.current) {
    state.current = loadAll().finally(() => { state.current = null; });
    return state.current;
  }
  if (!state.next) {
    state.next = state.current.then(() => {
      state.next = null;
      return refreshAll();
    });
  }
  return state.next;
}

async function loadAll() {
  try {
    const [stats, whatIf, users, jobs] = await Promise.all([
      api('GET', '/stats'), api('GET', '/what-if'), api('GET', '/users'), api('GET', '/jobs'),
    ]);
    renderStats(stats);
    renderWhatIf(whatIf);
    renderCharts(stats, whatIf);
    if (state.editing === null) renderUsers(users);
    renderJobs(jobs);
    $('banner').textContent = '';
    $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (e) {
    if (e.status !== 401) $('banner').textContent = `Could not load the figures: ${e.message}`;
  }
}

// data-value keeps the exact number of the JSON (tests and copy-paste use it); the text is for people.
function renderStats(stats) {
  for (const node of document.querySelectorAll('[data-stat]')) {
    const key = node.dataset.stat;
    node.dataset.value = String(stats[key]);
    node.textContent = fmtStat(key, stats[key]);
    if (key.includes('bytes')) node.title = `${fmtInt(stats[key])} bytes`;
  }
  for (const node of document.querySelectorAll('.other-mode')) node.textContent = otherMode(stats.mode);
}

function renderWhatIf(whatIf) {
  const other = whatIf.other;
  $('whatif-other').textContent = other.mode;
  for (const node of document.querySelectorAll('[data-whatif]')) {
    const key = node.dataset.whatif;
    node.dataset.value = String(other[key]);
    node.textContent = fmtStat(key, other[key]);
    if (key.includes('bytes')) node.title = `${fmtInt(other[key])} bytes`;
  }
}

// ---------------------------------------------------------------- charts

// A step of 1, 2 or 5 times a power of ten giving at most 5 intervals up to `max`.
function niceStep(max) {
  if (max <= 0) return 1;
  const pow = 10 ** Math.floor(Math.log10(max / 5));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => max / s <= 5) || 10 * pow;
}

// Logical units of the viewBox; near the drawn size so 12px text stays about 12px.
const CHART = { width: 400, labelW: 118, valueW: 58, rowH: 28, barH: 16, axisH: 24 };

// Horizontal bars on one scale, labelled, with a tick axis. rows: [{key, label, value, cls}].
// The SVG carries data-scale-max and data-plot-width so a test can check every bar's width.
function drawBars(svg, rows, summary) {
  const plotW = CHART.width - CHART.labelW - CHART.valueW;
  const max = Math.max(0, ...rows.map((r) => r.value));
  const step = niceStep(max);
  const scaleMax = Math.max(step, Math.ceil(max / step) * step);
  const height = rows.length * CHART.rowH + CHART.axisH;
  svg.replaceChildren(svgEl('title', {}, summary));
  svg.setAttribute('viewBox', `0 0 ${CHART.width} ${height}`);
  svg.setAttribute('aria-label', summary);
  svg.dataset.scaleMax = String(scaleMax);
  svg.dataset.plotWidth = String(plotW);
  const x0 = CHART.labelW;
  const axisY = rows.length * CHART.rowH;
  for (let v = 0; v <= scaleMax + step / 2; v += step) {
    const x = x0 + (v / scaleMax) * plotW;
    svg.append(svgEl('line', { x1: x, x2: x, y1: 0, y2: axisY, class: 'grid' }));
    svg.append(svgEl('text', { x, y: axisY + 16, class: 'tick', 'text-anchor': 'middle' }, fmtBytes(v)));
  }
  rows.forEach((r, i) => {
    const y = i * CHART.rowH + (CHART.rowH - CHART.barH) / 2;
    const w = r.value > 0 ? (r.value / scaleMax) * plotW : 0;
    svg.append(svgEl('text', { x: x0 - 8, y: y + CHART.barH - 4, class: 'label', 'text-anchor': 'end' }, r.label));
    const bar = svgEl('rect', { x: x0, y, width: w, height: CHART.barH, class: `bar ${r.cls}`, 'data-bar': r.key, 'data-value': r.value });
    bar.append(svgEl('title', {}, `${r.label}: ${fmtBytes(r.value)}`));
    svg.append(bar);
    svg.append(svgEl('text', { x: x0 + w + 6, y: y + CHART.barH - 4, class: 'value' }, fmtBytes(r.value)));
  });
  svg.append(svgEl('line', { x1: x0, x2: x0 + plotW, y1: axisY, y2: axisY, class: 'axis' }));
}

// One bar of the whole logical bytes, a segment per user; the legend names the colours.
function drawUsers(svg, legend, perUser) {
  const plotW = CHART.width;
  const total = perUser.reduce((sum, u) => sum + u.logical_bytes, 0);
  const parts = perUser.map((u) => `${u.user} ${fmtBytes(u.logical_bytes)}`);
  const summary = total > 0 ? `Logical bytes per user: ${parts.join(', ')}` : 'No user holds a track yet.';
  svg.replaceChildren(svgEl('title', {}, summary));
  svg.setAttribute('viewBox', `0 0 ${plotW} ${CHART.barH + 8}`);
  svg.setAttribute('preserveAspectRatio', 'none'); // a thin bar across the page; no text inside
  svg.setAttribute('aria-label', summary);
  svg.dataset.total = String(total);
  svg.dataset.plotWidth = String(plotW);
  legend.replaceChildren();
  let x = 0;
  perUser.forEach((u, i) => {
    const w = total > 0 ? (u.logical_bytes / total) * plotW : 0;
    const seg = svgEl('rect', { x, y: 4, width: w, height: CHART.barH, class: `seg seg-${i % 8}`, 'data-user': u.user, 'data-value': u.logical_bytes });
    seg.append(svgEl('title', {}, `${u.user}: ${fmtBytes(u.logical_bytes)}`));
    svg.append(seg);
    x += w;
    legend.append(el('li', {}, el('span', { class: `swatch seg-${i % 8}`, 'aria-hidden': 'true' }), `${u.user}: ${fmtBytes(u.logical_bytes)}`));
  });
  if (total === 0) svg.append(svgEl('rect', { x: 0, y: 4, width: plotW, height: CHART.barH, class: 'seg-empty' }));
}

function renderCharts(stats, whatIf) {
  const bytes = [
    { key: 'logical_bytes', label: 'Logical', value: stats.logical_bytes, cls: 'bar-logical' },
    { key: 'physical_bytes', label: 'Physical', value: stats.physical_bytes, cls: 'bar-physical' },
    { key: 'garbage_bytes', label: 'Garbage', value: stats.garbage_bytes, cls: 'bar-garbage' },
  ];
  drawBars($('chart-bytes'), bytes,
    `Logical ${fmtBytes(stats.logical_bytes)}, physical ${fmtBytes(stats.physical_bytes)}, garbage ${fmtBytes(stats.garbage_bytes)}`);
  const other = whatIf.other;
  const saved = stats.logical_bytes - stats.physical_bytes;
  const savings = [
    { key: 'physical_now', label: 'Now', value: stats.physical_bytes, cls: 'bar-physical' },
    { key: 'physical_other', label: `If ${other.mode}`, value: other.physical_bytes, cls: 'bar-other' },
    { key: 'dedup_saves', label: 'Dedup saves', value: saved, cls: 'bar-saved' },
  ];
  drawBars($('chart-savings'), savings,
    `Physical bytes now ${fmtBytes(stats.physical_bytes)} in ${stats.mode}, ${fmtBytes(other.physical_bytes)} under ${other.mode}; dedup saves ${fmtBytes(saved)}`);
  drawUsers($('chart-users'), $('chart-users-legend'), stats.per_user || []);
}

// ---------------------------------------------------------------- licences by rights holder

// The what-if per holder and the audit read every track: they load when the page opens, on
// Refresh, after a job and after a licence change, not on the 10 s timer.

const MODE_WORD = { 'single-master': 'shared', 'per-user-copy': 'per-user' };
const fmtSigned = (n) => (n > 0 ? '+' : n < 0 ? '−' : '') + fmtBytes(Math.abs(n));
const fmtUtc = (secs) => `${new Date(secs * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
const shortName = (name, max = 22) => (name.length > max ? `${name.slice(0, max - 1)}…` : name);

// A licence as the table says it; kind is what data-licence carries: shared, per-user or default.
function licenceText(licence, defaultMode) {
  const dflt = `default (${MODE_WORD[defaultMode]})`;
  if (!licence) return { kind: 'default', text: dflt };
  const word = MODE_WORD[licence.mode];
  if (licence.expired) return { kind: 'default', text: `${dflt}; its ${word} licence ended ${fmtUtc(licence.until)}` };
  return { kind: word, text: licence.until === null ? word : `${word} until ${fmtUtc(licence.until)}` };
}

function verdictText(audit) {
  if (!audit) return { cls: '', text: 'not audited' };
  if (audit.conforming) return { cls: 'verdict-ok', text: 'conforming' };
  const parts = [];
  if (audit.pending_tracks) parts.push(`${fmtInt(audit.pending_tracks)} to migrate`);
  const other = audit.breaking_tracks - audit.pending_tracks;
  if (other > 0) parts.push(`${fmtInt(other)} breaking`);
  return { cls: 'verdict-bad', text: parts.join(', ') || 'breaking' };
}

const HCHART = { width: 560, labelW: 150, valueW: 104, rowH: 28, barH: 16 };

// One bar per holder from a zero line: savings to the right, costs (negative savings: a shared
// holder flipped back to per-user copies) to the left. data-zero-x, data-scale-max (the bytes
// the plot's width stands for) and data-plot-width let a test check every bar.
function drawHolders(svg, holders) {
  const plotW = HCHART.width - HCHART.labelW - HCHART.valueW;
  const pos = Math.max(0, ...holders.map((h) => h.savings));
  const neg = Math.max(0, ...holders.map((h) => -h.savings));
  const span = pos + neg || 1;
  const zeroX = HCHART.labelW + (neg / span) * plotW;
  const says = (h) => `${h.holder} ${h.savings < 0 ? 'costs' : 'saves'} ${fmtBytes(Math.abs(h.savings))} (to ${MODE_WORD[h.mode_after]})`;
  const summary = holders.length
    ? `What changing each holder's licence would save: ${holders.map(says).join('; ')}`
    : 'No track names a rights holder yet.';
  const height = Math.max(1, holders.length) * HCHART.rowH + 8;
  svg.replaceChildren(svgEl('title', {}, summary));
  svg.setAttribute('viewBox', `0 0 ${HCHART.width} ${height}`);
  svg.setAttribute('aria-label', summary);
  svg.dataset.scaleMax = String(span);
  svg.dataset.plotWidth = String(plotW);
  svg.dataset.zeroX = String(zeroX);
  holders.forEach((h, i) => {
    const y = 4 + i * HCHART.rowH + (HCHART.rowH - HCHART.barH) / 2;
    const w = (Math.abs(h.savings) / span) * plotW;
    const cost = h.savings < 0;
    const label = svgEl('text', { x: HCHART.labelW - 8, y: y + HCHART.barH - 4, class: 'label', 'text-anchor': 'end', 'data-holder': h.holder }, shortName(h.holder));
    if (h.holder.length > 22) label.append(svgEl('title', {}, h.holder));
    svg.append(label);
    const bar = svgEl('rect', { x: cost ? zeroX - w : zeroX, y, width: w, height: HCHART.barH, class: `bar ${cost ? 'bar-cost' : 'bar-saved'}`, 'data-bar': h.holder, 'data-holder': h.holder, 'data-value': h.savings });
    bar.append(svgEl('title', {}, says(h)));
    svg.append(bar);
    const valueX = cost ? zeroX + 6 : zeroX + w + 6;
    svg.append(svgEl('text', { x: valueX, y: y + HCHART.barH - 4, class: 'value', 'data-value-for': h.holder }, cost ? `${fmtSigned(h.savings)} cost` : `${fmtSigned(h.savings)} saved`));
  });
  if (!holders.length) svg.append(svgEl('text', { x: HCHART.width / 2, y: HCHART.rowH / 2 + 8, class: 'tick', 'text-anchor': 'middle' }, summary));
  svg.append(svgEl('line', { x1: zeroX, x2: zeroX, y1: 0, y2: height, class: 'zero' }));
}

function holderRow(cells, attrs) {
  const row = el('tr', attrs);
  for (const [i, c] of cells.entries()) {
    if (i === 0) row.append(el('th', { scope: 'row' }, c));
    else if (c instanceof Node) row.append(c);
    else row.append(el('td', { class: typeof c === 'number' ? 'num' : '' }, typeof c === 'number' ? fmtInt(c) : c));
  }
  return row;
}

// What changing the holder's licence, then migrating, would do: the store's physical bytes
// after, and what the migration writes and frees (exact numbers in data attributes).
function changeCell(h) {
  return el('td', { class: 'change', 'data-after': String(h.physical_bytes_after), 'data-write': String(h.bytes_to_write), 'data-free': String(h.bytes_to_free) },
    `to ${MODE_WORD[h.mode_after]}: store ${fmtBytes(h.physical_bytes_after)}`, el('br'),
    `writes ${fmtBytes(h.bytes_to_write)}, frees ${fmtBytes(h.bytes_to_free)}`);
}

// A byte figure: the text for people, data-value and the title with the exact number.
function bytesCell(n) {
  return el('td', { class: 'num', 'data-value': String(n), title: `${fmtInt(n)} bytes` }, fmtBytes(n));
}

function renderHolders(data) {
  const dflt = data.default;
  const b = data.baseline;
  $('holders-summary').textContent = `Default licence: ${MODE_WORD[dflt]} (${dflt}). `
    + `${fmtInt(data.holders.length)} rights holders hold tracks; ${fmtInt(data.unassigned_tracks)} tracks (${fmtBytes(data.unassigned_bytes)}) name none and follow the default. `
    + (data.conforming ? 'The layout conforms to every licence.'
      : `${fmtInt(b.pending_tracks)} tracks wait for a migration: it would write ${fmtBytes(b.bytes_to_write)} and free ${fmtBytes(b.bytes_to_free)}.`);
  drawHolders($('chart-holders'), data.holders);
  const edit = (name, licence) => {
    const button = el('button', { type: 'button', class: 'btn btn-small', 'data-action': 'licence' }, 'Change');
    button.setAttribute('aria-label', `Change ${name}'s licence`);
    button.addEventListener('click', () => editLicence(name, licence));
    return el('td', { class: 'row-actions' }, button);
  };
  const licenceCell = (licence) => {
    const l = licenceText(licence, dflt);
    return el('td', { 'data-licence': l.kind, 'data-until': licence && !licence.expired && licence.until !== null ? String(licence.until) : '' }, l.text);
  };
  const verdictCell = (audit) => {
    const v = verdictText(audit);
    return el('td', { class: v.cls, 'data-conforming': audit ? String(audit.conforming) : '' }, v.text);
  };
  const rows = data.holders.map((h) => holderRow([
    h.holder, licenceCell(h.licence), h.tracks, bytesCell(h.logical_bytes), bytesCell(h.physical_bytes_now),
    changeCell(h),
    el('td', { class: 'num', 'data-value': String(h.savings), title: `${fmtInt(h.savings)} bytes` }, fmtSigned(h.savings)),
    verdictCell(h.audit), edit(h.holder, h.licence),
  ], { 'data-holder': h.holder }));
  // Licences of holders without a track yet.
  const withTracks = new Set(data.holders.map((h) => h.holder));
  for (const e of data.licences.entries.filter((x) => !withTracks.has(x.holder))) {
    rows.push(holderRow([e.holder, licenceCell(e), 0, '—', '—', '—', '—', 'no tracks', edit(e.holder, e)], { 'data-holder': e.holder }));
  }
  if (data.unassigned_tracks > 0) {
    rows.push(holderRow(['(no rights holder)', licenceCell(null), data.unassigned_tracks, bytesCell(data.unassigned_bytes), '—', '—', '—',
      verdictCell(data.unassigned_audit), el('td')], { class: 'unassigned', 'data-unassigned': 'true' }));
  }
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: '9', class: 'hint' }, 'No track names a rights holder, and no licence is set.')));
  $('holders').tBodies[0].replaceChildren(...rows);
  $('holder-names').replaceChildren(...[...withTracks, ...data.licences.entries.map((e) => e.holder)]
    .filter((n, i, all) => all.indexOf(n) === i).map((n) => el('option', { value: n })));
}

async function loadHolders() {
  if (!state.csrf) return;
  try {
    state.holders = await api('GET', '/holders');
    renderHolders(state.holders);
    $('holders-error').textContent = '';
    state.holderLoads += 1;
    $('holders').dataset.loaded = String(state.holderLoads);
  } catch (e) {
    if (e.status !== 401) $('holders-error').textContent = `Could not load the rights holders: ${e.message}`;
  }
}

// The form, filled in with a holder's licence (an end is shown as its last day, UTC).
function editLicence(name, licence) {
  const f = $('set-licence').elements;
  f.holder.value = name;
  f.mode.value = licence && !licence.expired ? licence.mode : 'default';
  f.until.value = licence && !licence.expired && licence.until !== null
    ? new Date((licence.until - 1) * 1000).toISOString().slice(0, 10) : '';
  $('licence-status').textContent = '';
  f.mode.focus();
}

async function saveLicence(event) {
  event.preventDefault();
  const form = event.target;
  const f = form.elements;
  const holder = f.holder.value.trim();
  $('holders-error').textContent = '';
  $('licence-status').textContent = '';
  try {
    if (f.mode.value === 'default') {
      await api('POST', '/licences/unset', { holder });
      $('licence-status').textContent = `${holder} has no licence now: its tracks follow the default.`;
    } else {
      const body = { holder, mode: f.mode.value };
      if (f.until.value) {
        // Through that day, UTC: the licence ends at the next midnight (as `lockerstore license set --until`).
        const [y, m, d] = f.until.value.split('-').map(Number);
        body.until = Date.UTC(y, m - 1, d + 1) / 1000;
      }
      await api('PUT', '/licences', body);
      $('licence-status').textContent = `${holder}: ${MODE_WORD[f.mode.value]}${body.until ? ` until ${fmtUtc(body.until)}` : ''}.`;
    }
    form.reset();
    await Promise.all([loadHolders(), refreshAll()]);
  } catch (e) {
    if (e.status !== 401) $('holders-error').textContent = `Licence not saved: ${e.message}`;
  }
}

// A migration under the current licences: the default stays, the holders' tracks move.
async function applyLicences() {
  let data;
  try { data = await api('GET', '/holders'); } catch (e) {
    if (e.status !== 401) $('job-error').textContent = `No what-if: ${e.message}`;
    return;
  }
  const b = data.baseline;
  const body = el('dl', { class: 'report' },
    ...[['Tracks to move', fmtInt(b.pending_tracks)], ['Physical bytes now', fmtBytes(b.physical_bytes_now)],
      ['Physical bytes after', fmtBytes(b.physical_bytes)], ['Bytes to write', fmtBytes(b.bytes_to_write)],
      ['Bytes freed by the next GC', fmtBytes(b.bytes_to_free)]]
      .map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v))));
  const note = `Moves every track whose holder's licence asks for another layout; the default stays ${data.default}.`;
  if (await confirmDialog('Apply the licences?', [el('p', {}, note), body], 'Migrate')) {
    startJob({ kind: 'migrate', mode: data.default });
  }
}

// ---------------------------------------------------------------- jobs

const jobTitle = (job) => (job.kind === 'migrate' ? `Migrate to ${job.mode}` : 'GC') + ` #${job.id}`;

function jobRow(job) {
  const took = job.finished_at ? `${job.finished_at - job.started_at} s` : '…';
  return el('tr', { 'data-job': job.id, 'data-state': job.state },
    el('td', {}, String(job.id)), el('td', {}, job.kind === 'migrate' ? `migrate to ${job.mode}` : 'gc'),
    el('td', {}, job.state + (job.error ? `: ${job.error}` : '')),
    el('td', {}, new Date(job.started_at * 1000).toLocaleString()), el('td', {}, took));
}

function renderJobs(jobs) {
  const none = el('tr', {}, el('td', { colspan: '5', class: 'hint' }, 'No job since the server started.'));
  $('jobs').tBodies[0].replaceChildren(...(jobs.length ? jobs.map(jobRow) : [none]));
  // A job started elsewhere (or before a reload) is followed too.
  const running = jobs.find((j) => j.state === 'running');
  if (running && state.polling === null) followJob(running);
  setJobButtons(Boolean(running) || state.polling !== null);
}

function setJobButtons(busy) {
  $('run-gc').disabled = busy;
  $('run-migrate').disabled = busy;
  $('apply-licences').disabled = busy;
}

function showJob(job) {
  const box = $('job');
  box.hidden = false;
  box.dataset.state = job.state;
  if (box.dataset.jobId !== String(job.id)) delete box.dataset.refreshed;
  box.dataset.jobId = String(job.id);
  box.dataset.phase = job.phase || '';
  $('job-title').textContent = jobTitle(job);
  const progress = $('job-progress');
  if (job.total > 0) {
    progress.max = job.total;
    progress.value = job.done;
  } else if (job.state === 'running') {
    progress.removeAttribute('value'); // indeterminate until the job knows its size
  } else {
    progress.max = 1;
    progress.value = 1;
  }
  const counts = job.total > 0 ? `: ${fmtInt(job.done)} of ${fmtInt(job.total)}` : '';
  const status = job.state === 'running' ? `Running, phase ${job.phase}${counts}`
    : job.state === 'done' ? 'Done.' : `Failed: ${job.error || 'unknown error'}`;
  $('job-status').textContent = status;
  $('job-bytes').textContent = job.bytes_total > 0 ? `${fmtBytes(job.bytes_done)} of ${fmtBytes(job.bytes_total)}` : '';
  renderReport(job.report);
}

function renderReport(report) {
  const dl = $('job-report');
  dl.replaceChildren();
  if (!report) return;
  for (const [key, value] of Object.entries(report)) {
    const text = typeof value === 'number' && key.includes('bytes') ? `${fmtBytes(value)} (${fmtInt(value)})`
      : typeof value === 'object' ? JSON.stringify(value) : String(value);
    dl.append(el('div', {}, el('dt', {}, key.replace(/_/g, ' ')), el('dd', { 'data-report': key }, text)));
  }
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function followJob(job) {
  state.polling = job.id;
  setJobButtons(true);
  showJob(job);
  try {
    while (job.state === 'running' && state.polling === job.id) {
      await sleep(POLL_MS);
      job = await api('GET', `/jobs/${job.id}`);
      showJob(job);
    }
  } catch (e) {
    if (e.status !== 401) $('job-error').textContent = `Lost track of the job: ${e.message}`;
  } finally {
    if (state.polling === job.id) state.polling = null;
    setJobButtons(false);
  }
  await Promise.all([refreshAll(), loadHolders()]); // the figures (and the charts) after the job
  // A hook for scripts and tests: the page now shows the figures as of after this job.
  if ($('job').dataset.jobId === String(job.id)) $('job').dataset.refreshed = String(job.id);
}

async function startJob(body) {
  $('job-error').textContent = '';
  try {
    followJob(await api('POST', '/jobs', body));
  } catch (e) {
    if (e.status === 409) {
      $('job-error').textContent = 'Another job runs: wait for it to end.';
      refreshAll(); // shows (and follows) the job that runs
    }
    else if (e.status !== 401) $('job-error').textContent = `Could not start the job: ${e.message}`;
  }
}

async function migrate() {
  let whatIf;
  try { whatIf = await api('GET', '/what-if'); } catch (e) {
    if (e.status !== 401) $('job-error').textContent = `No what-if: ${e.message}`;
    return;
  }
  const o = whatIf.other;
  const body = el('dl', { class: 'report' },
    ...[['Physical bytes now', fmtBytes(o.physical_bytes_now)], [`Physical bytes under ${o.mode}`, fmtBytes(o.physical_bytes)],
      ['Bytes to write', fmtBytes(o.bytes_to_write)], ['Bytes freed by the next GC', fmtBytes(o.bytes_to_free)],
      ['Tracks to move', fmtInt(o.pending_tracks)]]
      .map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v))));
  const note = o.mode === 'single-master'
    ? 'Identical content of all users will be stored once: only with a licence.'
    : 'Every user gets their own copy again.';
  if (await confirmDialog(`Migrate to ${o.mode}?`, [el('p', {}, note), body], `Migrate to ${o.mode}`)) {
    startJob({ kind: 'migrate', mode: o.mode });
  }
}

// ---------------------------------------------------------------- confirm dialog

// A modal <dialog> (focus trapped, Escape cancels) instead of window.confirm, which cannot
// show a table and which headless browsers dismiss.
function confirmDialog(title, bodyNodes, okLabel) {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-body').replaceChildren(...bodyNodes);
  $('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener('close', onClose);
      $('confirm-ok').removeEventListener('click', onOk);
      $('confirm-cancel').removeEventListener('click', onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onOk = () => done(true);
    const onCancel = () => done(false);
    const onClose = () => done(false);
    dialog.addEventListener('close', onClose);
    $('confirm-ok').addEventListener('click', onOk);
    $('confirm-cancel').addEventListener('click', onCancel);
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

// ---------------------------------------------------------------- users

// Blank input = no limit (null); MB are decimal, like every figure on the page.
const mbToBytes = (text) => (text.trim() === '' ? null : Math.round(Number(text) * 1e6));
const toCount = (text) => (text.trim() === '' ? null : Math.round(Number(text)));

function usageCell(used, max, fmt) {
  const cell = el('td', {}, `${fmt(used)} of ${max === null ? 'no limit' : fmt(max)}`);
  if (max !== null) {
    const meter = el('meter', { min: '0', max: String(Math.max(max, 1)), low: String(max * 0.75), high: String(max * 0.9), optimum: '0' });
    meter.value = used;
    meter.textContent = `${Math.round((100 * used) / Math.max(max, 1))} %`;
    cell.append(el('br'), meter);
  }
  return cell;
}

function renderUsers(users) {
  const body = $('users').tBodies[0];
  body.replaceChildren(...users.map((u) => {
    const row = el('tr', { 'data-user': u.user });
    row.append(el('th', { scope: 'row' }, u.user));
    const bytes = usageCell(u.counted_bytes, u.max_bytes, fmtBytes);
    if (u.exempt_bytes > 0) bytes.append(el('br'), el('small', {}, `+ ${fmtBytes(u.exempt_bytes)} exempt`));
    const tracks = usageCell(u.counted_tracks, u.max_tracks, fmtInt);
    bytes.dataset.label = 'Bytes'; // the phone layout shows these as captions
    tracks.dataset.label = 'Tracks';
    row.append(bytes, tracks);
    const edit = el('button', { type: 'button', class: 'btn btn-small', 'data-action': 'quota' }, 'Edit quota');
    const revoke = el('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-action': 'revoke' }, 'Revoke key');
    edit.setAttribute('aria-label', `Edit ${u.user}'s quota`);
    revoke.setAttribute('aria-label', `Revoke ${u.user}'s key`);
    edit.addEventListener('click', () => openQuota(row, u));
    revoke.addEventListener('click', () => revokeKey(u.user));
    row.append(el('td', { class: 'row-actions' }, edit, revoke));
    return row;
  }));
}

async function reloadUsers() {
  state.editing = null;
  try { renderUsers(await api('GET', '/users')); } catch (e) {
    if (e.status !== 401) $('users-error').textContent = e.message;
  }
}

// The quota form opens in a row under the user's.
function openQuota(row, user) {
  document.querySelector('tr.quota-row')?.remove();
  state.editing = user.user;
  const form = el('form', { class: 'quota-form', 'aria-label': `Quota of ${user.user}` },
    el('label', {}, 'Max MB ', el('input', { name: 'max_mb', type: 'number', min: '0', step: 'any', placeholder: 'no limit' })),
    el('label', {}, 'Max tracks ', el('input', { name: 'max_tracks', type: 'number', min: '0', step: '1', placeholder: 'no limit' })),
    el('button', { type: 'submit', class: 'btn btn-primary btn-small' }, 'Save'),
    el('button', { type: 'button', class: 'btn btn-small', 'data-action': 'cancel' }, 'Cancel'));
  form.elements.max_mb.value = user.max_bytes === null ? '' : String(user.max_bytes / 1e6);
  form.elements.max_tracks.value = user.max_tracks === null ? '' : String(user.max_tracks);
  const editRow = el('tr', { class: 'quota-row', 'data-quota-for': user.user }, el('td', { colspan: '4' }, form));
  row.after(editRow);
  form.querySelector('[data-action=cancel]').addEventListener('click', () => { editRow.remove(); state.editing = null; });
  form.addEventListener('submit', (e) => saveQuota(e, user.user));
  form.elements.max_mb.focus();
}

async function saveQuota(event, name) {
  event.preventDefault();
  const f = event.target.elements;
  $('users-error').textContent = '';
  try {
    await api('PUT', '/users/quota', { name, max_bytes: mbToBytes(f.max_mb.value), max_tracks: toCount(f.max_tracks.value) });
    await reloadUsers();
    refreshAll();
  } catch (e) {
    if (e.status !== 401) $('users-error').textContent = `Quota not saved: ${e.message}`;
  }
}

function showIssued(issued) {
  $('issued-user').textContent = issued.user;
  $('issued-key').textContent = issued.api_key;
  $('issued-password').textContent = issued.subsonic_password;
  $('issued').hidden = false;
  $('issued-done').focus();
}

function hideIssued() {
  // Wipe the secrets from the DOM, not only from view.
  for (const id of ['issued-user', 'issued-key', 'issued-password']) $(id).textContent = '';
  $('issued').hidden = true;
}

async function addUser(event) {
  event.preventDefault();
  const form = event.target;
  const f = form.elements;
  $('users-error').textContent = '';
  try {
    const issued = await api('POST', '/users', { name: f.name.value.trim(), max_bytes: mbToBytes(f.max_mb.value), max_tracks: toCount(f.max_tracks.value) });
    form.reset();
    showIssued(issued);
    await reloadUsers();
  } catch (e) {
    if (e.status !== 401) $('users-error').textContent = `User not added: ${e.message}`;
  }
}

async function revokeKey(name) {
  const sure = await confirmDialog(`Revoke ${name}'s key?`,
    [el('p', {}, `${name}'s API key and Subsonic password stop working at once; new ones are shown once.`)], 'Revoke key');
  if (!sure) return;
  try {
    showIssued(await api('POST', '/users/revoke-key', { name }));
  } catch (e) {
    if (e.status !== 401) $('users-error').textContent = `Key not revoked: ${e.message}`;
  }
}

// ---------------------------------------------------------------- start

async function start() {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('refresh').addEventListener('click', () => { refreshAll(); loadHolders(); });
  $('set-licence').addEventListener('submit', saveLicence);
  $('apply-licences').addEventListener('click', applyLicences);
  $('run-gc').addEventListener('click', () => startJob({ kind: 'gc' }));
  $('run-migrate').addEventListener('click', migrate);
  $('add-user').addEventListener('submit', addUser);
  $('issued-done').addEventListener('click', hideIssued);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.csrf) refreshAll();
  });
  // A living session (a reload, a second tab) skips the form.
  try {
    signedIn(await api('GET', '/session'));
  } catch (e) {
    signedOut(e.status === 401 ? '' : `The server did not answer: ${e.message}`);
  }
}

start();
