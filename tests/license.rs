//! The license flip: what-if, migration both ways, audit, GC, and all of it under concurrency.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use lockerstore::corpus::{Corpus, CorpusSpec, SplitMix};
use lockerstore::vfs::{Mapped, StdVfs, Vfs, VfsFile};
use lockerstore::{Error, GcOptions, LicenseMode, Options, Store, TrackKey, UserId};

fn small_corpus() -> Corpus {
    Corpus::generate(CorpusSpec {
        seed: 5,
        users: 8,
        recordings: 6,
        album_size: 3,
        tracks_per_user: 3,
        min_audio: 150_000,
        max_audio: 600_000,
    })
}

fn ingest(store: &Store, corpus: &Corpus) {
    for (i, up) in corpus.uploads.iter().enumerate() {
        store
            .put(&user(&up.user), &key(&up.key), &corpus.bytes(i)[..])
            .unwrap();
    }
}

fn check_all(store: &Store, corpus: &Corpus) {
    for (i, up) in corpus.uploads.iter().enumerate() {
        assert_eq!(
            store.read_track(&user(&up.user), &key(&up.key)).unwrap(),
            corpus.bytes(i),
            "{}/{}",
            up.user,
            up.key
        );
    }
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}

fn within_1pct(predicted: u64, actual: u64) -> bool {
    let d = predicted.abs_diff(actual) as f64;
    d <= 0.01 * actual.max(1) as f64
}

#[test]
fn flip_both_ways_matches_the_prediction_and_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    let corpus = small_corpus();
    ingest(&store, &corpus);
    assert!(store.audit(false).unwrap().conforming);
    let before = store.stats().unwrap();

    // Collapse.
    store.set_mode(LicenseMode::SingleMaster).unwrap();
    let audit = store.audit(false).unwrap();
    assert!(!audit.conforming);
    assert_eq!(audit.pending_tracks, corpus.uploads.len() as u64);
    assert!(audit.duplicate_records > 0);
    let w = store.what_if(LicenseMode::SingleMaster).unwrap();
    assert_eq!(w.bytes_to_write, 0, "collapse promotes, never copies");
    let mut calls = 0;
    let rep = store.migrate(&mut |_| calls += 1).unwrap();
    assert!(calls > 0);
    assert_eq!(rep.tracks_migrated, corpus.uploads.len() as u64);
    assert_eq!(rep.bytes_written, 0);
    assert!(rep.records_promoted > 0);
    let after = store.stats().unwrap();
    assert!(
        within_1pct(w.physical_bytes, after.physical_bytes),
        "{w:?} vs {after:?}"
    );
    assert_eq!(w.chunks, after.chunks);
    assert!(within_1pct(
        w.bytes_to_free,
        before.physical_bytes - after.physical_bytes
    ));
    assert!(
        after.physical_bytes * 3 < before.physical_bytes * 2,
        "{before:?} {after:?}"
    );
    let audit = store.audit(true).unwrap();
    assert!(audit.conforming, "{audit:?}");
    assert_eq!(audit.pending_tracks, 0);
    assert_eq!(audit.duplicate_records, 0);
    assert!(audit.shared_records_across_users > 0);
    assert!(audit.records.iter().any(|r| r.users.len() > 1));
    check_all(&store, &corpus);
    assert_eq!(
        store.migrate(&mut |_| {}).unwrap().tracks_migrated,
        0,
        "idempotent"
    );

    // GC gives the duplicates' space back.
    let g = store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
    assert!(g.entries_removed > 0);
    assert!(g.bytes_reclaimed() > 0);
    let s = store.stats().unwrap();
    assert_eq!(s.garbage_bytes, 0, "{s:?}");
    assert_eq!(s.garbage_chunks, 0);
    assert!(s.pack_bytes < before.pack_bytes);
    check_all(&store, &corpus);

    // Expand back.
    store.set_mode(LicenseMode::PerUserCopy).unwrap();
    let audit = store.audit(false).unwrap();
    assert!(!audit.conforming);
    assert!(audit.shared_records_across_users > 0);
    let w = store.what_if(LicenseMode::PerUserCopy).unwrap();
    assert!(w.bytes_to_write > 0);
    let rep = store.migrate(&mut |_| {}).unwrap();
    let s = store.stats().unwrap();
    assert!(
        within_1pct(w.physical_bytes, s.physical_bytes),
        "{w:?} vs {s:?}"
    );
    assert!(within_1pct(w.bytes_to_write, rep.bytes_written));
    assert_eq!(w.chunks, s.chunks);
    // The per-user layout costs what it cost before the round trip (same chunks per user).
    assert!(
        within_1pct(before.physical_bytes, s.physical_bytes),
        "{before:?} {s:?}"
    );
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    assert_eq!(audit.shared_records_across_users, 0);
    check_all(&store, &corpus);
    store.gc(GcOptions::default(), &mut |_| {}).unwrap();
    check_all(&store, &corpus);

    // Everything survives a reopen.
    drop(store);
    let store = open(dir.path(), LicenseMode::SingleMaster);
    assert_eq!(store.mode(), LicenseMode::PerUserCopy);
    assert!(store.audit(false).unwrap().conforming);
    check_all(&store, &corpus);
}

#[test]
fn gc_reclaims_deleted_tracks_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    let songs: Vec<Vec<u8>> = (0..8).map(|i| audio(&format!("g{i}"), 700_000)).collect();
    for (i, s) in songs.iter().enumerate() {
        store.put(&user("a"), &key(&i.to_string()), &s[..]).unwrap();
    }
    let full = store.stats().unwrap();
    for i in 0..6 {
        store.delete(&user("a"), &key(&i.to_string())).unwrap();
    }
    let g = store.gc(GcOptions::default(), &mut |_| {}).unwrap();
    let s = store.stats().unwrap();
    assert!(g.packs_deleted > 0, "{g:?}");
    assert!(s.pack_bytes < full.pack_bytes / 2, "{s:?}");
    assert_eq!(s.garbage_chunks, 0);
    for (i, song) in songs.iter().enumerate().skip(6) {
        assert_eq!(
            &store.read_track(&user("a"), &key(&i.to_string())).unwrap(),
            song
        );
    }
    assert!(store.verify().unwrap().is_ok());
    // A freed chunk is written again, not resurrected from freed bytes.
    let again = store.put(&user("b"), &key("0"), &songs[0][..]).unwrap();
    assert_eq!(again.new_bytes, songs[0].len() as u64);
    assert_eq!(store.read_track(&user("b"), &key("0")).unwrap(), songs[0]);
    assert!(store.verify().unwrap().is_ok());
}

/// A file system that reports little free space.
#[derive(Debug)]
struct TightDisk {
    free: u64,
}

impl Vfs for TightDisk {
    fn create_dir_all(&self, p: &Path) -> std::io::Result<()> {
        StdVfs.create_dir_all(p)
    }
    fn create_new(&self, p: &Path) -> std::io::Result<Arc<dyn VfsFile>> {
        StdVfs.create_new(p)
    }
    fn open_rw(&self, p: &Path, create: bool) -> std::io::Result<Arc<dyn VfsFile>> {
        StdVfs.open_rw(p, create)
    }
    fn read(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        StdVfs.read(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        StdVfs.rename(a, b)
    }
    fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        StdVfs.remove_file(p)
    }
    fn sync_dir(&self, p: &Path) -> std::io::Result<()> {
        StdVfs.sync_dir(p)
    }
    fn list_dir(&self, p: &Path) -> std::io::Result<Vec<String>> {
        StdVfs.list_dir(p)
    }
    fn exists(&self, p: &Path) -> bool {
        StdVfs.exists(p)
    }
    unsafe fn map(&self, p: &Path, len: u64) -> std::io::Result<Arc<dyn Mapped>> {
        // SAFETY: passes this function's own contract on.
        unsafe { StdVfs.map(p, len) }
    }
    fn try_lock(
        &self,
        p: &Path,
    ) -> std::io::Result<Option<Box<dyn Send + Sync + std::fmt::Debug>>> {
        StdVfs.try_lock(p)
    }
    fn available_space(&self, _p: &Path) -> std::io::Result<u64> {
        Ok(self.free)
    }
}

#[test]
fn expanding_refuses_up_front_when_the_copies_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = small_corpus();
    {
        let store = open(dir.path(), LicenseMode::SingleMaster);
        ingest(&store, &corpus);
        store.set_mode(LicenseMode::PerUserCopy).unwrap();
    }
    let tight = Store::open(
        dir.path(),
        Options::default().vfs(Arc::new(TightDisk { free: 1_000_000 })),
    )
    .unwrap();
    let before = tight.stats().unwrap();
    let audit_before = tight.audit(false).unwrap();
    let w = tight.what_if(LicenseMode::PerUserCopy).unwrap();
    assert!(w.bytes_to_write > 1_000_000);
    match tight.migrate(&mut |_| {}) {
        Err(Error::InsufficientSpace { needed, available }) => {
            assert_eq!(available, 1_000_000);
            assert_eq!(needed, w.bytes_to_write + w.pack_overhead_bytes);
        }
        other => panic!("expected InsufficientSpace, got {other:?}"),
    }
    assert_eq!(tight.stats().unwrap(), before);
    assert_eq!(tight.audit(false).unwrap(), audit_before);
    drop(tight);
    // With room, the same migration goes through.
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    store.migrate(&mut |_| {}).unwrap();
    assert!(store.audit(false).unwrap().conforming);
    check_all(&store, &corpus);
}

const ROUNDS: u64 = 16;
/// Worker operations the stress test waits for at least.
const MIN_OPS: u64 = 200;

/// Checks what verify can check while tracks change under it: the counters, refcounts and pack
/// rows of one snapshot agree (track reads may race with deletes and are checked at the end).
fn accounting_is_consistent(store: &Store, after: &str, round: u64) {
    let v = store.verify().unwrap();
    let bad: Vec<_> = v
        .problems
        .iter()
        .filter(|p| !p.starts_with("track "))
        .collect();
    assert!(bad.is_empty(), "after {after} in round {round}: {bad:?}");
}

#[test]
fn ingest_read_delete_go_on_while_modes_flip_migrations_and_gc_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    let pool: Vec<Vec<u8>> = (0..6)
        .map(|i| audio(&format!("p{i}"), 300_000 + i * 50_000))
        .collect();
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let maintenance_runs = AtomicU64::new(0);
    // What every worker last acknowledged, per (user, key): Some(content index) or None.
    let acked: Vec<HashMap<String, Option<usize>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|t| {
                let (store, pool, stop, ops) = (store.clone(), &pool, &stop, &ops);
                s.spawn(move || {
                    let u = UserId::new(&format!("w{t}")).unwrap();
                    let mut rng = SplitMix::new(t as u64);
                    let mut mine: HashMap<String, Option<usize>> = HashMap::new();
                    while !stop.load(Ordering::Relaxed) {
                        let k = format!("k{}", rng.range(0, 5));
                        let tk = TrackKey::new(&k).unwrap();
                        match rng.range(0, 10) {
                            0..=4 => {
                                let c = rng.range(0, pool.len());
                                store.put(&u, &tk, &pool[c][..]).unwrap();
                                mine.insert(k, Some(c));
                            }
                            5 | 6 => match store.delete(&u, &tk) {
                                Ok(()) => {
                                    mine.insert(k, None);
                                }
                                Err(Error::TrackNotFound { .. }) | Err(Error::UnknownUser(_)) => {}
                                Err(e) => panic!("delete: {e}"),
                            },
                            _ => {
                                if let Some(Some(c)) = mine.get(&k) {
                                    assert_eq!(&store.read_track(&u, &tk).unwrap(), &pool[*c]);
                                }
                            }
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    mine
                })
            })
            .collect();
        let admin = {
            let (store, stop, runs, ops) = (store.clone(), &stop, &maintenance_runs, &ops);
            s.spawn(move || {
                // Stops the workers even if this thread panics, so the test fails instead of hanging.
                struct StopOnDrop<'a>(&'a AtomicBool);
                impl Drop for StopOnDrop<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                let _stop = StopOnDrop(stop);
                for round in 0..ROUNDS {
                    let mode = if round % 2 == 0 {
                        LicenseMode::SingleMaster
                    } else {
                        LicenseMode::PerUserCopy
                    };
                    store.set_mode(mode).unwrap();
                    store.migrate(&mut |_| {}).unwrap();
                    accounting_is_consistent(&store, "migrate", round);
                    store.gc(GcOptions { threshold: 0.9 }, &mut |_| {}).unwrap();
                    accounting_is_consistent(&store, "gc", round);
                    runs.fetch_add(1, Ordering::Relaxed);
                }
                // On a loaded machine the workers may lag: let them reach a floor of operations
                // (the last rounds' effects included) before stopping them.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                while ops.load(Ordering::Relaxed) < MIN_OPS && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        admin.join().unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(maintenance_runs.load(Ordering::Relaxed), ROUNDS);
    assert!(
        ops.load(Ordering::Relaxed) >= MIN_OPS,
        "{} ops",
        ops.load(Ordering::Relaxed)
    );
    // Quiescent now: one more migration brings everything in line.
    store.migrate(&mut |_| {}).unwrap();
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    for (t, mine) in acked.iter().enumerate() {
        let u = UserId::new(&format!("w{t}")).unwrap();
        for (k, c) in mine {
            let got = store.read_track(&u, &TrackKey::new(k).unwrap());
            match c {
                Some(c) => assert_eq!(&got.unwrap(), &pool[*c]),
                None => assert!(matches!(got, Err(Error::TrackNotFound { .. }))),
            }
        }
    }
    store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.stats().unwrap().garbage_bytes, 0);
}
