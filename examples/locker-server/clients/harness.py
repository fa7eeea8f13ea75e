"""The harness every real-client test shares: the locker-server binary on a free loopback port.

Scripts run from clients/run.sh with LOCKER_SERVER (the release binary), FIXTURES (the real music
files) and WORK (a scratch directory of their own) in the environment. Each test starts the
servers it needs, so it may stop and restart them (a restart mid-upload is a test case).
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

BIN = os.environ["LOCKER_SERVER"]
FIXTURES = os.environ["FIXTURES"]
WORK = os.environ["WORK"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_user(store, name, *extra):
    """Creates `name`; returns {"user", "api_key", "subsonic_password"}."""
    out = subprocess.run(
        [BIN, "--store", store, "user", "add", name, "--json", *extra],
        check=True,
        capture_output=True,
    )
    return json.loads(out.stdout)


class Server:
    """A running locker-server; `stop()` sends SIGTERM and checks it exits 0."""

    def __init__(self, store, *extra, port=None):
        self.store = store
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(WORK, f"server-{self.port}.log"), "ab")
        self.proc = subprocess.Popen(
            [BIN, "--store", store, "--listen", f"127.0.0.1:{self.port}", *extra],
            stderr=self.log,
            stdout=self.log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("the server did not come up")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, "the server exits 0 on SIGTERM"

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def fixtures():
    """Every real music file of the fixtures, as (name, bytes)."""
    out = []
    for name in sorted(os.listdir(FIXTURES)):
        if name.split(".")[-1] in ("mp3", "flac", "m4a", "ogg", "opus"):
            with open(os.path.join(FIXTURES, name), "rb") as f:
                out.append((name, f.read()))
    return out


def upload(base, api_key, key, data, rights_holder=None):
    """PUT through the upload API (naming the track's rights holder when given); returns the
    JSON answer."""
    query = "" if rights_holder is None else "?rightsHolder=" + urllib.request.quote(rights_holder, safe="")
    req = urllib.request.Request(
        f"{base}/api/v1/tracks/{urllib.request.quote(key)}{query}",
        data=data,
        method="PUT",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 201, r.status
        return json.loads(r.read())
