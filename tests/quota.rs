//! Quotas: limits on a user's counted bytes and tracks, checked in the commit that links a
//! track, exact to the byte, race-free between concurrent puts, and kept across a reopen.

mod common;

use std::sync::{Arc, Barrier};

use common::{audio, key, open, user};
use lockerstore::{Error, LicenseMode, PutOptions, Quota, Store, UserId};

fn usage(store: &Store, u: &UserId) -> (u64, u64, u64, u64) {
    let q = store.quota(u).unwrap();
    (
        q.counted_bytes,
        q.counted_tracks,
        q.exempt_bytes,
        q.exempt_tracks,
    )
}

fn is_over(err: &Error, what: &str) -> bool {
    matches!(err, Error::QuotaExceeded { what: w, .. } if *w == what)
}

#[test]
fn quotas_are_exact_to_the_byte_and_a_refused_put_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = open(&dir, LicenseMode::PerUserCopy);
    let alice = user("alice");
    // A quota for a user who has no track yet creates the user.
    store
        .set_quota(
            &alice,
            Quota::unlimited()
                .max_bytes(Some(10_000))
                .max_tracks(Some(3)),
        )
        .unwrap();
    assert_eq!(usage(&store, &alice), (0, 0, 0, 0));
    assert_eq!(
        store.quota(&alice).unwrap().quota,
        Quota::unlimited()
            .max_bytes(Some(10_000))
            .max_tracks(Some(3))
    );

    store
        .put(&alice, &key("a"), &audio("a", 4_000)[..])
        .unwrap();
    store
        .put(&alice, &key("b"), &audio("b", 6_000)[..])
        .unwrap();
    assert_eq!(usage(&store, &alice), (10_000, 2, 0, 0));

    // One byte over: refused, typed, and nothing of it is stored.
    let before = store.stats().unwrap();
    let err = store
        .put(&alice, &key("c"), &audio("c", 1)[..])
        .unwrap_err();
    assert!(is_over(&err, "bytes"), "{err}");
    assert!(err.is_bad_input());
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            limit: 10_000,
            needed: 10_001,
            ..
        }
    ));
    let after = store.stats().unwrap();
    assert_eq!(
        (
            after.logical_bytes,
            after.physical_bytes,
            after.garbage_bytes,
            after.pack_bytes
        ),
        (
            before.logical_bytes,
            before.physical_bytes,
            before.garbage_bytes,
            before.pack_bytes
        )
    );
    assert!(matches!(
        store.track_info(&alice, &key("c")),
        Err(Error::TrackNotFound { .. })
    ));

    // A replacement counts only its difference; a delete gives its bytes back.
    store
        .put(&alice, &key("b"), &audio("b2", 5_000)[..])
        .unwrap();
    assert_eq!(usage(&store, &alice), (9_000, 2, 0, 0));
    store
        .put(&alice, &key("c"), &audio("c", 1_000)[..])
        .unwrap();
    assert_eq!(usage(&store, &alice), (10_000, 3, 0, 0));
    // The track limit: a fourth counted track is refused even when bytes would fit.
    store.delete(&alice, &key("c")).unwrap();
    store.put(&alice, &key("c"), &audio("c", 10)[..]).unwrap();
    let err = store
        .put(&alice, &key("d"), &audio("d", 10)[..])
        .unwrap_err();
    assert!(is_over(&err, "tracks"), "{err}");

    // Bought music: exempt tracks count in the user's usage, not against the limits.
    let exempt = PutOptions::default().quota_exempt(true);
    store
        .put_with(
            &alice,
            &key("bought"),
            &audio("bought", 50_000)[..],
            &exempt,
        )
        .unwrap();
    assert_eq!(usage(&store, &alice), (9_010, 3, 50_000, 1));
    let s = store.stats().unwrap();
    let a = s.per_user.iter().find(|u| u.user == "alice").unwrap();
    assert_eq!((a.logical_bytes, a.tracks), (59_010, 4));
    assert_eq!(a.quota.counted_bytes, 9_010);
    // Replacing an exempt track by a counted one moves it under the quota (and is refused
    // here, since it would not fit), and deleting it gives its exemption back.
    let err = store
        .put(&alice, &key("bought"), &audio("bought", 50_000)[..])
        .unwrap_err();
    assert!(is_over(&err, "bytes"), "{err}");
    assert_eq!(usage(&store, &alice), (9_010, 3, 50_000, 1));
    store.delete(&alice, &key("bought")).unwrap();
    assert_eq!(usage(&store, &alice), (9_010, 3, 0, 0));

    // A limit lowered below the usage removes nothing; growing is refused, shrinking is not.
    store
        .set_quota(&alice, Quota::unlimited().max_bytes(Some(5_000)))
        .unwrap();
    let err = store
        .put(&alice, &key("e"), &audio("e", 1)[..])
        .unwrap_err();
    assert!(is_over(&err, "bytes"), "{err}");
    store
        .put(&alice, &key("a"), &audio("a", 3_000)[..])
        .unwrap();
    assert_eq!(usage(&store, &alice), (8_010, 3, 0, 0));

    // Another user is not limited by alice's quota.
    store
        .put(&user("bob"), &key("a"), &audio("a", 20_000)[..])
        .unwrap();

    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    drop(store);

    // Limits and usage survive a reopen, and so does the refusal.
    let store = open(&dir, LicenseMode::PerUserCopy);
    assert_eq!(usage(&store, &alice), (8_010, 3, 0, 0));
    assert_eq!(store.quota(&alice).unwrap().quota.max_bytes, Some(5_000));
    assert!(store.put(&alice, &key("f"), &audio("f", 1)[..]).is_err());
    store.set_quota(&alice, Quota::unlimited()).unwrap();
    store.put(&alice, &key("f"), &audio("f", 1)[..]).unwrap();
    assert!(store.verify().unwrap().is_ok());
    assert!(matches!(
        store.quota(&user("nobody")),
        Err(Error::UnknownUser(_))
    ));
}

/// Concurrent puts of one user race for the last free tracks and bytes: exactly as many pass as
/// fit, in both modes.
#[test]
fn concurrent_puts_cannot_both_take_the_last_free_byte() {
    for mode in [LicenseMode::PerUserCopy, LicenseMode::SingleMaster] {
        for by_bytes in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let store = open(&tmp.path().join("store"), mode);
            let alice = user("alice");
            const SIZE: u64 = 30_000;
            let quota = if by_bytes {
                Quota::unlimited().max_bytes(Some(5 * SIZE))
            } else {
                Quota::unlimited().max_tracks(Some(5))
            };
            store.set_quota(&alice, quota).unwrap();
            let threads = 12;
            let start = Arc::new(Barrier::new(threads));
            let outcomes: Vec<Result<(), Error>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|i| {
                        let (store, start, alice) = (&store, start.clone(), alice.clone());
                        s.spawn(move || {
                            let bytes = audio(&format!("t{i}"), SIZE as usize);
                            start.wait();
                            store
                                .put(&alice, &key(&format!("t{i}")), &bytes[..])
                                .map(|_| ())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let passed = outcomes.iter().filter(|r| r.is_ok()).count();
            let what = if by_bytes { "bytes" } else { "tracks" };
            assert_eq!(passed, 5, "{mode} by {what}: {outcomes:?}");
            assert!(
                outcomes
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .all(|e| is_over(e, what))
            );
            assert_eq!(usage(&store, &alice), (5 * SIZE, 5, 0, 0));
            assert_eq!(store.list(&alice).unwrap().len(), 5);
            let v = store.verify().unwrap();
            assert!(v.is_ok(), "{:?}", v.problems);
        }
    }
}

#[test]
fn cli_sets_and_shows_quotas_and_refuses_a_put_over_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let run = |args: &[&str]| common::cli(&store, args);
    assert!(run(&["init"]).status.success());
    let out = run(&[
        "quota", "alice", "--bytes", "10KB", "--tracks", "none", "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["max_bytes"], 10_000);
    assert!(v["max_tracks"].is_null());
    assert_eq!(v["counted_bytes"], 0);

    let song = tmp.path().join("song.mp3");
    std::fs::write(&song, audio("song", 8_000)).unwrap();
    let song = song.to_str().unwrap();
    assert!(run(&["put", "alice", "one", song]).status.success());
    let over = run(&["put", "alice", "two", song]);
    assert_eq!(over.status.code(), Some(2), "{over:?}");
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(err.contains("over quota"), "{err}");
    let exempt = run(&["put", "alice", "two", song, "--exempt"]);
    assert!(exempt.status.success(), "{exempt:?}");

    let out = run(&["quota", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("8000 of 10000 bytes and 1 of none tracks counted; 8000 bytes in 1 exempt"),
        "{text}"
    );
    let bad = run(&["quota", "alice", "--bytes", "5XB"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"5XB\""));
    let stats = run(&["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["per_user"][0]["max_bytes"], 10_000);
    assert_eq!(v["per_user"][0]["exempt_tracks"], 1);
    assert!(run(&["verify"]).status.success());
}

/// verify recounts the exempt usage: a quota row that disagrees with the exempt tracks is
/// reported.
#[test]
fn verify_reports_exempt_usage_that_disagrees_with_the_tracks() {
    use redb::{Database, ReadableDatabase, TableDefinition};
    const QUOTAS: TableDefinition<u64, [u8; 32]> = TableDefinition::new("quotas");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let store = open(&dir, LicenseMode::PerUserCopy);
        let exempt = PutOptions::default().quota_exempt(true);
        store
            .put_with(
                &user("alice"),
                &key("bought"),
                &audio("b", 5_000)[..],
                &exempt,
            )
            .unwrap();
        assert!(store.verify().unwrap().is_ok());
    }
    {
        // The row claims 4,000 exempt bytes where the one exempt track holds 5,000.
        let db = Database::open(dir.join("meta.redb")).unwrap();
        let mut row = {
            let txn = db.begin_read().unwrap();
            txn.open_table(QUOTAS)
                .unwrap()
                .get(1)
                .unwrap()
                .unwrap()
                .value()
        };
        row[16..24].copy_from_slice(&4_000u64.to_le_bytes());
        let txn = db.begin_write().unwrap();
        txn.open_table(QUOTAS).unwrap().insert(1, row).unwrap();
        txn.commit().unwrap();
    }
    let report = open(&dir, LicenseMode::PerUserCopy).verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("quota row says 4000 exempt bytes in 1 tracks, recount 5000 in 1")),
        "{report:#?}"
    );
}
