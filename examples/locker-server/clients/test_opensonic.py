"""A real OpenSubsonic client, py-opensonic (libopensonic), against the locker server.

Uploads every fixture through the upload API, then, with API key auth and with salted token auth
(each as py-opensonic sends it by default: form POST to `<method>.view`), and once more with GET
and no `.view`: ping, the extensions, browse artists -> albums -> songs, album lists, search3
with an empty query (everything, paged) and by word, then download and stream every uploaded
track and compare the bytes, a ranged stream, the embedded cover, and a star, scrobble and
playlist round trip. Any mismatch raises: the script exits non-zero.
"""

import asyncio
import os
import sys

import libopensonic
from libopensonic._version import __version__ as OPENSONIC_VERSION
from libopensonic.errors import DataNotFoundError
from harness import WORK, Server, add_user, fixtures, upload


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def body(conn, res):
    """The body of a binary answer (the sync Connection hands back aiohttp responses)."""
    return asyncio.run_coroutine_threadsafe(res.read(), conn._loop).result()


def songs_by_browsing(conn):
    """Every song reachable from getArtists -> getArtist -> getAlbum, by id."""
    songs, albums = {}, set()
    artists = conn.get_artists()
    for index in artists.index or []:
        for artist in index.artist or []:
            full = conn.get_artist(artist.id)
            check(full.name == artist.name, f"getArtist {artist.id}")
            for album in full.album or []:
                albums.add(album.id)
    for album_id in albums:
        album = conn.get_album(album_id)
        check(album.song_count == len(album.song or []), f"songCount of {album.name}")
        for song in album.song or []:
            songs[song.id] = song
    return songs, albums


def exercise(label, conn, files, full=True):
    print(f"-- {label}")
    check(conn.ping(), "ping")
    names = {e.name for e in conn.get_open_subsonic_extensions()}
    check({"apiKeyAuthentication", "formPost"} <= names, f"extensions {names}")

    everything = conn.search3("", artist_count=500, album_count=500, song_count=500)
    songs = {s.id: s for s in everything.song or []}
    check(len(songs) == len(files), f"search3 '' lists {len(songs)} of {len(files)} songs")
    check({s.path for s in songs.values()} == set(files), "search3 '' names every key")
    page = conn.search3("", song_count=5, song_offset=len(files) - 2)
    check(len(page.song or []) == 2, "search3 paging")

    def has(song, word):
        return any(word in (x or "").lower() for x in (song.title, song.artist, song.album))

    expected = {i for i, s in songs.items() if has(s, "sweep")}
    check(0 < len(expected) < len(songs), "the fixtures hold a few 'Sweep' songs")
    for query in ("sweep", "SWEEP"):
        found = conn.search3(query, song_count=500)
        check({s.id for s in found.song or []} == expected, f"search3 {query!r}")
    check(not (conn.search3("no-such-words").song or []), "search3 with no hit")
    if not full:
        return

    browsed, albums = songs_by_browsing(conn)
    check(set(browsed) == set(songs), "browsing reaches every song once")
    listed = conn.get_album_list2("alphabeticalByName", size=500)
    check({a.id for a in listed} == albums, "getAlbumList2 alphabeticalByName")
    check(len(conn.get_album_list2("newest", size=1)) == 1, "getAlbumList2 newest size=1")

    for song in songs.values():
        original = files[song.path]
        got = body(conn, conn.download(song.id))
        check(got == original, f"download {song.path}: {len(got)} bytes, want {len(original)}")
        got = body(conn, conn.stream(song.id))
        check(got == original, f"stream {song.path}: {len(got)} bytes, want {len(original)}")
        check(song.size == len(original), f"size of {song.path}")
    some = next(iter(songs.values()))
    res = conn.stream(some.id, byte_range="bytes=10-109")
    check(res.status == 206, f"a ranged stream answers 206, not {res.status}")
    check(body(conn, res) == files[some.path][10:110], "a ranged stream's bytes")

    covered = [s for s in songs.values() if s.cover_art and s.cover_art == s.id]
    check(covered, "some fixtures carry a cover")
    for song in covered:
        res = conn.get_cover_art(song.cover_art)
        picture = body(conn, res)
        check(res.headers["Content-Type"].startswith("image/"), f"cover type of {song.path}")
        check(len(picture) > 100, f"the cover of {song.path}")
        if song.suffix not in ("ogg", "opus"):  # Vorbis comments hold it base64-encoded
            check(picture in files[song.path], f"the cover of {song.path} is its embedded picture")

    conn.star(sids=[some.id])
    conn.scrobble(some.id)
    check(any(s.id == some.id for s in conn.get_starred2().song or []), "getStarred2")
    check(conn.get_song(some.id).play_count >= 1, "a scrobble counts a play")
    conn.create_playlist(name=f"{label} mix", song_ids=[some.id])
    mine = [p for p in conn.get_playlists() if p.name == f"{label} mix"]
    check(len(mine) == 1 and conn.get_playlist(mine[0].id).entry[0].id == some.id, "playlist")


def main():
    store = os.path.join(WORK, "store")
    alice = add_user(store, "alice")
    bob = add_user(store, "bob")
    files = {}
    with Server(store) as server:
        for name, data in fixtures():
            key = f"Fixtures/{name}"
            upload(server.base, alice["api_key"], key, data)
            files[key] = data
        upload(server.base, bob["api_key"], "Bob/only.flac", files["Fixtures/flac-plain-flac.flac"])
        base, port = "http://127.0.0.1", server.port
        password = alice["subsonic_password"]
        conns = [
            ("api key", libopensonic.Connection(base, api_key=alice["api_key"], port=port), True),
            ("token", libopensonic.Connection(base, "alice", password, port=port), True),
            (
                "token, GET without .view",
                libopensonic.Connection(
                    base, "alice", password, port=port, use_get=True, use_views=False
                ),
                False,
            ),
        ]
        try:
            for label, conn, full in conns:
                exercise(label, conn, files, full)
            # Bob sees his one track only, and none of alice's ids.
            bob_conn = libopensonic.Connection(base, api_key=bob["api_key"], port=port)
            conns.append(("bob", bob_conn, False))
            mine = bob_conn.search3("", song_count=500).song or []
            check([s.path for s in mine] == ["Bob/only.flac"], "bob's locker")
            alice_song = conns[0][1].search3("", song_count=1).song[0]
            try:
                bob_conn.get_song(alice_song.id)
                check(False, "bob reads alice's song")
            except DataNotFoundError:
                pass
        finally:
            for _, conn, _ in conns:
                conn.cleanup()
        server.stop()
    print(f"py-opensonic {OPENSONIC_VERSION}: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure must fail the run loudly
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        raise
