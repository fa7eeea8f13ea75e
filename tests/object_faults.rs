//! Faults in the bucket's requests, at every request of every kind: a put, a GC, a migration
//! that expands, and reads, each run with its Nth PUT, GET, HEAD, LIST or DELETE failing, or
//! with the bucket gone from the Nth request on (the node's link died: nothing after reaches
//! it). Afterwards the store reopens on the healthy bucket and must hold exactly the acknowledged
//! tracks, read them exact, verify clean, and keep no object without a pack row.
//!
//! The bucket here is `object_store`'s in-memory store: a **mock**, for speed, beside the real
//! server of tests/object_store.rs (SeaweedFS). The faults wrap it ([`Faulty`]).

mod common;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use lockerstore::{LicenseMode, ObjectLocation, Options, Store};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Which request fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Put,
    Get,
    Head,
    List,
    Delete,
}

/// How it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Only the Nth request of its kind fails.
    Once,
    /// The Nth request of its kind and every request after it, of any kind, fail.
    Dead,
    /// The Nth PUT reaches the bucket, but its answer is lost: the client sees an error for
    /// a write that landed.
    Lost,
    /// The Nth request of its kind and every request after it, of any kind, take 30 ms more
    /// (the link became slow): nothing may change but the time.
    Slow,
    /// The Nth PUT and every later PUT fail; other requests work (a bucket gone read-only).
    PutsDead,
}

/// The mock bucket with faults: counts requests per kind and fails as told.
#[derive(Debug)]
struct Faulty {
    inner: Arc<InMemory>,
    state: Arc<Plan>,
    /// Turn create-only PUTs into overwrites, as Garage does (SERVICE.md).
    ignore_create: bool,
}

/// What fails, and what was counted.
#[derive(Debug)]
struct Plan {
    counts: Mutex<HashMap<Kind, u64>>,
    fault: Option<(Kind, u64, Fault)>,
    dead: std::sync::atomic::AtomicBool,
    slow: std::sync::atomic::AtomicBool,
    failed: AtomicU64,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl Faulty {
    fn new(inner: Arc<InMemory>, fault: Option<(Kind, u64, Fault)>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            ignore_create: false,
            state: Arc::new(Plan {
                counts: Mutex::default(),
                fault,
                dead: Default::default(),
                slow: Default::default(),
                failed: AtomicU64::new(0),
            }),
        })
    }

    fn request(&self, kind: Kind) -> object_store::Result<()> {
        self.state.request(kind)
    }

    /// The same, on a bucket that ignores create-only PUTs.
    fn ignoring_create(inner: Arc<InMemory>, fault: Option<(Kind, u64, Fault)>) -> Arc<Faulty> {
        let f = Faulty::new(inner, fault);
        Arc::new(Faulty {
            inner: f.inner.clone(),
            state: f.state.clone(),
            ignore_create: true,
        })
    }
}

impl Plan {
    /// Counts a PUT; `Err` when it must fail before reaching the bucket, `Ok(true)` when it
    /// reaches it but its answer must be lost.
    fn put_request(&self) -> object_store::Result<bool> {
        self.request(Kind::Put)?;
        let n = self.counts.lock().unwrap()[&Kind::Put];
        if self.fault == Some((Kind::Put, n, Fault::Lost)) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Ok(true);
        }
        Ok(false)
    }

    /// Counts a request; `Err` when it must fail.
    fn request(&self, kind: Kind) -> object_store::Result<()> {
        let n = {
            let mut c = self.counts.lock().unwrap();
            let n = c.entry(kind).or_insert(0);
            *n += 1;
            *n
        };
        if let Some((Kind::Put, at, Fault::PutsDead)) = self.fault {
            if kind == Kind::Put && n >= at {
                self.failed.fetch_add(1, Ordering::SeqCst);
                return Err(object_store::Error::Generic {
                    store: "faulty",
                    source: format!("injected failure of PUT {n} (PUTs dead from {at})").into(),
                });
            }
            return Ok(());
        }
        if let Some((k, at, Fault::Slow)) = self.fault {
            if k == kind && at == n {
                self.slow.store(true, Ordering::SeqCst);
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
            if self.slow.load(Ordering::SeqCst) {
                // Blocks one of the bucket runtime's threads, as a slow link holds a request.
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            return Ok(());
        }
        let fail = self.dead.load(Ordering::SeqCst)
            || match self.fault {
                Some((k, at, fault)) if k == kind && at == n && fault != Fault::Lost => {
                    if fault == Fault::Dead {
                        self.dead.store(true, Ordering::SeqCst);
                    }
                    true
                }
                _ => false,
            };
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("injected failure of {kind:?} request {n}").into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let lose_answer = self.state.put_request()?;
        if self.ignore_create {
            opts.mode = object_store::PutMode::Overwrite;
        }
        let result = self.inner.put_opts(location, payload, opts).await;
        if lose_answer {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected loss of a PUT's answer (the PUT landed)".into(),
            });
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.request(Kind::Put)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.request(if options.head { Kind::Head } else { Kind::Get })?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.request(Kind::Get)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Each deletion is one DELETE request.
        let state = self.state.clone();
        let inner = self.inner.clone();
        locations
            .then(move |l| {
                let state = state.clone();
                let inner = inner.clone();
                async move {
                    let l = l?;
                    state.request(Kind::Delete)?;
                    object_store::ObjectStoreExt::delete(inner.as_ref(), &l).await?;
                    Ok(l)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.request(Kind::List) {
            return futures_util::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.request(Kind::List) {
            return futures_util::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.request(Kind::List)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.request(Kind::Put)?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Options with deleted packs' objects deleted at once (no grace period), so a test can count
/// the bucket's objects; the grace period has its own test.
fn options() -> Options {
    Options::default().deletion_grace(std::time::Duration::ZERO)
}

fn location() -> ObjectLocation {
    ObjectLocation::new("s3://mock/store")
}

/// Opens on `bucket` with a cache that holds everything, so the requests a job makes do not
/// depend on the order of its reads (the cache's own behaviour is tested apart, below).
fn open_on(
    dir: &std::path::Path,
    bucket: Arc<dyn ObjectStore>,
    create: bool,
) -> lockerstore::Result<Store> {
    let mut o = options()
        .chunker(small_chunks())
        .cache_bytes(1 << 30)
        .object_client(bucket);
    if create {
        o = o.object_packs(location());
    }
    Store::open(dir, o)
}

/// The pack objects in the mock bucket.
fn objects(bucket: &Arc<InMemory>) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        bucket
            .list(Some(&Path::from("store/packs")))
            .collect::<Vec<_>>()
            .await
            .len()
    })
}

/// Reopens on the healthy bucket, with the cache dropped (every read then comes from the
/// bucket), and checks the store holds exactly `acked` (user, key, bytes) and nothing else.
fn check_after(
    dir: &std::path::Path,
    bucket: &Arc<InMemory>,
    acked: &[(String, String, Vec<u8>)],
    all_keys: &[(String, String)],
    what: &str,
) {
    drop_cache(dir);
    let store = open_on(dir, Faulty::new(bucket.clone(), None), false)
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    for (u, k) in all_keys {
        let want = acked.iter().find(|(au, ak, _)| au == u && ak == k);
        match (store.read_track(&user(u), &key(k)), want) {
            (Ok(got), Some((_, _, bytes))) => assert_eq!(&got, bytes, "{what}: {u}/{k}"),
            (
                Err(lockerstore::Error::TrackNotFound { .. } | lockerstore::Error::UnknownUser(_)),
                None,
            ) => {}
            (got, want) => panic!(
                "{what}: {u}/{k}: got {:?}, acknowledged: {}",
                got.map(|b| b.len()),
                want.is_some()
            ),
        }
    }
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{what}: {report:?}");
    assert_eq!(
        objects(bucket) as u64,
        store.stats().unwrap().packs,
        "{what}: an object without a pack row survived open"
    );
    let stats = comparable(store.stats().unwrap());
    drop(store);
    // The node's disk lost: the bucket alone rebuilds the same store.
    let fresh = tempfile::tempdir().unwrap();
    rebuild_on(fresh.path(), Faulty::new(bucket.clone(), None))
        .unwrap_or_else(|e| panic!("{what}: rebuild: {e}"));
    let rebuilt = open_on(fresh.path(), Faulty::new(bucket.clone(), None), false)
        .unwrap_or_else(|e| panic!("{what}: open after rebuild: {e}"));
    assert_eq!(
        comparable(rebuilt.stats().unwrap()),
        stats,
        "{what}: rebuilt"
    );
    for (u, k, bytes) in acked {
        assert_eq!(
            &rebuilt.read_track(&user(u), &key(k)).unwrap(),
            bytes,
            "{what}: rebuilt {u}/{k}"
        );
    }
}

/// Rebuilds the store of the mock bucket's `store` prefix in `dir`.
fn rebuild_on(
    dir: &std::path::Path,
    bucket: Arc<dyn ObjectStore>,
) -> lockerstore::Result<lockerstore::RebuildReport> {
    Store::rebuild(
        dir,
        &options()
            .chunker(small_chunks())
            .object_packs(location())
            .object_client(bucket),
    )
}

/// The figures of a store, without those of the node (the cache, the filter's memory).
fn comparable(mut s: lockerstore::Stats) -> lockerstore::Stats {
    s.cache_bytes = None;
    s.filter_bytes = 0;
    s
}

fn songs() -> Vec<(String, String, Vec<u8>)> {
    vec![
        ("alice".into(), "a".into(), audio("a", 150_000)),
        ("alice".into(), "b".into(), audio("b", 90_000)),
        ("bob".into(), "a".into(), audio("a", 150_000)),
        ("bob".into(), "c".into(), audio("c", 120_000)),
    ]
}

/// The requests of each kind that `run` makes on a healthy mock bucket, so the fault runs
/// cover each of them and no run injects nothing.
fn requests_of(run: impl Fn(Arc<Faulty>)) -> HashMap<Kind, u64> {
    let faulty = Faulty::new(Arc::new(InMemory::new()), None);
    run(faulty.clone());
    faulty.state.counts.lock().unwrap().clone()
}

#[test]
fn puts_with_a_failing_or_dying_bucket_at_every_request() {
    let tracks = songs();
    let keys: Vec<(String, String)> = tracks
        .iter()
        .map(|(u, k, _)| (u.clone(), k.clone()))
        .collect();
    let counts = requests_of(|bucket| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_on(dir.path(), bucket, true).unwrap();
        for (u, k, bytes) in &tracks {
            store.put(&user(u), &key(k), &bytes[..]).unwrap();
        }
    });
    assert!(counts[&Kind::Put] >= 4, "{counts:?}");
    eprintln!("puts: requests of a healthy run {counts:?}");
    let mut runs = 0;
    for (&kind, &n) in &counts {
        let faults: &[Fault] = if kind == Kind::Put {
            &[Fault::Once, Fault::Dead, Fault::Lost]
        } else {
            &[Fault::Once, Fault::Dead]
        };
        for &fault in faults {
            for at in 1..=n {
                let dir = tempfile::tempdir().unwrap();
                let bucket = Arc::new(InMemory::new());
                let faulty = Faulty::new(bucket.clone(), Some((kind, at, fault)));
                let what = format!("{kind:?} {fault:?} at request {at} of {n}");
                let Ok(store) = open_on(dir.path(), faulty.clone(), true) else {
                    // Creation itself hit the fault: nothing was acknowledged.
                    assert!(faulty.state.failed.load(Ordering::SeqCst) > 0, "{what}");
                    runs += 1;
                    continue;
                };
                let mut acked = Vec::new();
                for (u, k, bytes) in &tracks {
                    if store.put(&user(u), &key(k), &bytes[..]).is_ok() {
                        acked.push((u.clone(), k.clone(), bytes.clone()));
                    }
                }
                assert!(
                    faulty.state.failed.load(Ordering::SeqCst) > 0,
                    "{what}: the fault never fired"
                );
                // Reads while the bucket fails: data or an error, never wrong bytes.
                for (u, k, bytes) in &acked {
                    if let Ok(got) = store.read_track(&user(u), &key(k)) {
                        assert_eq!(&got, bytes, "{what}: read of {u}/{k}");
                    }
                }
                if fault != Fault::Dead {
                    // One failed request costs at most the put that made it; the store goes on.
                    assert!(
                        acked.len() + 1 >= tracks.len(),
                        "{what}: {} acknowledged",
                        acked.len()
                    );
                    let extra = ("carol".to_owned(), "z".to_owned(), audio("z", 70_000));
                    store
                        .put(&user(&extra.0), &key(&extra.1), &extra.2[..])
                        .unwrap_or_else(|e| panic!("{what}: put after a failure: {e}"));
                    acked.push(extra);
                }
                drop(store);
                let mut all = keys.clone();
                all.push(("carol".into(), "z".into()));
                check_after(dir.path(), &bucket, &acked, &all, &what);
                runs += 1;
            }
        }
    }
    assert!(runs >= 10, "{runs}");
    eprintln!("puts: {runs} runs");
}

/// Alice's tracks "big" (800 kB: about a dozen chunks) and "bigger", which holds all of "big"
/// and more: deleting "big" leaves its pack live but for its last chunk (cut at its end, where
/// "bigger" goes on), so GC must rewrite that pack.
fn sharing() -> [(String, String, Vec<u8>); 2] {
    let big = audio("big", 800_000);
    let mut bigger = big.clone();
    bigger.extend_from_slice(&audio("tail", 60_000));
    [
        ("alice".into(), "big".into(), big),
        ("alice".into(), "bigger".into(), bigger),
    ]
}

/// A store for `job`: every song and [`sharing`] stored, then alice's "big" and bob's "c"
/// deleted (garbage for GC, one of it in a pack that stays part live); in single-master mode
/// for an expanding migration. Its cache is dropped afterwards.
fn prepare(
    dir: &std::path::Path,
    bucket: &Arc<InMemory>,
    job: &str,
    tracks: &[(String, String, Vec<u8>)],
) {
    let mode = if job == "expand" {
        LicenseMode::SingleMaster
    } else {
        LicenseMode::PerUserCopy
    };
    let store = Store::open(
        dir,
        options()
            .chunker(small_chunks())
            .mode(mode)
            .object_packs(location())
            .object_client(Faulty::new(bucket.clone(), None)),
    )
    .unwrap();
    for (u, k, bytes) in tracks.iter().chain(sharing().iter()) {
        store.put(&user(u), &key(k), &bytes[..]).unwrap();
    }
    store.delete(&user("alice"), &key("big")).unwrap();
    store.delete(&user("bob"), &key("c")).unwrap();
    drop(store);
    drop_cache(dir);
}

fn run_job(store: &Store, job: &str) -> lockerstore::Result<()> {
    match job {
        "gc" => store
            .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
            .map(|_| ()),
        _ => store
            .set_mode(LicenseMode::PerUserCopy)
            .and_then(|()| store.migrate(&mut |_| {}).map(|_| ())),
    }
}

#[test]
fn gc_and_migration_with_a_dying_bucket_at_every_request() {
    let tracks = songs();
    let mut keys: Vec<(String, String)> = tracks
        .iter()
        .map(|(u, k, _)| (u.clone(), k.clone()))
        .collect();
    keys.push(("alice".into(), "big".into()));
    keys.push(("alice".into(), "bigger".into()));
    let [_, bigger] = sharing();
    let acked: Vec<_> = tracks
        .iter()
        .filter(|(u, k, _)| !matches!((u.as_str(), k.as_str()), ("bob", "c")))
        .cloned()
        .chain([bigger])
        .collect();
    let mut runs = 0;
    for job in ["gc", "expand"] {
        // The requests of each kind the job makes (its open included) on a healthy bucket.
        let counts = {
            let dir = tempfile::tempdir().unwrap();
            let bucket = Arc::new(InMemory::new());
            prepare(dir.path(), &bucket, job, &tracks);
            let faulty = Faulty::new(bucket.clone(), None);
            let store = open_on(dir.path(), faulty.clone(), false).unwrap();
            run_job(&store, job).unwrap();
            drop(store);
            faulty.state.counts.lock().unwrap().clone()
        };
        eprintln!("{job}: requests of a healthy run {counts:?}");
        assert!(
            counts.get(&Kind::Put).copied().unwrap_or(0) >= 1,
            "{job}: {counts:?}"
        );
        for (&kind, &n) in &counts {
            for at in 1..=n {
                let dir = tempfile::tempdir().unwrap();
                let bucket = Arc::new(InMemory::new());
                prepare(dir.path(), &bucket, job, &tracks);
                let what = format!("{job} with the bucket dying at {kind:?} request {at} of {n}");
                let faulty = Faulty::new(bucket.clone(), Some((kind, at, Fault::Dead)));
                if let Ok(store) = open_on(dir.path(), faulty.clone(), false) {
                    let _ = run_job(&store, job);
                }
                assert!(
                    faulty.state.failed.load(Ordering::SeqCst) > 0,
                    "{what}: the fault never fired"
                );
                check_after(dir.path(), &bucket, &acked, &keys, &what);
                // And the job finishes on the healthy bucket.
                let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap();
                run_job(&store, job).unwrap_or_else(|e| panic!("{what}: the job again: {e}"));
                match job {
                    "gc" => assert_eq!(store.stats().unwrap().garbage_chunks, 0, "{what}"),
                    _ => assert!(store.audit(false).unwrap().conforming, "{what}"),
                }
                drop(store);
                check_after(dir.path(), &bucket, &acked, &keys, &what);
                runs += 1;
            }
        }
    }
    assert!(runs >= 10, "{runs}");
}

#[test]
fn a_bucket_that_ignores_create_only_puts_loses_and_mixes_up_nothing() {
    // Rounds of puts, each cut by the bucket dying at a PUT, then a reopen: objects of puts that
    // never committed are left behind in the bucket by the dying one and removed at open, and
    // new packs take new names, so no overwrite (which this bucket would allow) touches a
    // committed pack.
    let dir = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let mut acked: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut all = Vec::new();
    for round in 0..8u64 {
        // Past the PUTs of the first open (the STORE object and the first checkpoint).
        let fault = Some((Kind::Put, 3 + round % 3, Fault::Dead));
        let faulty = Faulty::ignoring_create(bucket.clone(), fault);
        let store = match open_on(dir.path(), faulty, round == 0) {
            Ok(s) => s,
            Err(e) => panic!("round {round}: open: {e}"),
        };
        for i in 0..5 {
            let (u, k) = (format!("u{}", i % 2), format!("r{round}-{i}"));
            let bytes = audio(&k, 60_000 + i * 7_000);
            all.push((u.clone(), k.clone()));
            if store.put(&user(&u), &key(&k), &bytes[..]).is_ok() {
                acked.push((u, k, bytes));
            }
        }
        drop(store);
        // What a put whose PUT landed but whose commit never did leaves: an object under the
        // next name. Open must remove it, and no later pack may be mixed up with it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let next = rt.block_on(async {
            bucket
                .list(Some(&Path::from("store/packs")))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .filter_map(|m| {
                    let m = m.ok()?;
                    let name = m.location.filename()?.strip_suffix(".pack")?.to_owned();
                    u64::from_str_radix(&name, 16).ok()
                })
                .max()
                .unwrap_or(0)
                + 1
        });
        rt.block_on(object_store::ObjectStoreExt::put(
            bucket.as_ref(),
            &Path::from(format!("store/packs/{next:016x}.pack")),
            PutPayload::from(vec![0xA5u8; 5000]),
        ))
        .unwrap();
        check_after(dir.path(), &bucket, &acked, &all, &format!("round {round}"));
    }
    assert!(acked.len() >= 8, "{} puts acknowledged", acked.len());
}

#[test]
fn a_prefix_holds_one_store() {
    let bucket = Arc::new(InMemory::new());
    let first = tempfile::tempdir().unwrap();
    let store = open_on(first.path(), Faulty::new(bucket.clone(), None), true).unwrap();
    let song = audio("s", 120_000);
    store.put(&user("u"), &key("s"), &song[..]).unwrap();
    drop(store);
    let packs = objects(&bucket);
    assert!(packs > 0);
    // A second store on the same prefix (or the first one re-created after losing its
    // metadata) is refused before anything is written, and deletes nothing.
    let second = tempfile::tempdir().unwrap();
    match open_on(second.path(), Faulty::new(bucket.clone(), None), true) {
        Err(lockerstore::Error::InvalidOptions(m)) => assert!(m.contains("another store"), "{m}"),
        other => panic!("expected InvalidOptions, got {:?}", other.map(|_| ())),
    }
    assert!(
        !second.path().join("STORE").exists(),
        "no half-made store left"
    );
    assert_eq!(objects(&bucket), packs);
    let store = open_on(first.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    assert_eq!(store.read_track(&user("u"), &key("s")).unwrap(), song);
}

#[test]
fn concurrent_cold_reads_through_a_tiny_cache_all_succeed() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let tracks: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("t{i}"),
                audio(&format!("t{i}"), 400_000 + i * 10_000),
            )
        })
        .collect();
    {
        let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
        for (k, b) in &tracks {
            store.put(&user("u"), &key(k), &b[..]).unwrap();
        }
    }
    drop_cache(dir.path());
    // A cache smaller than one pack: every read evicts the others' packs.
    let store = Store::open(
        dir.path(),
        options()
            .chunker(small_chunks())
            .cache_bytes(0)
            .object_client(Faulty::new(bucket.clone(), None)),
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..6 {
            let (store, tracks) = (&store, &tracks);
            s.spawn(move || {
                for round in 0..5 {
                    for (k, b) in tracks.iter().cycle().skip(t).take(tracks.len()) {
                        let got = store
                            .read_track(&user("u"), &key(k))
                            .unwrap_or_else(|e| panic!("thread {t} round {round} {k}: {e}"));
                        assert_eq!(&got, b);
                    }
                }
            });
        }
    });
}

#[test]
fn a_damaged_cached_copy_is_fetched_again_and_a_lost_object_is_put_back() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let song = audio("s", 200_000);
    {
        let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
        store.put(&user("u"), &key("s"), &song[..]).unwrap();
    }
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1);
    // A flipped byte in the cached copy: the read drops it and reads the object.
    let mut b = std::fs::read(&cached[0]).unwrap();
    let at = b.len() - 1000;
    b[at] ^= 0x40;
    std::fs::write(&cached[0], &b).unwrap();
    {
        let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap();
        assert_eq!(store.read_track(&user("u"), &key("s")).unwrap(), song);
        assert!(store.verify().unwrap().is_ok());
    }
    // The object lost from the bucket while the cache holds the pack whole: open puts it back.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let names: Vec<Path> = rt.block_on(async {
        bucket
            .list(Some(&Path::from("store/packs")))
            .map(|m| m.unwrap().location)
            .collect()
            .await
    });
    assert_eq!(names.len(), 1);
    rt.block_on(object_store::ObjectStoreExt::delete(
        bucket.as_ref(),
        &names[0],
    ))
    .unwrap();
    let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    assert_eq!(store.recovery().mended_packs, 1);
    assert_eq!(objects(&bucket), 1);
    drop(store);
    check_after(
        dir.path(),
        &bucket,
        &[("u".into(), "s".into(), song)],
        &[("u".into(), "s".into())],
        "lost object",
    );
}

/// Everything a locker does to its metadata, then the node's disk lost: the rebuild from the
/// bucket has the same tracks, users, quotas, accounting, layout and packs, with a checkpoint
/// on the way and logs after it.
#[test]
fn a_rebuild_from_the_bucket_alone_recreates_the_store() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
    let mut held: Vec<(String, String, Vec<u8>)> = Vec::new();
    for (u, k, b) in songs().into_iter().chain(sharing()) {
        store.put(&user(&u), &key(&k), &b[..]).unwrap();
        held.push((u, k, b));
    }
    store
        .set_quota(
            &user("bob"),
            lockerstore::Quota::unlimited().max_bytes(Some(10_000_000)),
        )
        .unwrap();
    store
        .put_with(
            &user("bob"),
            &key("bought"),
            &audio("bought", 50_000)[..],
            &lockerstore::PutOptions::default().quota_exempt(true),
        )
        .unwrap();
    held.push(("bob".into(), "bought".into(), audio("bought", 50_000)));
    // Rights holders and licences per holder are journaled like everything else.
    let emi = lockerstore::RightsHolder::new("EMI").unwrap();
    store
        .put_with(
            &user("carol"),
            &key("labelled"),
            &audio("labelled", 40_000)[..],
            &lockerstore::PutOptions::default().rights_holder(emi.clone()),
        )
        .unwrap();
    held.push(("carol".into(), "labelled".into(), audio("labelled", 40_000)));
    store
        .set_licence(
            &emi,
            Some(lockerstore::Licence::new(LicenseMode::PerUserCopy).until(4_102_444_800)),
        )
        .unwrap();
    store.delete(&user("alice"), &key("big")).unwrap();
    held.retain(|(u, k, _)| !(u == "alice" && k == "big"));
    let at = store
        .checkpoint()
        .unwrap()
        .expect("a bucket store keeps a journal");
    assert!(at > 0);
    store.set_mode(LicenseMode::SingleMaster).unwrap();
    store.migrate(&mut |_| {}).unwrap();
    store
        .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
        .unwrap();
    store.delete(&user("bob"), &key("c")).unwrap();
    held.retain(|(u, k, _)| !(u == "bob" && k == "c"));
    let late = audio("late", 80_000);
    store.put(&user("carol"), &key("late"), &late[..]).unwrap();
    held.push(("carol".into(), "late".into(), late));
    let stats = comparable(store.stats().unwrap());
    let lists: Vec<_> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| store.list(&user(u)).unwrap())
        .collect();
    let quota = store.quota(&user("bob")).unwrap();
    let audit = store.audit(true).unwrap();
    let licences = store.licences();
    drop(store);
    drop(dir);

    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("node");
    let report = rebuild_on(&target, Faulty::new(bucket.clone(), None)).unwrap();
    assert_eq!(report.checkpoint, at, "{report:?}");
    assert!(report.logs > 0, "{report:?}");
    let store = open_on(&target, Faulty::new(bucket.clone(), None), false).unwrap();
    assert_eq!(comparable(store.stats().unwrap()), stats);
    assert_eq!(store.mode(), LicenseMode::SingleMaster);
    assert_eq!(store.licences(), licences);
    assert_eq!(licences.entries.len(), 1);
    assert_eq!(
        store
            .track_info(&user("carol"), &key("labelled"))
            .unwrap()
            .rights_holder,
        Some(emi)
    );
    for (u, list) in ["alice", "bob", "carol"].iter().zip(&lists) {
        assert_eq!(&store.list(&user(u)).unwrap(), list, "{u}");
    }
    assert_eq!(store.quota(&user("bob")).unwrap(), quota);
    assert_eq!(store.audit(true).unwrap(), audit);
    assert!(store.audit(false).unwrap().conforming);
    for (u, k, b) in &held {
        assert_eq!(&store.read_track(&user(u), &key(k)).unwrap(), b, "{u}/{k}");
    }
    assert!(store.verify().unwrap().is_ok());
    // The rebuilt node goes on writing, and a second rebuild sees that too.
    let more = audio("more", 60_000);
    store.put(&user("dave"), &key("more"), &more[..]).unwrap();
    let stats = comparable(store.stats().unwrap());
    drop(store);
    let again = fresh.path().join("again");
    rebuild_on(&again, Faulty::new(bucket.clone(), None)).unwrap();
    let store = open_on(&again, Faulty::new(bucket.clone(), None), false).unwrap();
    assert_eq!(comparable(store.stats().unwrap()), stats);
    assert_eq!(store.read_track(&user("dave"), &key("more")).unwrap(), more);
}

/// A rebuild refuses what is not its to overwrite or cannot be whole, and one cut short by the
/// bucket failing at any request can be run again.
#[test]
fn a_rebuild_is_refused_or_cut_short_cleanly_and_runs_again() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
    let held = songs();
    for (u, k, b) in &held {
        store.put(&user(u), &key(k), &b[..]).unwrap();
    }
    drop(store);

    // Not into a store's directory, nor from a prefix without a store.
    match rebuild_on(dir.path(), Faulty::new(bucket.clone(), None)) {
        Err(lockerstore::Error::InvalidOptions(m)) => assert!(m.contains("empty directory"), "{m}"),
        other => panic!("rebuild into a store: {other:?}"),
    }
    let empty = tempfile::tempdir().unwrap();
    let r = Store::rebuild(
        empty.path().join("x"),
        &options()
            .object_packs(ObjectLocation::new("s3://mock/elsewhere"))
            .object_client(Faulty::new(bucket.clone(), None)),
    );
    assert!(
        matches!(r, Err(lockerstore::Error::InvalidOptions(_))),
        "{r:?}"
    );

    let healthy = Faulty::new(bucket.clone(), None);
    let probe = tempfile::tempdir().unwrap();
    rebuild_on(probe.path(), healthy.clone()).unwrap();
    let counts = healthy.state.counts.lock().unwrap().clone();
    let mut runs = 0;
    for (&kind, &n) in &counts {
        for at in 1..=n {
            let what = format!("rebuild with {kind:?} request {at} of {n} failing");
            let target = tempfile::tempdir().unwrap();
            let faulty = Faulty::new(bucket.clone(), Some((kind, at, Fault::Once)));
            assert!(
                rebuild_on(target.path(), faulty.clone()).is_err(),
                "{what}: succeeded"
            );
            assert!(faulty.state.failed.load(Ordering::SeqCst) > 0, "{what}");
            // Not a store yet: open refuses, and a second rebuild finishes the job.
            let open = Store::open(
                target.path(),
                options()
                    .create(false)
                    .object_client(Faulty::new(bucket.clone(), None)),
            );
            if let Ok(s) = open {
                panic!("{what}: opened: {:?}", s.stats());
            }
            rebuild_on(target.path(), Faulty::new(bucket.clone(), None))
                .unwrap_or_else(|e| panic!("{what}: again: {e}"));
            let store = open_on(target.path(), Faulty::new(bucket.clone(), None), false).unwrap();
            for (u, k, b) in &held {
                assert_eq!(&store.read_track(&user(u), &key(k)).unwrap(), b, "{what}");
            }
            runs += 1;
        }
    }
    assert!(runs >= 3, "{runs}");

    // A journal object gone: the rebuild refuses to make metadata that lacks commits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let logs: Vec<Path> = rt.block_on(async {
        bucket
            .list(Some(&Path::from("store/meta")))
            .map(|m| m.unwrap().location)
            .filter(|p| std::future::ready(p.as_ref().ends_with(".log")))
            .collect()
            .await
    });
    assert!(!logs.is_empty());
    rt.block_on(object_store::ObjectStoreExt::delete(
        bucket.as_ref(),
        &logs[0],
    ))
    .unwrap();
    let target = tempfile::tempdir().unwrap();
    match rebuild_on(target.path(), Faulty::new(bucket.clone(), None)) {
        Err(lockerstore::Error::Corrupted { what, .. }) => assert!(what.contains("gap"), "{what}"),
        other => panic!("rebuild over a lost log: {other:?}"),
    }
    // The node that still has its metadata writes a new checkpoint at open, so the bucket can
    // rebuild it again.
    drop(open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap());
    rebuild_on(target.path(), Faulty::new(bucket.clone(), None)).unwrap();
}

/// An older copy of a node's metadata (a restored backup) is brought up to date from the
/// bucket's journal, so no acknowledged commit is undone; one too old for that is refused.
#[test]
fn an_older_copy_of_the_metadata_catches_up_or_is_refused() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let first = audio("first", 90_000);
    let second = audio("second", 90_000);
    {
        let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
        store.put(&user("u"), &key("first"), &first[..]).unwrap();
    }
    let backup = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), backup.path());
    {
        let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap();
        store.put(&user("u"), &key("second"), &second[..]).unwrap();
        store.delete(&user("u"), &key("first")).unwrap();
    }
    let restored = tempfile::tempdir().unwrap();
    copy_dir(backup.path(), restored.path());
    {
        let store = open_on(restored.path(), Faulty::new(bucket.clone(), None), false).unwrap();
        assert_eq!(
            store.read_track(&user("u"), &key("second")).unwrap(),
            second
        );
        assert!(store.read_track(&user("u"), &key("first")).is_err());
        assert!(store.verify().unwrap().is_ok());
        // Now far ahead of the backup, past a checkpoint.
        store.checkpoint().unwrap();
        store.put(&user("u"), &key("third"), &first[..]).unwrap();
    }
    let restored = tempfile::tempdir().unwrap();
    copy_dir(backup.path(), restored.path());
    match open_on(restored.path(), Faulty::new(bucket.clone(), None), false) {
        Err(lockerstore::Error::StaleMetadata { local, bucket, .. }) => assert!(local < bucket),
        other => panic!("expected StaleMetadata, got {:?}", other.map(|_| ())),
    }
}

/// A large pack (here an expanding migration's copy of a whole locker) is read in spans: ranged
/// GETs from the record a reader needs, each of many chunks, never the whole object and never
/// one GET per chunk; sequential readers read ahead; every byte verified. A damaged cached span
/// is dropped and read again.
#[test]
fn large_packs_are_read_in_spans_of_many_chunks() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let tracks: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("t{i}"),
                audio(&format!("span{i}"), 2_000_000 + i * 1000),
            )
        })
        .collect();
    {
        let store = Store::open(
            dir.path(),
            options()
                .chunker(small_chunks())
                .mode(LicenseMode::SingleMaster)
                .object_packs(location())
                .object_client(Faulty::new(bucket.clone(), None)),
        )
        .unwrap();
        for (k, b) in &tracks {
            store.put(&user("u"), &key(k), &b[..]).unwrap();
        }
        // Expanding copies the whole locker into one new pack of about 16 MB.
        store.set_mode(LicenseMode::PerUserCopy).unwrap();
        store.migrate(&mut |_| {}).unwrap();
        store
            .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
            .unwrap();
        assert_eq!(store.stats().unwrap().packs, 1);
    }
    drop_cache(dir.path());
    const SPAN: u64 = 512 << 10;
    // A span is cut back to whole records, losing at most one chunk (256 KiB here).
    const MAX_CHUNK: u64 = 256 << 10;
    let counting = Faulty::new(bucket.clone(), None);
    let store = Store::open(
        dir.path(),
        options()
            .cache_bytes(4 << 20)
            .read_span_bytes(SPAN)
            .object_client(counting.clone()),
    )
    .unwrap();
    let gets = || {
        counting
            .state
            .counts
            .lock()
            .unwrap()
            .get(&Kind::Get)
            .copied()
            .unwrap_or(0)
    };
    let mut total = 0;
    for (k, b) in &tracks {
        let before = gets();
        assert_eq!(&store.read_track(&user("u"), &key(k)).unwrap(), b, "{k}");
        let took = gets() - before;
        let chunks = store.track_info(&user("u"), &key(k)).unwrap().chunks;
        // About one GET per span (one more read ahead past the track): never the chunk count.
        assert!(
            took <= b.len() as u64 / (SPAN - MAX_CHUNK) + 2 && took < chunks,
            "{k}: {took} GETs for {chunks} chunks"
        );
        total += took;
        let cached = store.stats().unwrap().cache_bytes.unwrap();
        assert!(cached <= (4 << 20) + SPAN, "cache {cached}");
    }
    let bytes: u64 = tracks.iter().map(|t| t.1.len() as u64).sum();
    assert!(total >= bytes / SPAN, "{total} GETs for {bytes} bytes");
    // Reads that jump about (a player seeking) fetch spans from where they land.
    use std::io::{Read, Seek, SeekFrom};
    let (k, b) = &tracks[5];
    let mut r = store.open_track(&user("u"), &key(k)).unwrap();
    for at in [1_700_000u64, 10, 1_999_000, 300_000] {
        r.seek(SeekFrom::Start(at)).unwrap();
        let mut buf = vec![0; 1000];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..], &b[at as usize..at as usize + 1000]);
    }
    drop(r);
    drop(store);
    // A damaged span in the cache: the read drops it and reads the object again.
    let store = Store::open(
        dir.path(),
        options()
            .cache_bytes(64 << 20)
            .read_span_bytes(SPAN)
            .object_client(Faulty::new(bucket.clone(), None)),
    )
    .unwrap();
    let (k, b) = &tracks[2];
    assert_eq!(&store.read_track(&user("u"), &key(k)).unwrap(), b);
    let spans: Vec<_> = std::fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "span"))
        .collect();
    assert!(!spans.is_empty());
    for p in &spans {
        let mut bytes = std::fs::read(p).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        std::fs::write(p, bytes).unwrap();
    }
    assert_eq!(&store.read_track(&user("u"), &key(k)).unwrap(), b);
    assert!(store.verify().unwrap().is_ok());
}

/// The object names under `store/<dir>` in the mock bucket.
fn names(bucket: &Arc<InMemory>, dir: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut out: Vec<String> = rt.block_on(async {
        bucket
            .list(Some(&Path::from(format!("store/{dir}"))))
            .map(|m| m.unwrap().location.filename().unwrap().to_owned())
            .collect()
            .await
    });
    out.sort();
    out
}

/// A deleted pack's object stays in the bucket for the grace period (another node may still
/// read it, or be about to commit metadata pointing into a pack it uploaded), then goes; and a
/// pack id is never used twice, also after GC deleted the newest pack and its object is gone.
#[test]
fn deleted_packs_wait_out_the_grace_period_and_ids_are_never_reused() {
    let grace = std::time::Duration::from_millis(1500);
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let with_grace = || {
        Store::open(
            dir.path(),
            Options::default()
                .chunker(small_chunks())
                .deletion_grace(grace)
                .object_packs(location())
                .object_client(Faulty::new(bucket.clone(), None)),
        )
        .unwrap()
    };
    let store = with_grace();
    for (u, k, b) in songs().iter().chain(sharing().iter()) {
        store.put(&user(u), &key(k), &b[..]).unwrap();
    }
    store.delete(&user("alice"), &key("big")).unwrap();
    store.delete(&user("bob"), &key("c")).unwrap();
    let gc = store
        .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
        .unwrap();
    assert!(gc.packs_deleted > 0, "{gc:?}");
    let packs = store.stats().unwrap().packs as usize;
    // Marked, not gone: the old objects are still readable by anyone who looked them up.
    let trash = names(&bucket, "trash");
    assert_eq!(trash.len() as u64, gc.packs_deleted, "{trash:?}");
    assert_eq!(names(&bucket, "packs").len(), packs + trash.len());
    let [_, bigger] = sharing();
    assert_eq!(
        store.read_track(&user("alice"), &key("bigger")).unwrap(),
        bigger.2
    );
    drop(store);
    // Reopened within the grace period: nothing goes, and the marked packs are not reported
    // as unknown ones.
    let store = with_grace();
    assert_eq!(store.recovery().removed_packs, 0);
    assert_eq!(names(&bucket, "packs").len(), packs + trash.len());
    drop(store);
    std::thread::sleep(grace + std::time::Duration::from_millis(200));
    let store = with_grace();
    assert_eq!(
        names(&bucket, "packs").len(),
        packs,
        "swept after the grace period"
    );
    assert!(names(&bucket, "trash").is_empty());
    assert!(store.verify().unwrap().is_ok());
    drop(store);

    // The newest pack deleted and its object gone: the next pack still takes a new id.
    let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    let before = names(&bucket, "packs");
    store
        .put(&user("zed"), &key("x"), &audio("x", 90_000)[..])
        .unwrap();
    let newest = names(&bucket, "packs")
        .into_iter()
        .find(|n| !before.contains(n))
        .unwrap();
    store.delete(&user("zed"), &key("x")).unwrap();
    store
        .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
        .unwrap();
    assert!(
        !names(&bucket, "packs").contains(&newest),
        "deleted at once (no grace)"
    );
    drop(store);
    let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    store
        .put(&user("zed"), &key("y"), &audio("y", 90_000)[..])
        .unwrap();
    let after: Vec<String> = names(&bucket, "packs")
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(after.len(), 1);
    assert!(
        after[0] > newest,
        "{} reuses an id up to {newest}",
        after[0]
    );
}

/// Puts of little new content (retagged tracks: a new tag chunk each) leave small objects; GC
/// merges them into one, and leaves a lone small pack alone (no rewrite on every run).
#[test]
fn gc_merges_small_objects_into_one() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
    let mut held = Vec::new();
    for i in 0..12 {
        let k = format!("tiny{i}");
        let b = audio(&k, 20_000 + i * 100);
        store.put(&user("u"), &key(&k), &b[..]).unwrap();
        held.push((k, b));
    }
    let before = store.stats().unwrap();
    assert_eq!(before.packs, 12, "one object per put");
    let gc = store.gc(Default::default(), &mut |_| {}).unwrap();
    assert_eq!(gc.packs_rewritten, 12, "{gc:?}");
    let after = store.stats().unwrap();
    assert_eq!(after.packs, 1, "{gc:?}");
    assert_eq!(after.physical_bytes, before.physical_bytes);
    assert_eq!(objects(&bucket), 1);
    for (k, b) in &held {
        assert_eq!(&store.read_track(&user("u"), &key(k)).unwrap(), b);
    }
    let again = store.gc(Default::default(), &mut |_| {}).unwrap();
    assert_eq!(
        again.packs_rewritten, 0,
        "a lone small pack stays: {again:?}"
    );
    // A large object is not a small one: a big put and one small one are left as they are.
    store
        .put(&user("u"), &key("big"), &audio("big", 1_500_000)[..])
        .unwrap();
    let again = store.gc(Default::default(), &mut |_| {}).unwrap();
    assert_eq!(again.packs_rewritten, 0, "{again:?}");
    assert!(store.verify().unwrap().is_ok());
}

/// A node whose metadata is gone while its bucket holds the store (a rebuild cut short before
/// its last rename, an operator deleting `meta.redb`) is never opened as a new store: that
/// would start the store over with other settings (mode, chunker, seed) and write them into the
/// bucket's journal. It is refused, and a rebuild over the same directory then finishes.
#[test]
fn lost_metadata_is_never_replaced_by_a_new_store_on_the_same_bucket() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let song = audio("a", 150_000);
    {
        let store = open_on(dir.path(), Faulty::new(bucket.clone(), None), true).unwrap();
        store.put(&user("alice"), &key("a"), &song[..]).unwrap();
        store.put(&user("bob"), &key("a"), &song[..]).unwrap();
    }
    let node = tempfile::tempdir().unwrap();
    rebuild_on(node.path(), Faulty::new(bucket.clone(), None)).unwrap();
    // Cut short before its last step, or metadata deleted by hand: the same directory shape.
    std::fs::rename(
        node.path().join("meta.redb"),
        node.path().join("meta.redb.tmp"),
    )
    .unwrap();
    let create_other = Store::open(
        node.path(),
        options()
            .mode(LicenseMode::SingleMaster)
            .object_packs(location())
            .object_client(Faulty::new(bucket.clone(), None)),
    );
    match create_other {
        Err(lockerstore::Error::InvalidOptions(m)) => assert!(m.contains("rebuild"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.mode())),
    }
    rebuild_on(node.path(), Faulty::new(bucket.clone(), None)).unwrap();
    let store = open_on(node.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    assert_eq!(store.mode(), LicenseMode::PerUserCopy);
    assert_eq!(store.read_track(&user("bob"), &key("a")).unwrap(), song);
    assert!(store.audit(false).unwrap().conforming);
}

/// `PackDurability::LocalDisk`: puts are acknowledged once durable on the node's disk while the
/// bucket is unreachable, read back from the staged copies, and go up in commit order once it
/// is back (at the latest at the next open). Until then a rebuild from the bucket gives an
/// earlier consistent state, never a mix; afterwards, everything.
#[test]
fn local_disk_durability_uploads_behind_in_order() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let staged = |faulty: Arc<Faulty>, create: bool| {
        let mut o = options()
            .chunker(small_chunks())
            .pack_durability(lockerstore::PackDurability::LocalDisk)
            .object_client(faulty);
        if create {
            o = o.object_packs(location());
        }
        Store::open(dir.path(), o).unwrap()
    };
    // The bucket dies right after the store's creation (its STORE object and first checkpoint).
    let dying = Faulty::new(bucket.clone(), Some((Kind::Put, 3, Fault::Dead)));
    let store = staged(dying, true);
    let held = songs();
    for (u, k, b) in &held {
        store.put(&user(u), &key(k), &b[..]).unwrap();
    }
    store.delete(&user("bob"), &key("c")).unwrap();
    store
        .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
        .unwrap();
    let stats = store.stats().unwrap();
    assert!(stats.upload_backlog_bytes.unwrap() > 0, "{stats:?}");
    for (u, k, b) in held
        .iter()
        .filter(|(u, k, _)| (u.as_str(), k.as_str()) != ("bob", "c"))
    {
        assert_eq!(&store.read_track(&user(u), &key(k)).unwrap(), b);
    }
    drop(store);
    // The node's disk lost now: the bucket holds the store as it was created, consistent.
    let lost = tempfile::tempdir().unwrap();
    rebuild_on(lost.path(), Faulty::new(bucket.clone(), None)).unwrap();
    let early = open_on(lost.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    assert_eq!(early.stats().unwrap().tracks, 0);
    assert!(early.verify().unwrap().is_ok());
    drop(early);
    // The bucket is back: the next open uploads the rest in order.
    drop(staged(Faulty::new(bucket.clone(), None), false));
    assert!(names(&bucket, "meta").len() > 1, "logs uploaded at open");
    // New puts go up behind, past a failed PUT (the first request after this open).
    let flaky = Faulty::new(bucket.clone(), Some((Kind::Put, 1, Fault::Once)));
    let store = staged(flaky.clone(), false);
    let late = audio("late", 80_000);
    store.put(&user("carol"), &key("late"), &late[..]).unwrap();
    let stats = comparable(store.stats().unwrap());
    drop(store);
    assert_eq!(
        flaky.state.failed.load(Ordering::SeqCst),
        1,
        "the failed PUT was retried"
    );
    let fresh = tempfile::tempdir().unwrap();
    rebuild_on(fresh.path(), Faulty::new(bucket.clone(), None)).unwrap();
    let rebuilt = open_on(fresh.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    let mut got = comparable(rebuilt.stats().unwrap());
    got.upload_backlog_bytes = stats.upload_backlog_bytes;
    assert_eq!(got, stats);
    assert_eq!(
        rebuilt.read_track(&user("carol"), &key("late")).unwrap(),
        late
    );
    for (u, k, b) in held
        .iter()
        .filter(|(u, k, _)| (u.as_str(), k.as_str()) != ("bob", "c"))
    {
        assert_eq!(&rebuilt.read_track(&user(u), &key(k)).unwrap(), b);
    }
    assert!(rebuilt.read_track(&user("bob"), &key("c")).is_err());
    assert!(rebuilt.verify().unwrap().is_ok());
    assert_eq!(objects(&bucket) as u64, rebuilt.stats().unwrap().packs);
}

/// A bucket that becomes slow at the first request of any kind (every request after it takes
/// 30 ms more): puts, reads, GC and a rebuild all give exactly what a fast bucket gives.
#[test]
fn a_slow_bucket_changes_nothing_but_the_time() {
    let job = |faulty: Arc<Faulty>| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_on(dir.path(), faulty.clone(), true).unwrap();
        for (u, k, b) in songs() {
            store.put(&user(&u), &key(&k), &b[..]).unwrap();
        }
        store.delete(&user("bob"), &key("c")).unwrap();
        store
            .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
            .unwrap();
        let stats = comparable(store.stats().unwrap());
        drop(store);
        let node = tempfile::tempdir().unwrap();
        rebuild_on(node.path(), faulty.clone()).unwrap();
        let rebuilt = open_on(node.path(), faulty, false).unwrap();
        assert_eq!(comparable(rebuilt.stats().unwrap()), stats);
        for (u, k, b) in songs()
            .iter()
            .filter(|s| (s.0.as_str(), s.1.as_str()) != ("bob", "c"))
        {
            assert_eq!(&rebuilt.read_track(&user(u), &key(k)).unwrap(), b);
        }
        assert!(rebuilt.verify().unwrap().is_ok());
        // What does not depend on the store's own chunker seed (chunk counts do).
        (
            stats.tracks,
            stats.logical_bytes,
            stats.per_user,
            stats.garbage_chunks,
        )
    };
    let healthy = Faulty::new(Arc::new(InMemory::new()), None);
    let want = job(healthy.clone());
    let kinds: Vec<Kind> = healthy
        .state
        .counts
        .lock()
        .unwrap()
        .keys()
        .copied()
        .collect();
    for kind in kinds {
        let slow = Faulty::new(Arc::new(InMemory::new()), Some((kind, 1, Fault::Slow)));
        assert_eq!(job(slow.clone()), want, "slow from the first {kind:?}");
        assert!(
            slow.state.failed.load(Ordering::SeqCst) > 0,
            "{kind:?}: never slow"
        );
    }
}

/// Deletes with the bucket dying at every request a healthy run of them makes: a delete that
/// returned Ok is gone after reopening and in a rebuild; one that failed is wholly there or
/// wholly gone; every other track reads exact.
#[test]
fn deletes_with_a_dying_bucket_at_every_request() {
    let tracks = songs();
    let gone = [("alice", "b"), ("bob", "a")];
    let setup = |bucket: &Arc<InMemory>, dir: &std::path::Path| {
        let store = open_on(dir, Faulty::new(bucket.clone(), None), true).unwrap();
        for (u, k, b) in &tracks {
            store.put(&user(u), &key(k), &b[..]).unwrap();
        }
    };
    let counts = {
        let (bucket, dir) = (Arc::new(InMemory::new()), tempfile::tempdir().unwrap());
        setup(&bucket, dir.path());
        let faulty = Faulty::new(bucket.clone(), None);
        let store = open_on(dir.path(), faulty.clone(), false).unwrap();
        for (u, k) in gone {
            store.delete(&user(u), &key(k)).unwrap();
        }
        drop(store);
        faulty.state.counts.lock().unwrap().clone()
    };
    let mut runs = 0;
    for (&kind, &n) in &counts {
        for at in 1..=n {
            let what = format!("deletes with the bucket dying at {kind:?} request {at} of {n}");
            let (bucket, dir) = (Arc::new(InMemory::new()), tempfile::tempdir().unwrap());
            setup(&bucket, dir.path());
            let faulty = Faulty::new(bucket.clone(), Some((kind, at, Fault::Dead)));
            let mut done = Vec::new();
            if let Ok(store) = open_on(dir.path(), faulty.clone(), false) {
                for (u, k) in gone {
                    done.push(store.delete(&user(u), &key(k)).is_ok());
                }
            }
            assert!(
                faulty.state.failed.load(Ordering::SeqCst) > 0,
                "{what}: never fired"
            );
            let node = tempfile::tempdir().unwrap();
            for d in [dir.path(), node.path()] {
                if d == node.path() {
                    rebuild_on(d, Faulty::new(bucket.clone(), None))
                        .unwrap_or_else(|e| panic!("{what}: rebuild: {e}"));
                }
                let store = open_on(d, Faulty::new(bucket.clone(), None), false)
                    .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                for (u, k, b) in &tracks {
                    let at = gone.iter().position(|g| *g == (u.as_str(), k.as_str()));
                    match (store.read_track(&user(u), &key(k)), at) {
                        (Ok(got), None) => assert_eq!(&got, b, "{what}: {u}/{k}"),
                        (Ok(got), Some(i)) if !done.get(i).copied().unwrap_or(false) => {
                            assert_eq!(&got, b, "{what}: {u}/{k} (its delete failed)")
                        }
                        (Err(lockerstore::Error::TrackNotFound { .. }), Some(_)) => {}
                        (got, _) => panic!("{what}: {u}/{k}: {:?}", got.map(|b| b.len())),
                    }
                }
                assert!(store.verify().unwrap().is_ok(), "{what}");
            }
            runs += 1;
        }
    }
    assert!(runs >= 4, "{runs}");
}

/// Local-disk durability with the bucket refusing PUTs after the first pack: a GC that merges
/// an uploaded pack and one still waiting deletes neither object before the logs that name them
/// are up, so the next open uploads everything in order and the store is whole (found by a
/// review: the uploaded pack's object used to go at once, and the store could never open again).
#[test]
fn local_disk_deletions_wait_behind_the_logs_that_name_the_packs() {
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let staged = |faulty: Arc<Faulty>| {
        Store::open(
            dir.path(),
            options()
                .chunker(small_chunks())
                .pack_durability(lockerstore::PackDurability::LocalDisk)
                .object_packs(location())
                .object_client(faulty),
        )
        .unwrap()
    };
    // PUTs 1-2 create the store, 3 is the first pack; from the 4th (its log) PUTs fail.
    let store = staged(Faulty::new(
        bucket.clone(),
        Some((Kind::Put, 4, Fault::PutsDead)),
    ));
    let (a, b) = (audio("a", 80_000), audio("b", 80_000));
    store.put(&user("u"), &key("a"), &a[..]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while names(&bucket, "packs").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first pack never went up"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    store.put(&user("u"), &key("b"), &b[..]).unwrap();
    let gc = store
        .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
        .unwrap();
    assert_eq!(gc.packs_rewritten, 2, "{gc:?}");
    assert_eq!(store.read_track(&user("u"), &key("b")).unwrap(), b);
    drop(store);
    assert_eq!(
        names(&bucket, "packs").len(),
        1,
        "the uploaded pack is still there"
    );
    let store = staged(Faulty::new(bucket.clone(), None));
    assert_eq!(store.read_track(&user("u"), &key("a")).unwrap(), a);
    assert_eq!(store.read_track(&user("u"), &key("b")).unwrap(), b);
    assert!(store.verify().unwrap().is_ok());
    let stats = comparable(store.stats().unwrap());
    drop(store);
    let node = tempfile::tempdir().unwrap();
    rebuild_on(node.path(), Faulty::new(bucket.clone(), None)).unwrap();
    let rebuilt = open_on(node.path(), Faulty::new(bucket.clone(), None), false).unwrap();
    let mut got = comparable(rebuilt.stats().unwrap());
    got.upload_backlog_bytes = stats.upload_backlog_bytes;
    assert_eq!(got, stats);
    assert_eq!(rebuilt.read_track(&user("u"), &key("a")).unwrap(), a);
}

/// The id of a pack whose upload failed, marked deleted at the next open, is not given to a
/// later pack while its marker waits: the sweep would delete the later pack's object (found by
/// a review).
#[test]
fn a_marked_pack_id_is_never_given_out_again() {
    let grace = std::time::Duration::from_millis(1500);
    let bucket = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let open = |faulty: Arc<Faulty>| {
        Store::open(
            dir.path(),
            Options::default()
                .chunker(small_chunks())
                .deletion_grace(grace)
                .object_packs(location())
                .object_client(faulty),
        )
        .unwrap()
    };
    // PUTs 1-2 create the store, 3-4 are a's pack and log; b's pack (PUT 5) fails.
    let store = open(Faulty::new(
        bucket.clone(),
        Some((Kind::Put, 5, Fault::Once)),
    ));
    store
        .put(&user("u"), &key("a"), &audio("a", 60_000)[..])
        .unwrap();
    assert!(
        store
            .put(&user("u"), &key("b"), &audio("b", 60_000)[..])
            .is_err()
    );
    drop(store);
    drop(open(Faulty::new(bucket.clone(), None)));
    assert_eq!(names(&bucket, "trash").len(), 1, "b's pack marked at open");
    let c = audio("c", 60_000);
    let store = open(Faulty::new(bucket.clone(), None));
    store.put(&user("u"), &key("c"), &c[..]).unwrap();
    drop(store);
    std::thread::sleep(grace + std::time::Duration::from_millis(200));
    drop_cache(dir.path());
    let store = open(Faulty::new(bucket.clone(), None));
    assert!(names(&bucket, "trash").is_empty(), "swept");
    assert_eq!(store.read_track(&user("u"), &key("c")).unwrap(), c);
    assert!(store.verify().unwrap().is_ok());
}
