//! `lockerstore demo`: the main job end to end on a synthetic locker corpus.

use std::path::PathBuf;
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
    label: &'static str,
    recordings: u64,
    ingest_secs: f64,
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

use crate::parallel;

fn run_mode(
    corpus: &Corpus,
    dir: &std::path::Path,
    (label, mode, segmenting): (&'static str, LicenseMode, bool),
    jobs: usize,
) -> Result<(Row, Store)> {
    let store = Store::open(dir, Options::default().mode(mode).segmenting(segmenting))?;
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
    Ok((
        Row {
            label,
            recordings: stats.recordings,
            ingest_secs,
            logical: stats.logical_bytes,
            physical: stats.physical_bytes,
            ratio: stats.dedup_ratio,
            ingest_mbs: mbs(ingest_secs),
            read_mbs: mbs(read_secs),
        },
        store,
    ))
}

fn pct_off(predicted: u64, actual: u64) -> f64 {
    100.0 * (predicted as f64 - actual as f64).abs() / (actual.max(1) as f64)
}

/// Flips the per-user store to single-master and back, with what-if, migrate, gc, audit and
/// verify at each step; `ingest_secs` is the time the same data took to ingest, for comparison.
fn flip(store: &Store, corpus: &Corpus, ingest_secs: f64) -> Result<()> {
    outln!();
    outln!("license flip on the per-user-copy store:");
    for (target, label) in [
        (LicenseMode::SingleMaster, "licence signed"),
        (LicenseMode::PerUserCopy, "licence lapsed"),
    ] {
        let before = store.stats()?;
        store.set_mode(target)?;
        let w = store.what_if(target)?;
        outln!(
            "  {label}: mode {target}; what-if: {:.1} MB -> {:.1} MB physical, {:.1} MB to write, {:.1} MB to free",
            before.physical_bytes as f64 / 1e6,
            w.physical_bytes as f64 / 1e6,
            w.bytes_to_write as f64 / 1e6,
            w.bytes_to_free as f64 / 1e6
        );
        let started = Instant::now();
        let m = store.migrate(&mut |_| {})?;
        let secs = started.elapsed().as_secs_f64();
        let after = store.stats()?;
        let speed = if m.bytes_written == 0 {
            format!(
                "{:.1}x faster than ingesting them",
                ingest_secs / secs.max(1e-9)
            )
        } else {
            format!(
                "copies written at {:.0} MB/s",
                m.bytes_written as f64 / 1e6 / secs.max(1e-9)
            )
        };
        outln!(
            "    migrate: {} tracks in {secs:.2} s ({speed}), {} records promoted, {} copied ({:.1} MB written)",
            m.tracks_migrated,
            m.records_promoted,
            m.records_copied,
            m.bytes_written as f64 / 1e6
        );
        outln!(
            "    actual: {:.1} MB physical, {} chunks (what-if off by {:.3} % and {} chunks)",
            after.physical_bytes as f64 / 1e6,
            after.chunks,
            pct_off(w.physical_bytes, after.physical_bytes),
            w.chunks.abs_diff(after.chunks)
        );
        let started = Instant::now();
        let g = store.gc(lockerstore::GcOptions::default(), &mut |_| {})?;
        outln!(
            "    gc: {:.1} MB reclaimed in {:.2} s ({} packs deleted, {} rewritten)",
            g.bytes_reclaimed() as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            g.packs_deleted,
            g.packs_rewritten
        );
        let a = store.audit(false)?;
        outln!(
            "    audit: {} ({} pending tracks, {} records shared across users, {} duplicate records)",
            if a.conforming {
                "conforming"
            } else {
                "NOT CONFORMING"
            },
            a.pending_tracks,
            a.shared_records_across_users,
            a.duplicate_records
        );
        let v = store.verify()?;
        if !a.conforming || !v.is_ok() {
            return Err(Error::Corrupted {
                what: format!(
                    "after the flip to {target}: audit {a:?}, verify {:?}",
                    v.problems
                ),
                location: None,
            });
        }
        for i in 0..corpus.uploads.len() {
            let (user, key) = ids(corpus, i)?;
            if store.read_track(&user, &key)? != corpus.bytes(i) {
                return Err(Error::Corrupted {
                    what: format!("{user}/{key} changed across the flip"),
                    location: None,
                });
            }
        }
        outln!("    verify: ok; every track reads back exact");
    }
    Ok(())
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
    outln!(
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
    let outcome = (|| -> Result<()> {
        let (per_user_row, per_user) = run_mode(
            &corpus,
            &base.join("per-user-copy"),
            ("per-user-copy", LicenseMode::PerUserCopy, true),
            args.jobs,
        )?;
        rows.push(per_user_row);
        for (label, segmenting) in [("single-master", true), ("(no segmenter)", false)] {
            let (row, store) = run_mode(
                &corpus,
                &base.join(label),
                (label, LicenseMode::SingleMaster, segmenting),
                args.jobs,
            )?;
            rows.push(row);
            drop(store);
            let _ = std::fs::remove_dir_all(base.join(label));
        }
        print_table(&rows, corpus.ideal_bytes())?;
        flip(&per_user, &corpus, rows[0].ingest_secs)
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&base);
    }
    outcome?;
    outln!();
    outln!(
        "every track read back exact and verified in every store (durable ingest, {} threads)",
        args.jobs
    );
    if let Some(d) = &args.keep {
        outln!("stores kept under {}", d.display());
    }
    Ok(())
}

fn print_table(rows: &[Row], ideal: u64) -> lockerstore::Result<()> {
    outln!();
    outln!(
        "{:<15} {:>11} {:>12} {:>7} {:>9} {:>11} {:>12} {:>10}",
        "mode",
        "logical MB",
        "physical MB",
        "dedup",
        "vs ideal",
        "recordings",
        "ingest MB/s",
        "read MB/s"
    );
    for r in rows {
        outln!(
            "{:<15} {:>11.1} {:>12.1} {:>7.2} {:>8.1}% {:>11} {:>12.1} {:>10.1}",
            r.label,
            r.logical as f64 / 1e6,
            r.physical as f64 / 1e6,
            r.ratio,
            100.0 * ideal as f64 / r.physical.max(1) as f64,
            r.recordings,
            r.ingest_mbs,
            r.read_mbs
        );
    }
    outln!(
        "ideal single-master size (each distinct audio payload and picture once, every copy's other \
         tag bytes): {:.1} MB, dedup ratio {:.2}",
        ideal as f64 / 1e6,
        rows[0].logical as f64 / ideal.max(1) as f64
    );
    Ok(())
}
