//! Packs in a real S3-compatible server (SeaweedFS in CI, started by `.ci/run`): puts, cold and
//! warm verified reads, migration both ways, GC, a kill -9 mid-import, lost objects, and
//! rebuilds of the metadata from the bucket alone (`lockerstore rebuild`), read back by ranges.
//!
//! The server comes from the environment: `LOCKERSTORE_S3_ENDPOINT` (`http://127.0.0.1:8333`),
//! `LOCKERSTORE_S3_BUCKET` (`packs`), and the usual `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`. Without it the tests say so and do nothing, except under `CI`,
//! where a missing server is a failure.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::path::Path;

use common::*;
use lockerstore::{LicenseMode, ObjectLocation, Options, Store};
use object_store::ObjectStore;

/// A fresh prefix in the test bucket per store, so tests never see each other's packs.
/// Options with deleted packs' objects deleted at once (no grace period), so a test can count
/// the bucket's objects; the grace period has its own test.
fn options() -> Options {
    Options::default().deletion_grace(std::time::Duration::ZERO)
}

fn location() -> Option<ObjectLocation> {
    s3::location("test")
}

fn open_with(dir: &Path, loc: Option<&ObjectLocation>, cache: u64) -> Store {
    let mut o = options().chunker(small_chunks()).cache_bytes(cache);
    if let Some(l) = loc {
        o = o.object_packs(l.clone());
    }
    Store::open(dir, o).unwrap()
}

/// A client of the test server's bucket, and the location's prefix in it.
fn bucket(loc: &ObjectLocation) -> (object_store::aws::AmazonS3, String) {
    s3::client(loc)
}

/// The pack objects under the location's prefix, by name.
fn objects(loc: &ObjectLocation) -> Vec<String> {
    let (s3, prefix) = bucket(loc);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = object_store::path::Path::from(format!("{prefix}/packs"));
    let mut names: Vec<String> = rt.block_on(async {
        use futures_util::TryStreamExt;
        s3.list(Some(&path))
            .map_ok(|m| m.location.filename().unwrap().to_owned())
            .try_collect()
            .await
            .unwrap()
    });
    names.sort();
    names
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let ext = p.extension()?.to_str()?.to_owned();
            ["mp3", "flac", "m4a", "ogg", "opus"]
                .contains(&ext.as_str())
                .then(|| {
                    (
                        p.file_name().unwrap().to_str().unwrap().to_owned(),
                        std::fs::read(&p).unwrap(),
                    )
                })
        })
        .collect();
    out.sort();
    out
}

#[test]
fn tracks_round_trip_through_the_bucket_cold_and_warm_and_survive_migration_and_gc() {
    let Some(loc) = location() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = fixtures();
    assert!(files.len() >= 20);
    {
        let store = open_with(dir.path(), Some(&loc), 1 << 30);
        for u in ["alice", "bob"] {
            for (name, bytes) in &files {
                store.put(&user(u), &key(name), &bytes[..]).unwrap();
            }
        }
        let stats = store.stats().unwrap();
        assert_eq!(stats.pack_location, loc.url);
        assert!(stats.cache_bytes.unwrap() > 0, "uploads stay cached");
        // Each put's new chunks went up as one sealed object.
        assert_eq!(objects(&loc).len() as u64, stats.packs);
    }
    // Cold: no cache at all, every pack fetched (and dropped again) while reading.
    {
        drop_cache(dir.path());
        let store = open_with(dir.path(), None, 0);
        for u in ["alice", "bob"] {
            for (name, bytes) in &files {
                assert_eq!(
                    &store.read_track(&user(u), &key(name)).unwrap(),
                    bytes,
                    "{name}"
                );
            }
        }
        let s = store.stats().unwrap();
        assert!(
            s.cache_bytes.unwrap() <= files.iter().map(|f| f.1.len() as u64).max().unwrap() + 4096,
            "at most the pack being read stays: {:?}",
            s.cache_bytes
        );
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{report:?}");
    }
    // Migration both ways, and GC, with the packs in the bucket.
    let store = open_with(dir.path(), None, 1 << 30);
    let predicted = store.what_if(LicenseMode::SingleMaster).unwrap();
    store.set_mode(LicenseMode::SingleMaster).unwrap();
    store.migrate(&mut |_| {}).unwrap();
    assert!(store.audit(false).unwrap().conforming);
    assert_eq!(
        store.stats().unwrap().physical_bytes,
        predicted.physical_bytes
    );
    store.set_mode(LicenseMode::PerUserCopy).unwrap();
    store.migrate(&mut |_| {}).unwrap();
    assert!(store.audit(false).unwrap().conforming);
    for (name, _) in &files[..files.len() / 2] {
        store.delete(&user("bob"), &key(name)).unwrap();
    }
    let before = objects(&loc).len();
    let gc = store.gc(Default::default(), &mut |_| {}).unwrap();
    assert!(gc.packs_deleted > 0, "{gc:?}");
    let stats = store.stats().unwrap();
    // Every garbage entry left the index; packs still more than half live keep their dead
    // records (the threshold), the rest were rewritten or deleted.
    assert_eq!(stats.garbage_chunks, 0, "{gc:?} {stats:?}");
    assert!(gc.pack_bytes_after < gc.pack_bytes_before, "{gc:?}");
    let after = objects(&loc);
    assert_eq!(
        after.len() as u64,
        stats.packs,
        "deleted packs left the bucket"
    );
    assert!(after.len() < before + gc.packs_rewritten as usize + 1);
    for (name, bytes) in &files {
        assert_eq!(
            &store.read_track(&user("alice"), &key(name)).unwrap(),
            bytes
        );
    }
    for (name, bytes) in &files[files.len() / 2..] {
        assert_eq!(&store.read_track(&user("bob"), &key(name)).unwrap(), bytes);
    }
    assert!(store.verify().unwrap().is_ok());
    let stats = store.stats().unwrap();
    drop(store);

    // The packs expand wrote hold many tracks: with spans of 64 KiB and no cache, every read
    // goes by ranged GETs (and read-ahead) to the server, and every byte comes back verified.
    drop_cache(dir.path());
    let store = Store::open(
        dir.path(),
        options().cache_bytes(0).read_span_bytes(64 << 10),
    )
    .unwrap();
    assert!(
        store.stats().unwrap().pack_bytes / store.stats().unwrap().packs > 128 << 10,
        "packs larger than two spans"
    );
    for (name, bytes) in &files {
        assert_eq!(&by_ranges(&store, "alice", name), bytes, "{name}");
    }
    drop(store);

    // The node's disk is lost: `lockerstore rebuild` recreates the store from the bucket.
    drop(dir);
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    rebuild(&loc, &node);
    let store = open_with(&node, None, 1 << 30);
    let mut rebuilt = store.stats().unwrap();
    rebuilt.cache_bytes = stats.cache_bytes;
    rebuilt.filter_bytes = stats.filter_bytes;
    assert_eq!(rebuilt, stats);
    for (name, bytes) in &files {
        assert_eq!(&by_ranges(&store, "alice", name), bytes, "{name}");
    }
    for (name, bytes) in &files[files.len() / 2..] {
        assert_eq!(&by_ranges(&store, "bob", name), bytes, "{name}");
    }
    assert!(store.audit(false).unwrap().conforming);
    assert!(store.verify().unwrap().is_ok());
}

/// Runs `lockerstore --store DIR rebuild --from URL` against the test server.
fn rebuild(loc: &ObjectLocation, dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockerstore"))
        .args([
            "--store",
            dir.to_str().unwrap(),
            "rebuild",
            "--from",
            &loc.url,
        ])
        .args(["--endpoint", loc.endpoint.as_deref().unwrap()])
        .args(["--region", "us-east-1", "--allow-http"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("rebuilt "), "{text}");
    text
}

/// A track read back in ranges, the second half first, through the reader's seeks.
fn by_ranges(store: &Store, u: &str, name: &str) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut r = store.open_track(&user(u), &key(name)).unwrap();
    let len = r.seek(SeekFrom::End(0)).unwrap();
    let half = len / 2;
    let mut tail = Vec::new();
    r.seek(SeekFrom::Start(half)).unwrap();
    r.by_ref().read_to_end(&mut tail).unwrap();
    let mut head = vec![0; half as usize];
    r.seek(SeekFrom::Start(0)).unwrap();
    r.read_exact(&mut head).unwrap();
    head.extend(tail);
    head
}

#[test]
fn a_lost_object_is_reported_as_corruption_never_returned_as_data() {
    let Some(loc) = location() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (name, bytes) = fixtures().remove(0);
    {
        let store = open_with(dir.path(), Some(&loc), 1 << 30);
        store.put(&user("u"), &key(&name), &bytes[..]).unwrap();
    }
    // The object goes (an operator's slip in the bucket), and the cached copy with it.
    let (s3, prefix) = bucket(&loc);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for o in objects(&loc) {
        let p = object_store::path::Path::from(format!("{prefix}/packs/{o}"));
        rt.block_on(async { object_store::ObjectStoreExt::delete(&s3, &p).await })
            .unwrap();
    }
    drop_cache(dir.path());
    let store = open_with(dir.path(), None, 1 << 30);
    match store.read_track(&user("u"), &key(&name)) {
        Err(lockerstore::Error::Corrupted { .. }) => {}
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert!(!store.verify().unwrap().is_ok());
}

#[test]
fn kill_9_mid_import_keeps_every_acknowledged_track_and_no_stray_object() {
    let Some(loc) = location() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut args = vec![
        "--store".to_owned(),
        store_dir.display().to_string(),
        "init".into(),
        "--packs".into(),
        loc.url.clone(),
        "--endpoint".into(),
        loc.endpoint.clone().unwrap(),
        "--region".into(),
        "us-east-1".into(),
        "--allow-http".into(),
    ];
    let bin = env!("CARGO_BIN_EXE_lockerstore");
    let out = std::process::Command::new(bin)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A locker of many tracks to import, killed partway.
    let music = dir.path().join("music/alice");
    std::fs::create_dir_all(&music).unwrap();
    let files = fixtures();
    const ROUNDS: usize = 40;
    // Each copy ends in its own bytes, so every put uploads something (a put of content already
    // stored would upload nothing and be over at once).
    let copy = |round: usize, bytes: &[u8]| {
        let mut b = bytes.to_vec();
        b.extend_from_slice(format!("round {round}").as_bytes());
        b
    };
    for round in 0..ROUNDS {
        for (name, bytes) in &files {
            std::fs::write(music.join(format!("{round}-{name}")), copy(round, bytes)).unwrap();
        }
    }
    args.truncate(2);
    args.extend([
        "import".into(),
        dir.path().join("music").display().to_string(),
    ]);
    let mut child = std::process::Command::new(bin)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some packs are in the bucket, well before the end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while objects(&loc).len() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the import uploads nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The node's disk lost at the kill: the bucket alone rebuilds a store holding what the node
    // itself holds once reopened (both apply the logs of commits cut by the kill).
    let rebuilt_dir = dir.path().join("rebuilt");
    rebuild(&loc, &rebuilt_dir);
    let rebuilt = open_with(&rebuilt_dir, None, 1 << 30);
    let rebuilt_list = rebuilt.list(&user("alice")).unwrap_or_default();
    drop(rebuilt);
    let store = open_with(&store_dir, None, 1 << 30);
    let listed = match store.list(&user("alice")) {
        Ok(l) => l,
        Err(lockerstore::Error::UnknownUser(_)) => Vec::new(),
        Err(e) => panic!("{e}"),
    };
    assert!(
        !listed.is_empty() && listed.len() < files.len() * ROUNDS,
        "killed mid-import: {} of {} tracks in",
        listed.len(),
        files.len() * ROUNDS
    );
    for t in &listed {
        let (round, name) = t.key.as_str().split_once('-').unwrap();
        let want = &files.iter().find(|f| f.0 == name).unwrap().1;
        let want = copy(round.parse().unwrap(), want);
        assert_eq!(store.read_track(&user("alice"), &t.key).unwrap(), want);
    }
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(
        rebuilt_list, listed,
        "the rebuilt store holds what the node holds"
    );
    let rebuilt = open_with(&rebuilt_dir, None, 0);
    for t in &listed {
        let (round, name) = t.key.as_str().split_once('-').unwrap();
        let want = copy(
            round.parse().unwrap(),
            &files.iter().find(|f| f.0 == name).unwrap().1,
        );
        assert_eq!(by_ranges(&rebuilt, "alice", t.key.as_str()), want);
    }
    drop(rebuilt);
    // Recovery removed every object no committed metadata names.
    assert_eq!(objects(&loc).len() as u64, store.stats().unwrap().packs);
    eprintln!(
        "kill -9 after {} of {} tracks",
        listed.len(),
        files.len() * ROUNDS
    );
}

/// The journal objects (`meta/*.log`) under the location's prefix.
fn logs(loc: &ObjectLocation) -> usize {
    let (s3, prefix) = bucket(loc);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = object_store::path::Path::from(format!("{prefix}/meta"));
    rt.block_on(async {
        use futures_util::TryStreamExt;
        s3.list(Some(&path))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.location.as_ref().ends_with(".log"))
            .count()
    })
}

/// `lockerstore migrate` (a collapse: one commit per user) and `lockerstore gc` (one commit per
/// pack), each killed with SIGKILL once it has committed twice: the store reopens with every
/// track exact and verified, a rebuild from the bucket alone holds the same, and the job then
/// finishes.
#[test]
fn kill_9_mid_migration_and_mid_gc_loses_nothing() {
    let Some(loc) = location() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let files = fixtures();
    let users: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();
    let mut held: Vec<(String, String, Vec<u8>)> = Vec::new();
    {
        let store = Store::open(
            &node,
            options().chunker(small_chunks()).object_packs(loc.clone()),
        )
        .unwrap();
        for (i, u) in users.iter().enumerate() {
            for (name, bytes) in files.iter().skip(i % 3).step_by(3) {
                store.put(&user(u), &key(name), &bytes[..]).unwrap();
                held.push((u.clone(), name.clone(), bytes.clone()));
            }
        }
    }
    let bin = env!("CARGO_BIN_EXE_lockerstore");
    let run_killed = |args: &[&str]| {
        let before = logs(&loc);
        let mut child = std::process::Command::new(bin)
            .args(["--store", node.to_str().unwrap(), "--deletion-grace", "0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let killed = loop {
            if logs(&loc) >= before + 2 {
                child.kill().unwrap();
                break true;
            }
            if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        child.wait().unwrap();
        killed
    };
    let check = |what: &str, held: &[(String, String, Vec<u8>)]| {
        // The node's disk lost at the kill: the bucket alone gives the same store.
        let rebuilt_dir = dir.path().join(format!("rebuilt-{what}"));
        rebuild(&loc, &rebuilt_dir);
        let rebuilt = open_with(&rebuilt_dir, None, 1 << 30);
        let store = open_with(&node, None, 1 << 30);
        let mut a = store.stats().unwrap();
        let mut b = rebuilt.stats().unwrap();
        (a.cache_bytes, b.cache_bytes) = (None, None);
        assert_eq!(a, b, "{what}: the rebuilt store differs");
        for (u, k, bytes) in held {
            assert_eq!(
                &store.read_track(&user(u), &key(k)).unwrap(),
                bytes,
                "{what}"
            );
            assert_eq!(&by_ranges(&rebuilt, u, k), bytes, "{what}: rebuilt");
        }
        assert!(store.verify().unwrap().is_ok(), "{what}");
        store
    };

    // A collapse to single-master, one user per commit, killed after two.
    let store = open_with(&node, None, 1 << 30);
    store.set_mode(LicenseMode::SingleMaster).unwrap();
    drop(store);
    let killed = run_killed(&["migrate"]);
    let store = check("collapse", &held);
    store.migrate(&mut |_| {}).unwrap();
    assert!(store.audit(false).unwrap().conforming);
    // Expanded back (copies in new packs), then half the tracks deleted: GC has packs to
    // delete and rewrite, one commit each.
    store.set_mode(LicenseMode::PerUserCopy).unwrap();
    store.migrate(&mut |_| {}).unwrap();
    let mut kept = Vec::new();
    for (i, (u, k, b)) in held.drain(..).enumerate() {
        if i % 2 == 0 {
            store.delete(&user(&u), &key(&k)).unwrap();
        } else {
            kept.push((u, k, b));
        }
    }
    held = kept;
    drop(store);
    let killed_gc = run_killed(&["gc", "--threshold", "1.0"]);
    let store = check("gc", &held);
    store.gc(Default::default(), &mut |_| {}).unwrap();
    assert_eq!(store.stats().unwrap().garbage_chunks, 0);
    assert!(store.verify().unwrap().is_ok());
    assert!(store.audit(false).unwrap().conforming);
    eprintln!("killed mid-collapse: {killed}, mid-gc: {killed_gc}");
    assert!(
        killed && killed_gc,
        "a job ended before two of its commits were seen"
    );
}
