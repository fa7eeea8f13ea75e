//! OpenSubsonic state through the real server binary: stars, plays and playlists survive a
//! crash and a restart; the catalogue is rebuilt from the store when its files are deleted or
//! stale, with the same ids.

#[path = "subsonic/client.rs"]
mod client;
mod common;

use client::{Auth, COVER, Client, all_songs, fixture, list};
use common::{add_user_json, start};
use serde_json::Value;

/// What alice's annotations look like through the API: (starred songs, albums, artists),
/// (play count, played) of `song`, playlists as (name, comment, song ids).
async fn annotations(
    c: &Client,
    auth: &Auth,
    song: &str,
) -> (Vec<usize>, (u64, bool), Vec<(String, String, Vec<String>)>) {
    let s = c.ok("getStarred2", auth, &[]).await;
    let starred = ["song", "album", "artist"]
        .iter()
        .map(|k| list(&s["starred2"], k).len())
        .collect();
    let v = c.ok("getSong", auth, &[("id", song)]).await;
    let plays = (
        v["song"]["playCount"].as_u64().unwrap(),
        v["song"]["played"].is_string(),
    );
    let mut pls = Vec::new();
    for p in list(
        &c.ok("getPlaylists", auth, &[]).await["playlists"],
        "playlist",
    ) {
        let full = c
            .ok("getPlaylist", auth, &[("id", p["id"].as_str().unwrap())])
            .await;
        let entries = list(&full["playlist"], "entry")
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let comment = p["comment"].as_str().unwrap_or("").to_owned();
        pls.push((p["name"].as_str().unwrap().to_owned(), comment, entries));
    }
    (starred, plays, pls)
}

/// Every song of the caller without the caller's annotations: what the catalogue holds.
async fn catalogue(c: &Client, auth: &Auth) -> Vec<Value> {
    let mut songs = all_songs(c, auth).await;
    for s in &mut songs {
        let m = s.as_object_mut().unwrap();
        for k in ["playCount", "played", "starred"] {
            m.remove(k);
        }
    }
    songs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_persist_and_the_catalogue_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &[]);
    let (key, token) = Auth::of(&alice);
    let server = start(&store).await;
    let c = Client::new(&server.base);
    let api_key = alice["api_key"].as_str().unwrap();
    for name in [
        COVER,
        "flac-vorbiscomment-picture-padding-metaflac.flac",
        "ogg-vorbis-tags-vorbiscomment.ogg",
    ] {
        c.upload(api_key, &format!("Mix/{name}"), &fixture(name))
            .await;
    }
    let songs = catalogue(&c, &key).await;
    let ids: Vec<&str> = songs.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let first = songs[0].clone();

    // Stars (song, album, artist), plays, playlists.
    c.ok(
        "star",
        &key,
        &[
            ("id", ids[0]),
            ("albumId", first["albumId"].as_str().unwrap()),
            ("artistId", first["artistId"].as_str().unwrap()),
        ],
    )
    .await;
    c.ok("star", &token, &[("id", ids[1])]).await;
    c.ok("unstar", &token, &[("id", ids[1])]).await;
    c.ok("scrobble", &key, &[("id", ids[0])]).await;
    c.ok(
        "scrobble.view",
        &key,
        &[
            ("id", ids[0]),
            ("time", "1700000000000"),
            ("submission", "true"),
        ],
    )
    .await;
    c.ok("scrobble", &key, &[("id", ids[0]), ("submission", "false")])
        .await;
    assert_eq!(c.code("scrobble", Some(&key), &[]).await, 10);
    assert_eq!(c.code("star", Some(&key), &[]).await, 10);
    let v = c
        .ok(
            "createPlaylist",
            &key,
            &[
                ("name", "Road <trip> & more"),
                ("songId", ids[0]),
                ("songId", ids[1]),
            ],
        )
        .await;
    let pl = v["playlist"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["playlist"]["songCount"], 2);
    c.ok(
        "updatePlaylist",
        &key,
        &[
            ("playlistId", &pl),
            ("songIdToAdd", ids[2]),
            ("songIndexToRemove", "0"),
            ("comment", "for the car\nand the train"),
        ],
    )
    .await;
    assert_eq!(
        c.code(
            "updatePlaylist",
            Some(&key),
            &[("playlistId", &pl), ("songIndexToRemove", "9")]
        )
        .await,
        0
    );
    assert_eq!(
        c.code(
            "updatePlaylist",
            Some(&key),
            &[("playlistId", &pl), ("songIndexToRemove", "x")]
        )
        .await,
        0
    );
    let v = c.ok("createPlaylist", &key, &[("name", "gone")]).await;
    c.ok(
        "deletePlaylist",
        &key,
        &[("id", v["playlist"]["id"].as_str().unwrap())],
    )
    .await;
    let expected = (
        vec![1, 1, 1],
        (2, true),
        vec![(
            "Road <trip> & more".to_owned(),
            "for the car\nand the train".to_owned(),
            vec![ids[1].to_owned(), ids[2].to_owned()],
        )],
    );
    assert_eq!(annotations(&c, &key, ids[0]).await, expected);
    for kind in ["frequent", "recent", "starred"] {
        let v = c.ok("getAlbumList2", &key, &[("type", kind)]).await;
        assert_eq!(
            list(&v["albumList2"], "album")[0]["id"],
            first["albumId"],
            "{kind}"
        );
    }
    // The playlist's name and comment survive XML escaping, line break included.
    let doc = c.xml("getPlaylists", Some(&key), &[]).await;
    let el = doc.iter().find(|e| e.name == "playlist").unwrap();
    assert_eq!(el.attrs["name"], "Road <trip> & more");
    assert_eq!(el.attrs["comment"], "for the car\nand the train");

    // A crash (SIGKILL) and a restart keep all of it.
    drop(server);
    let server = start(&store).await;
    let c = Client::new(&server.base);
    assert_eq!(annotations(&c, &key, ids[0]).await, expected);

    // With the catalogue's files deleted, it is rebuilt from the store with the same ids.
    drop(server);
    let catalog = store.join("server/catalog");
    assert_eq!(std::fs::read_dir(&catalog).unwrap().count(), 1);
    std::fs::remove_dir_all(&catalog).unwrap();
    let server = start(&store).await;
    let c = Client::new(&server.base);
    assert_eq!(catalogue(&c, &key).await, songs);
    assert_eq!(annotations(&c, &key, ids[0]).await, expected);
    assert_eq!(std::fs::read_dir(&catalog).unwrap().count(), 1);

    // A track stored while the server was down (or whose entry went stale) is picked up.
    drop(server);
    let file = std::fs::read_dir(&catalog)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    doc["tracks"][0]["title"] = "stale".into();
    doc["tracks"][0]["fingerprint"] = "00".into();
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let server = start(&store).await;
    let c = Client::new(&server.base);
    assert_eq!(catalogue(&c, &key).await, songs);
}
