//! Behaviour of the core engine: round trips, seeks, modes, deletes, accounting, bad input.

mod common;

use std::io::{Read, Seek, SeekFrom};

use common::*;
use lockerstore::corpus::SplitMix;
use lockerstore::{Error, LicenseMode, Options, Store, TrackKey, UserId};

#[test]
fn round_trip_of_many_sizes_with_random_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    let u = user("alice");
    let mut rng = SplitMix::new(9);
    let sizes = [
        0usize,
        1,
        100,
        16 << 10,
        64 << 10,
        (256 << 10) + 3,
        1_000_000,
        24_000_000,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let data = audio(&format!("t{i}"), n);
        let k = key(&format!("track {i}"));
        let put = store.put(&u, &k, &data[..]).unwrap();
        assert_eq!(put.len, n as u64);
        assert_eq!(put.fingerprint, lockerstore::Fingerprint::of(&data));
        assert_eq!(store.read_track(&u, &k).unwrap(), data);
        let mut r = store.open_track(&u, &k).unwrap();
        assert_eq!(r.len(), n as u64);
        for _ in 0..20 {
            if n == 0 {
                break;
            }
            let at = rng.range(0, n);
            let want = (n - at).min(rng.range(1, 200_000));
            r.seek(SeekFrom::Start(at as u64)).unwrap();
            let mut buf = vec![0u8; want];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(buf, data[at..at + want], "size {n} at {at}");
        }
        // Reading past the end yields nothing.
        r.seek(SeekFrom::End(0)).unwrap();
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    }
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn same_track_of_two_users_is_stored_twice_per_user_and_once_single_master() {
    let song = audio("hit", 3_000_000);
    let mut physical = Vec::new();
    for mode in [LicenseMode::PerUserCopy, LicenseMode::SingleMaster] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), mode);
        store.put(&user("a"), &key("hit.mp3"), &song[..]).unwrap();
        let one = store.stats().unwrap().physical_bytes;
        store.put(&user("b"), &key("hit.mp3"), &song[..]).unwrap();
        let two = store.stats().unwrap().physical_bytes;
        match mode {
            LicenseMode::PerUserCopy => assert_eq!(two, 2 * one),
            LicenseMode::SingleMaster => assert_eq!(two, one),
            other => unreachable!("a mode this test does not know: {other}"),
        }
        assert!(one >= song.len() as u64);
        let s = store.stats().unwrap();
        assert_eq!(s.logical_bytes, 2 * song.len() as u64);
        assert_eq!(s.users, 2);
        assert_eq!(s.tracks, 2);
        physical.push(two);
        for u in ["a", "b"] {
            assert_eq!(store.read_track(&user(u), &key("hit.mp3")).unwrap(), song);
        }
        assert!(store.verify().unwrap().is_ok());
    }
    // The two stores have different chunker seeds, so their record overheads differ slightly.
    let ratio = physical[0] as f64 / physical[1] as f64;
    assert!((ratio - 2.0).abs() < 0.001, "{ratio}");
}

#[test]
fn a_user_uploading_their_track_twice_stores_it_once_in_per_user_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    let song = audio("mine", 2_000_000);
    let first = store.put(&user("a"), &key("one.mp3"), &song[..]).unwrap();
    let second = store.put(&user("a"), &key("copy.mp3"), &song[..]).unwrap();
    assert_eq!(first.new_bytes, song.len() as u64);
    assert_eq!(second.new_bytes, 0);
    assert_eq!(second.new_chunks, 0);
    let s = store.stats().unwrap();
    assert_eq!(s.logical_bytes, 2 * song.len() as u64);
    assert!(s.physical_bytes < song.len() as u64 + 64 * first.chunks + 1);
}

#[test]
fn putting_a_key_again_replaces_it_and_turns_the_old_chunks_into_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let (u, k) = (user("a"), key("song.mp3"));
    let v1 = audio("v1", 1_500_000);
    let v2 = audio("v2", 1_000_000);
    store.put(&u, &k, &v1[..]).unwrap();
    let before = store.stats().unwrap();
    let out = store.put(&u, &k, &v2[..]).unwrap();
    assert!(out.replaced);
    assert_eq!(store.read_track(&u, &k).unwrap(), v2);
    let after = store.stats().unwrap();
    assert_eq!(after.tracks, 1);
    assert_eq!(after.logical_bytes, v2.len() as u64);
    assert_eq!(after.garbage_bytes, before.physical_bytes);
    assert_eq!(after.garbage_chunks, before.chunks);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn delete_drops_references_and_accounts_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let song = audio("shared", 2_000_000);
    store.put(&user("a"), &key("s.mp3"), &song[..]).unwrap();
    store.put(&user("b"), &key("s.mp3"), &song[..]).unwrap();
    let full = store.stats().unwrap();
    store.delete(&user("a"), &key("s.mp3")).unwrap();
    let s = store.stats().unwrap();
    // b still needs every chunk: nothing is garbage yet.
    assert_eq!(s.garbage_bytes, 0);
    assert_eq!(s.physical_bytes, full.physical_bytes);
    assert_eq!(s.users, 1);
    assert_eq!(s.tracks, 1);
    store.delete(&user("b"), &key("s.mp3")).unwrap();
    let s = store.stats().unwrap();
    assert_eq!(s.physical_bytes, 0);
    assert_eq!(s.garbage_bytes, full.physical_bytes);
    assert_eq!(s.users, 0);
    assert!(matches!(
        store.delete(&user("b"), &key("s.mp3")),
        Err(Error::TrackNotFound { .. })
    ));
    // A re-upload revives the garbage instead of writing again.
    let again = store.put(&user("c"), &key("s.mp3"), &song[..]).unwrap();
    assert_eq!(again.new_bytes, 0);
    let s = store.stats().unwrap();
    assert_eq!(s.garbage_bytes, 0);
    assert_eq!(s.physical_bytes, full.physical_bytes);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn list_and_stats_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    let a = user("a");
    store
        .put(&a, &key("B/2.mp3"), &audio("2", 1000)[..])
        .unwrap();
    store
        .put(&a, &key("A/1.mp3"), &audio("1", 3000)[..])
        .unwrap();
    store
        .put(&user("b"), &key("x"), &audio("x", 10)[..])
        .unwrap();
    let list = store.list(&a).unwrap();
    let keys: Vec<_> = list.iter().map(|t| t.key.as_str().to_owned()).collect();
    assert_eq!(keys, ["A/1.mp3", "B/2.mp3"]);
    assert_eq!(list[0].size, 3000);
    assert_eq!(
        list[0].fingerprint,
        lockerstore::Fingerprint::of(&audio("1", 3000))
    );
    let s = store.stats().unwrap();
    let pa = s.per_user.iter().find(|u| u.user == "a").unwrap();
    assert_eq!((pa.logical_bytes, pa.tracks), (4000, 2));
    assert!(matches!(
        store.list(&user("nobody")),
        Err(Error::UnknownUser(_))
    ));
}

#[test]
fn compressible_chunks_are_compressed_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let text = "lyrics la la la, and more lyrics; "
        .repeat(60_000)
        .into_bytes();
    store
        .put(&user("a"), &key("lyrics.txt"), &text[..])
        .unwrap();
    let s = store.stats().unwrap();
    assert!(s.physical_bytes * 4 < text.len() as u64, "{s:?}");
    assert_eq!(
        store.read_track(&user("a"), &key("lyrics.txt")).unwrap(),
        text
    );
}

#[test]
fn mode_is_durable_and_new_ingests_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let song = audio("m", 1_000_000);
    {
        let store = open(dir.path(), LicenseMode::PerUserCopy);
        assert_eq!(store.mode(), LicenseMode::PerUserCopy);
        store.set_mode(LicenseMode::SingleMaster).unwrap();
        store.put(&user("a"), &key("k"), &song[..]).unwrap();
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.mode(), LicenseMode::SingleMaster);
    let second = store.put(&user("b"), &key("k"), &song[..]).unwrap();
    assert_eq!(second.new_bytes, 0, "single-master dedups across users");
    store.set_mode(LicenseMode::PerUserCopy).unwrap();
    let third = store.put(&user("c"), &key("k"), &song[..]).unwrap();
    assert_eq!(
        third.new_bytes,
        song.len() as u64,
        "per-user copies are physical"
    );
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn bad_names_and_unknown_tracks_are_typed_errors() {
    assert!(matches!(UserId::new(""), Err(Error::InvalidUserId(_))));
    assert!(matches!(
        TrackKey::from_bytes(b"a\0b"),
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        TrackKey::from_bytes(&[0xc3, 0x28]),
        Err(Error::InvalidKey(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    assert!(matches!(
        store.open_track(&user("ghost"), &key("k")),
        Err(Error::UnknownUser(_))
    ));
    store.put(&user("a"), &key("k"), &b"x"[..]).unwrap();
    assert!(matches!(
        store.open_track(&user("a"), &key("nope")),
        Err(Error::TrackNotFound { .. })
    ));
    // `..` in a key is just a name.
    let dotted = key("../../etc/passwd");
    store.put(&user("a"), &dotted, &b"harmless"[..]).unwrap();
    assert_eq!(store.read_track(&user("a"), &dotted).unwrap(), b"harmless");
    // No id or key ever becomes a path: the store holds only its own files.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["BALLAST", "LOCK", "STORE", "meta.redb", "packs"]);
    for e in std::fs::read_dir(dir.path().join("packs")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".pack") && name.len() == 21, "{name}");
    }
}

struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            ));
        }
        let n = buf
            .len()
            .min(self.fail_at - self.pos)
            .min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_reader_failing_half_way_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let (u, k) = (user("a"), key("k"));
    let old = audio("old", 500_000);
    store.put(&u, &k, &old[..]).unwrap();
    let before = store.stats().unwrap();
    let data = audio("new", 3_000_000);
    let err = store
        .put(
            &u,
            &k,
            FailingReader {
                data,
                pos: 0,
                fail_at: 2_000_000,
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::Upload { .. }), "{err}");
    assert!(err.is_bad_input());
    assert_eq!(store.read_track(&u, &k).unwrap(), old);
    let after = store.stats().unwrap();
    assert_eq!(after, before);
    assert!(store.verify().unwrap().is_ok());
    drop(store);
    // The abandoned tail is gone after reopening too.
    let store = open(dir.path(), LicenseMode::SingleMaster);
    assert_eq!(store.stats().unwrap(), before);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    // The lock is per open file description, so a second open in this process is refused too.
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    drop(store);
    Store::open(dir.path(), Options::default()).unwrap();
}

#[test]
fn foreign_directories_and_newer_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("holiday.jpg"), b"not a store").unwrap();
    assert!(matches!(
        Store::open(dir.path(), Options::default()),
        Err(Error::NotAStore(_))
    ));
    let missing = dir.path().join("missing");
    assert!(matches!(
        Store::open(&missing, Options::default().create(false)),
        Err(Error::NoStore(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), LicenseMode::PerUserCopy));
    let path = dir.path().join("STORE");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Store::open(dir.path(), Options::default()),
        Err(Error::UnsupportedVersion { found: 99, .. })
    ));
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Options::default().chunker(lockerstore::ChunkerParams {
        min: 3,
        avg: 64 << 10,
        max: 256 << 10,
    });
    assert!(matches!(
        Store::open(dir.path(), bad),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn store_is_send_and_sync_and_serves_many_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    let songs: Vec<Vec<u8>> = (0..6).map(|i| audio(&format!("s{i}"), 700_000)).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            let songs = &songs;
            s.spawn(move || {
                let u = user(&format!("u{t}"));
                for (i, song) in songs.iter().enumerate() {
                    store.put(&u, &key(&format!("{i}")), &song[..]).unwrap();
                    assert_eq!(&store.read_track(&u, &key(&format!("{i}"))).unwrap(), song);
                }
            });
        }
    });
    let s = store.stats().unwrap();
    assert_eq!(s.tracks, 24);
    // Concurrent puts of the same content may each write a copy; the losers are garbage, and
    // the live bytes are those of one copy per distinct chunk.
    let one_copy: u64 = songs.iter().map(|s| s.len() as u64).sum();
    assert!(
        s.physical_bytes >= one_copy && s.physical_bytes < one_copy + one_copy / 50,
        "{s:?}"
    );
    assert!(store.verify().unwrap().is_ok());
}

/// A reader that hands out a few bytes per call and hides its length, as a network body does.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(1500);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn an_expected_length_is_a_hint_and_any_length_is_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    let user = user("u");
    for (n, len) in [0usize, 1, 4096, 700_000, 3_000_000]
        .into_iter()
        .enumerate()
    {
        let bytes = audio(&format!("hint {n}"), len);
        // Exact, too small, too large, absurd, and none at all.
        for (i, hint) in [
            Some(len as u64),
            Some(len as u64 / 2),
            Some(len as u64 * 3 + 10),
            Some(u64::MAX),
            None,
        ]
        .into_iter()
        .enumerate()
        {
            let key = TrackKey::new(&format!("t{n}-{i}")).unwrap();
            let mut options = lockerstore::PutOptions::default();
            if let Some(h) = hint {
                options = options.expected_len(h);
            }
            store
                .put_with(&user, &key, Trickle(&bytes), &options)
                .unwrap();
            assert_eq!(
                store.read_track(&user, &key).unwrap(),
                bytes,
                "{len} bytes, hint {hint:?}"
            );
        }
    }
}
