//! The `lockerstore` command line.

/// `println!` that returns an error instead of panicking when stdout is closed (a reader such as
/// `head` went away): the error ends the command quietly with status 141 (see `main`).
macro_rules! outln {
    () => {
        crate::out(format_args!(""))?
    };
    ($($arg:tt)*) => {
        crate::out(format_args!($($arg)*))?
    };
}

mod bench;
mod dates;
mod demo;
mod import;
mod licences;

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockerstore::{Error, LicenseMode, Options, PutOptions, Quota, Store, TrackKey, UserId};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "lockerstore",
    version,
    about = "Deduplicating storage engine for music lockers"
)]
struct Cli {
    /// The store directory; with --meta, this node's own directory (its open packs, its cache
    /// and a file naming the store).
    #[arg(long, global = true, default_value = "./lockerstore-data")]
    store: PathBuf,
    /// Keep the metadata in this PostgreSQL database (`postgres://user:password@host/db`),
    /// shared by every node of the store, instead of the store directory's `meta.redb`.
    #[arg(long, global = true, value_name = "URL")]
    meta: Option<String>,
    /// Where the store's packs live (`s3://bucket/prefix`): for `init`, where to keep them
    /// (see `init`); for other commands, checked against where the store says they are.
    #[arg(long, global = true, value_name = "URL")]
    packs: Option<String>,
    #[command(flatten)]
    bucket: BucketArgs,
    /// With --meta: seconds the maintenance lease (held by the one node running `migrate` or
    /// `gc`) lasts unless renewed; a node that died is taken over after at most this long.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    lease_ttl: u64,
    /// With --meta: seconds a put may take before it fails; GC removes garbage only once it is
    /// twice this old, so no node's put in flight loses an entry it found.
    #[arg(long, global = true, default_value_t = 3600, value_name = "SECS")]
    ingest_time_limit: u64,
    /// Most bytes of packs kept cached on local disk, for a store whose packs live in an
    /// object store (5GB, 500MiB, ...).
    #[arg(long, global = true, default_value = "1GiB", value_parser = bytes_arg)]
    cache_bytes: u64,
    /// For a store whose packs live in an object store: seconds a deleted pack's object stays
    /// in the bucket (other nodes may still read it); 0 deletes at once.
    #[arg(long, global = true, default_value_t = 6 * 3600)]
    deletion_grace: u64,
    /// For a store whose packs live in an object store: acknowledge writes once they are in
    /// the bucket (`bucket`), or once durable on local disk with the uploads behind
    /// (`local-disk`: faster; losing this disk loses what was not uploaded yet).
    #[arg(long, global = true, value_enum, default_value_t = Durability::Bucket)]
    pack_durability: Durability,
    #[command(subcommand)]
    command: Command,
}

/// `--pack-durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Durability {
    Bucket,
    LocalDisk,
}

impl Cli {
    /// The options every command opens the store with.
    fn options(&self) -> Options {
        let mut options = Options::default();
        if let Some(url) = &self.meta {
            options = options
                .postgres(url.clone())
                .lease_ttl(std::time::Duration::from_secs(self.lease_ttl))
                .ingest_time_limit(std::time::Duration::from_secs(self.ingest_time_limit));
        }
        if let Some(url) = &self.packs {
            options = options.object_packs(self.bucket.location(url));
        }
        options
            .cache_bytes(self.cache_bytes)
            .deletion_grace(std::time::Duration::from_secs(self.deletion_grace))
            .pack_durability(match self.pack_durability {
                Durability::Bucket => lockerstore::PackDurability::Bucket,
                Durability::LocalDisk => lockerstore::PackDurability::LocalDisk,
            })
    }
}

/// Parses a byte count with an optional SI or binary suffix (5GB, 500MiB).
fn bytes_arg(s: &str) -> Result<u64, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, suffix) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let unit: u64 = match suffix {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("invalid size {s:?}")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

/// How to reach an S3-compatible server.
#[derive(clap::Args)]
struct BucketArgs {
    /// The S3-compatible server's address (`http://127.0.0.1:8333`); AWS when unset.
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The bucket's region (default: AWS_REGION, else us-east-1).
    #[arg(long, global = true)]
    region: Option<String>,
    /// Allow plain HTTP to the endpoint (loopback test servers).
    #[arg(long, global = true)]
    allow_http: bool,
    /// Address the bucket virtual-hosted-style (`bucket.host`) instead of path-style.
    #[arg(long, global = true)]
    virtual_hosted: bool,
}

impl BucketArgs {
    fn location(&self, url: &str) -> lockerstore::ObjectLocation {
        let mut location = lockerstore::ObjectLocation::new(url)
            .allow_http(self.allow_http)
            .virtual_hosted(self.virtual_hosted);
        if let Some(e) = &self.endpoint {
            location = location.endpoint(e.clone());
        }
        if let Some(r) = &self.region {
            location = location.region(r.clone());
        }
        location
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a store (or finish an interrupted creation); refuses an existing store and a
    /// non-empty directory that is not one.
    Init {
        /// License mode of the new store.
        #[arg(long, default_value = "per-user-copy")]
        mode: LicenseMode,
        // --packs (global): keep the packs in an S3-compatible bucket (`s3://bucket/prefix`)
        // instead of the store's `packs/` directory; credentials come from AWS_ACCESS_KEY_ID
        // and AWS_SECRET_ACCESS_KEY (and the other usual AWS variables). The store's
        // directory then holds the metadata (unless --meta), the packs being written and a
        // cache; the bucket holds the packs and, without --meta, a journal of the metadata,
        // enough for `rebuild`.
    },
    /// Recreate the metadata of the store in a bucket, in an empty --store directory, from the
    /// bucket alone (after the node's disk was lost), then check it.
    Rebuild {
        /// The store's bucket and prefix (`s3://bucket/prefix`), as given to `init --packs`.
        #[arg(long = "from", value_name = "URL")]
        from: String,
    },
    /// Write a checkpoint of the metadata to the bucket of a store whose packs live there, and
    /// delete the journal objects it replaces.
    Checkpoint,
    /// Rewrite a lost or damaged STORE file from the copy kept in the store's metadata.
    Repair,
    /// Store FILE (or - for stdin) as USER's track KEY.
    Put {
        user: OsString,
        key: OsString,
        file: PathBuf,
        /// Store it exempt from the user's quota (bought music): counted in the user's usage,
        /// not against the limits.
        #[arg(long)]
        exempt: bool,
        /// The track's rights holder (a label), whose licence decides where its chunks live;
        /// without it the holder comes from the file's tags (label, publisher), or is unknown.
        #[arg(long, value_name = "NAME")]
        rights_holder: Option<OsString>,
    },
    /// Show USER's quota and usage, or set its limits: a number of bytes (SI or binary suffix:
    /// 5GB, 500MiB) or of tracks, or `none`. Setting a quota creates an unknown user.
    Quota {
        user: OsString,
        /// Most bytes the user's counted tracks may hold, or `none`.
        #[arg(long)]
        bytes: Option<String>,
        /// Most counted tracks, or `none`.
        #[arg(long)]
        tracks: Option<String>,
        #[arg(long)]
        json: bool,
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
        /// Byte range as in HTTP Range: START-END (inclusive), START- (to the end) or -N (the
        /// last N bytes).
        #[arg(long, allow_hyphen_values = true)]
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
    /// Show or set the license mode: the default, for tracks whose rights holder has no
    /// licence (or none is known).
    Mode { mode: Option<LicenseMode> },
    /// Licences per rights holder: which holders' tracks share one copy of identical content,
    /// which keep a copy per user, and until when.
    #[command(visible_alias = "licence")]
    License {
        #[command(subcommand)]
        action: licences::LicenseAction,
    },
    /// Show the rights holder of USER's track KEY, or set it to NAME, or clear it (--none).
    /// Metadata only: if the new holder's licence wants the track elsewhere, `migrate` moves it.
    Holder {
        user: OsString,
        key: OsString,
        #[arg(conflicts_with = "none")]
        name: Option<OsString>,
        /// The track's rights holder becomes unknown (it follows the default).
        #[arg(long)]
        none: bool,
        #[arg(long)]
        json: bool,
    },
    /// Accounting: users, tracks, logical and physical bytes, garbage, dedup ratio.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Re-read and re-hash everything; exit non-zero on any problem. Names the tracks damage
    /// has cost.
    Verify {
        #[arg(long)]
        json: bool,
        /// First remove the damaged tracks (and the damaged records' index entries), keeping
        /// every track that reads back exactly; then verify.
        #[arg(long)]
        drop_damaged: bool,
    },
    /// Predict what migrating to MODE would write, free and leave (metadata only); with
    /// --by-holder, what flipping each rights holder's licence would.
    WhatIf {
        #[arg(required_unless_present = "by_holder", conflicts_with = "by_holder")]
        mode: Option<LicenseMode>,
        /// For every rights holder with tracks: flip its licence (shared <-> per-user), migrate;
        /// sorted by what it saves, largest first.
        #[arg(long)]
        by_holder: bool,
        #[arg(long)]
        json: bool,
    },
    /// Bring the physical layout in line with the current mode (online, resumable).
    Migrate {
        #[arg(long)]
        json: bool,
    },
    /// Prove which state the bytes are in, for the store and per rights holder; exit 1 if the
    /// layout does not match the licences.
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
    Store::open(&cli.store, cli.options().create(false))
}

/// Errors of the command line itself, beside the store's own.
#[derive(Debug)]
enum CliError {
    /// From the store.
    Store(Error),
    /// An argument the command line could not use (exit 2, like the store's bad-input errors).
    Usage(String),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Store(e)
    }
}

/// Writes one line to stdout; a closed stdout is an `Io` error whose source is `BrokenPipe`.
pub(crate) fn out(args: std::fmt::Arguments<'_>) -> lockerstore::Result<()> {
    let mut o = io::stdout().lock();
    o.write_fmt(args)
        .and_then(|()| o.write_all(b"\n"))
        .map_err(stdout_error)
}

fn stdout_error(source: io::Error) -> Error {
    Error::Io {
        op: "write",
        path: PathBuf::from("standard output"),
        source,
    }
}

fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// Parses a quota limit: `none`, or a number, for bytes with an optional SI (`KB`, `MB`, `GB`,
/// `TB`: powers of 1000, as lockers sold them) or binary (`KiB` ... `TiB`) suffix.
fn limit_arg(flag: &str, s: &str, bytes: bool) -> Result<Option<u64>, CliError> {
    if s == "none" {
        return Ok(None);
    }
    let usage = || CliError::Usage(format!("invalid {flag} {s:?}: expected a number or none"));
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let number: u64 = number.parse().map_err(|_| usage())?;
    let unit: u64 = match (bytes, suffix) {
        (_, "") => 1,
        (true, "B") => 1,
        (true, "KB") => 1_000,
        (true, "MB") => 1_000_000,
        (true, "GB") => 1_000_000_000,
        (true, "TB") => 1_000_000_000_000,
        (true, "KiB") => 1 << 10,
        (true, "MiB") => 1 << 20,
        (true, "GiB") => 1 << 30,
        (true, "TiB") => 1 << 40,
        _ => return Err(usage()),
    };
    number.checked_mul(unit).map(Some).ok_or_else(usage)
}

/// Parses an inclusive byte range as in an HTTP `Range` header (RFC 9110 14.1.1) against a
/// track of `len` bytes: `START-END` (an END past the track is cut to its last byte), `START-`
/// (to the end) or `-N` (the last N bytes). Returns the first and last byte.
fn parse_range(s: &str, len: u64) -> Result<(u64, u64), CliError> {
    let usage = |why: &str| CliError::Usage(format!("invalid range {s:?}: {why}"));
    let number = |t: &str| -> Result<Option<u64>, CliError> {
        if t.is_empty() {
            return Ok(None);
        }
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(usage(&format!("{t:?} is not a decimal byte offset")));
        }
        t.parse()
            .map(Some)
            .map_err(|_| usage(&format!("{t} is too large")))
    };
    let Some((a, b)) = s.split_once('-') else {
        return Err(usage("expected START-END, START- or -SUFFIX_LENGTH"));
    };
    let (first, last) = match (number(a)?, number(b)?) {
        (None, None) => return Err(usage("expected START-END, START- or -SUFFIX_LENGTH")),
        (None, Some(0)) => return Err(usage("a suffix of 0 bytes selects nothing")),
        (None, Some(n)) => (len.saturating_sub(n), len.checked_sub(1)),
        (Some(start), None) => (start, len.checked_sub(1)),
        (Some(start), Some(end)) if end < start => {
            return Err(usage("the last byte comes before the first"));
        }
        (Some(start), Some(end)) => (start, Some(end.min(len.saturating_sub(1)))),
    };
    match last {
        Some(last) if first < len => Ok((first, last)),
        _ => Err(usage(&format!(
            "it starts at or after the end of the track ({len} bytes)"
        ))),
    }
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Init { mode } => {
            // Open decides: it creates the store in a missing or empty directory (or finishes a
            // creation that was interrupted), refuses a directory holding anything else, and
            // opens an existing store, which init then refuses.
            let options = cli.options().mode(*mode);
            let store = Store::open(&cli.store, options)?;
            if !store.is_new() {
                return Err(Error::InvalidOptions(format!(
                    "{} already holds a store",
                    cli.store.display()
                ))
                .into());
            }
            outln!(
                "created store {} in {} mode",
                cli.store.display(),
                store.mode()
            );
        }
        Command::Rebuild { from } => {
            let options = cli.options().object_packs(cli.bucket.location(from));
            let started = std::time::Instant::now();
            let report = Store::rebuild(&cli.store, &options)?;
            let store = Store::open(&cli.store, options)?;
            let stats = store.stats()?;
            outln!(
                "rebuilt {} from {from}: checkpoint {} + {} journaled commits ({:.1} MB) up to \
                 commit {}, in {:.1} s: {} users, {} tracks, {:.1} MB",
                cli.store.display(),
                report.checkpoint,
                report.logs,
                mb(report.bytes),
                report.commit,
                started.elapsed().as_secs_f64(),
                stats.users,
                stats.tracks,
                mb(stats.logical_bytes),
            );
        }
        Command::Checkpoint => match open_existing(&cli)?.checkpoint()? {
            Some(seq) => outln!("checkpoint of commit {seq} written"),
            None => {
                return Err(Error::InvalidOptions(
                    "this store's packs are local: it keeps no journal to checkpoint".into(),
                )
                .into());
            }
        },
        Command::Repair => match Store::repair_store_file(&cli.store, Options::default())? {
            lockerstore::StoreFileRepair::Intact => {
                outln!(
                    "{}: STORE is intact, nothing to repair",
                    cli.store.display()
                )
            }
            _ => outln!(
                "{}: rewrote STORE from the copy in meta.redb",
                cli.store.display()
            ),
        },
        Command::Put {
            user,
            key,
            file,
            exempt,
            rights_holder,
        } => {
            let (user, key) = (user_arg(user)?, key_arg(key)?);
            let holder = rights_holder
                .as_ref()
                .map(licences::holder_arg)
                .transpose()?;
            let store = open_existing(&cli)?;
            let mut options = PutOptions::default().quota_exempt(*exempt);
            if let Some(h) = holder {
                options = options.rights_holder(h);
            }
            let out = if file.as_os_str() == "-" {
                store.put_with(&user, &key, io::stdin().lock(), &options)?
            } else {
                let f =
                    std::fs::File::open(file).map_err(|e| Error::Upload { read: 0, source: e })?;
                let reader = io::BufReader::with_capacity(1 << 20, f);
                store.put_with(&user, &key, reader, &options)?
            };
            // The holder as recorded: the one given, or the one the tags named.
            let holder = store.track_info(&user, &key)?.rights_holder;
            outln!(
                "{} bytes, {} chunks ({} new, {} new bytes: operator-only), fingerprint {}, \
                 {}{}",
                out.len,
                out.chunks,
                out.new_chunks,
                out.new_bytes,
                out.fingerprint,
                holder.map_or("no rights holder".to_string(), |h| format!(
                    "rights holder {h}"
                )),
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
            match output {
                // A temporary file beside the target, renamed over it only after the last chunk
                // verified: a failed read never leaves a file a user's tool could take as the
                // track (the temporary file is removed when it is dropped).
                Some(path) => {
                    let dir = match path.parent() {
                        Some(p) if !p.as_os_str().is_empty() => p,
                        _ => std::path::Path::new("."),
                    };
                    let io_err = |op, source| Error::Io {
                        op,
                        path: path.clone(),
                        source,
                    };
                    let mut tmp = tempfile::Builder::new()
                        .prefix(".lockerstore-get-")
                        .tempfile_in(dir)
                        .map_err(|e| io_err("create a temporary file for", e))?;
                    copy_track(&mut limited, tmp.as_file_mut(), count, path)?;
                    tmp.as_file().sync_all().map_err(|e| io_err("sync", e))?;
                    tmp.persist(path)
                        .map_err(|e| io_err("rename onto", e.error))?;
                }
                None => {
                    let stdout = io::stdout();
                    copy_track(
                        &mut limited,
                        &mut stdout.lock(),
                        count,
                        std::path::Path::new("standard output"),
                    )?;
                }
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
                            "rights_holder": t.rights_holder.as_ref().map(|h| h.as_str()),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                // The rights holder before the key: a key may hold anything, so it comes last.
                let width = tracks
                    .iter()
                    .filter_map(|t| t.rights_holder.as_ref())
                    .map(|h| h.as_str().chars().count())
                    .max()
                    .unwrap_or(1)
                    .min(32);
                for t in tracks {
                    outln!(
                        "{:>12}  {}  {:<width$}  {}",
                        t.size,
                        &t.fingerprint.to_hex()[..16],
                        t.rights_holder.as_ref().map_or("-", |h| h.as_str()),
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
            outln!("{}", store.mode());
        }
        Command::License { action } => licences::license(&open_existing(&cli)?, action)?,
        Command::Holder {
            user,
            key,
            name,
            none,
            json,
        } => {
            let (user, key) = (user_arg(user)?, key_arg(key)?);
            let set = match (name, none) {
                (Some(n), _) => Some(Some(licences::holder_arg(n)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            licences::holder(&open_existing(&cli)?, &user, &key, set, *json)?;
        }
        Command::Quota {
            user,
            bytes,
            tracks,
            json,
        } => {
            let user = user_arg(user)?;
            let store = open_existing(&cli)?;
            if bytes.is_some() || tracks.is_some() {
                let mut quota = match store.quota(&user) {
                    Ok(u) => u.quota,
                    Err(Error::UnknownUser(_)) => Quota::unlimited(),
                    Err(e) => return Err(e.into()),
                };
                if let Some(b) = bytes {
                    quota = quota.max_bytes(limit_arg("--bytes", b, true)?);
                }
                if let Some(t) = tracks {
                    quota = quota.max_tracks(limit_arg("--tracks", t, false)?);
                }
                store.set_quota(&user, quota)?;
            }
            let u = store.quota(&user)?;
            let limit = |l: Option<u64>| l.map_or("none".to_string(), |v| v.to_string());
            if *json {
                outln!(
                    "{}",
                    json!({
                        "user": user.as_str(),
                        "max_bytes": u.quota.max_bytes,
                        "max_tracks": u.quota.max_tracks,
                        "counted_bytes": u.counted_bytes,
                        "counted_tracks": u.counted_tracks,
                        "exempt_bytes": u.exempt_bytes,
                        "exempt_tracks": u.exempt_tracks,
                    })
                );
            } else {
                outln!(
                    "{}: {} of {} bytes and {} of {} tracks counted; {} bytes in {} exempt tracks",
                    user,
                    u.counted_bytes,
                    limit(u.quota.max_bytes),
                    u.counted_tracks,
                    limit(u.quota.max_tracks),
                    u.exempt_bytes,
                    u.exempt_tracks
                );
            }
        }
        Command::Stats { json } => {
            let s = open_existing(&cli)?.stats()?;
            if *json {
                let per_user: Vec<_> = s
                    .per_user
                    .iter()
                    .map(|u| {
                        json!({
                            "user": u.user,
                            "logical_bytes": u.logical_bytes,
                            "tracks": u.tracks,
                            "max_bytes": u.quota.quota.max_bytes,
                            "max_tracks": u.quota.quota.max_tracks,
                            "exempt_bytes": u.quota.exempt_bytes,
                            "exempt_tracks": u.quota.exempt_tracks,
                        })
                    })
                    .collect();
                outln!(
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
                        "pack_location": s.pack_location,
                        "cache_bytes": s.cache_bytes,
                        "cache_limit": s.cache_limit,
                        "upload_backlog_bytes": s.upload_backlog_bytes,
                        "per_user": per_user,
                    })
                );
            } else {
                outln!("mode            {}", s.mode);
                outln!("users           {}", s.users);
                outln!("tracks          {}", s.tracks);
                outln!(
                    "logical bytes   {} ({:.1} MB)",
                    s.logical_bytes,
                    mb(s.logical_bytes)
                );
                outln!(
                    "physical bytes  {} ({:.1} MB)",
                    s.physical_bytes,
                    mb(s.physical_bytes)
                );
                outln!(
                    "garbage bytes   {} ({:.1} MB)",
                    s.garbage_bytes,
                    mb(s.garbage_bytes)
                );
                outln!(
                    "chunks          {} live, {} garbage",
                    s.chunks,
                    s.garbage_chunks
                );
                outln!("recordings      {}", s.recordings);
                outln!("packs           {} ({:.1} MB)", s.packs, mb(s.pack_bytes));
                outln!("packs live at   {}", s.pack_location);
                if let (Some(c), Some(l)) = (s.cache_bytes, s.cache_limit) {
                    outln!("pack cache      {:.1} MB of {:.1} MB", mb(c), mb(l));
                }
                if let Some(b) = s.upload_backlog_bytes {
                    outln!("not uploaded    {:.1} MB", mb(b));
                }
                outln!("dedup ratio     {:.3}", s.dedup_ratio);
                outln!("chunk filter    {:.1} MB of RAM", mb(s.filter_bytes));
                for u in &s.per_user {
                    let q = &u.quota;
                    let mut limits = String::new();
                    if let Some(b) = q.quota.max_bytes {
                        limits += &format!(", quota {:.1} of {:.1} MB", mb(q.counted_bytes), mb(b));
                    }
                    if let Some(t) = q.quota.max_tracks {
                        limits += &format!(", {} of {t} tracks", q.counted_tracks);
                    }
                    if q.exempt_tracks > 0 {
                        limits += &format!(", {} exempt", q.exempt_tracks);
                    }
                    outln!(
                        "  {:<24} {:>6} tracks {:>10.1} MB{limits}",
                        u.user,
                        u.tracks,
                        mb(u.logical_bytes)
                    );
                }
            }
        }
        Command::Verify { json, drop_damaged } => {
            let store = open_existing(&cli)?;
            let dropped = if *drop_damaged {
                Some(store.drop_damaged_tracks()?)
            } else {
                None
            };
            let report = store.verify()?;
            let tracks_json = |v: &[lockerstore::DamagedTrack]| -> Vec<serde_json::Value> {
                v.iter()
                    .map(|d| json!({"user": d.user.as_str(), "key": d.key.as_str(), "problem": d.problem}))
                    .collect()
            };
            if *json {
                let mut out = json!({
                    "ok": report.is_ok(),
                    "problems": report.problems,
                    "damaged_tracks": tracks_json(&report.damaged_tracks),
                    "chunks_checked": report.chunks_checked,
                    "tracks_checked": report.tracks_checked,
                    "bytes_checked": report.bytes_checked,
                });
                if let Some(d) = &dropped {
                    out["dropped_tracks"] = json!(tracks_json(&d.tracks));
                }
                outln!("{out}");
            } else {
                for d in dropped.iter().flat_map(|d| &d.tracks) {
                    outln!("DROPPED TRACK: {} {} ({})", d.user, d.key, d.problem);
                }
                for p in &report.problems {
                    outln!("PROBLEM: {p}");
                }
                for d in &report.damaged_tracks {
                    outln!("DAMAGED TRACK: {} {}", d.user, d.key);
                }
                outln!(
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
        Command::WhatIf {
            mode,
            by_holder,
            json,
        } => {
            let store = open_existing(&cli)?;
            match mode {
                // clap requires MODE unless --by-holder, and refuses both.
                Some(mode) => {
                    let w = store.what_if(*mode)?;
                    if *json {
                        outln!("{}", what_if_json(&w));
                    } else {
                        print_what_if(&w)?;
                    }
                }
                None => {
                    debug_assert!(*by_holder);
                    let w = store.what_if_by_holder()?;
                    if *json {
                        outln!("{}", licences::what_if_by_holder_json(&w));
                    } else {
                        licences::print_what_if_by_holder(&w)?;
                    }
                }
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
                outln!(
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
                outln!(
                    "migrated {} tracks to the domains their licences ask for (default {}) in \
                     {secs:.2} s: {} records promoted, {} copied ({:.1} MB written)",
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
                    "misplaced_records": a.misplaced_records,
                    "unshareable_records": a.unshareable_records,
                    "shared_domain_records": a.shared_domain_records,
                    "user_domain_records": a.user_domain_records,
                    "holders": licences::audit_holders_json(&a),
                });
                if *records {
                    v["records"] = a
                        .records
                        .iter()
                        .map(|r| {
                            json!({
                                "chunk": r.chunk.to_hex(),
                                "domain": r.domain.to_string(),
                                "pack": r.pack.to_string(),
                                "offset": r.offset,
                                "users": r.users,
                            })
                        })
                        .collect();
                }
                outln!("{v}");
            } else {
                outln!("mode                         {}", a.mode);
                outln!("conforming                   {}", a.conforming);
                outln!("pending tracks               {}", a.pending_tracks);
                outln!(
                    "records shared across users  {}",
                    a.shared_records_across_users
                );
                outln!("duplicate records            {}", a.duplicate_records);
                outln!("foreign records              {}", a.foreign_records);
                outln!("aliased records              {}", a.aliased_records);
                outln!("misplaced records            {}", a.misplaced_records);
                outln!("unshareable records          {}", a.unshareable_records);
                outln!(
                    "live records                 {} shared domain, {} user domains",
                    a.shared_domain_records,
                    a.user_domain_records
                );
                licences::print_audit_holders(&a)?;
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
                outln!(
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
                outln!(
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
                outln!("client: format not recognised or payload not contiguous: upload needed");
                return Ok(ExitCode::from(1));
            };
            outln!(
                "client: claims audio {} ({} bytes of payload, {} bytes of own tags)",
                client.claim.audio_fingerprint,
                client.claim.audio_len,
                client.head.len() + client.tail.len()
            );
            let ch = store.challenge(&user, &key, &client.claim)?;
            outln!(
                "server: challenge {:016x}: {} ranges, fresh nonce",
                ch.id,
                ch.ranges.len()
            );
            let answer = client.answer(&ch);
            match store.prove(ch.id, answer, &client.head, &client.tail)? {
                lockerstore::ProofOutcome::Linked(out) => outln!(
                    "server: proof accepted; linked {} bytes as {user}/{key} with {} new bytes uploaded",
                    out.len,
                    out.new_bytes
                ),
                lockerstore::ProofOutcome::Refused => {
                    outln!("server: refused: upload needed");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Demo(args) => demo::run(args)?,
        Command::Bench(args) => bench::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies `count` verified bytes of a track to `out`, telling a failed read (the store's error)
/// from a failed write (an `Io` error on `out_path`; a closed pipe ends the command quietly).
fn copy_track(
    track: &mut impl Read,
    out: &mut impl Write,
    count: u64,
    out_path: &std::path::Path,
) -> lockerstore::Result<()> {
    let write_err = |source| Error::Io {
        op: "write",
        path: out_path.to_owned(),
        source,
    };
    let mut buf = vec![0u8; 256 << 10];
    let mut copied = 0u64;
    loop {
        let n = match track.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_io(e)),
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
        copied += n as u64;
    }
    out.flush().map_err(write_err)?;
    if copied != count {
        return Err(Error::Corrupted {
            what: format!("the track ended after {copied} of {count} bytes"),
            location: None,
        });
    }
    Ok(())
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

pub(crate) fn print_what_if(w: &lockerstore::WhatIf) -> lockerstore::Result<()> {
    outln!("what-if {}:", w.mode);
    outln!("  pending tracks   {}", w.pending_tracks);
    outln!(
        "  physical bytes   {:.1} MB now -> {:.1} MB after ({} chunks)",
        mb(w.physical_bytes_now),
        mb(w.physical_bytes),
        w.chunks
    );
    outln!(
        "  to write         {:.1} MB ({} records, {} bytes of new pack headers)",
        mb(w.bytes_to_write),
        w.records_to_write,
        w.pack_overhead_bytes
    );
    outln!(
        "  to free          {:.1} MB (by the next gc)",
        mb(w.bytes_to_free)
    );
    Ok(())
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
    let err = match run(cli) {
        Ok(code) => return code,
        Err(e) => e,
    };
    let _ = io::stdout().flush();
    match err {
        // A reader of our output went away (`lockerstore ls u | head`): stop quietly with the
        // status a shell reports for a process ended by SIGPIPE (128 + 13), as coreutils do.
        CliError::Store(e) if is_broken_pipe(&e) => ExitCode::from(141),
        CliError::Store(e) => {
            eprintln!("lockerstore: error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
        CliError::Usage(msg) => {
            eprintln!("lockerstore: error: {msg}");
            ExitCode::from(2)
        }
    }
}
