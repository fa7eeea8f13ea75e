//! The `lockerstore` command line.

mod bench;
mod demo;
mod import;

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockerstore::{Error, LicenseMode, Options, Store, TrackKey, UserId};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "lockerstore",
    version,
    about = "Deduplicating storage engine for music lockers"
)]
struct Cli {
    /// The store directory.
    #[arg(long, global = true, default_value = "./lockerstore-data")]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store (or finish an interrupted creation); refuses an existing store and a
    /// non-empty directory that is not one.
    Init {
        /// License mode of the new store.
        #[arg(long, default_value = "per-user-copy")]
        mode: LicenseMode,
    },
    /// Rewrite a lost or damaged STORE file from the copy kept in the store's metadata.
    Repair,
    /// Store FILE (or - for stdin) as USER's track KEY.
    Put {
        user: OsString,
        key: OsString,
        file: PathBuf,
    },
    /// Import every file under DIR/<user>/... as user <user>, key = path below DIR/<user>/.
    Import {
        dir: PathBuf,
        /// Parallel ingest threads (default: number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Write a track (or an inclusive byte range of it) to stdout or a file.
    Get {
        user: OsString,
        key: OsString,
        /// Output file instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Inclusive byte range START-END, as in HTTP Range.
        #[arg(long)]
        range: Option<String>,
    },
    /// List a user's tracks.
    Ls {
        user: OsString,
        #[arg(long)]
        json: bool,
    },
    /// Delete a track.
    Rm { user: OsString, key: OsString },
    /// Show or set the license mode.
    Mode { mode: Option<LicenseMode> },
    /// Accounting: users, tracks, logical and physical bytes, garbage, dedup ratio.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Re-read and re-hash everything; exit non-zero on any problem.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Predict what migrating to MODE would write, free and leave (metadata only).
    WhatIf {
        mode: LicenseMode,
        #[arg(long)]
        json: bool,
    },
    /// Bring the physical layout in line with the current mode (online, resumable).
    Migrate {
        #[arg(long)]
        json: bool,
    },
    /// Prove which state the bytes are in; exit 1 if the layout does not match the mode.
    Audit {
        #[arg(long)]
        json: bool,
        /// List every live record with its domain and the users referencing it (JSON only).
        #[arg(long)]
        records: bool,
    },
    /// Free garbage records and rewrite packs whose live share fell below the threshold.
    Gc {
        /// Rewrite packs whose live share is below this fraction.
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        #[arg(long)]
        json: bool,
    },
    /// Upload avoidance, both sides run locally: prove USER holds FILE's recording and link it as
    /// KEY without uploading the payload (single-master mode only).
    Match {
        user: OsString,
        key: OsString,
        file: PathBuf,
    },
    /// Generate a synthetic locker corpus and ingest it in both modes.
    Demo(demo::DemoArgs),
    /// Macro benchmark: the machine's limits and the store against them, in one run.
    Bench(bench::BenchArgs),
}

fn user_arg(s: &OsString) -> lockerstore::Result<UserId> {
    UserId::from_bytes(s.as_bytes())
}

fn key_arg(s: &OsString) -> lockerstore::Result<TrackKey> {
    TrackKey::from_bytes(s.as_bytes())
}

fn open_existing(cli: &Cli) -> lockerstore::Result<Store> {
    Store::open(
        &cli.store,
        Options {
            create: false,
            ..Options::default()
        },
    )
}

fn parse_range(s: &str, len: u64) -> lockerstore::Result<(u64, u64)> {
    let bad = |start, end| Error::InvalidRange { start, end, len };
    let (a, b) = s.split_once('-').ok_or_else(|| bad(0, 0))?;
    let start: u64 = a.trim().parse().map_err(|_| bad(0, 0))?;
    let end: u64 = if b.trim().is_empty() {
        len.saturating_sub(1)
    } else {
        b.trim().parse().map_err(|_| bad(start, 0))?
    };
    if start > end || end >= len {
        return Err(bad(start, end));
    }
    Ok((start, end))
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn run(cli: Cli) -> lockerstore::Result<ExitCode> {
    match &cli.command {
        Command::Init { mode } => {
            // Open decides: it creates the store in a missing or empty directory (or finishes a
            // creation that was interrupted), refuses a directory holding anything else, and
            // opens an existing store, which init then refuses.
            let store = Store::open(
                &cli.store,
                Options {
                    mode: *mode,
                    ..Options::default()
                },
            )?;
            if !store.is_new() {
                return Err(Error::InvalidOptions(format!(
                    "{} already holds a store",
                    cli.store.display()
                )));
            }
            println!(
                "created store {} in {} mode",
                cli.store.display(),
                store.mode()
            );
        }
        Command::Repair => match Store::repair_store_file(&cli.store, Options::default())? {
            lockerstore::StoreFileRepair::Intact => {
                println!(
                    "{}: STORE is intact, nothing to repair",
                    cli.store.display()
                )
            }
            _ => println!(
                "{}: rewrote STORE from the copy in meta.redb",
                cli.store.display()
            ),
        },
        Command::Put { user, key, file } => {
            let (user, key) = (user_arg(user)?, key_arg(key)?);
            let store = open_existing(&cli)?;
            let out = if file.as_os_str() == "-" {
                store.put(&user, &key, io::stdin().lock())?
            } else {
                let f =
                    std::fs::File::open(file).map_err(|e| Error::Upload { read: 0, source: e })?;
                store.put(&user, &key, io::BufReader::with_capacity(1 << 20, f))?
            };
            println!(
                "{} bytes, {} chunks ({} new, {} new bytes), fingerprint {}{}",
                out.len,
                out.chunks,
                out.new_chunks,
                out.new_bytes,
                out.fingerprint,
                if out.replaced { ", replaced" } else { "" }
            );
        }
        Command::Import { dir, jobs } => {
            let store = open_existing(&cli)?;
            let failed = import::run(&store, dir, jobs.unwrap_or_else(default_jobs))?;
            if failed > 0 {
                eprintln!("lockerstore: {failed} files could not be imported");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Get {
            user,
            key,
            output,
            range,
        } => {
            let (user, key) = (user_arg(user)?, key_arg(key)?);
            let store = open_existing(&cli)?;
            let mut reader = store.open_track(&user, &key)?;
            let len = reader.len();
            let (start, count) = match range {
                Some(r) => {
                    let (s, e) = parse_range(r, len)?;
                    (s, e - s + 1)
                }
                None => (0, len),
            };
            reader
                .seek(SeekFrom::Start(start))
                .map_err(Error::from_io)?;
            let mut limited = reader.take(count);
            let copied = match output {
                Some(path) => {
                    let mut f = std::fs::File::create(path).map_err(|e| Error::Io {
                        op: "create",
                        path: path.clone(),
                        source: e,
                    })?;
                    io::copy(&mut limited, &mut f)
                }
                None => io::copy(&mut limited, &mut io::stdout().lock()),
            }
            .map_err(Error::from_io)?;
            if copied != count {
                return Err(Error::Metadata(format!("copied {copied} of {count} bytes")));
            }
        }
        Command::Ls { user, json } => {
            let user = user_arg(user)?;
            let store = open_existing(&cli)?;
            let tracks = store.list(&user)?;
            if *json {
                let v: Vec<_> = tracks
                    .iter()
                    .map(|t| {
                        json!({
                            "key": t.key.as_str(),
                            "size": t.size,
                            "fingerprint": t.fingerprint.to_hex(),
                            "chunks": t.chunks,
                            "stored_at": t.stored_at,
                            "format": t.format,
                            "audio_fingerprint": t.audio_fingerprint.map(|f| f.to_hex()),
                            "audio_len": t.audio_len,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for t in tracks {
                    println!(
                        "{:>12}  {}  {}",
                        t.size,
                        &t.fingerprint.to_hex()[..16],
                        t.key
                    );
                }
            }
        }
        Command::Rm { user, key } => {
            let (user, key) = (user_arg(user)?, key_arg(key)?);
            open_existing(&cli)?.delete(&user, &key)?;
        }
        Command::Mode { mode } => {
            let store = open_existing(&cli)?;
            if let Some(m) = mode {
                store.set_mode(*m)?;
            }
            println!("{}", store.mode());
        }
        Command::Stats { json } => {
            let s = open_existing(&cli)?.stats()?;
            if *json {
                let per_user: Vec<_> = s
                    .per_user
                    .iter()
                    .map(|u| json!({"user": u.user, "logical_bytes": u.logical_bytes, "tracks": u.tracks}))
                    .collect();
                println!(
                    "{}",
                    json!({
                        "mode": s.mode.as_str(),
                        "users": s.users,
                        "tracks": s.tracks,
                        "logical_bytes": s.logical_bytes,
                        "physical_bytes": s.physical_bytes,
                        "garbage_bytes": s.garbage_bytes,
                        "chunks": s.chunks,
                        "recordings": s.recordings,
                        "garbage_chunks": s.garbage_chunks,
                        "packs": s.packs,
                        "pack_bytes": s.pack_bytes,
                        "dedup_ratio": s.dedup_ratio,
                        "filter_bytes": s.filter_bytes,
                        "per_user": per_user,
                    })
                );
            } else {
                println!("mode            {}", s.mode);
                println!("users           {}", s.users);
                println!("tracks          {}", s.tracks);
                println!(
                    "logical bytes   {} ({:.1} MB)",
                    s.logical_bytes,
                    mb(s.logical_bytes)
                );
                println!(
                    "physical bytes  {} ({:.1} MB)",
                    s.physical_bytes,
                    mb(s.physical_bytes)
                );
                println!(
                    "garbage bytes   {} ({:.1} MB)",
                    s.garbage_bytes,
                    mb(s.garbage_bytes)
                );
                println!(
                    "chunks          {} live, {} garbage",
                    s.chunks, s.garbage_chunks
                );
                println!("recordings      {}", s.recordings);
                println!("packs           {} ({:.1} MB)", s.packs, mb(s.pack_bytes));
                println!("dedup ratio     {:.3}", s.dedup_ratio);
                println!("chunk filter    {:.1} MB of RAM", mb(s.filter_bytes));
                for u in &s.per_user {
                    println!(
                        "  {:<24} {:>6} tracks {:>10.1} MB",
                        u.user,
                        u.tracks,
                        mb(u.logical_bytes)
                    );
                }
            }
        }
        Command::Verify { json } => {
            let report = open_existing(&cli)?.verify()?;
            if *json {
                println!(
                    "{}",
                    json!({
                        "ok": report.is_ok(),
                        "problems": report.problems,
                        "chunks_checked": report.chunks_checked,
                        "tracks_checked": report.tracks_checked,
                        "bytes_checked": report.bytes_checked,
                    })
                );
            } else {
                for p in &report.problems {
                    println!("PROBLEM: {p}");
                }
                println!(
                    "{}: {} chunks, {} tracks ({:.1} MB) checked, {} problems",
                    if report.is_ok() { "ok" } else { "FAILED" },
                    report.chunks_checked,
                    report.tracks_checked,
                    mb(report.bytes_checked),
                    report.problems.len()
                );
            }
            if !report.is_ok() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::WhatIf { mode, json } => {
            let w = open_existing(&cli)?.what_if(*mode)?;
            if *json {
                println!("{}", what_if_json(&w));
            } else {
                print_what_if(&w);
            }
        }
        Command::Migrate { json } => {
            let store = open_existing(&cli)?;
            let bar = progress_bar(*json);
            let started = std::time::Instant::now();
            let report = store.migrate(&mut |p| {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                bar.set_message(format!("{}/{} tracks", p.tracks_done, p.tracks_total));
            })?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            if *json {
                println!(
                    "{}",
                    json!({
                        "mode": report.mode.map(|m| m.as_str()),
                        "tracks_migrated": report.tracks_migrated,
                        "records_promoted": report.records_promoted,
                        "records_copied": report.records_copied,
                        "bytes_written": report.bytes_written,
                        "rounds": report.rounds,
                        "seconds": secs,
                    })
                );
            } else {
                println!(
                    "migrated {} tracks to {} in {secs:.2} s: {} records promoted, {} copied ({:.1} MB written)",
                    report.tracks_migrated,
                    report.mode.map_or("?", |m| m.as_str()),
                    report.records_promoted,
                    report.records_copied,
                    mb(report.bytes_written)
                );
            }
        }
        Command::Audit { json, records } => {
            let a = open_existing(&cli)?.audit(*records)?;
            if *json {
                let mut v = json!({
                    "mode": a.mode.as_str(),
                    "conforming": a.conforming,
                    "shared_records_across_users": a.shared_records_across_users,
                    "pending_tracks": a.pending_tracks,
                    "duplicate_records": a.duplicate_records,
                    "foreign_records": a.foreign_records,
                    "aliased_records": a.aliased_records,
                    "shared_domain_records": a.shared_domain_records,
                    "user_domain_records": a.user_domain_records,
                });
                if *records {
                    v["records"] = a
                        .records
                        .iter()
                        .map(|r| {
                            json!({
                                "chunk": r.chunk.to_hex(),
                                "domain": match r.domain {
                                    lockerstore::Domain::Shared => "shared".to_string(),
                                    lockerstore::Domain::User(n) => format!("user#{}", n.0),
                                },
                                "pack": r.pack.to_string(),
                                "offset": r.offset,
                                "users": r.users,
                            })
                        })
                        .collect();
                }
                println!("{v}");
            } else {
                println!("mode                         {}", a.mode);
                println!("conforming                   {}", a.conforming);
                println!("pending tracks               {}", a.pending_tracks);
                println!(
                    "records shared across users  {}",
                    a.shared_records_across_users
                );
                println!("duplicate records            {}", a.duplicate_records);
                println!("foreign records              {}", a.foreign_records);
                println!("aliased records              {}", a.aliased_records);
                println!(
                    "live records                 {} shared domain, {} user domains",
                    a.shared_domain_records, a.user_domain_records
                );
            }
            if !a.conforming {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Gc { threshold, json } => {
            let store = open_existing(&cli)?;
            let bar = progress_bar(*json);
            let r = store.gc(
                lockerstore::GcOptions {
                    threshold: *threshold,
                },
                &mut |p| {
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                    bar.set_message(p.phase);
                },
            )?;
            bar.finish_and_clear();
            if *json {
                println!(
                    "{}",
                    json!({
                        "entries_removed": r.entries_removed,
                        "entries_pinned": r.entries_pinned,
                        "packs_deleted": r.packs_deleted,
                        "packs_rewritten": r.packs_rewritten,
                        "bytes_copied": r.bytes_copied,
                        "pack_bytes_before": r.pack_bytes_before,
                        "pack_bytes_after": r.pack_bytes_after,
                        "bytes_reclaimed": r.bytes_reclaimed(),
                    })
                );
            } else {
                println!(
                    "removed {} garbage entries, deleted {} packs ({} rewritten, {:.1} MB copied): {:.1} MB -> {:.1} MB",
                    r.entries_removed,
                    r.packs_deleted,
                    r.packs_rewritten,
                    mb(r.bytes_copied),
                    mb(r.pack_bytes_before),
                    mb(r.pack_bytes_after)
                );
            }
        }
        Command::Match { user, key, file } => {
            let (user, key) = (user_arg(user)?, key_arg(key)?);
            let store = open_existing(&cli)?;
            let bytes = std::fs::read(file).map_err(|e| Error::Upload { read: 0, source: e })?;
            let Some(client) = lockerstore::ClientTrack::from_file_bytes(&bytes) else {
                println!("client: format not recognised or payload not contiguous: upload needed");
                return Ok(ExitCode::from(1));
            };
            println!(
                "client: claims audio {} ({} bytes of payload, {} bytes of own tags)",
                client.claim.audio_fingerprint,
                client.claim.audio_len,
                client.head.len() + client.tail.len()
            );
            let ch = store.challenge(&user, &key, &client.claim)?;
            println!(
                "server: challenge {:016x}: {} ranges, fresh nonce",
                ch.id,
                ch.ranges.len()
            );
            let answer = client.answer(&ch);
            match store.prove(ch.id, answer, &client.head, &client.tail)? {
                lockerstore::ProofOutcome::Linked(out) => println!(
                    "server: proof accepted; linked {} bytes as {user}/{key} with {} new bytes uploaded",
                    out.len, out.new_bytes
                ),
                lockerstore::ProofOutcome::Refused => {
                    println!("server: refused: upload needed");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Demo(args) => demo::run(args)?,
        Command::Bench(args) => bench::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn what_if_json(w: &lockerstore::WhatIf) -> serde_json::Value {
    json!({
        "mode": w.mode.as_str(),
        "physical_bytes": w.physical_bytes,
        "chunks": w.chunks,
        "bytes_to_write": w.bytes_to_write,
        "records_to_write": w.records_to_write,
        "pack_overhead_bytes": w.pack_overhead_bytes,
        "bytes_to_free": w.bytes_to_free,
        "pending_tracks": w.pending_tracks,
        "physical_bytes_now": w.physical_bytes_now,
        "garbage_bytes_now": w.garbage_bytes_now,
    })
}

pub(crate) fn print_what_if(w: &lockerstore::WhatIf) {
    println!("what-if {}:", w.mode);
    println!("  pending tracks   {}", w.pending_tracks);
    println!(
        "  physical bytes   {:.1} MB now -> {:.1} MB after ({} chunks)",
        mb(w.physical_bytes_now),
        mb(w.physical_bytes),
        w.chunks
    );
    println!(
        "  to write         {:.1} MB ({} records, {} bytes of new pack headers)",
        mb(w.bytes_to_write),
        w.records_to_write,
        w.pack_overhead_bytes
    );
    println!(
        "  to free          {:.1} MB (by the next gc)",
        mb(w.bytes_to_free)
    );
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet || std::env::var_os("CI").is_some() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Runs `f(i)` for every `i` in `0..n` on `jobs` threads; the first error wins.
pub(crate) fn parallel(
    n: usize,
    jobs: usize,
    f: impl Fn(usize) -> lockerstore::Result<()> + Sync,
) -> lockerstore::Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                s.spawn(|| -> lockerstore::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            .try_for_each(|h| h.join().expect("worker thread panicked"))
    })
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("lockerstore: error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
