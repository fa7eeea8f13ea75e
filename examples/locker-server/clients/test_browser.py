"""Headless Debian Chromium plays /rest/stream in an <audio> element and seeks to 20 s.

Chromium's <audio> first asks `Range: bytes=0-`; answered with a plain 200 it plays but cannot
seek (`seekable` stays [0, 0] and `currentTime = 20` stays at 0). The test checks that the seek
lands at 20 s and that playback advances from there, for every long format Chromium decodes.
"""

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import harness
from long_audio import long_tracks

HERE = os.path.dirname(os.path.abspath(__file__))


def rest(base, method, api_key, **params):
    q = urllib.parse.urlencode({"apiKey": api_key, "v": "1.16.1", "c": "browser-test", "f": "json", **params})
    with urllib.request.urlopen(f"{base}/rest/{method}?{q}") as r:
        body = json.loads(r.read())["subsonic-response"]
    assert body["status"] == "ok", body
    return body


def main():
    store = os.path.join(harness.WORK, "store")
    alice = harness.add_user(store, "alice")
    failures = []
    with harness.Server(store) as server:
        for name, path, _ in long_tracks():
            with open(path, "rb") as f:
                harness.upload(server.base, alice["api_key"], f"Test Signal/Seeking/{name}", f.read())
        songs = rest(server.base, "search3", alice["api_key"], query="", songCount=50)["searchResult3"]["song"]
        for song in songs:
            q = urllib.parse.urlencode({"id": song["id"], "apiKey": alice["api_key"], "v": "1.16.1", "c": "browser-test"})
            out = subprocess.run(
                ["node", os.path.join(HERE, "browser_seek.mjs"), f"{server.base}/healthz", f"{server.base}/rest/stream?{q}"],
                capture_output=True, text=True, timeout=120,
            )
            try:
                r = json.loads(out.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                failures.append(f"{song.get('path', song['id'])}: no result: {out.stdout} {out.stderr}")
                continue
            ok = (
                r.get("error") is None
                and abs(r["landed"] - 20) < 0.5
                and r["currentTime"] >= r["landed"] + 0.5
                and r["seekable"] and r["seekable"][1] >= 59
            )
            print(song.get("suffix"), r)
            if not ok:
                failures.append(f"{song.get('suffix')}: {r}")
        if len(songs) != 4:
            failures.append(f"search3 listed {len(songs)} songs, not 4")
        server.stop()
    if failures:
        print("FAIL:", *failures, sep="\n  ")
        sys.exit(1)
    print("browser: <audio> seeks to 20 s and plays on every format: ok")


main()
