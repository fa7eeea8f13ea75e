// Drives the web player at `/` in headless Debian Chromium, through its UI only (clicks, typing,
// file pickers), and checks the results through the API with a Bearer key.
// Usage: node web_player.mjs CONFIG_JSON   (written by test_web_player.py:
//   {base, alice: {api_key, subsonic_password}, bob: {api_key}, carol: {api_key} (1 MB quota), files: {cover_mp3, cover_flac, long},
//    screenshots})
// Prints one line per check; the last line is PASS or FAIL; exits 1 on failure.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const { base, alice, bob, files } = cfg;
const TIMEOUT = 30000;

// ------------------------------------------------------------------ bookkeeping

class Failure extends Error {}
function check(cond, what, detail) {
  if (!cond) throw new Failure(`${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
  console.log(`ok   ${what}`);
}
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
async function until(what, fn, ms = TIMEOUT) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(100);
  }
  throw new Failure(`timed out waiting for ${what}`);
}

const consoleErrors = []; // console errors other than failed loads (those are judged by status)
const cspViolations = [];
const badResponses = []; // 4xx/5xx answers on a page where none is expected
const requestUrls = []; // every URL any page asked for: no secret may be in one

const keyOf = (p) => path.basename(p); // the page uses the file name as the track key
const trackPath = (key) => '/api/v1/tracks/' + key.split('/').map(encodeURIComponent).join('/');

async function bearer(method, p, key, headers = {}) {
  return fetch(base + p, { method, headers: { Authorization: `Bearer ${key}`, ...headers } });
}

async function newPage(browser, label, { expectErrors = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.exposeBinding('__cspViolation', (_src, v) => cspViolations.push(`${label}: ${v}`));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolation(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const state = { expectErrors };
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // "Failed to load resource: ... status of 401" is Chromium's note of an error answer,
    // which this test expects at times; answers are judged in the `response` handler instead.
    if (/^Failed to load resource: the server responded with a status of/.test(m.text())) return;
    consoleErrors.push(`${label}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${label}: uncaught ${e.message}`));
  page.on('request', (r) => requestUrls.push(r.url()));
  page.on('response', (r) => {
    if (r.status() < 400 || state.expectErrors) return;
    const u = new URL(r.url());
    // Before signing in, the page asks whether a session is alive: 401 is the answer "no".
    if (r.request().method() === 'GET' && u.pathname === '/api/v1/session' && r.status() === 401) return;
    badResponses.push(`${label}: ${r.request().method()} ${u.pathname} -> ${r.status()}`);
  });
  return { context, page, state };
}

// Plays and waits until the <audio> clock runs.
async function audioState(page) {
  return page.evaluate(() => {
    const a = document.getElementById('audio');
    return { src: a.getAttribute('src'), paused: a.paused, t: a.currentTime, d: a.duration, err: a.error && a.error.code };
  });
}
const nowPlaying = (page) => page.locator('#np-title').textContent();

async function signInByKey(page, key) {
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.locator('#api-key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#app').waitFor({ state: 'visible' });
}

async function uploadStatus(page, key) {
  return page.locator(`li.upload[data-key="${key}"] .upload-status`).textContent();
}

// ------------------------------------------------------------------ the test

async function run(browser) {
  const long = files.long;
  const longKey = keyOf(long);
  const longBytes = fs.readFileSync(long);
  const mp3Key = keyOf(files.cover_mp3);
  const flacKey = keyOf(files.cover_flac);

  // 1. Sign in with alice's API key.
  const A = await newPage(browser, 'alice');
  const page = A.page;
  const first = await page.goto(base + '/');
  const csp = first.headers()['content-security-policy'] || '';
  check(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp), 'GET / has the CSP header', csp);
  await signInByKey(page, alice.api_key);
  check((await page.locator('#who').textContent()) === 'alice', '1. signed in by API key as alice');
  const storage = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  const session = await page.evaluate(() => fetch('/api/v1/session').then((r) => r.json()));
  check(!storage.includes(session.csrf) && !storage.includes(alice.api_key), 'the CSRF token and key are in no storage');

  // 2. Upload the two fixtures with covers through the file picker.
  await page.locator('#file-input').setInputFiles([files.cover_mp3, files.cover_flac]);
  for (const key of [mp3Key, flacKey]) {
    await page.locator(`li.upload[data-key="${key}"] .upload-status`).filter({ hasText: /^Stored/ }).waitFor();
  }
  check(true, '2. two fixtures uploaded through the file picker');

  // The long file: PATCHes after the 2nd are held (never answered), so the server keeps 2 MiB.
  let patches = 0;
  let uploadUrl = null;
  const hold = (route) => {
    if (route.request().method() === 'PATCH' && ++patches > 2) return; // held: no answer at all
    route.continue();
  };
  const onCreate = (r) => {
    if (r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/v1/uploads' && r.status() === 201) {
      uploadUrl = new URL(r.headers().location, base).href;
    }
  };
  page.on('response', onCreate);
  await page.route('**/api/v1/uploads/**', hold);
  await page.locator('#file-input').setInputFiles(long);
  await until('the 3rd PATCH to be held', async () => patches > 2 && uploadUrl);
  const offsetOf = async () => {
    const r = await bearer('HEAD', new URL(uploadUrl).pathname, alice.api_key, { 'Tus-Resumable': '1.0.0' });
    return Number(r.headers.get('upload-offset'));
  };
  const held = await offsetOf();
  check(held > 0 && held < longBytes.length, '2. interrupted: the server holds part of the long file', { held, length: longBytes.length });
  check(!/^Stored/.test(await uploadStatus(page, longKey)), 'the interrupted row is not marked stored');
  page.off('response', onCreate);

  // Reload: the held request dies with the page. The route goes only after that (Playwright
  // would send a held request on when its route goes away); the server still holds `held`.
  await page.reload();
  await page.locator('#app').waitFor({ state: 'visible' });
  check((await page.locator('#who').textContent()) === 'alice', 'after a reload the session is alive (no sign-in form)');
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  await sleep(300);
  check((await offsetOf()) === held, 'the held PATCH never reached the server');
  check((await page.locator('li.upload').count()) === 0, 'the reloaded page starts with no upload rows');

  // Choose the same file again: it resumes.
  const patchOffsets = [];
  page.on('request', (r) => {
    if (r.method() === 'PATCH') patchOffsets.push(Number(r.headers()['upload-offset']));
  });
  await page.locator('#file-input').setInputFiles(long);
  const status = page.locator(`li.upload[data-key="${longKey}"] .upload-status`);
  await status.filter({ hasText: /^Stored/ }).waitFor();
  const text = await status.textContent();
  const m = /resumed at (\d+)%/.exec(text);
  const expectPct = Math.floor((held * 100) / longBytes.length);
  check(m && Number(m[1]) === expectPct && expectPct > 0, `2. the row says it resumed: "${text}"`, { expectPct });
  check(patchOffsets[0] === held, '2. the first PATCH after the reload starts at the held offset', patchOffsets);

  // Every byte of the three, through the API.
  const listed = await (await bearer('GET', '/api/v1/tracks', alice.api_key)).json();
  const keys = listed.tracks.map((t) => t.key).sort();
  check(JSON.stringify(keys) === JSON.stringify([flacKey, longKey, mp3Key].sort()), '2. the API lists the three tracks', keys);
  for (const [key, p] of [[mp3Key, files.cover_mp3], [flacKey, files.cover_flac], [longKey, long]]) {
    const r = await bearer('GET', trackPath(key), alice.api_key);
    const got = Buffer.from(await r.arrayBuffer());
    check(r.status === 200 && got.equals(fs.readFileSync(p)), `2. ${key}: stored bytes equal the file`);
  }

  // 3. The library shows them, with a cover that loaded.
  for (const key of [mp3Key, flacKey, longKey]) await page.locator(`.track[data-key="${key}"]`).waitFor();
  const lib = await page.locator('#library-list').innerText();
  for (const word of ['Fixture Ensemble', 'Boundary Tests', 'Chord Study', 'Sweep', 'Test Signal', 'Seeking', 'Long Tone']) {
    check(lib.includes(word), `3. the library shows "${word}"`);
  }
  await page.locator('img.cover').first().scrollIntoViewIfNeeded();
  await until('a cover image to load', () => page.evaluate(() =>
    [...document.querySelectorAll('#library-list img.cover')].some((i) => i.complete && i.naturalWidth > 0)));
  check(true, '3. a cover <img> loaded (naturalWidth > 0)');
  await until('the usage line to count 3 tracks', async () => /3 tracks/.test(await page.locator('#usage-text').textContent()));
  check(true, `3. usage: "${await page.locator('#usage-text').textContent()}"`);

  // 4. Play the long track; seek to 20 s with the position slider.
  await page.evaluate(() => { document.getElementById('audio').muted = true; });
  await page.locator(`.track[data-key="${longKey}"] button.play`).click();
  await until('the long track to play', async () => { const s = await audioState(page); return !s.paused && s.t > 0.2; });
  check((await nowPlaying(page)) === 'Long Tone', '4. now playing "Long Tone"');
  const seek = await page.evaluate(() => new Promise((ok) => {
    const a = document.getElementById('audio');
    const range = document.getElementById('seek-range');
    a.addEventListener('seeked', () => ok({ landed: a.currentTime, max: Number(range.max) }), { once: true });
    range.value = '20';
    range.dispatchEvent(new Event('input', { bubbles: true }));
    range.dispatchEvent(new Event('change', { bubbles: true }));
  }));
  check(Math.abs(seek.landed - 20) < 0.5 && seek.max > 59, '4. the slider seeks to 20 s', seek);
  await until('playback to advance past the seek', async () => (await audioState(page)).t >= seek.landed + 0.5, 15000);
  check(true, '4. playback advances from 20 s');

  // Queue two more; next / n / p / previous move through the queue; space pauses.
  await page.locator(`.track[data-key="${mp3Key}"] button.enqueue`).click();
  await page.locator(`.track[data-key="${flacKey}"] button.enqueue`).click();
  check((await page.locator('#queue li').count()) === 3, '4. the queue holds 3 tracks');
  fs.mkdirSync(cfg.screenshots, { recursive: true });
  await page.screenshot({ path: path.join(cfg.screenshots, 'player.png') });
  await page.locator('#next').click();
  await until('Chord Study to play', async () => (await nowPlaying(page)) === 'Chord Study' && !(await audioState(page)).paused);
  check((await audioState(page)).src === trackPath(mp3Key), '4. Next plays the 2nd of the queue');
  await until('its cover', () => page.evaluate(() => { const i = document.getElementById('np-cover'); return !i.hidden && i.complete && i.naturalWidth > 0; }));
  check(true, '4. now-playing shows its cover');
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.keyboard.press('n');
  await until('Sweep to play', async () => (await nowPlaying(page)) === 'Sweep');
  check(true, '4. key n: next');
  await page.keyboard.press('p');
  await until('Chord Study again', async () => (await nowPlaying(page)) === 'Chord Study');
  check(true, '4. key p: previous');
  await until('playing', async () => !(await audioState(page)).paused);
  await page.keyboard.press(' ');
  await until('paused by space', async () => (await audioState(page)).paused);
  await page.keyboard.press(' ');
  await until('playing again by space', async () => !(await audioState(page)).paused);
  check(true, '4. space pauses and plays');
  // Auto-advance: near the end of Chord Study, `ended` moves on to Sweep.
  await page.evaluate(() => { const a = document.getElementById('audio'); a.currentTime = Math.max(0, a.duration - 0.3); });
  await until('auto-advance to Sweep', async () => (await nowPlaying(page)) === 'Sweep' && !(await audioState(page)).paused);
  check(true, '4. ended: the queue advances by itself');
  await page.locator('#prev').click();
  await until('Previous to Chord Study', async () => (await nowPlaying(page)) === 'Chord Study');
  check(true, '4. Previous plays the one before');

  // 5. Search (debounced): a word of one title shows that track only; clearing shows all.
  await page.locator('#search').fill('chord');
  await until('the search to narrow', async () => (await page.locator('.track').count()) === 1);
  check((await page.locator('.track').getAttribute('data-key')) === mp3Key, '5. "chord" shows only Chord Study');
  await page.locator('#search').fill('');
  await until('the search to clear', async () => (await page.locator('.track').count()) === 3);
  check(true, '5. an empty search shows all three');

  // Phone size: one column, nothing wider than the screen.
  await page.setViewportSize({ width: 375, height: 667 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 375, '9. at 375x667 nothing scrolls sideways', overflow);
  await page.screenshot({ path: path.join(cfg.screenshots, 'player-phone.png') });
  await page.setViewportSize({ width: 1280, height: 800 });

  // 6. Delete Sweep through the UI (confirmed).
  page.once('dialog', (d) => d.accept());
  await page.locator(`.track[data-key="${flacKey}"] button.delete`).click();
  await page.locator(`.track[data-key="${flacKey}"]`).waitFor({ state: 'detached' });
  const after = await (await bearer('GET', '/api/v1/tracks', alice.api_key)).json();
  check(!after.tracks.some((t) => t.key === flacKey) && after.tracks.length === 2, '6. deleted: gone from the list and from GET /api/v1/tracks');
  await until('the usage to count 2 tracks', async () => /2 tracks/.test(await page.locator('#usage-text').textContent()));

  // 7. bob, in a browser context of his own, sees nothing of alice's.
  const aliceLib = await (await bearer('GET', '/api/v1/library', alice.api_key)).json();
  const cover = aliceLib.artists.flatMap((a) => a.albums).map((al) => al.cover).find(Boolean);
  check(Boolean(cover), "alice's library has a cover id");
  const B = await newPage(browser, 'bob');
  await B.page.goto(base + '/');
  await signInByKey(B.page, bob.api_key);
  await until("bob's empty library", async () => /No tracks yet/.test(await B.page.locator('#library-status').textContent()));
  check((await B.page.locator('.track').count()) === 0, "7. bob's library is empty");
  B.state.expectErrors = true;
  const probes = await B.page.evaluate(async ({ track, coverUrl, upload }) => {
    const { csrf } = await (await fetch('/api/v1/session')).json();
    const tus = { 'Tus-Resumable': '1.0.0' };
    const out = {};
    const s = async (name, url, init) => { const r = await fetch(url, init); out[name] = [r.status, (await r.arrayBuffer()).byteLength]; };
    await s('track', track);
    await s('trackRange', track, { headers: { Range: 'bytes=0-99' } });
    await s('cover', coverUrl);
    await s('uploadHead', upload, { method: 'HEAD', headers: tus });
    await s('uploadPatch', upload, { method: 'PATCH', headers: { ...tus, 'X-CSRF-Token': csrf, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'x' });
    await s('trackDelete', track, { method: 'DELETE', headers: { 'X-CSRF-Token': csrf } });
    return out;
  }, { track: trackPath(mp3Key), coverUrl: `/api/v1/covers/${encodeURIComponent(cover)}`, upload: new URL(uploadUrl).pathname });
  for (const [name, [st]] of Object.entries(probes)) {
    check([401, 403, 404].includes(st), `7. bob's ${name} of alice's answers ${st}`);
  }
  check((await bearer('GET', trackPath(mp3Key), alice.api_key)).status === 200, "7. alice's track is still there");

  // A 401 brings the form back: the session cookie is dropped, then a search is typed.
  await B.context.clearCookies();
  await B.page.locator('#search').fill('anything');
  await B.page.locator('#signin').waitFor({ state: 'visible' });
  check(/expired/i.test(await B.page.locator('#signin-message').textContent()), '1. a 401 brings the sign-in form back ("session expired")');

  // 8. alice by user name + Subsonic password; CSRF enforced; sign out.
  const C = await newPage(browser, 'alice-password');
  await C.page.goto(base + '/');
  await C.page.locator('#signin').waitFor({ state: 'visible' });
  await C.page.getByLabel('User name and password').check();
  await C.page.locator('#user').fill('alice');
  await C.page.locator('#password').fill(alice.subsonic_password);
  await C.page.getByRole('button', { name: 'Sign in' }).click();
  await C.page.locator('#app').waitFor({ state: 'visible' });
  await C.page.locator(`.track[data-key="${mp3Key}"]`).waitFor();
  check((await C.page.locator('#who').textContent()) === 'alice', '8. signed in by user name + Subsonic password');
  C.state.expectErrors = true;
  const noCsrf = await C.page.evaluate(async (track) => {
    const del = await fetch(track, { method: 'DELETE' });
    const create = await fetch('/api/v1/uploads', { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '10' } });
    return [del.status, create.status];
  }, trackPath(mp3Key));
  check(noCsrf[0] === 403 && noCsrf[1] === 403, '8. state-changing calls with the cookie but no X-CSRF-Token answer 403', noCsrf);
  check((await bearer('GET', trackPath(mp3Key), alice.api_key)).status === 200, '8. the refused DELETE deleted nothing');
  await C.page.getByRole('button', { name: 'Sign out' }).click();
  await C.page.locator('#signin').waitFor({ state: 'visible' });
  const afterOut = await C.page.evaluate(async () => [(await fetch('/api/v1/me')).status, (await fetch('/api/v1/library')).status]);
  check(afterOut[0] === 401 && afterOut[1] === 401, '8. after signing out the API answers 401', afterOut);

  // Over quota: carol may hold 1 MB; the long file is refused at creation (413), in its row.
  const D = await newPage(browser, 'carol');
  await D.page.goto(base + '/');
  await signInByKey(D.page, cfg.carol.api_key);
  await until("carol's usage line", async () => /of 1\.0 MB/.test(await D.page.locator('#usage-text').textContent()));
  D.state.expectErrors = true;
  await D.page.locator('#file-input').setInputFiles(long);
  const refused = D.page.locator(`li.upload[data-key="${longKey}"] .upload-status.error`);
  await refused.waitFor();
  check(/over quota/i.test(await refused.textContent()), `a quota refusal shows in the row: "${await refused.textContent()}"`);
  await until('the refusal in the live region', async () => /over quota/i.test(await D.page.locator('#live').textContent()), 5000);
  check(true, 'and is announced in the live region');

  // Drag and drop (a synthetic drop: a DataTransfer made by a script has no file-system entries,
  // so this takes the plain-files path): the music file is stored, the text file skipped.
  const dt = await D.page.evaluateHandle(({ name, b64 }) => {
    const t = new DataTransfer();
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    t.items.add(new File([bytes], name, { type: 'audio/mpeg' }));
    t.items.add(new File(['not music'], 'notes.txt', { type: 'text/plain' }));
    return t;
  }, { name: mp3Key, b64: fs.readFileSync(files.cover_mp3).toString('base64') });
  await D.page.locator('#dropzone').dispatchEvent('drop', { dataTransfer: dt });
  await D.page.locator(`li.upload[data-key="${mp3Key}"] .upload-status`).filter({ hasText: /^Stored/ }).waitFor();
  await D.page.locator(`.track[data-key="${mp3Key}"]`).waitFor();
  check((await D.page.locator('li.upload[data-key="notes.txt"]').count()) === 0, 'a dropped file is uploaded and shows up; a non-music one is skipped');

  // 9. No secret in any URL, no console error, no CSP violation, no unexpected error answer.
  const secrets = [alice.api_key, alice.subsonic_password, bob.api_key, cfg.carol.api_key, session.csrf];
  const leaked = requestUrls.filter((u) => secrets.some((s) => u.includes(s) || u.includes(encodeURIComponent(s))));
  check(leaked.length === 0, 'no key, password or CSRF token in any URL', leaked);
  check(cspViolations.length === 0, 'no CSP violation', cspViolations);
  check(consoleErrors.length === 0, 'no console error', consoleErrors);
  check(badResponses.length === 0, 'no unexpected error answer on the pages', badResponses);
  check(fs.statSync(path.join(cfg.screenshots, 'player.png')).size > 0, `9. screenshots in ${cfg.screenshots}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let failed = null;
try {
  await run(browser);
} catch (e) {
  failed = e instanceof Failure ? e.message : (e.stack || String(e));
} finally {
  await browser.close();
}
if (failed) {
  console.log(`FAIL web player: ${failed}`);
  process.exit(1);
}
console.log('PASS web player: sign-in (key, password), resumed upload, library, covers, play/seek/queue, search, delete, isolation, quota, CSRF, sign-out, CSP');
