// Plays a URL in an <audio> element of headless Debian Chromium and seeks to 20 s.
// Usage: node browser_seek.mjs PAGE_URL AUDIO_URL
// PAGE_URL is a page of the same server (so the audio is same-origin); prints one JSON line:
// {seekable, currentTime, advanced, error}. Chromium runs with the flags this closed network
// needs (no background networking, no QUIC), on a fresh profile.
import { chromium } from 'playwright-core';

const [pageUrl, audioUrl] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  const result = await page.evaluate(async (src) => {
    const audio = document.createElement('audio');
    audio.muted = true; // headless has no sound card; decoding and the clock still run
    document.body.appendChild(audio);
    const once = (name) => new Promise((ok, fail) => {
      audio.addEventListener(name, ok, { once: true });
      audio.addEventListener('error', () => fail(new Error(`media error ${audio.error && audio.error.code}`)), { once: true });
    });
    const timeout = (ms, what) => new Promise((_, fail) => setTimeout(() => fail(new Error(`timeout: ${what}`)), ms));
    try {
      audio.src = src;
      await Promise.race([once('loadedmetadata'), timeout(15000, 'metadata')]);
      await audio.play();
      const seekable = audio.seekable.length ? [audio.seekable.start(0), audio.seekable.end(0)] : [];
      audio.currentTime = 20;
      await Promise.race([once('seeked'), timeout(15000, 'seek')]);
      const landed = audio.currentTime;
      // Audio advances from there: wait until the clock moved 0.5 s past the seek target.
      const start = Date.now();
      while (audio.currentTime < landed + 0.5 && Date.now() - start < 15000) {
        await new Promise((ok) => setTimeout(ok, 100));
      }
      return { seekable, landed, currentTime: audio.currentTime, duration: audio.duration, error: null };
    } catch (e) {
      return { error: String(e), currentTime: audio.currentTime, duration: audio.duration };
    }
  }, audioUrl);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
