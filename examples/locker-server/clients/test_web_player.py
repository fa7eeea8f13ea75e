"""The web player at `/` in headless Debian Chromium, driven through its UI by web_player.mjs.

Signs in by API key, uploads two fixtures with covers and a 60-second FLAC through the file
picker (the long one is cut off after two 1 MiB chunks, the page reloaded, the same file chosen
again: it must resume where the server stopped, and say so), checks the stored bytes through the
API, plays and seeks, walks the queue (buttons and the n/p/space keys), searches, deletes; a
second user sees none of it and gets 404 for its URLs; signing in by user name + Subsonic
password, CSRF refusal and signing out; a quota refusal shown in the upload's row; screenshots at 1280x800 and 375x667; no console error
and no CSP violation anywhere.

LOCKER_WEB_DIR, when set, is passed as `--web-dir` so that the pages come from that directory
(a work tree) instead of the copies embedded in the binary. SCREENSHOTS names where the
screenshots go (default: <repo>/target/screenshots).
"""

import json
import os
import subprocess
import sys

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def long_flac(path, seconds=60):
    """A 60 s FLAC of a tone under pink noise: about 6 MB, so six 1 MiB tus chunks. (The pure tone
    of long_audio.py compresses to 1.4 MB, too few chunks to cut an upload in the middle.)"""
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.08:duration={seconds}:seed=7",
            "-filter_complex", "[0][1]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo",
            "-ar", "44100", "-c:a", "flac",
            "-metadata", "title=Long Tone",
            "-metadata", "artist=Test Signal",
            "-metadata", "album=Seeking",
            path,
        ],
        check=True,
    )
    return path


def main():
    store = os.path.join(harness.WORK, "store")
    alice = harness.add_user(store, "alice")
    bob = harness.add_user(store, "bob")
    carol = harness.add_user(store, "carol", "--quota", "1MB")
    config = {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "files": {
            "cover_mp3": os.path.join(harness.FIXTURES, "mp3-cbr-id3v23-cover-eyed3.mp3"),
            "cover_flac": os.path.join(harness.FIXTURES, "flac-vorbiscomment-picture-padding-metaflac.flac"),
            "long": long_flac(os.path.join(harness.WORK, "long-interrupted.flac")),
        },
        "screenshots": os.environ.get("SCREENSHOTS") or os.path.join(ROOT, "target", "screenshots"),
    }
    extra = []
    if os.environ.get("LOCKER_WEB_DIR"):
        extra = ["--web-dir", os.environ["LOCKER_WEB_DIR"]]
    with harness.Server(store, *extra) as server:
        config["base"] = server.base
        out = subprocess.run(
            ["node", os.path.join(HERE, "web_player.mjs"), json.dumps(config)],
            text=True, timeout=600,
        )
        server.stop()
    if out.returncode != 0:
        with open(server.log.name, "rb") as f:
            tail = f.read().decode(errors="replace").splitlines()[-40:]
        print("server log (last lines):", *tail, sep="\n  ")
        print(f"FAIL: web_player.mjs exited {out.returncode}")
        sys.exit(1)
    print(f"web player: ok (screenshots in {config['screenshots']})")


main()
