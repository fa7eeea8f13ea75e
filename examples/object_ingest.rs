//! Ingest into packs on an S3-compatible server against raw PUTs of the same bytes, in the same
//! process, with the same client (`object_store`), alternating rounds; a cold and a warm
//! verified read of everything stored, with the GETs it took (counted by a wrapper around the
//! client); and a rebuild of the store's metadata from the bucket alone, timed per GB.
//!
//! ```text
//! # a loopback SeaweedFS: source .ci/seaweedfs.sh; seaweedfs_start /tmp/weed
//! cargo run --release --example object_ingest -- --corpus DIR [--mb 200] [--rounds 3]
//! ```
//!
//! The corpus is read into memory first (every file under DIR, up to `--mb`), so neither side
//! reads a disk while timed. Raw: each file is one create-only PUT of its bytes, one at a time.
//! Store: each file is one `Store::put` into a new store whose packs live in the bucket (a user
//! per file, per-user-copy mode, so every file is new content and makes one pack object of
//! about its size), one at a time; the two sides swap order every round. Each round uses fresh
//! prefixes. Rebuild: the store's directory is
//! deleted, `Store::rebuild` recreates it from the bucket (the journal the puts left: one log
//! per put, no checkpoint but the first), then a second time after `Store::checkpoint`, and
//! each rebuilt store reads one track back. Local-disk durability: the same puts into a store
//! with `PackDurability::LocalDisk`, timed to the last acknowledgement and to the end of the
//! uploads behind. Prints medians and the ratio.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use lockerstore::{ObjectLocation, Options, Store, TrackKey, UserId};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

#[derive(Parser)]
struct Args {
    /// Music files (read recursively).
    #[arg(long)]
    corpus: PathBuf,
    /// Most megabytes of the corpus to use.
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Rounds of each side (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The S3 endpoint (default: LOCKERSTORE_S3_ENDPOINT).
    #[arg(long)]
    endpoint: Option<String>,
    /// The bucket (default: LOCKERSTORE_S3_BUCKET, else `packs`).
    #[arg(long)]
    bucket: Option<String>,
}

fn files(dir: &Path, limit: u64, out: &mut Vec<Vec<u8>>, total: &mut u64) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus readable")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if *total >= limit {
            return;
        }
        if p.is_dir() {
            files(&p, limit, out, total);
        } else {
            let b = std::fs::read(&p).expect("file readable");
            *total += b.len() as u64;
            out.push(b);
        }
    }
}

/// The client with its GETs counted (HEADs apart).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicU64,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        if !options.head {
            self.gets.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &object_store::path::Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
    {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
    {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn s3_client(bucket: &str, endpoint: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .build()
            .expect("S3 client"),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let endpoint = args
        .endpoint
        .or_else(|| std::env::var("LOCKERSTORE_S3_ENDPOINT").ok())
        .expect("--endpoint or LOCKERSTORE_S3_ENDPOINT");
    let bucket = args
        .bucket
        .or_else(|| std::env::var("LOCKERSTORE_S3_BUCKET").ok())
        .unwrap_or_else(|| "packs".into());
    let mut corpus = Vec::new();
    let mut total = 0;
    files(&args.corpus, args.mb * 1_000_000, &mut corpus, &mut total);
    let mb = total as f64 / 1e6;
    println!("corpus: {} files, {mb:.1} MB, in memory", corpus.len());

    let s3 = s3_client(&bucket, &endpoint);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let run = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    );
    let (mut raw, mut stored) = (Vec::new(), Vec::new());
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let (mut rebuild_logs, mut rebuild_ckpt) = (Vec::new(), Vec::new());
    let mut gets_per_track = Vec::new();
    let (mut large_gets, mut large_cold) = (Vec::new(), Vec::new());
    let (mut staged_acked, mut staged_uploaded) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Raw PUTs: before the store's puts in even rounds, after them in odd ones, so neither
        // side always follows the previous round's migration and GC (which leave the server
        // work to do).
        let raw_puts = || {
            let t = Instant::now();
            for (i, f) in corpus.iter().enumerate() {
                let path = object_store::path::Path::from(format!("{run}/raw{round}/{i}"));
                let payload = PutPayload::from(f.clone());
                rt.block_on(s3.put_opts(
                    &path,
                    payload,
                    PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    },
                ))
                .expect("raw put");
            }
            mb / t.elapsed().as_secs_f64()
        };
        if round % 2 == 0 {
            raw.push(raw_puts());
        }

        // The store.
        let dir = tempfile::tempdir().expect("tempdir");
        let location = ObjectLocation::new(format!("s3://{bucket}/{run}/store{round}"))
            .endpoint(endpoint.clone())
            .allow_http(true);
        let store = Store::open(
            dir.path(),
            Options::default().object_packs(location.clone()),
        )
        .expect("store");
        // One user per file: per-user copies never dedup across users, so every put is new
        // content and uploads exactly the bytes the raw side does (the corpus holds the same
        // recording in several lockers).
        let users: Vec<UserId> = (0..corpus.len())
            .map(|i| UserId::new(&format!("u{i}")).expect("user"))
            .collect();
        let keys: Vec<TrackKey> = (0..corpus.len())
            .map(|i| TrackKey::new(&format!("t{i}")).expect("key"))
            .collect();
        let t = Instant::now();
        for ((k, f), user) in keys.iter().zip(&corpus).zip(&users) {
            store.put(user, k, &f[..]).expect("put");
        }
        stored.push(mb / t.elapsed().as_secs_f64());
        drop(store);
        if round % 2 == 1 {
            raw.push(raw_puts());
        }

        // Local-disk durability: acknowledged once fsynced locally, uploaded behind; timed to
        // the last acknowledgement, and to the end of the uploads (the drop waits for them).
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let location = ObjectLocation::new(format!("s3://{bucket}/{run}/staged{round}"))
                .endpoint(endpoint.clone())
                .allow_http(true);
            let store = Store::open(
                dir.path(),
                Options::default()
                    .object_packs(location)
                    .pack_durability(lockerstore::PackDurability::LocalDisk),
            )
            .expect("store");
            let t = Instant::now();
            for ((k, f), user) in keys.iter().zip(&corpus).zip(&users) {
                store.put(user, k, &f[..]).expect("put");
            }
            staged_acked.push(mb / t.elapsed().as_secs_f64());
            drop(store);
            staged_uploaded.push(mb / t.elapsed().as_secs_f64());
        }

        // Reads: cold (no cache: every pack fetched), then warm (all cached).
        std::fs::remove_dir_all(dir.path().join("packs")).expect("drop the cache");
        std::fs::create_dir(dir.path().join("packs")).expect("packs dir");
        let counting = Arc::new(Counting {
            inner: s3_client(&bucket, &endpoint),
            gets: AtomicU64::new(0),
        });
        let store = Store::open(
            dir.path(),
            Options::default()
                .cache_bytes(4 << 30)
                .object_client(counting.clone()),
        )
        .expect("reopen");
        let packs = store.stats().expect("stats").packs;
        for pass in 0..2 {
            let before = counting.gets.load(Ordering::Relaxed);
            let t = Instant::now();
            for ((k, f), user) in keys.iter().zip(&corpus).zip(&users) {
                let got = store.read_track(user, k).expect("read");
                assert_eq!(got.len(), f.len());
            }
            let rate = mb / t.elapsed().as_secs_f64();
            let gets = counting.gets.load(Ordering::Relaxed) - before;
            if pass == 0 {
                cold.push(rate);
                gets_per_track.push(gets as f64 / corpus.len() as f64);
            } else {
                assert_eq!(gets, 0, "a warm read GETs nothing");
                warm.push(rate)
            }
        }
        drop(store);

        // The node's disk lost: rebuild from the bucket alone, from the logs, then again after
        // a checkpoint.
        let mut rebuilt = Vec::new();
        for with_checkpoint in [false, true] {
            let node = tempfile::tempdir().expect("tempdir");
            let t = Instant::now();
            let report = Store::rebuild(
                node.path(),
                &Options::default().object_packs(location.clone()),
            )
            .expect("rebuild");
            let store = Store::open(node.path(), Options::default()).expect("open rebuilt");
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(
                store.read_track(&users[0], &keys[0]).expect("read").len(),
                corpus[0].len()
            );
            assert_eq!(store.stats().expect("stats").tracks, corpus.len() as u64);
            println!(
                "round {round}: rebuild ({}) from checkpoint {} + {} logs, {:.2} MB of journal: {secs:.2} s, {:.2} s per GB of tracks",
                if with_checkpoint {
                    "after a checkpoint"
                } else {
                    "from the logs"
                },
                report.checkpoint,
                report.logs,
                report.bytes as f64 / 1e6,
                secs / (mb / 1000.0)
            );
            rebuilt.push(secs / (mb / 1000.0));
            if !with_checkpoint {
                store.checkpoint().expect("checkpoint");
            }
        }
        rebuild_logs.push(rebuilt[0]);
        rebuild_ckpt.push(rebuilt[1]);

        // Large packs: a migration to single-master and back copies the whole locker into
        // packs of up to 64 MiB (GC deletes the old ones); a cold read then fetches spans of
        // 8 MiB by ranged GETs.
        {
            let store = Store::open(dir.path(), Options::default()).expect("reopen");
            store
                .set_mode(lockerstore::LicenseMode::SingleMaster)
                .expect("mode");
            store.migrate(&mut |_| {}).expect("collapse");
            store
                .set_mode(lockerstore::LicenseMode::PerUserCopy)
                .expect("mode");
            store.migrate(&mut |_| {}).expect("expand");
            store
                .gc(lockerstore::GcOptions { threshold: 1.0 }, &mut |_| {})
                .expect("gc");
        }
        std::fs::remove_dir_all(dir.path().join("packs")).expect("drop the cache");
        std::fs::create_dir(dir.path().join("packs")).expect("packs dir");
        let store = Store::open(
            dir.path(),
            Options::default()
                .cache_bytes(4 << 30)
                .object_client(counting.clone()),
        )
        .expect("reopen");
        let s = store.stats().expect("stats");
        let before = counting.gets.load(Ordering::Relaxed);
        let t = Instant::now();
        for ((k, f), user) in keys.iter().zip(&corpus).zip(&users) {
            assert_eq!(store.read_track(user, k).expect("read").len(), f.len());
        }
        let rate = mb / t.elapsed().as_secs_f64();
        let gets = counting.gets.load(Ordering::Relaxed) - before;
        large_gets.push(gets as f64 / corpus.len() as f64);
        large_cold.push(rate);
        println!(
            "round {round}: after expanding into {} packs ({:.1} MB each): read cold {rate:.1} MB/s, {:.2} GETs per track",
            s.packs,
            s.pack_bytes as f64 / 1e6 / s.packs as f64,
            gets as f64 / corpus.len() as f64
        );
        println!(
            "round {round}: raw PUT {:.1} MB/s, Store::put {:.1} MB/s, read cold {:.1} MB/s ({packs} packs, {:.2} GETs per track), warm {:.1} MB/s",
            raw[round], stored[round], cold[round], gets_per_track[round], warm[round]
        );
    }
    let (r, s) = (median(raw), median(stored));
    println!(
        "median of {} rounds: raw PUT {r:.1} MB/s, Store::put into the bucket {s:.1} MB/s, ratio {:.2}; with local-disk durability acknowledged {:.1} MB/s, uploaded {:.1} MB/s; verified reads cold {:.1} MB/s ({:.2} GETs per track), warm {:.1} MB/s; from 64 MiB packs read cold {:.1} MB/s ({:.2} GETs per track); rebuild {:.2} s per GB from the logs, {:.2} s per GB after a checkpoint",
        args.rounds,
        s / r,
        median(staged_acked),
        median(staged_uploaded),
        median(cold),
        median(gets_per_track),
        median(warm),
        median(large_cold),
        median(large_gets),
        median(rebuild_logs),
        median(rebuild_ckpt)
    );
}
