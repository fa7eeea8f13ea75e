//! locker-load: benchmarks of the locker server over real HTTP on loopback (docs/PERFORMANCE.md).
//!
//! ```text
//! locker-load upload  --server BIN --corpus DIR [--gb 1] [--jobs 4] [--rounds 3]
//! locker-load streams --server BIN --corpus DIR [--streams 200] [--uploads 4] [--seconds 60]
//! ```
//!
//! `upload` puts the same files through the server (one HTTP PUT each, `jobs` at once) and
//! through `Store::put` in this process (`jobs` threads), alternating, each round on a fresh
//! store, and reports both rates, their medians and the ratio. `streams` fills a store, then
//! runs `streams` listeners at playback pace (each seeks to a random offset every few seconds:
//! a new `Range: bytes=N-` request, timed to its first body byte) beside `uploads` uploaders, and
//! reports the time-to-first-byte percentiles and every failed request.
//!
//! The corpus is a directory `DIR/<user>/<key...>`, as `lockerstore bench --dir D` leaves in
//! `D/corpus`. The client runs on the same machine as the server and takes some of its cores:
//! the figures are for the pair, which is what a 2-core test node can give.

mod server;
mod streams;
mod upload;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "locker-load", about = "Load generator for the locker server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload throughput through the server against Store::put of the same files.
    Upload(upload::Args),
    /// Concurrent streams at playback pace with random seeks, beside uploads.
    Streams(streams::Args),
}

/// One file of the corpus.
#[derive(Clone, Debug)]
pub struct Track {
    pub user: String,
    pub key: String,
    pub path: PathBuf,
    pub len: u64,
}

/// The corpus's files in a stable order, up to `limit` bytes.
pub fn corpus(dir: &Path, limit: u64) -> std::io::Result<Vec<Track>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut tracks = Vec::new();
    let mut total = 0;
    for path in files {
        let rel = path.strip_prefix(dir).expect("walked under dir");
        let mut parts = rel.iter();
        let Some(user) = parts.next() else { continue };
        let key: PathBuf = parts.collect();
        if key.as_os_str().is_empty() {
            continue;
        }
        let len = std::fs::metadata(&path)?.len();
        if total + len > limit && !tracks.is_empty() {
            break;
        }
        total += len;
        tracks.push(Track {
            user: user.to_string_lossy().into_owned(),
            key: key.to_string_lossy().into_owned(),
            path,
            len,
        });
    }
    if tracks.is_empty() {
        return Err(std::io::Error::other(format!(
            "no tracks under {} (expected DIR/<user>/<key...>)",
            dir.display()
        )));
    }
    Ok(tracks)
}

/// A small deterministic generator (SplitMix64): each listener gets its own seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Upload(args) => runtime.block_on(upload::run(args)),
        Command::Streams(args) => runtime.block_on(streams::run(args)),
    }
}
