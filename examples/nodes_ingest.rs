//! Aggregate ingest of 1, 2 and 3 nodes sharing one store: metadata in PostgreSQL, packs in an
//! S3-compatible bucket, everything on loopback (docs/PERFORMANCE.md, "Many nodes").
//!
//! ```text
//! # scratch servers: source .ci/postgres.sh; postgres_start /tmp/pg
//! #                  source .ci/seaweedfs.sh; seaweedfs_start /tmp/weed
//! cargo run --release --example nodes_ingest -- [--mb-per-node 96] [--rounds 3] [--max-nodes 3]
//! ```
//!
//! Each node is a `Store` opened on a directory of its own, in this process, with its own
//! connection pool, writer and pack uploads, as a locker-server node holds one. Every round and
//! node count gets a fresh schema in the database (`LOCKERSTORE_PG_URL`) and a fresh prefix in
//! the bucket (`LOCKERSTORE_S3_ENDPOINT`, `LOCKERSTORE_S3_BUCKET`, AWS credentials). Each node
//! uploads its own users' tracks (a synthetic corpus of tagged MP3/FLAC/M4A files, about
//! `--mb-per-node` MB per node, generated in memory before the clock starts), one put at a
//! time, per-user-copy mode (every byte is written). Aggregate MB/s = all nodes' bytes / the
//! wall time from the common start to the last node's last acknowledged put. The node counts
//! take turns within each round; the medians and the ratios against one node are printed.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{LicenseMode, ObjectLocation, Options, Store, TrackKey, UserId};

#[derive(Parser)]
struct Args {
    /// Megabytes each node uploads.
    #[arg(long, default_value_t = 96)]
    mb_per_node: u64,
    /// Rounds (each runs every node count once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The largest node count.
    #[arg(long, default_value_t = 3)]
    max_nodes: usize,
}

/// One node's uploads: (user, key, bytes).
type Uploads = Vec<(UserId, TrackKey, Vec<u8>)>;

fn uploads_of(node: usize, mb: u64) -> Uploads {
    let corpus = Corpus::generate(CorpusSpec {
        seed: 0x5eed + node as u64,
        users: 8,
        recordings: 24,
        album_size: 8,
        tracks_per_user: 6,
        min_audio: 3_000_000,
        max_audio: 6_000_000,
    });
    let mut out = Vec::new();
    let mut total = 0u64;
    for (i, up) in corpus.uploads.iter().enumerate() {
        if total >= mb * 1_000_000 {
            break;
        }
        let bytes = corpus.bytes(i);
        total += bytes.len() as u64;
        out.push((
            UserId::new(&format!("node{node}-{}", up.user)).expect("valid user"),
            TrackKey::new(&up.key).expect("valid key"),
            bytes,
        ));
    }
    out
}

fn fresh_schema(server: &str, label: &str) -> String {
    let schema = format!(
        "bench_{label}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let mut client = postgres::Client::connect(server, postgres::NoTls).expect("PostgreSQL");
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create schema");
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}options=-csearch_path%3D{schema}")
}

/// One run of `nodes` nodes: their aggregate MB/s.
fn run(server: &str, endpoint: &str, bucket: &str, work: &[Uploads], nodes: usize) -> f64 {
    let label = format!("n{nodes}");
    let url = fresh_schema(server, &label);
    let location = ObjectLocation::new(format!(
        "s3://{bucket}/bench-{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ))
    .endpoint(endpoint.to_owned())
    .region("us-east-1")
    .allow_http(true);
    let dirs: Vec<tempfile::TempDir> = (0..nodes)
        .map(|_| tempfile::tempdir().expect("tmp"))
        .collect();
    let options = || Options::default().postgres(url.clone());
    let mut stores = vec![
        Store::open(
            dirs[0].path(),
            options()
                .mode(LicenseMode::PerUserCopy)
                .object_packs(location.clone()),
        )
        .expect("create the store"),
    ];
    for d in &dirs[1..] {
        stores.push(Store::open(d.path(), options()).expect("open a node"));
    }
    let bytes: u64 = work[..nodes]
        .iter()
        .flat_map(|w| w.iter().map(|(_, _, b)| b.len() as u64))
        .sum();
    let start = Arc::new(Barrier::new(nodes + 1));
    let elapsed = std::thread::scope(|s| {
        for (store, uploads) in stores.iter().zip(&work[..nodes]) {
            let start = start.clone();
            s.spawn(move || {
                start.wait();
                for (u, k, b) in uploads {
                    store.put(u, k, &b[..]).expect("put");
                }
            });
        }
        start.wait();
        let t = Instant::now();
        // The scope joins every node before it returns.
        t
    })
    .elapsed();
    let stats = stores[0].stats().expect("stats");
    assert_eq!(stats.logical_bytes, bytes, "every put is in the store");
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let server = std::env::var("LOCKERSTORE_PG_URL").expect("LOCKERSTORE_PG_URL");
    let endpoint = std::env::var("LOCKERSTORE_S3_ENDPOINT").expect("LOCKERSTORE_S3_ENDPOINT");
    let bucket = std::env::var("LOCKERSTORE_S3_BUCKET").unwrap_or_else(|_| "packs".into());
    let work: Vec<Uploads> = (0..args.max_nodes)
        .map(|n| uploads_of(n, args.mb_per_node))
        .collect();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); args.max_nodes];
    for round in 0..args.rounds {
        for i in 0..args.max_nodes {
            // Node counts take turns: 1, 2, 3, then 2, 3, 1, ...
            let nodes = (round + i) % args.max_nodes + 1;
            let mbs = run(&server, &endpoint, &bucket, &work, nodes);
            println!("round {round}: {nodes} node(s): {mbs:.1} MB/s");
            results[nodes - 1].push(mbs);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let one = median(&mut results[0].clone());
    println!("\nnodes  median MB/s  vs one node");
    for (i, r) in results.iter_mut().enumerate() {
        let m = median(r);
        println!("{:>5}  {:>11.1}  {:>10.2}x", i + 1, m, m / one);
    }
}
