//! Metadata in a real PostgreSQL (the scratch server `.ci/postgres.sh` starts): a locker whose
//! tables live there keeps every track exact through puts, deletes, a licence flip both ways,
//! GC and reopening, with the same accounting checks as on redb; the schema is versioned; bad
//! credentials and a node directory of another store are typed errors; concurrent writers that
//! collide on the same rows are serialised by the database and retried, and nothing is lost.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;

use common::*;
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{Error, GcOptions, LicenseMode, Options, Store};

/// Puts here take well under a second, so GC may remove an entry once it has been garbage for
/// six seconds (three times the limit).
const INGEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

fn options(url: &str, mode: LicenseMode) -> Options {
    Options::default()
        .postgres(url)
        .ingest_time_limit(INGEST_LIMIT)
        .mode(mode)
        .chunker(small_chunks())
        .pack_size_limit(1 << 20)
}

fn corpus() -> Corpus {
    Corpus::generate(CorpusSpec {
        seed: 5,
        users: 5,
        recordings: 5,
        album_size: 3,
        tracks_per_user: 4,
        min_audio: 100_000,
        max_audio: 300_000,
    })
}

/// Every stored track, read back, equals what was uploaded.
fn check_tracks(store: &Store, expected: &BTreeMap<(String, String), Vec<u8>>) {
    for ((u, k), bytes) in expected {
        assert_eq!(
            &store.read_track(&user(u), &key(k)).unwrap(),
            bytes,
            "{u}/{k} reads back exact"
        );
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.tracks, expected.len() as u64);
    assert_eq!(
        stats.logical_bytes,
        expected.values().map(|b| b.len() as u64).sum::<u64>()
    );
}

fn verify_and_audit(store: &Store, what: &str) {
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{what}: verify: {:?}", v.problems);
    let a = store.audit(false).unwrap();
    assert!(a.conforming, "{what}: audit: {a:?}");
}

#[test]
fn a_locker_on_postgres_keeps_every_track_exact_through_a_flip_both_ways_gc_and_reopen() {
    let Some(server) = pg::server() else { return };
    let url = pg::fresh_schema(&server, "flip");
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let mut expected = BTreeMap::new();
    {
        let store = Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap();
        assert!(store.is_new());
        for (i, up) in corpus.uploads.iter().enumerate() {
            let bytes = corpus.bytes(i);
            store
                .put(&user(&up.user), &key(&up.key), &bytes[..])
                .unwrap();
            expected.insert((up.user.clone(), up.key.clone()), bytes);
        }
        check_tracks(&store, &expected);
        verify_and_audit(&store, "per-user copies");
        let per_user = store.stats().unwrap();

        // The licence arrives: the prediction, then the migration it predicts.
        let predicted = store.what_if(LicenseMode::SingleMaster).unwrap();
        store.set_mode(LicenseMode::SingleMaster).unwrap();
        let report = store.migrate(&mut |_| {}).unwrap();
        assert_eq!(report.tracks_migrated, expected.len() as u64);
        let shared = store.stats().unwrap();
        assert_eq!(shared.physical_bytes, predicted.physical_bytes);
        assert!(
            shared.physical_bytes < per_user.physical_bytes,
            "one master copy takes less room: {} < {}",
            shared.physical_bytes,
            per_user.physical_bytes
        );
        check_tracks(&store, &expected);
        verify_and_audit(&store, "single master");
        // Garbage younger than the grace period may still be wanted by a put in flight on
        // another node: GC leaves it, and rewrites no pack for it.
        let gc = store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
        assert_eq!(gc.entries_removed, 0, "{gc:?}");
        assert!(
            gc.entries_pinned > 0,
            "the per-user copies became garbage: {gc:?}"
        );
        assert_eq!(gc.packs_rewritten + gc.packs_deleted, 0, "{gc:?}");
        // Past it, every pack holding garbage is rewritten (threshold 1.0): none is left.
        std::thread::sleep(INGEST_LIMIT * 3 + std::time::Duration::from_millis(200));
        let gc = store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
        assert_eq!(gc.entries_pinned, 0, "{gc:?}");
        assert!(gc.entries_removed > 0, "{gc:?}");
        assert_eq!(store.stats().unwrap().garbage_bytes, 0);

        // A delete, and a replacement under the same key.
        let ((u, k), _) = expected
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap();
        store.delete(&user(&u), &key(&k)).unwrap();
        expected.remove(&(u.clone(), k.clone()));
        let replacement = audio("replacement", 200_000);
        store
            .put(&user(&u), &key("replaced.mp3"), &replacement[..])
            .unwrap();
        store
            .put(&user(&u), &key("replaced.mp3"), &replacement[..100_000])
            .unwrap();
        expected.insert(
            (u.clone(), "replaced.mp3".into()),
            replacement[..100_000].to_vec(),
        );
        check_tracks(&store, &expected);
    }
    // Reopened (the options' mode is ignored: the store keeps its own).
    let store = Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap();
    assert!(!store.is_new());
    assert_eq!(store.mode(), LicenseMode::SingleMaster);
    check_tracks(&store, &expected);
    verify_and_audit(&store, "reopened");

    // The licence ends: back to per-user copies.
    let predicted = store.what_if(LicenseMode::PerUserCopy).unwrap();
    store.set_mode(LicenseMode::PerUserCopy).unwrap();
    store.migrate(&mut |_| {}).unwrap();
    assert_eq!(
        store.stats().unwrap().physical_bytes,
        predicted.physical_bytes
    );
    check_tracks(&store, &expected);
    verify_and_audit(&store, "per-user copies again");
    let a = store.audit(false).unwrap();
    assert_eq!(
        a.shared_records_across_users, 0,
        "no record shared by two users"
    );
}

#[test]
fn writers_colliding_on_the_same_rows_are_serialised_and_lose_nothing() {
    let Some(server) = pg::server() else { return };
    let url = pg::fresh_schema(&server, "collide");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(&url, LicenseMode::SingleMaster)).unwrap();
    // Eight threads, all the same user and the same content: every commit updates the same
    // user row, counters and chunk entries.
    let same = audio("one recording", 150_000);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, same) = (&store, &same);
            s.spawn(move || {
                for i in 0..4 {
                    store
                        .put(&user("fan"), &key(&format!("t{t}/copy{i}.mp3")), &same[..])
                        .unwrap();
                }
            });
        }
    });
    let expected: BTreeMap<_, _> = (0..8)
        .flat_map(|t| (0..4).map(move |i| ("fan".to_string(), format!("t{t}/copy{i}.mp3"))))
        .map(|k| (k, same.clone()))
        .collect();
    check_tracks(&store, &expected);
    verify_and_audit(&store, "after the collisions");
    // One stored copy of the content: a later upload of it stores nothing new, and the
    // store holds exactly its chunks (records of lost races are garbage, counted apart).
    let late = store.put(&user("late"), &key("x.mp3"), &same[..]).unwrap();
    assert_eq!(late.new_chunks, 0);
    let stats = store.stats().unwrap();
    assert_eq!(stats.chunks, late.chunks);
    assert_eq!(stats.tracks, 33);
}

#[test]
fn the_schema_is_versioned_and_a_missing_store_is_not_created_unasked() {
    let Some(server) = pg::server() else { return };
    let url = pg::fresh_schema(&server, "schema");
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(
        dir.path(),
        options(&url, LicenseMode::PerUserCopy).create(false),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoStore(_)), "{err:?}");
    drop(Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap());
    assert_eq!(
        pg::query_i64(&url, "SELECT version::bigint FROM ls_schema"),
        1
    );
    // A newer build's schema is refused, not misread.
    pg::sql(&url, "UPDATE ls_schema SET version = 99");
    let err = Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn wrong_credentials_and_a_node_directory_of_another_store_are_typed_errors() {
    let Some(server) = pg::server() else { return };
    let url = pg::fresh_schema(&server, "creds");
    let wrong = url.replacen("lockerstore-ci-secret", "not-the-password", 1);
    assert_ne!(wrong, url, "the scratch server's URL carries its password");
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path(), options(&wrong, LicenseMode::PerUserCopy)).unwrap_err();
    match &err {
        Error::Database { code, .. } => assert_eq!(code.as_deref(), Some("28P01"), "{err}"),
        other => panic!("expected a database error, got {other:?}"),
    }
    let err = Store::open(
        dir.path(),
        options("postgres://[bad", LicenseMode::PerUserCopy),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err:?}");

    // A node directory is bound to its store.
    drop(Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap());
    let other = pg::fresh_schema(&server, "other");
    let err = Store::open(dir.path(), options(&other, LicenseMode::PerUserCopy)).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err:?}");
    // Opened without the database, it is not mistaken for a store that lost its STORE.
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err:?}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    // And locked while open.
    let store = Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap();
    let err = Store::open(dir.path(), options(&url, LicenseMode::PerUserCopy)).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    drop(store);
}
