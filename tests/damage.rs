//! Damage is contained and named: a truncated or damaged pack costs only the tracks whose chunks
//! it lost; verify names them; the operator can drop them and keep the rest.

mod common;

use std::path::{Path, PathBuf};

use common::{audio, cli, key, small_chunks, truncate, user};
use lockerstore::{GcOptions, Options, Store, TrackKey, UserId};

fn options() -> Options {
    Options::default().chunker(small_chunks()).min_free_space(0)
}

fn packs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    v.sort();
    v
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tracks: Vec<(UserId, TrackKey, Vec<u8>)>,
    /// Length of the (single) pack after each put.
    ends: Vec<u64>,
}

/// Four tracks of 2.5 MB in one pack, put one after the other by two users.
fn four_tracks() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options()).unwrap();
    let mut tracks = Vec::new();
    let mut ends = Vec::new();
    for (i, (u, k)) in [
        ("alice", "a/1.mp3"),
        ("bob", "b/1.mp3"),
        ("alice", "a/2.mp3"),
        ("bob", "b/2.mp3"),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = audio(&format!("damage{i}"), 2_500_000 + i * 1000);
        store.put(&user(u), &key(k), &bytes[..]).unwrap();
        let p = packs(&dir);
        assert_eq!(p.len(), 1, "the fixture wants one pack");
        ends.push(std::fs::metadata(&p[0]).unwrap().len());
        tracks.push((user(u), key(k), bytes));
    }
    drop(store);
    Fixture {
        _tmp: tmp,
        dir,
        tracks,
        ends,
    }
}

fn names(v: &[lockerstore::DamagedTrack]) -> Vec<(String, String)> {
    let mut v: Vec<_> = v
        .iter()
        .map(|d| (d.user.to_string(), d.key.to_string()))
        .collect();
    v.sort();
    v
}

fn assert_reads(store: &Store, tracks: &[(UserId, TrackKey, Vec<u8>)]) {
    for (u, k, bytes) in tracks {
        let got = store
            .read_track(u, k)
            .unwrap_or_else(|e| panic!("{u}/{k}: {e}"));
        assert!(&got == bytes, "{u}/{k} differs");
    }
}

/// After dropping, the store is sound, the survivors read back, accounting matches them, GC and
/// a reopen keep it so.
fn assert_recovered(dir: &Path, survivors: &[(UserId, TrackKey, Vec<u8>)]) {
    let store = Store::open(dir, options()).unwrap();
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert!(v.damaged_tracks.is_empty());
    assert_reads(&store, survivors);
    let stats = store.stats().unwrap();
    assert_eq!(stats.tracks, survivors.len() as u64);
    assert_eq!(
        stats.logical_bytes,
        survivors.iter().map(|t| t.2.len() as u64).sum::<u64>()
    );
    store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "after gc: {:?}", v.problems);
    assert_reads(&store, survivors);
    drop(store);
    let store = Store::open(dir, options()).unwrap();
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "after reopen: {:?}", v.problems);
    assert_reads(&store, survivors);
}

#[test]
fn truncated_pack_keeps_the_tracks_below_the_cut_and_names_the_others() {
    let f = four_tracks();
    let pack = packs(&f.dir)[0].clone();
    // Cut in the middle of the fourth track: the first three lie wholly below.
    let cut = (f.ends[2] + f.ends[3]) / 2;
    truncate(&pack, cut);

    let store = Store::open(&f.dir, options()).unwrap();
    // Open neither refuses nor cuts or deletes anything committed.
    assert_eq!(std::fs::metadata(&pack).unwrap().len(), cut);
    assert_eq!(store.recovery().short_packs, 1);
    assert_reads(&store, &f.tracks[..3]);
    let (u, k, _) = &f.tracks[3];
    let err = store.read_track(u, k).unwrap_err();
    assert!(err.is_corruption(), "{err}");

    let v = store.verify().unwrap();
    assert!(!v.is_ok());
    assert!(v.chunks_checked > 0, "{v:?}");
    assert_eq!(
        names(&v.damaged_tracks),
        vec![("bob".into(), "b/2.mp3".into())]
    );

    let dropped = store.drop_damaged_tracks().unwrap();
    assert_eq!(
        names(&dropped.tracks),
        vec![("bob".into(), "b/2.mp3".into())]
    );
    assert!(dropped.chunk_entries_removed > 0);
    assert_eq!(dropped.packs_shortened, 1);
    assert!(matches!(
        store.read_track(u, k),
        Err(lockerstore::Error::TrackNotFound { .. })
    ));
    // New puts still work beside the damaged pack.
    let extra = audio("extra", 700_000);
    store
        .put(&user("carol"), &key("c.mp3"), &extra[..])
        .unwrap();
    drop(store);
    let mut survivors = f.tracks[..3].to_vec();
    survivors.push((user("carol"), key("c.mp3"), extra));
    assert_recovered(&f.dir, &survivors);
}

#[test]
fn damaged_record_in_the_middle_costs_only_its_track() {
    let f = four_tracks();
    let pack = packs(&f.dir)[0].clone();
    // Flip bytes in the middle of the second track's records.
    let at = (f.ends[0] + f.ends[1]) / 2;
    let mut bytes = std::fs::read(&pack).unwrap();
    for b in &mut bytes[at as usize..at as usize + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(&pack, &bytes).unwrap();

    let store = Store::open(&f.dir, options()).unwrap();
    for (i, (u, k, want)) in f.tracks.iter().enumerate() {
        match store.read_track(u, k) {
            Ok(got) => assert!(i != 1 && &got == want),
            Err(e) => assert!(i == 1 && e.is_corruption(), "{u}/{k}: {e}"),
        }
    }
    let v = store.verify().unwrap();
    assert!(v.chunks_checked > 0);
    assert_eq!(
        names(&v.damaged_tracks),
        vec![("bob".into(), "b/1.mp3".into())]
    );
    let dropped = store.drop_damaged_tracks().unwrap();
    assert_eq!(
        names(&dropped.tracks),
        vec![("bob".into(), "b/1.mp3".into())]
    );
    assert_eq!(dropped.packs_shortened, 0);
    drop(store);
    let survivors: Vec<_> = [0, 2, 3].iter().map(|&i| f.tracks[i].clone()).collect();
    assert_recovered(&f.dir, &survivors);
}

#[test]
fn a_pack_cut_below_its_header_loses_only_its_own_tracks() {
    let f = four_tracks();
    let pack = packs(&f.dir)[0].clone();
    let store = Store::open(&f.dir, options()).unwrap();
    // A second pack with one more track, then the first pack is emptied.
    let extra = audio("extra2", 500_000);
    drop(store);
    truncate(&pack, 10);
    let store = Store::open(&f.dir, options()).unwrap();
    store
        .put(&user("carol"), &key("c.mp3"), &extra[..])
        .unwrap();
    let v = store.verify().unwrap();
    assert_eq!(v.damaged_tracks.len(), 4);
    let dropped = store.drop_damaged_tracks().unwrap();
    assert_eq!(dropped.tracks.len(), 4);
    assert_eq!(dropped.packs_removed, 1);
    drop(store);
    assert_recovered(&f.dir, &[(user("carol"), key("c.mp3"), extra)]);
}

/// The pack writers append to (unsealed, full length, so pooled at open) gets a damaged header:
/// dropping its tracks removes the pack, and no later put may write into it. Then a pack file
/// removed from outside: dropping its tracks succeeds although the file is already gone.
#[test]
fn dropping_a_pack_writers_could_take_keeps_later_puts() {
    let f = four_tracks();
    let pack = packs(&f.dir)[0].clone();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&pack, &bytes).unwrap();

    let store = Store::open(&f.dir, options()).unwrap();
    let dropped = store.drop_damaged_tracks().unwrap();
    assert_eq!(dropped.tracks.len(), 4);
    assert_eq!(dropped.packs_removed, 1);
    assert!(!pack.exists());
    let mut survivors = Vec::new();
    for i in 0..3 {
        let k = key(&format!("after/{i}.mp3"));
        let bytes = audio(&format!("after{i}"), 600_000);
        store.put(&user("carol"), &k, &bytes[..]).unwrap();
        assert_eq!(store.read_track(&user("carol"), &k).unwrap(), bytes);
        survivors.push((user("carol"), k, bytes));
    }
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);

    // A pack file deleted from outside.
    let gone = packs(&f.dir)[0].clone();
    drop(store);
    std::fs::remove_file(&gone).unwrap();
    let store = Store::open(&f.dir, options()).unwrap();
    let dropped = store.drop_damaged_tracks().unwrap();
    assert_eq!(dropped.tracks.len(), 3);
    assert_eq!(dropped.packs_removed, 1);
    let extra = audio("extra", 500_000);
    store.put(&user("dave"), &key("d.mp3"), &extra[..]).unwrap();
    drop(store);
    assert_recovered(&f.dir, &[(user("dave"), key("d.mp3"), extra)]);
}

#[test]
fn cli_verify_names_damaged_tracks_and_drops_them() {
    let f = four_tracks();
    let pack = packs(&f.dir)[0].clone();
    let cut = (f.ends[2] + f.ends[3]) / 2;
    truncate(&pack, cut);

    let out = cli(&f.dir, &["verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("DAMAGED TRACK: bob b/2.mp3"), "{text}");
    assert!(!text.contains("a/1.mp3"), "{text}");

    let out = cli(&f.dir, &["verify", "--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["chunks_checked"].as_u64().unwrap() > 0);
    let damaged = v["damaged_tracks"].as_array().unwrap();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0]["user"], "bob");
    assert_eq!(damaged[0]["key"], "b/2.mp3");

    let out = cli(&f.dir, &["verify", "--drop-damaged", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true, "{text}");
    assert_eq!(v["dropped_tracks"][0]["user"], "bob");
    assert_eq!(v["dropped_tracks"][0]["key"], "b/2.mp3");

    let out = cli(&f.dir, &["verify"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("ok"), "{text}");
    let store = Store::open(&f.dir, options()).unwrap();
    assert_reads(&store, &f.tracks[..3]);
}
