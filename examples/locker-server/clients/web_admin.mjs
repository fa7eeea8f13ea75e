// Drives the operator's page (/admin) in headless Debian Chromium for test_web_admin.py.
// Usage: node web_admin.mjs BASE_URL
// A line protocol so the Python test can stop and restart the server between steps while this
// browser lives on: one JSON command per line on stdin ({"cmd": "...", ...}), one JSON answer
// per line on stdout ({"ok": true, ...} or {"ok": false, "error": "..."}). Nothing else goes to
// stdout. The page's console errors, CSP violations and failed responses are collected all along
// and handed over by the "errors" command.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const base = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(20000);

const seen = { console: [], network_logs: [], csp: [], page_errors: [], responses: [] };
page.on('console', (msg) => {
  if (msg.type() !== 'error') return;
  // Chromium logs every 4xx answer of fetch() as a console error; the test judges those from
  // the responses themselves (some 401s and a 403 are the point of the test).
  const text = msg.text();
  if (text.startsWith('Failed to load resource: the server responded with a status of')) seen.network_logs.push(text);
  else seen.console.push(text);
});
page.on('pageerror', (e) => seen.page_errors.push(String(e)));
page.on('response', (r) => {
  if (r.status() >= 400) seen.responses.push({ method: r.request().method(), url: r.url(), status: r.status() });
});
page.on('requestfailed', (r) => seen.page_errors.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
await page.exposeFunction('__cspViolation', (v) => seen.csp.push(v));
// Init scripts come in through the DevTools protocol, so the page's CSP does not block them.
await page.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolation(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
  });
});

// Waits until the page settled on the sign-in form or on the signed-in app.
async function view() {
  if (!(await page.$('#signin')) || !(await page.$('#app'))) {
    throw new Error(`${page.url()} is not the operator page (no #signin/#app): an older build's copy? ${(await page.content()).slice(0, 200)}`);
  }
  await page.waitForFunction(() => !document.getElementById('signin').hidden || !document.getElementById('app').hidden);
  return (await page.isVisible('#app')) ? 'app' : 'signin';
}

// Waits for the figures of a completed refresh (every [data-stat] holds a value).
async function waitFigures() {
  await page.waitForFunction(() => [...document.querySelectorAll('[data-stat]')].every((n) => n.dataset.value !== undefined)
    && document.querySelector('#chart-bytes rect[data-bar]') !== null);
}

// Everything the page shows that the test compares: figures, what-if, charts, users.
function snapshot() {
  return page.evaluate(() => {
    const values = (sel, attr) => Object.fromEntries([...document.querySelectorAll(sel)].map((n) => [n.dataset[attr], n.dataset.value]));
    const chart = (id) => {
      const svg = document.getElementById(id);
      return {
        role: svg.getAttribute('role'),
        label: svg.getAttribute('aria-label'),
        title: svg.querySelector(':scope > title')?.textContent ?? null,
        viewBox: svg.getAttribute('viewBox'),
        scale_max: svg.dataset.scaleMax === undefined ? null : Number(svg.dataset.scaleMax),
        plot_width: Number(svg.dataset.plotWidth),
        rendered_width: svg.getBoundingClientRect().width,
        bars: [...svg.querySelectorAll('rect[data-bar], rect[data-user]')].map((r) => ({
          key: r.dataset.bar ?? r.dataset.user,
          value: r.dataset.value,
          x: Number(r.getAttribute('x')),
          width: Number(r.getAttribute('width')),
        })),
        texts: [...svg.querySelectorAll('text')].map((t) => t.textContent),
      };
    };
    return {
      stats: values('[data-stat]', 'stat'),
      stats_text: Object.fromEntries([...document.querySelectorAll('[data-stat]')].map((n) => [n.dataset.stat, n.textContent])),
      whatif: values('[data-whatif]', 'whatif'),
      charts: { bytes: chart('chart-bytes'), savings: chart('chart-savings'), users: chart('chart-users') },
      users: [...document.querySelectorAll('#users tbody tr[data-user]')].map((tr) => ({ user: tr.dataset.user, text: tr.innerText })),
      jobs: [...document.querySelectorAll('#jobs tbody tr')].map((tr) => ({ id: tr.dataset.job, state: tr.dataset.state, text: tr.innerText })),
    };
  });
}

// A fetch from inside the page (same origin, the page's cookies), for what the UI never does.
function pageFetch(method, path, { body, csrf } = {}) {
  return page.evaluate(async ({ method, path, body, csrf }) => {
    const headers = { 'Content-Type': 'application/json' };
    if (csrf) headers['X-CSRF-Token'] = csrf;
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let json = null;
    try { json = await r.json(); } catch (_) { /* empty */ }
    return { status: r.status, json };
  }, { method, path, body, csrf });
}

const commands = {
  async goto({ path }) {
    const res = await page.goto(base + path);
    return { status: res.status(), csp: res.headers()['content-security-policy'] ?? null, view: await view() };
  },

  // Leaves the server's pages (so no refresh runs while the test stops the server).
  async park() {
    await page.goto('about:blank');
    return {};
  },

  async signin({ key }) {
    await page.fill('#operator-key', key);
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/v1/admin/session') && r.request().method() === 'POST'),
      page.click('#signin button[type=submit]'),
    ]);
    if (res.status() === 200) {
      await page.waitForSelector('#app', { state: 'visible' });
      await waitFigures();
    } else {
      await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '');
    }
    return { status: res.status(), view: await view(), error: await page.textContent('#signin-error'), who: await page.textContent('#who-name') };
  },

  // A user's session cookie (Path=/) against the operator API.
  async user_cookie_probe({ api_key }) {
    const session = await pageFetch('POST', '/api/v1/session', { body: { api_key } });
    const stats = await pageFetch('GET', '/api/v1/admin/stats');
    const jobs = await pageFetch('POST', '/api/v1/admin/jobs', { body: { kind: 'gc' }, csrf: session.json?.csrf });
    const out = await pageFetch('DELETE', '/api/v1/session', { csrf: session.json?.csrf });
    return { session: session.status, stats: stats.status, jobs: jobs.status, signout: out.status };
  },

  async read() {
    await waitFigures();
    return snapshot();
  },

  // Runs a job through the buttons and records every state the job box went through.
  async job({ kind }) {
    await page.waitForSelector(kind === 'gc' ? '#run-gc:enabled' : '#run-migrate:enabled');
    const previous = await page.evaluate(() => document.getElementById('job').dataset.jobId ?? null);
    await page.evaluate(() => {
      const box = document.getElementById('job');
      window.__jobSeen = [];
      const record = () => {
        const p = document.getElementById('job-progress');
        window.__jobSeen.push({
          visible: !box.hidden, state: box.dataset.state ?? null, phase: box.dataset.phase ?? null,
          status: document.getElementById('job-status').textContent,
          progress: p.hasAttribute('value') ? [p.value, p.max] : null,
          bytes: document.getElementById('job-bytes').textContent,
        });
      };
      window.__jobObserver?.disconnect();
      window.__jobObserver = new MutationObserver(record);
      window.__jobObserver.observe(box, { attributes: true, childList: true, subtree: true, characterData: true });
    });
    let dialog = null;
    if (kind === 'gc') {
      await page.click('#run-gc');
    } else {
      await page.click('#run-migrate');
      await page.waitForSelector('#confirm[open]');
      dialog = { title: await page.textContent('#confirm-title'), body: await page.innerText('#confirm-body') };
      await page.click('#confirm-ok');
    }
    // The box may still show the previous job, ended: wait for this one's end.
    await page.waitForFunction((prev) => {
      const b = document.getElementById('job');
      return b.dataset.jobId !== prev && (b.dataset.state === 'done' || b.dataset.state === 'failed');
    }, previous, { timeout: 120000 });
    const box = await page.$('#job');
    const id = await box.getAttribute('data-job-id');
    await page.waitForSelector(`#job[data-refreshed="${id}"]`, { timeout: 30000 });
    const seen = await page.evaluate(() => { window.__jobObserver.disconnect(); return window.__jobSeen; });
    return {
      id: Number(id),
      state: await box.getAttribute('data-state'),
      dialog,
      seen,
      status: await page.textContent('#job-status'),
      live: await page.getAttribute('#job-status', 'aria-live'),
      report: await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#job-report [data-report]')].map((n) => [n.dataset.report, n.textContent]))),
      error: await page.textContent('#job-error'),
      snapshot: await snapshot(),
    };
  },

  async quota({ user, mb, tracks }) {
    await page.click(`#users tr[data-user="${user}"] [data-action=quota]`);
    const form = `#users tr.quota-row[data-quota-for="${user}"] form`;
    await page.fill(`${form} input[name=max_mb]`, mb === null ? '' : String(mb));
    await page.fill(`${form} input[name=max_tracks]`, tracks === null ? '' : String(tracks));
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/v1/admin/users/quota') && r.request().method() === 'PUT'),
      page.click(`${form} button[type=submit]`),
    ]);
    await page.waitForSelector('#users tr.quota-row', { state: 'detached' });
    return { status: res.status(), csrf_sent: Boolean(res.request().headers()['x-csrf-token']), row: await page.innerText(`#users tr[data-user="${user}"]`) };
  },

  async add_user({ name, mb, tracks }) {
    await page.fill('#add-user input[name=name]', name);
    await page.fill('#add-user input[name=max_mb]', mb === null ? '' : String(mb));
    await page.fill('#add-user input[name=max_tracks]', tracks === null ? '' : String(tracks));
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/v1/admin/users') && r.request().method() === 'POST'),
      page.click('#add-user button[type=submit]'),
    ]);
    await page.waitForSelector('#issued', { state: 'visible' });
    await page.waitForSelector(`#users tr[data-user="${name}"]`);
    const issued = { user: await page.textContent('#issued-user'), api_key: await page.textContent('#issued-key'), subsonic_password: await page.textContent('#issued-password') };
    await page.click('#issued-done');
    return { status: res.status(), issued, after_done: await page.textContent('#issued-key') };
  },

  async revoke({ name }) {
    await page.click(`#users tr[data-user="${name}"] [data-action=revoke]`);
    await page.waitForSelector('#confirm[open]');
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/v1/admin/users/revoke-key')),
      page.click('#confirm-ok'),
    ]);
    await page.waitForSelector('#issued', { state: 'visible' });
    const issued = { user: await page.textContent('#issued-user'), api_key: await page.textContent('#issued-key'), subsonic_password: await page.textContent('#issued-password') };
    await page.click('#issued-done');
    return { status: res.status(), issued };
  },

  // The cookie alone, without the CSRF header, must not start a job.
  async csrf_probe() {
    return pageFetch('POST', '/api/v1/admin/jobs', { body: { kind: 'gc' } });
  },

  // The Refresh button; when the session has ended meanwhile, the form must come back.
  async refresh_expect_signin() {
    await page.click('#refresh');
    await page.waitForSelector('#signin', { state: 'visible' });
    return { view: await view(), message: await page.textContent('#signin-error'), app_hidden: await page.isHidden('#app') };
  },

  async signout() {
    await page.click('#sign-out');
    await page.waitForSelector('#signin', { state: 'visible' });
    const session = await pageFetch('GET', '/api/v1/admin/session');
    return { view: await view(), session: session.status, app_hidden: await page.isHidden('#app') };
  },

  // Tab from the top of a freshly loaded page: which controls take the focus, in order, and do
  // they show a ring.
  async keyboard({ presses }) {
    await page.reload();
    if (await view() !== 'app') throw new Error('signed out by a reload');
    await waitFigures();
    const order = [];
    for (let i = 0; i < presses; i++) {
      await page.keyboard.press('Tab');
      order.push(await page.evaluate(() => {
        const a = document.activeElement;
        const style = getComputedStyle(a);
        return { tag: a.tagName.toLowerCase(), id: a.id, text: (a.getAttribute('aria-label') || a.textContent || a.name || '').trim().slice(0, 40), ring: style.outlineStyle !== 'none' && style.outlineWidth !== '0px' };
      }));
    }
    return { order };
  },

  // The section "Licences by rights holder" once loaded (newer than load number `after`): its
  // chart (every bar, label and value text, and the scale) and its table.
  async holders({ after = 0 } = {}) {
    await page.waitForFunction((n) => Number(document.getElementById('holders').dataset.loaded || 0) > n, after);
    return page.evaluate(() => {
      const svg = document.getElementById('chart-holders');
      const table = document.getElementById('holders');
      return {
        loaded: Number(table.dataset.loaded),
        summary: document.getElementById('holders-summary').textContent,
        chart: {
          role: svg.getAttribute('role'),
          label: svg.getAttribute('aria-label'),
          title: svg.querySelector(':scope > title')?.textContent ?? null,
          zero_x: Number(svg.dataset.zeroX),
          scale_max: Number(svg.dataset.scaleMax),
          plot_width: Number(svg.dataset.plotWidth),
          rendered_width: svg.getBoundingClientRect().width,
          bars: [...svg.querySelectorAll('rect[data-bar]')].map((r) => ({
            holder: r.dataset.holder,
            value: Number(r.dataset.value),
            x: Number(r.getAttribute('x')),
            width: Number(r.getAttribute('width')),
            cls: r.getAttribute('class'),
            fill: getComputedStyle(r).fill,
          })),
          labels: [...svg.querySelectorAll('text[data-holder]')].map((t) => ({ holder: t.dataset.holder, text: t.textContent })),
          values: [...svg.querySelectorAll('text[data-value-for]')].map((t) => ({ holder: t.dataset.valueFor, text: t.textContent })),
        },
        rows: [...table.tBodies[0].rows].map((tr) => {
          const cells = [...tr.cells];
          const licence = tr.querySelector('[data-licence]');
          const verdict = tr.querySelector('[data-conforming]');
          return {
            holder: tr.dataset.holder ?? null,
            unassigned: tr.dataset.unassigned === 'true',
            licence: licence?.dataset.licence ?? null,
            until: licence?.dataset.until ? Number(licence.dataset.until) : null,
            licence_text: licence?.textContent ?? null,
            tracks: cells[2] ? cells[2].textContent : null,
            savings: cells[6]?.dataset.value === undefined ? null : Number(cells[6].dataset.value),
            conforming: verdict ? verdict.dataset.conforming : null,
            verdict: verdict?.textContent ?? null,
          };
        }),
        error: document.getElementById('holders-error').textContent,
      };
    });
  },

  // Sets a licence through the form ("default" removes it); `until` is YYYY-MM-DD or null.
  async set_licence({ holder, mode, until }) {
    const before = await page.evaluate(() => Number(document.getElementById('holders').dataset.loaded || 0));
    await page.fill('#set-licence input[name=holder]', holder);
    await page.selectOption('#set-licence select[name=mode]', mode);
    await page.fill('#set-licence input[name=until]', until ?? '');
    const [res] = await Promise.all([
      page.waitForResponse((r) => /\/api\/v1\/admin\/licences(\/unset)?$/.test(r.url()) && r.request().method() !== 'GET'),
      page.click('#set-licence button[type=submit]'),
    ]);
    if (res.ok()) {
      await page.waitForFunction((n) => Number(document.getElementById('holders').dataset.loaded || 0) > n, before);
    } else {
      await page.waitForFunction(() => document.getElementById('holders-error').textContent !== '');
    }
    return {
      status: res.status(),
      method: res.request().method(),
      body: res.request().postDataJSON(),
      csrf_sent: Boolean(res.request().headers()['x-csrf-token']),
      error: await page.textContent('#holders-error'),
      status_text: await page.textContent('#licence-status'),
    };
  },

  // A screenshot of one element (the holders' section) at the current viewport.
  async screenshot_element({ selector, path }) {
    await page.evaluate(() => document.activeElement?.blur());
    await page.locator(selector).screenshot({ path });
    return {};
  },

  async screenshot({ path, width, height }) {
    await page.setViewportSize({ width, height });
    await page.evaluate(() => document.activeElement?.blur());
    await page.waitForTimeout(300); // layout and the SVG viewBoxes settle
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    await page.screenshot({ path, fullPage: true });
    const chartWidth = await page.evaluate(() => document.getElementById('chart-bytes').getBoundingClientRect().width);
    return { overflow, chart_width: chartWidth };
  },

  async errors() {
    return seen;
  },
};

// One command at a time, in order.
const rl = readline.createInterface({ input: process.stdin });
const reply = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
for await (const line of rl) {
  if (!line.trim()) continue;
  const { cmd, ...args } = JSON.parse(line);
  if (cmd === 'close') break;
  try {
    reply({ ok: true, ...(await commands[cmd](args)) });
  } catch (e) {
    reply({ ok: false, error: `${cmd}: ${e.message}` });
  }
}
await browser.close();
