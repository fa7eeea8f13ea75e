//! Format fixtures: small stores written by earlier builds, checked into
//! `tests/fixtures/stores/` (each with `MANIFEST.json`; `make.sh` there writes them). Every
//! later version must open them, read every track back exactly, keep the writer's accounting,
//! write to them, and reject damaged copies of them with the right error.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, truncate};
use lockerstore::{
    Error, GcOptions, LicenseMode, Options, Store, StoreFileRepair, TrackKey, UserId,
};
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stores");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("MANIFEST.json").exists())
        .collect();
    v.sort();
    // Both modes, from the build before issue 10 and from issue 10's.
    assert!(v.len() >= 4, "fixtures missing: {v:?}");
    v
}

fn manifest(fixture: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(fixture.join("MANIFEST.json")).unwrap()).unwrap()
}

/// A private copy of the fixture's store (opening writes to a store: the ballast, recovery).
fn copy_of(fixture: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&fixture.join("store"), &dir);
    (tmp, dir)
}

fn open(dir: &Path) -> lockerstore::Result<Store> {
    Store::open(dir, Options::default().create(false))
}

fn source(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(file),
    )
    .unwrap()
}

/// (user, key, expected bytes) of every track the manifest lists.
fn tracks(m: &Value) -> Vec<(UserId, TrackKey, Vec<u8>)> {
    m["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                UserId::new(t["user"].as_str().unwrap()).unwrap(),
                TrackKey::new(t["key"].as_str().unwrap()).unwrap(),
                source(t["file"].as_str().unwrap()),
            )
        })
        .collect()
}

#[test]
fn every_fixture_opens_reads_back_exactly_and_keeps_its_accounting() {
    for fixture in fixtures() {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let m = manifest(&fixture);
        let (_tmp, dir) = copy_of(&fixture);
        let store = open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mode: LicenseMode = m["mode"].as_str().unwrap().parse().unwrap();
        assert_eq!(store.mode(), mode, "{name}");
        for (user, key, bytes) in tracks(&m) {
            let got = store
                .read_track(&user, &key)
                .unwrap_or_else(|e| panic!("{name}: {user}/{key}: {e}"));
            assert!(got == bytes, "{name}: {user}/{key} differs from its source");
            let info = store.track_info(&user, &key).unwrap();
            assert_eq!(info.size, bytes.len() as u64, "{name}: {user}/{key}");
            assert_eq!(
                info.fingerprint.to_hex(),
                blake3::hash(&bytes).to_hex().as_str()
            );
        }
        assert!(matches!(
            store.read_track(
                &UserId::new("bob").unwrap(),
                &TrackKey::new("gone.ogg").unwrap()
            ),
            Err(Error::TrackNotFound { .. })
        ));
        // The accounting the writer reported, exactly.
        let s = store.stats().unwrap();
        let w = &m["stats"];
        for (what, got) in [
            ("users", s.users),
            ("tracks", s.tracks),
            ("logical_bytes", s.logical_bytes),
            ("physical_bytes", s.physical_bytes),
            ("garbage_bytes", s.garbage_bytes),
            ("chunks", s.chunks),
            ("garbage_chunks", s.garbage_chunks),
            ("recordings", s.recordings),
            ("packs", s.packs),
            ("pack_bytes", s.pack_bytes),
        ] {
            assert_eq!(Some(got), w[what].as_u64(), "{name}: {what}");
        }
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{name}: {:?}", report.problems);
        assert!(store.audit(false).unwrap().conforming, "{name}");

        // It takes writes, maintenance and a reopen like a new store.
        let dave = UserId::new("dave").unwrap();
        let k = TrackKey::new("new.mp3").unwrap();
        let song = source("mp3-vbr-id3v23-id3v1-id3v2tool.mp3");
        store.put(&dave, &k, &song[..]).unwrap();
        let (alice, first, _) = tracks(&m).remove(0);
        store.delete(&alice, &first).unwrap();
        store
            .gc(GcOptions::default(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: gc: {e}"));
        drop(store);
        let store = open(&dir).unwrap();
        assert_eq!(store.read_track(&dave, &k).unwrap(), song, "{name}");
        assert!(store.read_track(&alice, &first).is_err());
        for (user, key, bytes) in tracks(&m).into_iter().skip(1) {
            assert!(store.read_track(&user, &key).unwrap() == bytes, "{name}");
        }
        assert!(store.verify().unwrap().is_ok(), "{name}");
    }
}

#[test]
fn damaged_copies_of_every_fixture_are_refused_with_the_right_error() {
    for fixture in fixtures() {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let m = manifest(&fixture);

        // STORE lost: refused, never re-created, and nothing changed.
        let (_tmp, dir) = copy_of(&fixture);
        std::fs::remove_file(dir.join("STORE")).unwrap();
        let meta_before = std::fs::read(dir.join("meta.redb")).unwrap();
        for create in [false, true] {
            let err = Store::open(&dir, Options::default().create(create)).unwrap_err();
            assert!(matches!(err, Error::StoreFileLost { .. }), "{name}: {err}");
        }
        assert_eq!(std::fs::read(dir.join("meta.redb")).unwrap(), meta_before);
        // Repair needs the copy of STORE that builds since issue 10 keep in the metadata; a
        // store written before and never opened since has none, and repair refuses.
        let repaired = Store::repair_store_file(&dir, Options::default());
        if m["writer"] == "3f7e5ad" {
            assert!(repaired.is_err(), "{name}: repair without a copy");
            assert!(!dir.join("STORE").exists(), "{name}");
        } else {
            assert!(
                matches!(repaired, Ok(StoreFileRepair::Rewritten)),
                "{name}: {repaired:?}"
            );
            let store = open(&dir).unwrap();
            for (user, key, bytes) in tracks(&m) {
                assert!(store.read_track(&user, &key).unwrap() == bytes, "{name}");
            }
        }

        // A STORE of an unknown format version.
        let (_tmp, dir) = copy_of(&fixture);
        // Bytes 8..12 of STORE: the format version, u32 LE (docs/DESIGN.md).
        let mut store_file = std::fs::read(dir.join("STORE")).unwrap();
        assert_eq!(store_file[8..12], 1u32.to_le_bytes(), "{name}");
        store_file[8..12].copy_from_slice(&2u32.to_le_bytes());
        std::fs::write(dir.join("STORE"), &store_file).unwrap();
        let err = open(&dir).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 2, .. }),
            "{name}: {err}"
        );

        // Metadata cut short: corruption, not I/O.
        let (_tmp, dir) = copy_of(&fixture);
        let meta = dir.join("meta.redb");
        let len = std::fs::metadata(&meta).unwrap().len();
        truncate(&meta, len / 2);
        let err = open(&dir).unwrap_err();
        assert!(err.is_corruption(), "{name}: {err}");

        // A pack cut in half: the store opens, verify names damaged tracks and only those fail.
        let (_tmp, dir) = copy_of(&fixture);
        let pack = std::fs::read_dir(dir.join("packs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let plen = std::fs::metadata(&pack).unwrap().len();
        truncate(&pack, plen / 2);
        let store = open(&dir).unwrap();
        let report = store.verify().unwrap();
        assert!(!report.is_ok(), "{name}");
        assert!(!report.damaged_tracks.is_empty(), "{name}");
        let damaged: Vec<(String, String)> = report
            .damaged_tracks
            .iter()
            .map(|d| (d.user.to_string(), d.key.to_string()))
            .collect();
        for (user, key, bytes) in tracks(&m) {
            let read = store.read_track(&user, &key);
            if damaged.contains(&(user.to_string(), key.to_string())) {
                assert!(
                    read.as_ref().is_err_and(|e| e.is_corruption()),
                    "{name}: {user}/{key} is named damaged but read {:?}",
                    read.as_ref().map(|b| b.len())
                );
            } else {
                assert!(
                    read.as_ref().is_ok_and(|b| *b == bytes),
                    "{name}: {user}/{key} is not named damaged but did not read back"
                );
            }
        }
    }
}
