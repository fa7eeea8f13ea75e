// The web player of locker-server, served at `/`. Plain script, no framework, no build step.
// The HTTP contract it follows: sessions by cookie with a CSRF token kept in memory only
// (never in storage, never in a URL), the library and usage as JSON, tracks and covers as
// same-origin URLs the cookie authenticates, uploads through tus-js-client (the global `tus`,
// served from /static/tus.min.js). The CSP forbids inline script and style: every element is
// made here with createElement/textContent (never innerHTML, so no tag or key can inject markup).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const CHUNK = 1024 * 1024; // an interrupted upload loses at most the chunk in flight
  const UPLOADS_AT_ONCE = 2;
  const AUDIO_EXT = /\.(mp3|flac|m4a|mp4|aac|ogg|oga|opus)$/i;

  const state = {
    user: null, // signed-in user name, null when signed out
    csrf: null, // CSRF token of the session: memory only
    librarySeq: 0, // answers to older library requests are dropped
    tracks: new Map(), // track id -> track, of the library on screen
    queue: [],
    index: -1, // position of the current track in the queue, -1 before any
    uploads: new Map(), // track key -> upload item (see the uploads module)
    pending: [],
    active: 0,
  };

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function announce(text) {
    // Emptied first so that the same message twice is read twice.
    const live = $('live');
    live.textContent = '';
    setTimeout(() => { live.textContent = text; }, 30);
  }

  function formatBytes(n) {
    const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function formatTime(s) {
    if (!Number.isFinite(s) || s < 0) s = 0;
    s = Math.floor(s);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  }

  // Each `/`-separated segment of a key escaped on its own, as the contract says.
  const trackUrl = (key) => '/api/v1/tracks/' + key.split('/').map(encodeURIComponent).join('/');
  const coverUrl = (id) => '/api/v1/covers/' + encodeURIComponent(id);

  // ---------------------------------------------------------------- HTTP

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // A JSON call with the session cookie. State-changing calls carry the CSRF header. A 401
  // while signed in means the session expired: back to the sign-in form.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && method !== 'HEAD' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: 'same-origin', cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new HttpError(0, 'the server cannot be reached');
    }
    if (!res.ok) {
      let message = res.statusText || `HTTP ${res.status}`;
      try { message = (await res.json()).error || message; } catch (e) { /* not JSON */ }
      if (res.status === 401 && state.user) expire();
      throw new HttpError(res.status, message);
    }
    return res.status === 204 ? null : res.json();
  }

  // ---------------------------------------------------------------- session

  async function boot() {
    wireSignIn();
    wireLibrary();
    wirePlayer();
    wireUploads();
    wireKeyboard();
    try {
      signedIn(await api('GET', '/api/v1/session'));
    } catch (e) {
      showSignIn(e.status === 401 ? '' : `Cannot reach the server: ${e.message}`);
    }
  }

  function wireSignIn() {
    const form = $('signin-form');
    form.addEventListener('change', (e) => {
      if (e.target.name !== 'mode') return;
      const byKey = form.elements.mode.value === 'key';
      $('mode-key').hidden = !byKey;
      $('mode-password').hidden = byKey;
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const byKey = form.elements.mode.value === 'key';
      const body = byKey
        ? { api_key: $('api-key').value.trim() }
        : { user: $('user').value.trim(), password: $('password').value };
      if (byKey ? !body.api_key : !body.user || !body.password) {
        setSignInMessage(byKey ? 'Enter your API key.' : 'Enter your user name and password.');
        return;
      }
      $('signin-submit').disabled = true;
      try {
        const session = await api('POST', '/api/v1/session', body);
        $('api-key').value = '';
        $('password').value = '';
        signedIn(session);
      } catch (err) {
        setSignInMessage(err.status === 401
          ? (byKey ? 'That API key was not accepted.' : 'Wrong user name or password.')
          : `Sign-in failed: ${err.message}`);
      } finally {
        $('signin-submit').disabled = false;
      }
    });
    $('sign-out').addEventListener('click', async () => {
      try { await api('DELETE', '/api/v1/session'); } catch (e) { /* signed out either way */ }
      reset('You are signed out.');
    });
  }

  function setSignInMessage(text) { $('signin-message').textContent = text; }

  function showSignIn(message) {
    setSignInMessage(message);
    $('app').hidden = true;
    $('help').hidden = true;
    $('account').hidden = true;
    $('signin').hidden = false;
    const first = $('mode-key').hidden ? $('user') : $('api-key');
    first.focus();
  }

  function signedIn(session) {
    state.user = session.user;
    state.csrf = session.csrf;
    $('who').textContent = session.user;
    $('signin').hidden = true;
    $('account').hidden = false;
    $('app').hidden = false;
    $('help').hidden = false;
    setSignInMessage('');
    $('search').value = '';
    refresh();
  }

  function expire() { reset('Your session expired. Sign in again.'); }

  // Forgets everything of the signed-in user: uploads stop (resumable later), playback stops.
  function reset(message) {
    state.user = null;
    state.csrf = null;
    for (const item of state.uploads.values()) {
      if (item.upload && item.running) item.upload.abort(); // not terminated: it can resume later
      item.running = false;
    }
    state.uploads.clear();
    state.pending = [];
    state.active = 0;
    $('upload-list').replaceChildren();
    stopPlayback();
    state.queue = [];
    state.index = -1;
    renderQueue();
    state.tracks.clear();
    $('library-list').replaceChildren();
    showSignIn(message);
  }

  // ---------------------------------------------------------------- library and usage

  let refreshTimer = null;
  function refresh() {
    clearTimeout(refreshTimer);
    loadLibrary();
    loadUsage();
  }
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 300);
  }

  function wireLibrary() {
    let timer = null;
    $('search').addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(loadLibrary, 250); // debounced: one request per pause in typing
    });
  }

  async function loadLibrary() {
    const seq = ++state.librarySeq;
    const q = $('search').value.trim();
    try {
      const lib = await api('GET', '/api/v1/library' + (q ? '?q=' + encodeURIComponent(q) : ''));
      if (seq === state.librarySeq && state.user) renderLibrary(lib, q);
    } catch (e) {
      if (seq === state.librarySeq && e.status !== 401) $('library-status').textContent = `The library could not be loaded: ${e.message}`;
    }
  }

  function renderLibrary(lib, q) {
    state.tracks.clear();
    const list = $('library-list');
    const artists = lib.artists || [];
    let count = 0;
    const nodes = artists.map((artist) => el('section', { class: 'artist' },
      el('h3', { text: artist.name }),
      ...artist.albums.map((album) => {
        for (const t of album.tracks) state.tracks.set(t.id, t);
        count += album.tracks.length;
        return renderAlbum(album);
      })));
    list.replaceChildren(...nodes);
    $('library-status').textContent = count
      ? (q ? `${count} track${count === 1 ? '' : 's'} match “${q}”.` : '')
      : (q ? `Nothing matches “${q}”.` : 'No tracks yet: upload some music.');
  }

  function renderAlbum(album) {
    const title = album.name + (album.year ? ` (${album.year})` : '');
    const cover = album.cover
      ? el('img', { class: 'cover', src: coverUrl(album.cover), alt: '', width: 96, height: 96, loading: 'lazy',
        onerror: (e) => { e.target.hidden = true; } })
      : el('div', { class: 'cover placeholder', 'aria-hidden': 'true' });
    const tracks = album.tracks;
    return el('article', { class: 'album', 'data-album': album.id },
      el('div', { class: 'album-head' },
        cover,
        el('div', {},
          el('h4', { text: title }),
          el('div', { class: 'buttons' },
            el('button', { type: 'button', class: 'primary', text: 'Play album', 'aria-label': `Play album ${album.name}`,
              onclick: () => playList(tracks, 0) }),
            el('button', { type: 'button', text: 'Queue album', 'aria-label': `Add album ${album.name} to the queue`,
              onclick: () => enqueue(tracks) })))),
      el('ol', { class: 'tracks' }, ...tracks.map((t, i) => renderTrack(t, tracks, i))));
  }

  function renderTrack(t, albumTracks, i) {
    return el('li', { class: 'track', 'data-key': t.key, 'data-id': t.id },
      el('span', { class: 'num', text: t.track != null ? String(t.track) : '' }),
      el('span', { class: 'title', text: t.title }),
      el('span', { class: 'duration', text: formatTime(t.duration) }),
      el('span', { class: 'buttons' },
        el('button', { type: 'button', class: 'play', text: 'Play', 'aria-label': `Play ${t.title}`,
          onclick: () => playList(albumTracks, i) }),
        el('button', { type: 'button', class: 'enqueue', text: 'Queue', 'aria-label': `Add ${t.title} to the queue`,
          onclick: () => enqueue([t]) }),
        el('button', { type: 'button', class: 'delete danger', text: 'Delete', 'aria-label': `Delete ${t.title}`,
          onclick: () => deleteTrack(t) })));
  }

  async function deleteTrack(t) {
    if (!window.confirm(`Delete “${t.title}” (${t.key}) from your locker?`)) return;
    try {
      await api('DELETE', trackUrl(t.key));
    } catch (e) {
      if (e.status !== 401) announce(`Could not delete ${t.title}: ${e.message}`);
      return;
    }
    // Out of the queue too; if it was playing, playback stops.
    const current = state.queue[state.index];
    if (current && current.key === t.key) stopPlayback();
    state.queue = state.queue.filter((q) => q.key !== t.key);
    state.index = current && current.key !== t.key ? state.queue.indexOf(current) : -1;
    renderQueue();
    announce(`Deleted ${t.title}.`);
    refresh();
  }

  async function loadUsage() {
    let me;
    try { me = await api('GET', '/api/v1/me'); } catch (e) { return; }
    const meter = $('usage-meter');
    const bytes = me.max_bytes != null
      ? `${formatBytes(me.counted_bytes)} of ${formatBytes(me.max_bytes)}`
      : `${formatBytes(me.counted_bytes)} (no limit)`;
    const n = me.counted_tracks;
    const tracks = me.max_tracks != null ? `${n} of ${me.max_tracks} tracks` : `${n} track${n === 1 ? '' : 's'}`;
    const exempt = me.exempt_tracks ? ` (+${me.exempt_tracks} exempt)` : '';
    $('usage-text').textContent = `${bytes}, ${tracks}${exempt}`;
    // The meter shows the tighter of the two limits; without limits there is nothing to fill.
    const ratios = [];
    if (me.max_bytes) ratios.push(me.counted_bytes / me.max_bytes);
    if (me.max_tracks) ratios.push(n / me.max_tracks);
    meter.hidden = ratios.length === 0;
    meter.low = 0.75;
    meter.high = 0.9;
    meter.optimum = 0;
    meter.value = Math.min(1, Math.max(0, ...ratios));
  }

  // ---------------------------------------------------------------- player and queue

  const audio = () => $('audio');
  let dragging = false; // the seek range is being moved: timeupdate must not fight it

  function wirePlayer() {
    const a = audio();
    a.addEventListener('ended', () => {
      if (state.index + 1 < state.queue.length) playAt(state.index + 1);
      else updatePlayButton();
    });
    a.addEventListener('play', updatePlayButton);
    a.addEventListener('pause', updatePlayButton);
    a.addEventListener('durationchange', updateTime);
    a.addEventListener('timeupdate', updateTime);
    a.addEventListener('error', () => {
      if (!a.getAttribute('src')) return;
      announce('This track cannot be played.');
      // The media element hides the status: ask the session, so that a 401 shows the form.
      api('GET', '/api/v1/session').catch(() => {});
    });
    const range = $('seek-range');
    range.addEventListener('input', () => {
      dragging = true;
      if (Number.isFinite(a.duration)) a.currentTime = Number(range.value);
      updateTime();
    });
    range.addEventListener('change', () => { dragging = false; });
    $('prev').addEventListener('click', previous);
    $('next').addEventListener('click', next);
    $('play-pause').addEventListener('click', togglePlay);
    renderQueue(); // the Clear button hides while the queue is empty
    $('queue-clear').addEventListener('click', () => {
      const current = state.queue[state.index];
      state.queue = current ? [current] : [];
      state.index = current ? 0 : -1;
      renderQueue();
    });
  }

  function playList(tracks, start) {
    state.queue = tracks.slice();
    playAt(start);
  }

  function enqueue(tracks) {
    state.queue.push(...tracks);
    renderQueue();
    announce(tracks.length === 1 ? `${tracks[0].title} added to the queue.` : `${tracks.length} tracks added to the queue.`);
  }

  function playAt(i) {
    const t = state.queue[i];
    if (!t) return;
    state.index = i;
    const a = audio();
    a.src = trackUrl(t.key);
    a.play().catch((e) => {
      // AbortError: another track was chosen before this one started; not worth a word.
      if (e.name !== 'AbortError' && e.name !== 'NotAllowedError') announce(`Cannot play ${t.title}: ${e.message}`);
    });
    showNowPlaying(t);
    renderQueue();
  }

  function next() { if (state.index + 1 < state.queue.length) playAt(state.index + 1); }

  function previous() {
    if (state.index > 0) playAt(state.index - 1);
    else if (state.index === 0) audio().currentTime = 0;
  }

  function togglePlay() {
    const a = audio();
    if (!a.getAttribute('src')) {
      if (state.queue.length) playAt(Math.max(0, state.index));
      return;
    }
    if (a.paused) a.play().catch(() => {}); else a.pause();
  }

  function stopPlayback() {
    const a = audio();
    a.pause();
    a.removeAttribute('src');
    a.load(); // drops the buffered media and the connection
    showNowPlaying(null);
  }

  function showNowPlaying(t) {
    const img = $('np-cover');
    $('np-title').textContent = t ? t.title : 'Nothing yet';
    $('np-sub').textContent = t ? `${t.artist} — ${t.album}` : '';
    if (t && t.cover) { img.src = coverUrl(t.cover); img.hidden = false; } else { img.removeAttribute('src'); img.hidden = true; }
    document.title = t ? `${t.title} · Music locker` : 'Music locker';
    if (t) announce(`Playing ${t.title} by ${t.artist}.`);
    updateTime();
    updatePlayButton();
  }

  function updatePlayButton() {
    const a = audio();
    $('play-pause').textContent = a.getAttribute('src') && !a.paused ? 'Pause' : 'Play';
  }

  function updateTime() {
    const a = audio();
    const range = $('seek-range');
    const duration = Number.isFinite(a.duration) ? a.duration : 0;
    range.max = String(duration);
    if (!dragging) range.value = String(a.currentTime || 0);
    const text = `${formatTime(a.currentTime)} / ${formatTime(duration)}`;
    $('time').textContent = text;
    range.setAttribute('aria-valuetext', text.replace(' / ', ' of '));
  }

  function renderQueue() {
    const items = state.queue.map((t, i) => el('li', { class: i === state.index ? 'current' : null, 'data-key': t.key },
      el('button', { type: 'button', class: 'link', 'aria-current': i === state.index ? 'true' : null,
        text: `${t.title} — ${t.artist}`, onclick: () => playAt(i) }),
      el('button', { type: 'button', class: 'remove', text: '×', 'aria-label': `Remove ${t.title} from the queue`,
        onclick: () => removeFromQueue(i) })));
    $('queue').replaceChildren(...items);
    $('queue-clear').hidden = state.queue.length === 0;
  }

  function removeFromQueue(i) {
    if (i === state.index) stopPlayback();
    state.queue.splice(i, 1);
    if (i < state.index) state.index -= 1;
    else if (i === state.index) state.index = -1;
    renderQueue();
  }

  // ---------------------------------------------------------------- uploads

  function wireUploads() {
    for (const id of ['file-input', 'folder-input']) {
      const input = $(id);
      input.addEventListener('change', () => {
        // A folder pick names files by their path in it, like a dropped folder.
        addFiles([...input.files].map((file) => ({ file, key: file.webkitRelativePath || file.name })));
        input.value = ''; // so that choosing the same file again fires `change` again
      });
    }
    const zone = $('dropzone');
    zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
    zone.addEventListener('dragleave', () => zone.classList.remove('over'));
    zone.addEventListener('drop', async (e) => {
      e.preventDefault();
      zone.classList.remove('over');
      addFiles(await droppedFiles(e.dataTransfer));
    });
  }

  // Dropped files and folders. Entries must be taken while the drop event runs (the
  // DataTransfer is emptied after it); folders are then walked asynchronously.
  async function droppedFiles(dt) {
    const entries = [...(dt.items || [])].filter((i) => i.kind === 'file')
      .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    if (!entries.length || !entries.every(Boolean)) {
      return [...dt.files].map((file) => ({ file, key: file.name }));
    }
    const out = [];
    for (const entry of entries) await walk(entry, out);
    return out;
  }

  async function walk(entry, out) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      out.push({ file, key: entry.fullPath.replace(/^\/+/, '') });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) { // readEntries gives a directory in batches; an empty one is the end
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const e of batch) await walk(e, out);
      }
    }
  }

  function addFiles(list) {
    const music = list.filter((f) => AUDIO_EXT.test(f.file.name));
    const skipped = list.length - music.length;
    if (skipped) announce(`${skipped} file${skipped === 1 ? ' is' : 's are'} not music and ${skipped === 1 ? 'was' : 'were'} skipped.`);
    for (const { file, key } of music) {
      const old = state.uploads.get(key);
      if (old && (old.running || state.pending.includes(old))) continue; // already on its way
      const item = { file, key, row: null, upload: null, running: false, resumedAt: null };
      item.row = uploadRow(item);
      if (old) old.row.replaceWith(item.row); else $('upload-list').append(item.row);
      state.uploads.set(key, item);
      state.pending.push(item);
    }
    pump();
  }

  function uploadRow(item) {
    const progress = el('progress', { max: 100, value: 0, 'aria-label': `Upload of ${item.key}` });
    return el('li', { class: 'upload', 'data-key': item.key },
      el('span', { class: 'upload-name', text: item.key }),
      progress,
      el('span', { class: 'upload-pct', text: '0%' }),
      el('span', { class: 'upload-status', text: 'Waiting' }));
  }

  function setRow(item, { pct, status, kind }) {
    const row = item.row;
    if (pct !== undefined) {
      row.querySelector('progress').value = pct;
      row.querySelector('.upload-pct').textContent = `${pct}%`;
    }
    if (status !== undefined) {
      const s = row.querySelector('.upload-status');
      s.textContent = status;
      s.className = `upload-status ${kind || ''}`.trim();
    }
  }

  const resumedNote = (item) => (item.resumedAt != null ? ` (resumed at ${item.resumedAt}%)` : '');

  function pump() {
    while (state.active < UPLOADS_AT_ONCE && state.pending.length) {
      const item = state.pending.shift();
      state.active += 1;
      item.running = true;
      startUpload(item).catch((e) => finishUpload(item, 'error', `Failed: ${e.message}`));
    }
  }

  function finishUpload(item, kind, status) {
    if (!item.running) return;
    item.running = false;
    state.active -= 1;
    setRow(item, { status, kind });
    announce(`${item.key}: ${status}`);
    pump();
  }

  async function startUpload(item) {
    const user = state.user;
    const upload = new tus.Upload(item.file, {
      endpoint: '/api/v1/uploads',
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000],
      headers: { 'X-CSRF-Token': state.csrf },
      metadata: { key: item.key, filename: item.file.name },
      // Per user: the stored upload URLs of one account are never offered to another one on
      // this browser (the server would answer 404 anyway). The key tells apart same-named files
      // of different folders.
      fingerprint: (file) => Promise.resolve(['locker', user, item.key, file.size, file.lastModified].join('|')),
      removeFingerprintOnSuccess: true,
      onAfterResponse: (req, res) => {
        // The HEAD of a resumption tells how much the server already holds.
        if (req.getMethod() !== 'HEAD' || res.getStatus() !== 200) return;
        const offset = Number(res.getHeader('Upload-Offset'));
        const length = Number(res.getHeader('Upload-Length'));
        if (offset > 0 && offset < length) {
          item.resumedAt = Math.floor((offset * 100) / length);
          setRow(item, { pct: item.resumedAt, status: `Resumed at ${item.resumedAt}%` });
          announce(`${item.key}: resumed at ${item.resumedAt}%`);
        }
      },
      onProgress: (sent, total) => {
        const pct = total ? Math.floor((sent * 100) / total) : 0;
        const status = item.resumedAt != null ? `Uploading, resumed at ${item.resumedAt}%` : 'Uploading';
        setRow(item, { pct, status });
      },
      onSuccess: () => {
        setRow(item, { pct: 100 });
        finishUpload(item, 'done', `Stored${resumedNote(item)}`);
        refreshSoon();
      },
      onError: (err) => {
        const res = err.originalResponse;
        const status = res ? res.getStatus() : 0;
        let message = 'network error';
        if (res) {
          try { message = JSON.parse(res.getBody()).error || message; } catch (e) { message = `HTTP ${status}`; }
        }
        if (status === 401) { finishUpload(item, 'error', 'Session expired'); if (state.user) expire(); return; }
        const quota = status === 413 || status === 507;
        const why = quota ? `Refused: ${/quota/i.test(message) ? message : `over quota: ${message}`}`
          : status ? `Refused (${status}): ${message}`
            : `Interrupted (${message}): choose the file again to resume`;
        finishUpload(item, 'error', why);
      },
    });
    item.upload = upload;
    setRow(item, { status: 'Starting' });
    // tus-js-client keeps the URLs of unfinished uploads in localStorage under the fingerprint:
    // the newest one is the upload to go on with.
    const previous = await upload.findPreviousUploads();
    if (previous.length) {
      previous.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
      upload.resumeFromPreviousUpload(previous[0]);
      setRow(item, { status: 'Resuming' });
    }
    if (!item.running) return; // signed out meanwhile
    upload.start();
  }

  // ---------------------------------------------------------------- keyboard

  // Space plays or pauses, n and p move in the queue; never while typing in a field, and
  // Space is left to buttons, links and media controls, where it already means something.
  function wireKeyboard() {
    document.addEventListener('keydown', (e) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || $('app').hidden) return;
      const t = e.target;
      const typing = t.isContentEditable || ['TEXTAREA', 'SELECT'].includes(t.tagName)
        || (t.tagName === 'INPUT' && !['button', 'checkbox', 'radio', 'range', 'file', 'submit', 'reset'].includes(t.type));
      if (typing) return;
      if (e.key === ' ') {
        if (t.closest('button, a, input, select, audio, label, summary')) return;
        e.preventDefault();
        togglePlay();
      } else if (e.key === 'n' || e.key === 'N') {
        next();
      } else if (e.key === 'p' || e.key === 'P') {
        previous();
      }
    });
  }

  boot();
})();
