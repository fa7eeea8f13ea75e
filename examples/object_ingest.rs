//! Ingest into packs on an S3-compatible server against raw PUTs of the same bytes, in the same
//! process, with the same client (`object_store`), alternating rounds; and a cold and a warm
//! verified read of everything stored, with the GETs it took.
//!
//! ```text
//! # a loopback SeaweedFS: source .ci/seaweedfs.sh; seaweedfs_start /tmp/weed
//! cargo run --release --example object_ingest -- --corpus DIR [--mb 200] [--rounds 3]
//! ```
//!
//! The corpus is read into memory first (every file under DIR, up to `--mb`), so neither side
//! reads a disk while timed. Raw: each file is one create-only PUT of its bytes, one at a time.
//! Store: each file is one `Store::put` into a new store whose packs live in the bucket (one
//! user, per-user-copy mode, so every file is new content and makes one pack object of about
//! its size), one at a time. Each round uses fresh prefixes. Prints medians and the ratio.

use std::path::{Path, PathBuf};
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

    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .build()
        .expect("S3 client");
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
    for round in 0..args.rounds {
        // Raw PUTs.
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
        raw.push(mb / t.elapsed().as_secs_f64());

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
        let user = UserId::new("bench").expect("user");
        let keys: Vec<TrackKey> = (0..corpus.len())
            .map(|i| TrackKey::new(&format!("t{i}")).expect("key"))
            .collect();
        let t = Instant::now();
        for (k, f) in keys.iter().zip(&corpus) {
            store.put(&user, k, &f[..]).expect("put");
        }
        stored.push(mb / t.elapsed().as_secs_f64());
        drop(store);

        // Reads: cold (no cache: every pack fetched), then warm (all cached).
        std::fs::remove_dir_all(dir.path().join("packs")).expect("drop the cache");
        std::fs::create_dir(dir.path().join("packs")).expect("packs dir");
        let store =
            Store::open(dir.path(), Options::default().cache_bytes(4 << 30)).expect("reopen");
        let packs = store.stats().expect("stats").packs;
        for pass in 0..2 {
            let t = Instant::now();
            for (k, f) in keys.iter().zip(&corpus) {
                let got = store.read_track(&user, k).expect("read");
                assert_eq!(got.len(), f.len());
            }
            let rate = mb / t.elapsed().as_secs_f64();
            if pass == 0 {
                cold.push(rate)
            } else {
                warm.push(rate)
            }
        }
        println!(
            "round {round}: raw PUT {:.1} MB/s, Store::put {:.1} MB/s, read cold {:.1} MB/s ({packs} packs fetched whole, one GET each, for {} tracks), warm {:.1} MB/s",
            raw[round],
            stored[round],
            cold[round],
            corpus.len(),
            warm[round]
        );
    }
    let (r, s) = (median(raw), median(stored));
    println!(
        "median of {} rounds: raw PUT {r:.1} MB/s, Store::put into the bucket {s:.1} MB/s, ratio {:.2}; verified reads cold {:.1} MB/s, warm {:.1} MB/s",
        args.rounds,
        s / r,
        median(cold),
        median(warm)
    );
}
