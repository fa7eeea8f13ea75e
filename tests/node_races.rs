//! Races between nodes sharing one store (PostgreSQL and SeaweedFS, as `.ci/run` starts them),
//! each found by a review with a probe and kept as a regression test: a collapse on one node
//! promoting entries another node's put found; a licence that ends by the clock while a put
//! on another node runs; a commit held up past the ingest time limit while GC sweeps unknown
//! packs. In each, the put either stores its track exactly or fails with a typed error that
//! says to upload again; nothing acknowledged is lost and the audit conforms.
mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/s3.rs"]
mod s3;

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use lockerstore::{
    Error, Licence, LicenseMode, ObjectLocation, Options, PutOptions, RightsHolder, Store,
};

fn servers(label: &str) -> Option<(String, ObjectLocation)> {
    let server = pg::server()?;
    let bucket = s3::location(&format!("race-{label}"))?;
    Some((pg::fresh_schema(&server, label), bucket))
}

fn node_options(url: &str) -> Options {
    Options::default()
        .postgres(url)
        .chunker(small_chunks())
        .ingest_time_limit(Duration::from_secs(60))
        .lease_ttl(Duration::from_secs(2))
}

/// A node on a directory of its own.
fn open_node(options: Options) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options).unwrap();
    (dir, store)
}

/// Gives `data`, then blocks until told to finish, then EOF.
struct Gate {
    data: Vec<u8>,
    pos: usize,
    gate: Option<mpsc::Receiver<()>>,
}

impl Gate {
    fn new(data: Vec<u8>, gate: mpsc::Receiver<()>) -> Gate {
        Gate {
            data,
            pos: 0,
            gate: Some(gate),
        }
    }
}

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.data.len() {
            let n = buf.len().min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        if let Some(g) = self.gate.take() {
            let _ = g.recv();
        }
        Ok(0)
    }
}

/// Node B's put (user u, holder Sony, per-user copy) finds user u's entries that u's EMI track
/// holds; node A's migration collapses the EMI track (EMI licensed single-master) and promotes
/// those entries (removes them from u's domain). The put's commit sees it and refuses with
/// `ConcurrentChange` (upload again), never a false `Corrupted`.
#[test]
fn a_put_whose_found_entries_another_node_promoted_is_refused_with_a_typed_error() {
    let Some((url, bucket)) = servers("promote") else {
        return;
    };
    let (_da, a) = open_node(
        node_options(&url)
            .mode(LicenseMode::PerUserCopy)
            .object_packs(bucket),
    );
    let (_db, b) = open_node(node_options(&url));
    let u = user("u");
    let bytes = audio("shared content", 40 << 20); // several 8 MiB regions looked up before the gate
    a.put_with(
        &u,
        &key("emi.mp3"),
        &bytes[..],
        &PutOptions::default().rights_holder(RightsHolder::new("EMI").unwrap()),
    )
    .unwrap();
    a.set_licence(
        &RightsHolder::new("EMI").unwrap(),
        Some(Licence::new(LicenseMode::SingleMaster)),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let put = s.spawn(|| {
            b.put_with(
                &u,
                &key("sony.mp3"),
                Gate::new(bytes.clone(), rx),
                &PutOptions::default().rights_holder(RightsHolder::new("Sony").unwrap()),
            )
        });
        std::thread::sleep(Duration::from_secs(8)); // B has looked its first regions up
        let rep = a.migrate(&mut |_| {}).unwrap();
        eprintln!("migration on A: {rep:?}");
        tx.send(()).unwrap();
        let out = put.join().unwrap();
        eprintln!("B's put: {out:?}");
        match out {
            Ok(_) => assert_eq!(b.read_track(&u, &key("sony.mp3")).unwrap(), bytes),
            Err(Error::ConcurrentChange(_)) => {
                let e = b.read_track(&u, &key("sony.mp3")).unwrap_err();
                assert!(matches!(e, Error::TrackNotFound { .. }), "{e:?}");
            }
            Err(e) => panic!("B's put must succeed or ask for the upload again: {e:?}"),
        }
    });
    assert!(a.verify().unwrap().is_ok());
}

/// A licence entry that ends by the clock changes no stored version: a put on another node
/// that decided "shared" before the end must not commit its shared track after it (the commit
/// re-decides the domain with the stored licences at its own moment).
#[test]
fn a_licence_that_ends_by_the_clock_during_another_nodes_put_gets_no_shared_track() {
    let Some((url, bucket)) = servers("until") else {
        return;
    };
    let (_da, a) = open_node(
        node_options(&url)
            .mode(LicenseMode::PerUserCopy)
            .object_packs(bucket),
    );
    let (_db, b) = open_node(node_options(&url));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let emi = RightsHolder::new("EMI").unwrap();
    a.set_licence(
        &emi,
        Some(Licence::new(LicenseMode::SingleMaster).until(now + 3)),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let bytes = audio("emi track", 400_000);
    std::thread::scope(|s| {
        let put = s.spawn(|| {
            b.put_with(
                &user("u"),
                &key("emi.mp3"),
                Gate::new(bytes.clone(), rx),
                &PutOptions::default().rights_holder(emi.clone()),
            )
        });
        std::thread::sleep(Duration::from_secs(5)); // the licence has ended
        let rep = a.migrate(&mut |_| {}).unwrap();
        eprintln!("migration on A (after the end): {rep:?}");
        tx.send(()).unwrap();
        let out = put.join().unwrap();
        eprintln!("B's put: {out:?}");
        assert!(
            matches!(out, Err(Error::PolicyChanged)),
            "the put decided shared before the end: refused, {out:?}"
        );
    });
    let audit = a.audit(false).unwrap();
    eprintln!(
        "audit: conforming={} pending_tracks={} shared_domain_records={}",
        audit.conforming, audit.pending_tracks, audit.shared_domain_records
    );
    assert!(
        audit.conforming,
        "a track committed shared after its licence ended: {audit:?}"
    );
}

/// A put's commit held up by a row lock (another session) while GC on another node marks and,
/// later, sweeps unknown packs: the commit's statements time out after the ingest time limit
/// and the limit is checked inside its transaction, so the put either stores its track (readable
/// from a fresh node) or fails; never acknowledged with its pack object swept.
#[test]
fn a_commit_held_past_the_ingest_time_limit_never_loses_an_acknowledged_track() {
    let Some((url, bucket)) = servers("late") else {
        return;
    };
    let limit = Duration::from_secs(2);
    let opts = |u: &str| {
        node_options(u)
            .ingest_time_limit(limit)
            .deletion_grace(Duration::ZERO)
    };
    let (_da, a) = open_node(
        opts(&url)
            .mode(LicenseMode::SingleMaster)
            .object_packs(bucket),
    );
    let (_db, b) = open_node(opts(&url));
    a.put(&user("u0"), &key("first.mp3"), &audio("first", 100_000)[..])
        .unwrap(); // counter rows exist
    let mut locker = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut txn = locker.transaction().unwrap();
    txn.batch_execute("SELECT * FROM ls_counters WHERE key = 'logical_bytes' FOR UPDATE")
        .unwrap();
    let bytes = audio("late", 500_000);
    std::thread::scope(|s| {
        let p = s.spawn(|| b.put(&user("u"), &key("late.mp3"), &bytes[..]));
        std::thread::sleep(Duration::from_secs(1));
        a.gc(lockerstore::GcOptions::default(), &mut |_| {})
            .unwrap(); // mark above the put's pack id
        std::thread::sleep(limit * 3 + Duration::from_secs(2));
        let gc = a
            .gc(lockerstore::GcOptions::default(), &mut |_| {})
            .unwrap();
        eprintln!("GC on A: {gc:?}");
        txn.rollback().unwrap();
        let out = p.join().unwrap();
        eprintln!("the put: {out:?}");
        let (_dc, c) = open_node(opts(&url));
        let read = c.read_track(&user("u"), &key("late.mp3"));
        match out {
            Ok(_) => assert_eq!(read.unwrap(), bytes, "an acknowledged track reads back"),
            Err(_) => assert!(
                matches!(read, Err(Error::TrackNotFound { .. })),
                "a failed put stores nothing: {read:?}"
            ),
        }
        assert!(c.verify().unwrap().is_ok());
    });
}
