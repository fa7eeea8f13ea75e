//! Measures FastCDC size settings on a generated locker corpus: dedup ratio against the ideal,
//! ingest speed, chunk count and metadata size, with and without the format-aware segmenter.
//!
//! `cargo run --release --example chunk_sizes [-- --users 16 --recordings 20 --tracks-per-user 6]`

use std::time::Instant;

use clap::Parser;
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{ChunkerParams, LicenseMode, Options, Store, TrackKey, UserId};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 16)]
    users: usize,
    #[arg(long, default_value_t = 20)]
    recordings: usize,
    #[arg(long, default_value_t = 6)]
    tracks_per_user: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let corpus = Corpus::generate(CorpusSpec {
        users: args.users,
        recordings: args.recordings,
        tracks_per_user: args.tracks_per_user,
        ..CorpusSpec::default()
    });
    let uploads: Vec<(UserId, TrackKey, Vec<u8>)> = (0..corpus.uploads.len())
        .map(|i| {
            let up = &corpus.uploads[i];
            (
                UserId::new(&up.user).unwrap(),
                TrackKey::new(&up.key).unwrap(),
                corpus.bytes(i),
            )
        })
        .collect();
    let logical: u64 = uploads.iter().map(|u| u.2.len() as u64).sum();
    let ideal = corpus.ideal_bytes();
    println!(
        "corpus: {} uploads, {:.1} MB logical, ideal single-master {:.1} MB (dedup {:.2})",
        uploads.len(),
        logical as f64 / 1e6,
        ideal as f64 / 1e6,
        logical as f64 / ideal as f64
    );
    println!(
        "{:>22} {:>10} {:>8} {:>9} {:>9} {:>11} {:>12}",
        "min/avg/max KiB", "segmenter", "dedup", "vs ideal", "chunks", "ingest MB/s", "meta/phys %"
    );
    let settings = [
        (4u32, 16u32, 64u32),
        (16, 64, 256),
        (64, 256, 1024),
        (256, 1024, 4096),
    ];
    for (min, avg, max) in settings {
        for segmenting in [true, false] {
            let dir = tempfile::tempdir()?;
            let store = Store::open(
                dir.path(),
                Options::default()
                    .mode(LicenseMode::SingleMaster)
                    .segmenting(segmenting)
                    .chunker(ChunkerParams {
                        min: min << 10,
                        avg: avg << 10,
                        max: max << 10,
                    }),
            )?;
            let started = Instant::now();
            for (u, k, b) in &uploads {
                store.put(u, k, &b[..])?;
            }
            let secs = started.elapsed().as_secs_f64();
            let s = store.stats()?;
            drop(store);
            let meta = std::fs::metadata(dir.path().join("meta.redb"))?.len();
            println!(
                "{:>22} {:>10} {:>8.2} {:>8.1}% {:>9} {:>11.0} {:>12.2}",
                format!("{min}/{avg}/{max}"),
                if segmenting { "on" } else { "off" },
                s.dedup_ratio,
                100.0 * ideal as f64 / s.physical_bytes as f64,
                s.chunks,
                logical as f64 / 1e6 / secs,
                100.0 * meta as f64 / s.physical_bytes as f64
            );
        }
    }
    Ok(())
}
