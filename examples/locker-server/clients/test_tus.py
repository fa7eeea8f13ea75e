"""tuspy (tus-py-client 1.1.0) against the locker server's resumable uploads.

Uploads a file of a few MB (the fixtures, twice over) in chunks, stops the server (SIGTERM) at
about half, resumes with a new uploader on the same upload URL once the server is back on the
same store and port, kills the server (SIGKILL) at about three quarters, resumes again, and
reads the stored track back through the upload API: it must be the file, byte for byte, and
each resumption must start at the offset the server acknowledged before it went down.
"""

import os
import urllib.parse
import urllib.request

import requests
from tusclient import client

import harness

CHUNK = 256 * 1024
KEY = "Mixes/Fixtures Twice.mp3"


def head_offset(url, api_key):
    r = requests.head(
        url, headers={"Authorization": f"Bearer {api_key}", "Tus-Resumable": "1.0.0"}
    )
    assert r.status_code == 200, r.status_code
    assert r.headers["Cache-Control"] == "no-store"
    return int(r.headers["Upload-Offset"])


def main():
    store = os.path.join(harness.WORK, "store")
    api_key = harness.add_user(store, "alice")["api_key"]
    data = b"".join(b for _, b in harness.fixtures()) * 2
    assert len(data) > 2_000_000, len(data)
    path = os.path.join(harness.WORK, "upload.bin")
    with open(path, "wb") as f:
        f.write(data)

    server = harness.Server(store)
    port = server.port
    try:
        tus = client.TusClient(
            server.base + "/api/v1/uploads",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        uploader = tus.uploader(path, chunk_size=CHUNK, metadata={"key": KEY})
        while uploader.offset < len(data) // 2:
            uploader.upload_chunk()
        url, half = uploader.url, uploader.offset
        assert 0 < half < len(data)

        # SIGTERM, then a new server on the same store and port: the upload resumes from the
        # acknowledged offset, nothing sent again.
        server.stop()
        server = harness.Server(store, port=port)
        assert head_offset(url, api_key) == half
        resumed = tus.uploader(path, chunk_size=CHUNK, url=url)
        assert resumed.offset == half, (resumed.offset, half)
        while resumed.offset < len(data) * 3 // 4:
            resumed.upload_chunk()
        three_quarters = resumed.offset

        # SIGKILL: nothing acknowledged is lost either.
        server.kill()
        server = harness.Server(store, port=port)
        assert head_offset(url, api_key) == three_quarters
        last = tus.uploader(path, chunk_size=CHUNK, url=url)
        assert last.offset == three_quarters, (last.offset, three_quarters)
        last.upload()
        assert last.offset == len(data)
        answer = last.request.response_headers
        assert answer["locker-track-location"] == "/api/v1/tracks/" + urllib.parse.quote(KEY)

        req = urllib.request.Request(
            server.base + answer["locker-track-location"],
            headers={"Authorization": f"Bearer {api_key}"},
        )
        with urllib.request.urlopen(req) as r:
            stored = r.read()
        assert stored == data, "the stored track is the uploaded file"
        assert r.headers["ETag"] == '"%s"' % answer["locker-track-fingerprint"]
        server.stop()
    finally:
        if server.proc.poll() is None:
            server.kill()
    print(
        f"ok: tuspy uploaded {len(data)} bytes across a SIGTERM at {half} "
        f"and a SIGKILL at {three_quarters}"
    )


if __name__ == "__main__":
    main()
