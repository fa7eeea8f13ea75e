//! Many nodes on one store: metadata in a real PostgreSQL, packs in a real S3 bucket (SeaweedFS),
//! the scratch servers `.ci/run` starts. Three nodes uploading the same album at once store it
//! once in single-master mode and once per user in per-user-copy mode, and every track reads
//! back exact through every node. Nodes are processes killed with SIGKILL in the middle of an
//! upload, a migration and a GC: the others go on, another node takes the maintenance over once
//! the dead one's lease expires, and afterwards verify is clean, the audit conforms and every
//! acknowledged track reads exact.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/s3.rs"]
mod s3;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lockerstore::{Error, GcOptions, LicenseMode, ObjectLocation, Options, Store};

/// Puts here take well under this: GC may remove garbage three times this old.
const INGEST_LIMIT: Duration = Duration::from_secs(3);
/// A dead node's lease is taken over this long after its last renewal.
const LEASE_TTL: Duration = Duration::from_secs(2);

/// The scratch PostgreSQL (a fresh schema) and a fresh prefix in the scratch bucket; `None`
/// (outside CI) when either server is missing.
fn servers(label: &str) -> Option<(String, ObjectLocation)> {
    let server = pg::server()?;
    let bucket = s3::location(&format!("nodes-{label}"))?;
    Some((pg::fresh_schema(&server, label), bucket))
}

fn node_options(url: &str) -> Options {
    Options::default()
        .postgres(url)
        .chunker(small_chunks())
        .ingest_time_limit(INGEST_LIMIT)
        .lease_ttl(LEASE_TTL)
        .deletion_grace(Duration::ZERO)
}

/// Creates the store through a first node, then opens two more: three nodes, each with a
/// directory of its own.
fn three_nodes(
    url: &str,
    bucket: &ObjectLocation,
    mode: LicenseMode,
    dirs: &[tempfile::TempDir; 3],
) -> [Store; 3] {
    let a = Store::open(
        dirs[0].path(),
        node_options(url).mode(mode).object_packs(bucket.clone()),
    )
    .unwrap();
    assert!(a.is_new());
    // The other nodes need not say where the packs are: the store says it.
    let b = Store::open(dirs[1].path(), node_options(url)).unwrap();
    let c = Store::open(dirs[2].path(), node_options(url)).unwrap();
    assert!(!b.is_new() && !c.is_new());
    [a, b, c]
}

/// An album: the same bytes whoever uploads it.
fn album() -> Vec<(String, Vec<u8>)> {
    (0..5)
        .map(|i| {
            (
                format!("Album/{i:02} Track.mp3"),
                audio(&format!("album track {i}"), 180_000 + i * 37_000),
            )
        })
        .collect()
}

/// Users 1..=3 upload the album at once, each through another node.
fn upload_at_once(nodes: &[Store; 3], album: &[(String, Vec<u8>)]) {
    std::thread::scope(|s| {
        for (n, node) in nodes.iter().enumerate() {
            s.spawn(move || {
                for (k, bytes) in album {
                    node.put(&user(&format!("user{}", n + 1)), &key(k), &bytes[..])
                        .unwrap();
                }
            });
        }
    });
}

fn every_track_reads_exact_through_every_node(
    nodes: &[Store],
    expected: &BTreeMap<(String, String), Vec<u8>>,
) {
    for (i, node) in nodes.iter().enumerate() {
        for ((u, k), bytes) in expected {
            assert_eq!(
                &node.read_track(&user(u), &key(k)).unwrap(),
                bytes,
                "{u}/{k} through node {i}"
            );
        }
    }
}

fn expected_for(
    users: &[&str],
    album: &[(String, Vec<u8>)],
) -> BTreeMap<(String, String), Vec<u8>> {
    users
        .iter()
        .flat_map(|u| {
            album
                .iter()
                .map(|(k, b)| ((u.to_string(), k.clone()), b.clone()))
        })
        .collect()
}

#[test]
fn three_nodes_uploading_one_album_at_once_store_it_once_in_single_master_mode() {
    let Some((url, bucket)) = servers("single") else {
        return;
    };
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let nodes = three_nodes(&url, &bucket, LicenseMode::SingleMaster, &dirs);
    let album = album();
    // One node alone first: what the album costs.
    for (k, bytes) in &album {
        nodes[0].put(&user("user0"), &key(k), &bytes[..]).unwrap();
    }
    let alone = nodes[0].stats().unwrap();
    upload_at_once(&nodes, &album);
    let expected = expected_for(&["user0", "user1", "user2", "user3"], &album);
    for node in &nodes {
        let stats = node.stats().unwrap();
        assert_eq!(stats.tracks, expected.len() as u64);
        assert_eq!(
            stats.physical_bytes, alone.physical_bytes,
            "four users' copies of the album are one stored copy"
        );
        assert_eq!(stats.chunks, alone.chunks);
    }
    every_track_reads_exact_through_every_node(&nodes, &expected);
    for node in &nodes {
        assert!(node.verify().unwrap().is_ok());
        assert!(node.audit(false).unwrap().conforming);
    }
}

#[test]
fn three_nodes_keep_every_users_copy_apart_in_per_user_copy_mode() {
    let Some((url, bucket)) = servers("peruser") else {
        return;
    };
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let nodes = three_nodes(&url, &bucket, LicenseMode::PerUserCopy, &dirs);
    let album = album();
    for (k, bytes) in &album {
        nodes[0].put(&user("user0"), &key(k), &bytes[..]).unwrap();
    }
    let alone = nodes[0].stats().unwrap();
    upload_at_once(&nodes, &album);
    let expected = expected_for(&["user0", "user1", "user2", "user3"], &album);
    let stats = nodes[2].stats().unwrap();
    assert_eq!(
        stats.physical_bytes,
        4 * alone.physical_bytes,
        "each user's copy is their own, whichever node took it"
    );
    let audit = nodes[1].audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    assert_eq!(audit.shared_records_across_users, 0);
    every_track_reads_exact_through_every_node(&nodes, &expected);

    // A licence set on one node is followed by the others' next uploads, and the migration
    // (on a third node) collapses what every node stored.
    nodes[1].set_mode(LicenseMode::SingleMaster).unwrap();
    nodes[2]
        .put(&user("user4"), &key(&album[0].0), &album[0].1[..])
        .unwrap();
    let report = nodes[0].migrate(&mut |_| {}).unwrap();
    assert_eq!(report.tracks_migrated, expected.len() as u64);
    assert_eq!(
        nodes[2].stats().unwrap().physical_bytes,
        alone.physical_bytes
    );
    assert!(nodes[2].audit(false).unwrap().conforming);
}

/// What a node process is doing, for killing it in the middle.
fn cli(url: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockerstore"));
    c.arg("--meta")
        .arg(url)
        .arg("--store")
        .arg(dir)
        .arg("--lease-ttl")
        .arg(LEASE_TTL.as_secs().to_string())
        .arg("--ingest-time-limit")
        .arg(INGEST_LIMIT.as_secs().to_string())
        .arg("--deletion-grace")
        .arg("0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn kill(mut child: Child) {
    // SIGKILL: no destructor, no lease given back, no cleanup.
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Waits until `done` says so, failing after a minute.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nodes_killed_mid_upload_mid_migration_and_mid_gc_lose_only_the_unacknowledged_upload() {
    let Some((url, bucket)) = servers("kills") else {
        return;
    };
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let [a, b, _c] = three_nodes(&url, &bucket, LicenseMode::PerUserCopy, &dirs);
    drop(_c);
    // Enough users that a migration takes many commits (one per user).
    let mut expected = BTreeMap::new();
    for u in 0..40 {
        for t in 0..2 {
            let k = format!("Album/{t:02}.mp3");
            let bytes = audio(&format!("recording {t}"), 150_000 + t * 50_000);
            a.put(&user(&format!("fan{u:02}")), &key(&k), &bytes[..])
                .unwrap();
            expected.insert((format!("fan{u:02}"), k), bytes);
        }
    }

    // 1. A node killed in the middle of an upload: only that upload is lost.
    let mut put = cli(&url, dirs[2].path())
        .args(["put", "fan00", "half-uploaded.mp3", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let big = audio("the upload cut short", 6 << 20);
    put.stdin
        .as_mut()
        .unwrap()
        .write_all(&big[..3 << 20])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(put);
    let err = b
        .read_track(&user("fan00"), &key("half-uploaded.mp3"))
        .unwrap_err();
    assert!(matches!(err, Error::TrackNotFound { .. }), "{err:?}");
    // The others go on meanwhile.
    b.put(&user("fan99"), &key("after.mp3"), &big[..1 << 20])
        .unwrap();
    expected.insert(
        ("fan99".into(), "after.mp3".into()),
        big[..1 << 20].to_vec(),
    );

    // 2. A node killed in the middle of a migration: another takes it over.
    b.set_mode(LicenseMode::SingleMaster).unwrap();
    let all_pending = b.audit(false).unwrap().pending_tracks;
    assert_eq!(all_pending, expected.len() as u64);
    let migrating = cli(&url, dirs[2].path()).arg("migrate").spawn().unwrap();
    wait_for("the migration's first commits", || {
        let pending = b.audit(false).unwrap().pending_tracks;
        pending > 0 && pending < all_pending
    });
    kill(migrating);
    let pending = b.audit(false).unwrap().pending_tracks;
    assert!(pending > 0, "the kill came before the end of the migration");
    // Uploads and reads go on while the dead node's lease runs out.
    a.put(&user("fan98"), &key("during.mp3"), &big[..200_000])
        .unwrap();
    expected.insert(
        ("fan98".into(), "during.mp3".into()),
        big[..200_000].to_vec(),
    );
    let waited = Instant::now();
    b.migrate(&mut |_| {}).unwrap();
    println!("migration taken over after {:?}", waited.elapsed());
    let audit = a.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    assert_eq!(audit.pending_tracks, 0);

    // 3. A node killed in the middle of GC: another takes it over.
    std::thread::sleep(INGEST_LIMIT * 3 + Duration::from_millis(200));
    let before = a.stats().unwrap();
    assert!(before.garbage_chunks > 0, "the per-user copies are garbage");
    let collecting = cli(&url, dirs[2].path())
        .args(["gc", "--threshold", "1"])
        .spawn()
        .unwrap();
    wait_for("GC's first commits", || {
        b.stats().unwrap().garbage_chunks < before.garbage_chunks
    });
    kill(collecting);
    b.put(&user("fan97"), &key("during-gc.mp3"), &big[..300_000])
        .unwrap();
    expected.insert(
        ("fan97".into(), "during-gc.mp3".into()),
        big[..300_000].to_vec(),
    );
    std::thread::sleep(INGEST_LIMIT * 3 + Duration::from_millis(200));
    let report = a.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
    println!("GC taken over: {report:?}");
    assert_eq!(a.stats().unwrap().garbage_chunks, 0);

    // Afterwards: verify is clean, the audit conforms, every acknowledged track reads exact,
    // through every node, one of them opened anew where the dead one ran.
    let c = Store::open(dirs[2].path(), node_options(&url)).unwrap();
    let nodes = [a, b, c];
    for node in &nodes {
        let v = node.verify().unwrap();
        assert!(v.is_ok(), "{:?}", v.problems);
        assert!(node.audit(false).unwrap().conforming);
    }
    every_track_reads_exact_through_every_node(&nodes, &expected);
    assert_eq!(nodes[0].stats().unwrap().tracks, expected.len() as u64);
}

fn pack_objects(loc: &ObjectLocation) -> Vec<String> {
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let (client, prefix) = s3::client(loc);
    let path = object_store::path::Path::from(format!("{prefix}/packs"));
    let mut names: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        client
            .list(Some(&path))
            .map_ok(|m| m.location.filename().unwrap().to_owned())
            .try_collect()
            .await
            .unwrap()
    });
    names.sort();
    names
}

#[test]
fn a_dead_nodes_pack_upload_is_deleted_by_gc_once_no_put_can_still_commit_it() {
    let Some((url, bucket)) = servers("unknown") else {
        return;
    };
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let a = Store::open(
        dirs[0].path(),
        node_options(&url)
            .mode(LicenseMode::SingleMaster)
            .object_packs(bucket.clone()),
    )
    .unwrap();
    let bytes = audio("kept", 400_000);
    a.put(&user("fan"), &key("kept.mp3"), &bytes[..]).unwrap();
    // What a node that died between uploading a pack and committing it leaves: an object no
    // metadata names, under an id its block reserved.
    let name = (0..16u64)
        .map(|id| format!("{id:016x}.pack"))
        .find(|n| !pack_objects(&bucket).contains(n))
        .unwrap();
    let (client, prefix) = s3::client(&bucket);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(object_store::ObjectStoreExt::put(
            &client,
            &object_store::path::Path::from(format!("{prefix}/packs/{name}")),
            audio("a dead upload", 100_000).into(),
        ))
        .unwrap();
    // Another node opening keeps it: it may be an upload whose commit is to come.
    let b = Store::open(dirs[1].path(), node_options(&url)).unwrap();
    assert_eq!(b.recovery().unknown_packs_kept, 1, "{:?}", b.recovery());
    let gc = b.gc(GcOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(gc.unknown_packs_deleted, 0, "too young: {gc:?}");
    assert!(pack_objects(&bucket).contains(&name));
    // Once no put that began before the first GC's mark can still commit (three times the ingest
    // time limit), the next GC deletes it.
    std::thread::sleep(INGEST_LIMIT * 3 + Duration::from_secs(2));
    let gc = a.gc(GcOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(gc.unknown_packs_deleted, 1, "{gc:?}");
    assert!(!pack_objects(&bucket).contains(&name));
    assert_eq!(b.read_track(&user("fan"), &key("kept.mp3")).unwrap(), bytes);
    assert!(b.verify().unwrap().is_ok());
}

/// Migrations both ways, each killed (SIGKILL) at another point of its work and finished by
/// another node once the lease expired: after each, every track reads exact, verify is clean
/// and the audit conforms.
#[test]
fn migrations_killed_at_several_points_both_ways_are_finished_by_another_node() {
    let Some((url, bucket)) = servers("kill-loop") else {
        return;
    };
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let a = Store::open(
        dirs[0].path(),
        node_options(&url)
            .mode(LicenseMode::PerUserCopy)
            .object_packs(bucket.clone()),
    )
    .unwrap();
    let mut expected = BTreeMap::new();
    // Many users: a collapse commits one user at a time.
    for u in 0..120 {
        let k = "Album/01.mp3".to_string();
        let bytes = audio("one song", 200_000);
        a.put(&user(&format!("fan{u:03}")), &key(&k), &bytes[..])
            .unwrap();
        expected.insert((format!("fan{u:03}"), k), bytes);
    }
    let total = expected.len() as u64;
    let mut killed_midway = 0;
    // The share of the migration's work (in live chunk records) done before the kill, per run.
    for (run, share) in [0.1, 0.5, 0.8, 0.3].into_iter().enumerate() {
        let mode = if run % 2 == 0 {
            LicenseMode::SingleMaster
        } else {
            LicenseMode::PerUserCopy
        };
        let before = a.stats().unwrap().chunks as f64;
        let after = a.what_if(mode).unwrap().chunks as f64;
        a.set_mode(mode).unwrap();
        assert_eq!(a.audit(false).unwrap().pending_tracks, total);
        let migrating = cli(&url, dirs[1].path()).arg("migrate").spawn().unwrap();
        let target = before + share * (after - before);
        wait_for("the migration to reach its share", || {
            let now = a.stats().unwrap().chunks as f64;
            (now - before).abs() >= (target - before).abs()
        });
        kill(migrating);
        let left = a.audit(false).unwrap().pending_tracks;
        println!("run {run} ({mode}): killed with {left} of {total} tracks pending");
        killed_midway += u32::from(left > 0);
        a.migrate(&mut |_| {}).unwrap();
        let audit = a.audit(false).unwrap();
        assert!(audit.conforming, "run {run}: {audit:?}");
        let v = a.verify().unwrap();
        assert!(v.is_ok(), "run {run}: {:?}", v.problems);
        every_track_reads_exact_through_every_node(std::slice::from_ref(&a), &expected);
    }
    assert!(
        killed_midway >= 2,
        "most kills came in the middle of a migration"
    );
}
