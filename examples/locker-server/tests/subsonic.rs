//! OpenSubsonic at /rest/ through a real HTTP client (reqwest) against the real server binary on
//! loopback, over the real fixture files uploaded through the upload API: envelopes in JSON and
//! XML, every auth mechanism and error code, `.view` and form POST, browsing, search3, media,
//! cover art, annotations across restarts, catalogue rebuilds, isolation between users.

#[path = "subsonic/client.rs"]
mod client;
mod common;

use client::{Auth, COVER, Client, El, all_songs, fixture, list, upload_all, xml_root};
use common::{add_user_json, start, start_with};
use serde_json::Value;

/// A call that must fail: method, credentials, parameters, the error code.
type ErrorCase<'a> = (&'a str, Option<Auth>, Vec<(&'a str, &'a str)>, u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_auth_and_every_error_code() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &[]);
    let bob = add_user_json(&store, "bob", &[]);
    let (key, token) = Auth::of(&alice);
    let name = |v: &Value| v["user"].as_str().unwrap().to_owned();
    let pw = alice["subsonic_password"].as_str().unwrap().to_owned();
    let server = start(&store).await;
    let c = Client::new(&server.base);
    c.upload(
        alice["api_key"].as_str().unwrap(),
        &format!("A/{COVER}"),
        &fixture(COVER),
    )
    .await;

    // Every credential works, on /x and /x.view.
    let enc: String = pw.bytes().map(|b| format!("{b:02x}")).collect();
    for auth in [
        key.clone(),
        token.clone(),
        Auth::Plain(name(&alice), pw.clone()),
        Auth::Plain(name(&alice), format!("enc:{enc}")),
    ] {
        for method in ["ping", "ping.view"] {
            c.ok(method, &auth, &[]).await;
        }
    }
    // XML by default and with f=xml, well-formed, the same envelope.
    for f in [&[][..], &[("f", "xml")][..]] {
        let doc = c.xml("ping.view", Some(&token), f).await;
        assert_eq!(xml_root(&doc), "ok");
    }
    let song = &list(
        &c.ok("search3", &key, &[("query", "")]).await["searchResult3"],
        "song",
    )[0]
    .clone();
    let id = song["id"].as_str().unwrap();
    // The same answer in both formats: the XML's attributes are the JSON's scalars.
    let doc = c.xml("getSong.view", Some(&key), &[("id", id)]).await;
    let el: &El = doc.iter().find(|e| e.name == "song").unwrap();
    for field in [
        "id",
        "title",
        "album",
        "artist",
        "suffix",
        "contentType",
        "coverArt",
    ] {
        assert_eq!(el.attrs[field], song[field].as_str().unwrap(), "{field}");
    }
    assert_eq!(el.attrs["size"], song["size"].to_string());
    assert_eq!(el.attrs["isDir"], "false");

    // Form POST (formPost), to .view, alone and merged with the query.
    let mut form = key.params();
    form.extend([("id".into(), id.to_owned()), ("f".into(), "json".into())]);
    for url in ["getSong.view", "getSong"] {
        let r = c
            .http
            .post(format!("{}/rest/{url}", c.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["subsonic-response"]["song"]["id"], id, "{v}");
    }
    let r = c
        .http
        .post(format!("{}/rest/getSong.view?f=json&id={id}", c.base))
        .form(&token.params())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["subsonic-response"]["status"], "ok", "{v}");

    // Public: the extensions, without credentials.
    let v = c.json("getOpenSubsonicExtensions", None, &[]).await;
    let names: Vec<&str> = list(&v, "openSubsonicExtensions")
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apiKeyAuthentication", "formPost"]);
    assert_eq!(
        c.ok("getLicense", &key, &[]).await["license"]["valid"],
        true
    );
    let user = c.ok("getUser", &token, &[("username", "alice")]).await;
    assert_eq!(user["user"]["username"], "alice");
    assert_eq!(user["user"]["streamRole"], true);

    // Every error: HTTP 200, status failed, the code.
    let u = Auth::Plain("alice".into(), "wrong".into());
    let (bob_key, _) = Auth::of(&bob);
    let mut with_u = key.params();
    with_u.push(("u".into(), "alice".into()));
    let wu: Vec<(&str, &str)> = with_u
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let cases: Vec<ErrorCase> = vec![
        ("ping", None, vec![], 10),
        ("ping", None, vec![("u", "alice")], 10),
        ("ping", None, vec![("u", "alice"), ("t", "abc")], 10),
        ("getSong", Some(key.clone()), vec![], 10),
        ("ping", Some(u.clone()), vec![], 40),
        (
            "ping",
            Some(Auth::Token("alice".into(), "wrong".into())),
            vec![],
            40,
        ),
        (
            "ping",
            Some(Auth::Token("nobody".into(), pw.clone())),
            vec![],
            40,
        ),
        (
            "ping",
            Some(Auth::Plain("alice".into(), "enc:zz".into())),
            vec![],
            40,
        ),
        ("ping", None, wu.clone(), 43),
        ("ping", Some(Auth::Key("lk_nope".into())), vec![], 44),
        ("getUser", Some(key.clone()), vec![("username", "bob")], 50),
        (
            "getPlaylists",
            Some(key.clone()),
            vec![("username", "bob")],
            50,
        ),
        (
            "getSong",
            Some(key.clone()),
            vec![("id", "tr-0000000000000000")],
            70,
        ),
        (
            "getAlbumList2",
            Some(key.clone()),
            vec![("type", "bogus")],
            0,
        ),
        (
            "getAlbumList2",
            Some(key.clone()),
            vec![("type", "newest"), ("size", "x")],
            0,
        ),
        (
            "getAlbumList2",
            Some(key.clone()),
            vec![("type", "byYear")],
            10,
        ),
        (
            "getArtists",
            Some(key.clone()),
            vec![("musicFolderId", "7")],
            70,
        ),
        ("noSuchMethod", Some(key.clone()), vec![], 70),
    ];
    for (method, auth, params, code) in &cases {
        assert_eq!(
            c.code(method, auth.as_ref(), params).await,
            *code,
            "{method} {params:?}"
        );
    }
    c.ok("ping", &bob_key, &[]).await;
    // Errors in XML too.
    let doc = c.xml("ping", Some(&Auth::Key("lk_nope".into())), &[]).await;
    assert_eq!(xml_root(&doc), "failed");
    let err = doc.iter().find(|e| e.name == "error").unwrap();
    assert_eq!(err.attrs["code"], "44");

    // A server that takes API keys only: token auth 41, a password 42.
    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = tmp2.path().join("store");
    let carol = add_user_json(&store2, "carol", &[]);
    let only = start_with(&store2, &["--subsonic-auth", "api-key-only"]).await;
    let c2 = Client::new(&only.base);
    let (carol_key, carol_token) = Auth::of(&carol);
    let carol_pw = Auth::Plain(
        "carol".into(),
        carol["subsonic_password"].as_str().unwrap().into(),
    );
    c2.ok("ping", &carol_key, &[]).await;
    assert_eq!(c2.code("ping", Some(&carol_token), &[]).await, 41);
    assert_eq!(c2.code("ping", Some(&carol_pw), &[]).await, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_search_media_and_isolation() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &[]);
    let bob = add_user_json(&store, "bob", &[]);
    let (key, token) = Auth::of(&alice);
    let (bob_key, _) = Auth::of(&bob);
    let server = start(&store).await;
    let c = Client::new(&server.base);
    let files = upload_all(&c, alice["api_key"].as_str().unwrap(), "Fixtures").await;
    let n = files.len();

    // search3 with an empty query lists everything, paged; in XML too.
    let songs = all_songs(&c, &token).await;
    assert_eq!(songs.len(), n);
    for q in ["\"\"", "*"] {
        let v = c
            .ok("search3", &key, &[("query", q), ("songCount", "500")])
            .await;
        assert_eq!(list(&v["searchResult3"], "song").len(), n, "{q}");
    }
    let page = c
        .ok(
            "search3",
            &key,
            &[
                ("query", ""),
                ("songCount", "5"),
                ("songOffset", "20"),
                ("artistCount", "1"),
                ("albumCount", "0"),
            ],
        )
        .await;
    let r = &page["searchResult3"];
    assert_eq!(list(r, "song").len(), n - 20);
    assert_eq!(list(r, "song")[0]["id"], songs[20]["id"]);
    assert_eq!((list(r, "artist").len(), list(r, "album").len()), (1, 0));
    let doc = c
        .xml(
            "search3.view",
            Some(&key),
            &[("query", ""), ("songCount", "500")],
        )
        .await;
    assert_eq!(
        doc.iter()
            .filter(|e| e.name == "song" && e.depth == 2)
            .count(),
        n
    );

    // A word query matches title, artist or album, case-insensitively.
    let hits = |v: &Value| -> Vec<String> {
        list(&v["searchResult3"], "song")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let has = |s: &Value, w: &str| {
        ["title", "artist", "album"]
            .iter()
            .any(|f| s[f].as_str().unwrap().to_lowercase().contains(w))
    };
    let expected: Vec<String> = songs
        .iter()
        .filter(|s| has(s, "sweep"))
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!expected.is_empty() && expected.len() < n);
    for q in ["sweep", "SWEEP", "Swe"] {
        let v = c
            .ok("search3", &key, &[("query", q), ("songCount", "500")])
            .await;
        assert_eq!(hits(&v), expected, "{q}");
    }
    let v = c.ok("search3", &key, &[("query", "Boundary Tests")]).await;
    assert_eq!(
        list(&v["searchResult3"], "album")[0]["name"],
        "Boundary Tests"
    );
    let v = c.ok("search3", &key, &[("query", "no-such-words")]).await;
    assert!(hits(&v).is_empty());

    // Browse: artists -> albums -> songs covers every track once.
    let folders = c.ok("getMusicFolders", &key, &[]).await;
    assert_eq!(list(&folders["musicFolders"], "musicFolder").len(), 1);
    let indexes = c.ok("getIndexes", &key, &[]).await;
    assert!(indexes["indexes"]["lastModified"].as_u64().unwrap() > 0);
    let artists = c.ok("getArtists", &key, &[]).await;
    let mut album_ids = Vec::new();
    for index in list(&artists["artists"], "index") {
        for artist in list(index, "artist") {
            let id = artist["id"].as_str().unwrap();
            let a = c.ok("getArtist", &key, &[("id", id)]).await;
            assert_eq!(a["artist"]["name"], artist["name"]);
            for album in list(&a["artist"], "album") {
                album_ids.push(album["id"].as_str().unwrap().to_owned());
            }
        }
    }
    album_ids.sort();
    album_ids.dedup();
    let mut seen = Vec::new();
    for id in &album_ids {
        let a = c.ok("getAlbum", &key, &[("id", id)]).await;
        let album_songs = list(&a["album"], "song");
        assert_eq!(
            a["album"]["songCount"].as_u64().unwrap() as usize,
            album_songs.len()
        );
        seen.extend(
            album_songs
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
    }
    seen.sort();
    let mut all_ids: Vec<String> = songs
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    all_ids.sort();
    assert_eq!(seen, all_ids);
    let untagged = songs
        .iter()
        .find(|s| s["path"] == "Fixtures/flac-plain-flac.flac")
        .unwrap();
    assert_eq!(
        (&untagged["title"], &untagged["artist"], &untagged["album"]),
        (
            &"flac-plain-flac".into(),
            &"Unknown Artist".into(),
            &"Unknown Album".into()
        )
    );
    let cover_song = songs
        .iter()
        .find(|s| s["path"] == format!("Fixtures/{COVER}"))
        .unwrap();
    assert_eq!(cover_song["title"], "Chord Study");
    assert_eq!(cover_song["artist"], "Fixture Ensemble");
    assert_eq!(cover_song["suffix"], "mp3");
    assert_eq!(cover_song["contentType"], "audio/mpeg");
    let got = c
        .ok(
            "getSong",
            &key,
            &[("id", cover_song["id"].as_str().unwrap())],
        )
        .await;
    assert_eq!(got["song"], *cover_song);

    // Album lists.
    let albums = |v: &Value| list(&v["albumList2"], "album").len();
    for kind in [
        "random",
        "newest",
        "alphabeticalByName",
        "alphabeticalByArtist",
    ] {
        let v = c
            .ok("getAlbumList2", &key, &[("type", kind), ("size", "500")])
            .await;
        assert_eq!(albums(&v), album_ids.len(), "{kind}");
        let v = c
            .ok(
                "getAlbumList2",
                &key,
                &[("type", kind), ("size", "1"), ("offset", "1")],
            )
            .await;
        assert_eq!(albums(&v), 1, "{kind}");
    }
    for kind in ["frequent", "recent", "starred", "highest"] {
        let v = c.ok("getAlbumList2", &key, &[("type", kind)]).await;
        assert_eq!(albums(&v), 0, "{kind}");
    }
    let v = c
        .ok(
            "getAlbumList2",
            &key,
            &[("type", "byYear"), ("fromYear", "2020"), ("toYear", "2000")],
        )
        .await;
    assert!(albums(&v) >= 1);
    let v = c
        .ok(
            "getAlbumList2",
            &key,
            &[("type", "byYear"), ("fromYear", "1900"), ("toYear", "1901")],
        )
        .await;
    assert_eq!(albums(&v), 0);
    let genres = c.ok("getGenres", &key, &[]).await;
    let genre = list(&genres["genres"], "genre")[0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = c
        .ok(
            "getAlbumList2",
            &key,
            &[("type", "byGenre"), ("genre", &genre)],
        )
        .await;
    assert_eq!(albums(&v), 1);
    let v = c.ok("getRandomSongs", &key, &[("size", "1000")]).await;
    assert_eq!(list(&v["randomSongs"], "song").len(), n);
    let v = c.ok("getRandomSongs", &key, &[("size", "3")]).await;
    assert_eq!(list(&v["randomSongs"], "song").len(), 3);

    // stream and download give the stored bytes, and stream takes ranges.
    for s in &songs {
        let id = s["id"].as_str().unwrap();
        let original = &files[s["path"].as_str().unwrap()];
        for method in ["stream", "download.view"] {
            let (_, bytes) = c
                .bytes(
                    method,
                    &key,
                    &[("id", id), ("format", "mp3"), ("maxBitRate", "64")],
                )
                .await;
            assert!(bytes == *original, "{method} {}", s["path"]);
        }
    }
    let original = &files[&format!("Fixtures/{COVER}")];
    let cover_id = cover_song["id"].as_str().unwrap();
    let mut q = key.params();
    q.push(("id".into(), cover_id.into()));
    let r = c
        .http
        .get(format!("{}/rest/stream.view", c.base))
        .query(&q)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", original.len())
    );
    assert_eq!(r.bytes().await.unwrap(), original[100..200]);

    // The embedded cover: a JPEG whose bytes are the file's own, by song or album id.
    let (ct, picture) = c
        .bytes(
            "getCoverArt",
            &key,
            &[
                ("id", cover_song["coverArt"].as_str().unwrap()),
                ("size", "64"),
            ],
        )
        .await;
    assert_eq!(ct, "image/jpeg");
    assert!(picture.starts_with(&[0xFF, 0xD8]) && picture.len() > 1000);
    assert!(
        original.windows(picture.len()).any(|w| w == picture),
        "the picture is the embedded one"
    );
    let album_id = cover_song["albumId"].as_str().unwrap();
    let (_, by_album) = c.bytes("getCoverArt", &key, &[("id", album_id)]).await;
    assert!(!by_album.is_empty());
    assert_eq!(
        c.code(
            "getCoverArt",
            Some(&key),
            &[("id", untagged["id"].as_str().unwrap())]
        )
        .await,
        70
    );

    // Isolation: bob names alice's ids and finds nothing; his own library is his.
    c.upload(
        bob["api_key"].as_str().unwrap(),
        "Fixtures/flac-plain-flac.flac",
        &fixture("flac-plain-flac.flac"),
    )
    .await;
    let bob_songs = all_songs(&c, &bob_key).await;
    assert_eq!(bob_songs.len(), 1);
    assert_ne!(
        bob_songs[0]["id"], untagged["id"],
        "the same key has another id for another user"
    );
    let pl = c
        .ok(
            "createPlaylist",
            &key,
            &[("name", "alice's"), ("songId", cover_id)],
        )
        .await;
    let pl_id = pl["playlist"]["id"].as_str().unwrap().to_owned();
    let artist_id = cover_song["artistId"].as_str().unwrap();
    let bob_song = bob_songs[0]["id"].as_str().unwrap();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("getArtist", vec![("id", artist_id)]),
        ("getAlbum", vec![("id", album_id)]),
        ("getSong", vec![("id", cover_id)]),
        ("stream", vec![("id", cover_id)]),
        ("download", vec![("id", cover_id)]),
        ("getCoverArt", vec![("id", cover_id)]),
        ("getCoverArt", vec![("id", album_id)]),
        ("scrobble", vec![("id", cover_id)]),
        ("star", vec![("id", cover_id)]),
        ("star", vec![("albumId", album_id)]),
        ("star", vec![("artistId", artist_id)]),
        ("unstar", vec![("id", cover_id)]),
        ("getPlaylist", vec![("id", &pl_id)]),
        (
            "createPlaylist",
            vec![("name", "mine"), ("songId", cover_id)],
        ),
        (
            "createPlaylist",
            vec![("playlistId", &pl_id), ("songId", bob_song)],
        ),
        (
            "updatePlaylist",
            vec![("playlistId", &pl_id), ("name", "taken")],
        ),
        ("deletePlaylist", vec![("id", &pl_id)]),
    ];
    for (method, params) in &cases {
        assert_eq!(
            c.code(method, Some(&bob_key), params).await,
            70,
            "{method} {params:?}"
        );
    }
    let v = c.ok("getPlaylists", &bob_key, &[]).await;
    assert!(list(&v["playlists"], "playlist").is_empty());
    let v = c.ok("getPlaylist", &key, &[("id", &pl_id)]).await;
    assert_eq!(v["playlist"]["name"], "alice's");

    // A delete through the upload API takes the song out of the catalogue.
    let r = c
        .http
        .delete(format!("{}/api/v1/tracks/Fixtures/{COVER}", c.base))
        .bearer_auth(alice["api_key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(all_songs(&c, &key).await.len(), n - 1);
    assert_eq!(c.code("getSong", Some(&key), &[("id", cover_id)]).await, 70);
    assert_eq!(all_songs(&c, &bob_key).await.len(), 1);
}
