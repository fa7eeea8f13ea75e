//! `lockerstore demo`: the main job end to end on a synthetic locker corpus.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{Error, LicenseMode, Options, Result, Store, TrackKey, UserId};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Users in the corpus.
    #[arg(long, default_value_t = 24)]
    users: usize,
    /// Distinct recordings in the catalogue.
    #[arg(long, default_value_t = 30)]
    recordings: usize,
    /// Tracks each user holds.
    #[arg(long, default_value_t = 8)]
    tracks_per_user: usize,
    /// Ingest threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Keep the two stores in this directory instead of a temporary one that is removed.
    #[arg(long)]
    keep: Option<PathBuf>,
}

struct Row {
    mode: LicenseMode,
    logical: u64,
    physical: u64,
    ratio: f64,
    ingest_mbs: f64,
    read_mbs: f64,
}

fn ids(corpus: &Corpus, i: usize) -> Result<(UserId, TrackKey)> {
    let up = &corpus.uploads[i];
    Ok((UserId::new(&up.user)?, TrackKey::new(&up.key)?))
}

/// Runs `f(i)` for every upload index on `jobs` threads; the first error wins.
fn parallel(n: usize, jobs: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        f(i)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("demo worker panicked"))
    })
}

fn run_mode(corpus: &Corpus, dir: &std::path::Path, mode: LicenseMode, jobs: usize) -> Result<Row> {
    let store = Store::open(
        dir,
        Options {
            mode,
            ..Options::default()
        },
    )?;
    let n = corpus.uploads.len();
    let started = Instant::now();
    parallel(n, jobs, |i| {
        let (user, key) = ids(corpus, i)?;
        store.put(&user, &key, &corpus.bytes(i)[..]).map(|_| ())
    })?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let stats = store.stats()?;
    let started = Instant::now();
    parallel(n, jobs, |i| {
        let (user, key) = ids(corpus, i)?;
        let got = store.read_track(&user, &key)?;
        if got != corpus.bytes(i) {
            return Err(Error::Corrupted {
                what: format!("{user}/{key} read back different bytes"),
                location: None,
            });
        }
        Ok(())
    })?;
    let read_secs = started.elapsed().as_secs_f64();
    let report = store.verify()?;
    if !report.is_ok() {
        return Err(Error::Corrupted {
            what: format!("verify: {:?}", report.problems),
            location: None,
        });
    }
    let mbs = |secs: f64| stats.logical_bytes as f64 / 1e6 / secs.max(1e-9);
    Ok(Row {
        mode,
        logical: stats.logical_bytes,
        physical: stats.physical_bytes,
        ratio: stats.dedup_ratio,
        ingest_mbs: mbs(ingest_secs),
        read_mbs: mbs(read_secs),
    })
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let spec = CorpusSpec {
        users: args.users,
        recordings: args.recordings,
        tracks_per_user: args.tracks_per_user,
        ..CorpusSpec::default()
    };
    if spec.users == 0 || spec.recordings == 0 || spec.tracks_per_user == 0 {
        return Err(Error::InvalidOptions(
            "users, recordings and tracks per user must be positive".into(),
        ));
    }
    let started = Instant::now();
    let corpus = Corpus::generate(spec);
    println!(
        "corpus: {} users, {} recordings, {} uploads, {:.1} MB logical (generated in {:.1} s)",
        corpus.spec.users,
        corpus.spec.recordings,
        corpus.uploads.len(),
        corpus.logical_bytes() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let (base, temporary) = match &args.keep {
        Some(d) => (d.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            (
                std::env::temp_dir()
                    .join(format!("lockerstore-demo-{}-{nanos}", std::process::id())),
                true,
            )
        }
    };
    let mut rows = Vec::new();
    let mut outcome = Ok(());
    for mode in [LicenseMode::PerUserCopy, LicenseMode::SingleMaster] {
        match run_mode(&corpus, &base.join(mode.as_str()), mode, args.jobs) {
            Ok(row) => rows.push(row),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&base);
    }
    outcome?;
    println!();
    println!(
        "{:<15} {:>12} {:>13} {:>7} {:>13} {:>11}",
        "mode", "logical MB", "physical MB", "dedup", "ingest MB/s", "read MB/s"
    );
    for r in &rows {
        println!(
            "{:<15} {:>12.1} {:>13.1} {:>7.2} {:>13.1} {:>11.1}",
            r.mode.as_str(),
            r.logical as f64 / 1e6,
            r.physical as f64 / 1e6,
            r.ratio,
            r.ingest_mbs,
            r.read_mbs
        );
    }
    println!();
    println!(
        "every track read back exact and verified in both modes (durable ingest, {} threads)",
        args.jobs
    );
    if let Some(d) = &args.keep {
        println!("stores kept under {}", d.display());
    }
    Ok(())
}
