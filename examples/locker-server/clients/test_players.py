"""ffprobe, ffmpeg and curl against the server over HTTP, as players and tools use it.

- ffprobe reads each long track's format and duration through the upload API.
- `ffmpeg -ss 20 -i URL` seeks with open-ended ranges (`bytes=N-`); without working ranges it
  logs "Stream ends prematurely" and still exits 0, so the log is checked, not only the status.
- curl: 206 for `bytes=0-1`, suffix ranges, open ranges; 416 with `bytes */LEN`; `If-Range`
  with a stale ETag gets the whole track; `HEAD`; `If-None-Match` gets 304.
"""

import os
import re
import subprocess
import sys

import harness
from long_audio import long_tracks


def curl(*args):
    """Runs curl; returns (status, headers dict (lower-case names), body bytes)."""
    body_path = os.path.join(harness.WORK, "body")
    if os.path.exists(body_path):
        os.remove(body_path)  # curl writes no file for an empty body
    out = subprocess.run(
        ["curl", "-s", "-D", "-", "-o", os.path.join(harness.WORK, "body"), *args],
        check=True,
        capture_output=True,
    )
    head = out.stdout.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if os.path.exists(body_path):
        with open(body_path, "rb") as f:
            body = f.read()
    return status, headers, body


def main():
    store = os.path.join(harness.WORK, "store")
    alice = harness.add_user(store, "alice")
    auth = f"Authorization: Bearer {alice['api_key']}"
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print("FAIL:", what)

    with harness.Server(store) as server:
        tracks = long_tracks()
        for name, path, ctype in tracks:
            with open(path, "rb") as f:
                data = f.read()
            key = f"Test Signal/Seeking/{name}"
            harness.upload(server.base, alice["api_key"], key, data)
            url = f"{server.base}/api/v1/tracks/{key.replace(' ', '%20')}"

            # ffprobe: format and duration over HTTP.
            probe = subprocess.run(
                ["ffprobe", "-v", "error", "-headers", auth + "\r\n",
                 "-show_entries", "format=duration,format_name", "-of", "default=nw=1", url],
                capture_output=True, text=True,
            )
            dur = re.search(r"duration=([0-9.]+)", probe.stdout)
            check(probe.returncode == 0 and dur and abs(float(dur.group(1)) - 60) < 1.0,
                  f"ffprobe {name}: {probe.stdout!r} {probe.stderr!r}")

            # ffmpeg seeks to 20 s and decodes 2 s from there.
            run = subprocess.run(
                ["ffmpeg", "-v", "verbose", "-headers", auth + "\r\n", "-ss", "20",
                 "-i", url, "-t", "2", "-f", "null", "-"],
                capture_output=True, text=True,
            )
            log = run.stderr
            check(run.returncode == 0, f"ffmpeg -ss 20 {name} exit {run.returncode}: {log[-500:]}")
            check("Stream ends prematurely" not in log, f"ffmpeg {name}: stream ended prematurely")
            check("Connection reset" not in log and "Invalid data" not in log,
                  f"ffmpeg {name}: {log[-500:]}")

            # curl: the range rules.
            n = len(data)
            s, h, b = curl("-H", auth, url)
            check(s == 200 and b == data, f"curl whole {name}: {s}")
            check(h.get("accept-ranges") == "bytes", f"{name}: Accept-Ranges {h}")
            check(h.get("content-type") == ctype, f"{name}: Content-Type {h.get('content-type')}")
            etag = h.get("etag", "")
            check(re.fullmatch(r'"[0-9a-f]{64}"', etag) is not None, f"{name}: ETag {etag}")
            s, h, b = curl("-H", auth, "-r", "0-1", url)
            check(s == 206 and b == data[:2] and h.get("content-range") == f"bytes 0-1/{n}",
                  f"{name} bytes=0-1: {s} {h.get('content-range')}")
            s, h, b = curl("-H", auth, "-H", "Range: bytes=-100", url)
            check(s == 206 and b == data[-100:] and h.get("content-range") == f"bytes {n-100}-{n-1}/{n}",
                  f"{name} suffix: {s} {h.get('content-range')}")
            s, h, b = curl("-H", auth, "-r", f"{n // 2}-", url)
            check(s == 206 and b == data[n // 2:], f"{name} open range: {s}")
            s, h, b = curl("-H", auth, "-r", f"{n}-", url)
            check(s == 416 and h.get("content-range") == f"bytes */{n}", f"{name} 416: {s} {h}")
            s, h, b = curl("-H", auth, "-r", "0-1", "-H", 'If-Range: "0000"', url)
            check(s == 200 and b == data, f"{name} stale If-Range: {s}")
            s, h, b = curl("-H", auth, "-r", "0-1", "-H", f"If-Range: {etag}", url)
            check(s == 206 and b == data[:2], f"{name} fresh If-Range: {s}")
            s, h, b = curl("-H", auth, "-I", url)
            check(s == 200 and h.get("content-length") == str(n),
                  f"{name} HEAD: {s} {h}")
            s, h, b = curl("-H", auth, "-H", f"If-None-Match: {etag}", url)
            check(s == 304 and b == b"", f"{name} If-None-Match: {s}")
        server.stop()

    if failures:
        print(f"{len(failures)} failures")
        sys.exit(1)
    print(f"players: ffprobe, ffmpeg -ss 20 and curl ranges on {len(tracks)} formats: ok")


main()
