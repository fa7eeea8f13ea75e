//! Crash tests: a process is killed with SIGKILL at random moments, again and again on the same
//! store.
//!
//! 1. A writer: every write it acknowledged must survive each crash (and each recovery of a
//!    recovery).
//! 2. A maintainer: it flips the license mode, migrates and runs GC over a generated corpus; no
//!    track may be lost or altered by a migration or a GC cut short, and a migration run after
//!    the crash must bring the layout in line with the mode.
//!
//! The test binary re-executes itself: `child_writer` (ignored, a no-op unless the store
//! directory is in its environment) opens the store and writes forever, printing `BEGIN ...`
//! before each operation and `DONE ...` after the call returned. The parent kills it, reopens the
//! store, runs `verify` and checks the store against the replayed log. The one operation that was
//! in flight at the kill (a `BEGIN` without its `DONE`) may or may not have landed.
//! `child_maintainer` works the same way for the second scenario.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{key, user};
use lockerstore::corpus::{Corpus, CorpusSpec, SplitMix, noise};
use lockerstore::{Error, Fingerprint, GcOptions, LicenseMode, Options, Store};

const DIR_ENV: &str = "LOCKERSTORE_CRASH_DIR";
const CYCLE_ENV: &str = "LOCKERSTORE_CRASH_CYCLE";
const KILLS_ENV: &str = "LOCKERSTORE_CRASH_KILLS";
const DEFAULT_KILLS: usize = 30;

const USERS: [&str; 3] = ["u0", "u1", "u2"];
const KEYS: [&str; 10] = [
    "k0.mp3",
    "k1.mp3",
    "k2.mp3",
    "k3.mp3",
    "k4.mp3",
    "A/k5.flac",
    "A/k6.flac",
    "B/k7",
    "B/k8",
    "B/k9",
];
/// Contents every cycle may pick again: dedup hits and garbage revival across crashes.
const POOL_SIZES: [usize; 5] = [50_000, 400_000, 1_000_000, 2_000_000, 3_000_000];
/// Lines the child writes to the protocol start with this (libtest writes its own lines too).
const TAG: &str = "@@ ";

fn options() -> Options {
    Options::default()
        .mode(LicenseMode::SingleMaster)
        .pack_size_limit(1 << 20)
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{line}").unwrap();
    out.flush().unwrap();
}

/// The writer. Runs only as the child of `sigkill_at_random_moments_loses_no_acknowledged_write`.
#[test]
#[ignore = "child process of the crash test; does nothing when run on its own"]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let store = Store::open(&dir, options()).unwrap();
    let rec = store.recovery();
    emit(&format!(
        "OPENED removed={} truncated={} bytes={}",
        rec.removed_packs, rec.truncated_packs, rec.truncated_bytes
    ));
    // Switch modes now and then, so tracks of both layouts live side by side.
    let mode = if cycle % 3 == 2 {
        LicenseMode::PerUserCopy
    } else {
        LicenseMode::SingleMaster
    };
    emit(&format!("BEGIN MODE {}", mode.as_str()));
    store.set_mode(mode).unwrap();
    emit(&format!("DONE MODE {}", mode.as_str()));

    let mut rng = SplitMix::new(0xC4A5_0000 + cycle);
    let started = Instant::now();
    for i in 0u64.. {
        // A safety net: the parent kills well before this.
        if started.elapsed() > Duration::from_secs(60) {
            emit("GAVE UP");
            return;
        }
        let u = USERS[rng.range(0, USERS.len())];
        let k = KEYS[rng.range(0, KEYS.len())];
        match rng.range(0, 10) {
            0..=6 => {
                let data = if rng.range(0, 3) == 0 {
                    let j = rng.range(0, POOL_SIZES.len());
                    noise(1, &format!("pool {j}"), POOL_SIZES[j])
                } else {
                    let n = rng.range(50_000, 3_000_000);
                    noise(cycle, &format!("cycle {cycle} op {i}"), n)
                };
                let fp = Fingerprint::of(&data);
                let len = data.len();
                emit(&format!("BEGIN PUT {u} {k} {fp} {len}"));
                let out = store.put(&user(u), &key(k), &data[..]).unwrap();
                assert_eq!(out.fingerprint, fp);
                emit(&format!("DONE PUT {u} {k} {fp} {len}"));
            }
            7..=8 => {
                emit(&format!("BEGIN DEL {u} {k}"));
                match store.delete(&user(u), &key(k)) {
                    Ok(()) => emit(&format!("DONE DEL {u} {k}")),
                    Err(Error::TrackNotFound { .. } | Error::UnknownUser(_)) => {
                        emit(&format!("DONE NODEL {u} {k}"))
                    }
                    Err(e) => panic!("delete {u}/{k}: {e}"),
                }
            }
            _ => match store.read_track(&user(u), &key(k)) {
                Ok(bytes) => emit(&format!(
                    "READ {u} {k} {} {}",
                    Fingerprint::of(&bytes),
                    bytes.len()
                )),
                Err(Error::TrackNotFound { .. } | Error::UnknownUser(_)) => {
                    emit(&format!("READ {u} {k} none"))
                }
                Err(e) => panic!("read {u}/{k}: {e}"),
            },
        }
    }
}

/// What a key holds: a track's fingerprint (hex) and length, or nothing.
type Held = Option<(String, u64)>;

#[derive(Debug, Clone)]
enum Pending {
    Mode(String),
    Put(String, String, String, u64),
    Del(String, String),
}

#[derive(Default)]
struct Totals {
    ops: u64,
    inflight_puts: u64,
    inflight_dels: u64,
    inflight_landed: u64,
    reads_checked: u64,
    removed_packs: u64,
    truncated_packs: u64,
    truncated_bytes: u64,
}

struct Model {
    tracks: BTreeMap<(String, String), (String, u64)>,
    mode: Option<String>,
}

/// Replays the child's log onto the model; returns the operation in flight at the kill.
fn replay(m: &mut Model, lines: &[String], t: &mut Totals, cycle: usize) -> Option<Pending> {
    let mut pending: Option<Pending> = None;
    for line in lines {
        let w: Vec<&str> = line.split(' ').collect();
        let ctx = || format!("cycle {cycle}: line {line:?}");
        match w[..] {
            ["OPENED", ..] => assert!(pending.is_none(), "{}", ctx()),
            ["GAVE", "UP"] => panic!("{}: the child ran out of time, never killed", ctx()),
            ["BEGIN", "MODE", mode] => {
                assert!(pending.is_none(), "{}", ctx());
                pending = Some(Pending::Mode(mode.to_owned()));
            }
            ["BEGIN", "PUT", u, k, fp, len] => {
                assert!(pending.is_none(), "{}", ctx());
                pending = Some(Pending::Put(
                    u.to_owned(),
                    k.to_owned(),
                    fp.to_owned(),
                    len.parse().unwrap(),
                ));
            }
            ["BEGIN", "DEL", u, k] => {
                assert!(pending.is_none(), "{}", ctx());
                pending = Some(Pending::Del(u.to_owned(), k.to_owned()));
            }
            ["DONE", "MODE", mode] => {
                assert!(
                    matches!(&pending, Some(Pending::Mode(x)) if x == mode),
                    "{}",
                    ctx()
                );
                m.mode = Some(mode.to_owned());
                pending = None;
                t.ops += 1;
            }
            ["DONE", "PUT", u, k, fp, len] => {
                let len: u64 = len.parse().unwrap();
                assert!(
                    matches!(&pending, Some(Pending::Put(a, b, c, d))
                        if a == u && b == k && c == fp && *d == len),
                    "{}",
                    ctx()
                );
                m.tracks
                    .insert((u.to_owned(), k.to_owned()), (fp.to_owned(), len));
                pending = None;
                t.ops += 1;
            }
            ["DONE", verb @ ("DEL" | "NODEL"), u, k] => {
                assert!(
                    matches!(&pending, Some(Pending::Del(a, b)) if a == u && b == k),
                    "{}",
                    ctx()
                );
                let had = m.tracks.remove(&(u.to_owned(), k.to_owned())).is_some();
                assert_eq!(
                    had,
                    verb == "DEL",
                    "{}: the child's delete disagrees with the acknowledged history",
                    ctx()
                );
                pending = None;
                t.ops += 1;
            }
            ["READ", u, k, ref rest @ ..] => {
                assert!(pending.is_none(), "{}", ctx());
                let want = m.tracks.get(&(u.to_owned(), k.to_owned()));
                let got = match rest {
                    ["none"] => None,
                    [fp, len] => Some(((*fp).to_owned(), len.parse::<u64>().unwrap())),
                    _ => panic!("{}: bad READ line", ctx()),
                };
                assert_eq!(
                    got.as_ref(),
                    want,
                    "{}: the writer read something other than the acknowledged history",
                    ctx()
                );
                t.reads_checked += 1;
            }
            _ => panic!("{}: unknown protocol line", ctx()),
        }
    }
    pending
}

fn held(store: &Store, u: &str, k: &str) -> Held {
    match store.track_info(&user(u), &key(k)) {
        Ok(info) => Some((info.fingerprint.to_hex(), info.size)),
        Err(Error::TrackNotFound { .. } | Error::UnknownUser(_)) => None,
        Err(e) => panic!("track_info {u}/{k}: {e}"),
    }
}

/// Opens the store after a kill and checks it against the model; then makes the model exact.
fn check_after_kill(
    dir: &Path,
    m: &mut Model,
    pending: Option<Pending>,
    t: &mut Totals,
    cycle: usize,
) {
    let store = Store::open(dir, options())
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopening after SIGKILL failed: {e}"));
    let rec = store.recovery().clone();
    t.removed_packs += rec.removed_packs;
    t.truncated_packs += rec.truncated_packs;
    t.truncated_bytes += rec.truncated_bytes;

    let report = store.verify().unwrap();
    assert!(
        report.is_ok(),
        "cycle {cycle}: verify after SIGKILL: {:#?}",
        report.problems
    );

    // Every (user, key): the acknowledged state, or for the in-flight key, possibly its outcome.
    let mut resolved = BTreeMap::new();
    for u in USERS {
        for k in KEYS {
            let id = (u.to_owned(), k.to_owned());
            let got = held(&store, u, k);
            let acked: Held = m.tracks.get(&id).cloned();
            let alternative: Option<Held> = match &pending {
                Some(Pending::Put(pu, pk, fp, len)) if pu == u && pk == k => {
                    Some(Some((fp.clone(), *len)))
                }
                Some(Pending::Del(pu, pk)) if pu == u && pk == k => Some(None),
                _ => None,
            };
            if got != acked {
                assert!(
                    alternative.as_ref() == Some(&got),
                    "cycle {cycle}: {u}/{k} holds {got:?}, but the acknowledged state is {acked:?} \
                     (in flight at the kill: {pending:?})"
                );
                t.inflight_landed += 1;
            }
            if let Some((fp, len)) = &got {
                let bytes = store.read_track(&user(u), &key(k)).unwrap_or_else(|e| {
                    panic!("cycle {cycle}: reading {u}/{k} after SIGKILL: {e}")
                });
                assert_eq!(bytes.len() as u64, *len);
                assert_eq!(
                    &Fingerprint::of(&bytes).to_hex(),
                    fp,
                    "cycle {cycle}: {u}/{k}"
                );
                resolved.insert(id, (fp.clone(), *len));
            }
        }
        // No track under a key nobody wrote.
        if let Ok(list) = store.list(&user(u)) {
            let n = resolved.keys().filter(|(ru, _)| ru == u).count();
            assert_eq!(list.len(), n, "cycle {cycle}: tracks of {u}: {list:?}");
        }
    }

    let mode = store.mode().as_str().to_owned();
    // Before the first acknowledged mode switch, the store is in the mode it was created in.
    let acked = m
        .mode
        .as_deref()
        .unwrap_or(LicenseMode::SingleMaster.as_str());
    match &pending {
        Some(Pending::Mode(new)) => assert!(
            mode == acked || &mode == new,
            "cycle {cycle}: mode {mode}, acknowledged {acked}, in flight {new}"
        ),
        _ => assert_eq!(mode, acked, "cycle {cycle}: mode"),
    }

    let s = store.stats().unwrap();
    assert_eq!(s.tracks, resolved.len() as u64, "cycle {cycle}: {s:?}");
    assert_eq!(
        s.logical_bytes,
        resolved.values().map(|(_, n)| n).sum::<u64>(),
        "cycle {cycle}: {s:?}"
    );
    let mut users: Vec<&String> = resolved.keys().map(|(u, _)| u).collect();
    users.dedup();
    assert_eq!(s.users, users.len() as u64, "cycle {cycle}: {s:?}");
    // Recovery left exactly the committed bytes: no uncommitted tail, no unregistered pack.
    assert_eq!(
        s.pack_bytes,
        s.physical_bytes + s.garbage_bytes + 32 * s.packs,
        "cycle {cycle}: {s:?}"
    );
    let mut files = 0u64;
    let mut bytes = 0u64;
    for e in std::fs::read_dir(dir.join("packs")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".pack") {
            files += 1;
            bytes += e.metadata().unwrap().len();
        }
    }
    assert_eq!(
        (files, bytes),
        (s.packs, s.pack_bytes),
        "cycle {cycle}: pack files on disk vs committed ({rec:?})"
    );

    m.tracks = resolved;
    m.mode = Some(mode);
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    let kills: usize = std::env::var(KILLS_ENV)
        .ok()
        .map(|v| v.parse().expect("LOCKERSTORE_CRASH_KILLS is a number"))
        .unwrap_or(DEFAULT_KILLS);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = SplitMix::new(0x5EED_0FC4_A5A5);
    let mut m = Model {
        tracks: BTreeMap::new(),
        mode: None,
    };
    let mut t = Totals::default();
    let mut survived = 0usize;
    let started = Instant::now();

    for cycle in 0..kills {
        let delay = Duration::from_millis(rng.range(20, 400) as u64);
        let (tx, rx) = mpsc::channel::<String>();
        let child = Child::spawn(
            &exe,
            "child_writer",
            &[
                (DIR_ENV, dir.path().to_str().unwrap().to_owned()),
                (CYCLE_ENV, cycle.to_string()),
            ],
            move |line| tx.send(line).is_ok(),
        );
        std::thread::sleep(delay);
        let (status, err) = child.kill();
        let lines: Vec<String> = rx.try_iter().collect();
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: the writer was not killed but exited ({status:?}); its stderr:\n{err}"
        );

        let pending = replay(&mut m, &lines, &mut t, cycle);
        match &pending {
            Some(Pending::Put(..)) => t.inflight_puts += 1,
            Some(Pending::Del(..)) => t.inflight_dels += 1,
            _ => {}
        }
        check_after_kill(dir.path(), &mut m, pending, &mut t, cycle);
        survived += 1;
    }

    println!(
        "survived {survived} of {kills} SIGKILLs in {:.1} s: {} acknowledged operations, {} reads \
         cross-checked, killed mid-put {} times and mid-delete {} times ({} in-flight operations \
         landed); recovery removed {} packs and cut {} tails ({} bytes); {} tracks at the end",
        started.elapsed().as_secs_f64(),
        t.ops,
        t.reads_checked,
        t.inflight_puts,
        t.inflight_dels,
        t.inflight_landed,
        t.removed_packs,
        t.truncated_packs,
        t.truncated_bytes,
        m.tracks.len(),
    );
    assert_eq!(survived, kills);
    if kills >= 10 {
        // Otherwise the test would not be testing crashes during writes.
        assert!(t.ops > 0, "the writer never completed an operation");
        assert!(t.inflight_puts > 0, "no kill landed during a put");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Kills during migration and GC.

const MAINT_DIR_ENV: &str = "LOCKERSTORE_CRASH_MAINT_DIR";
const MAINT_KILLS_ENV: &str = "LOCKERSTORE_CRASH_MAINT_KILLS";
const DEFAULT_MAINT_KILLS: usize = 20;
/// Set to print every maintainer run's protocol lines with their arrival times.
const MAINT_VERBOSE_ENV: &str = "LOCKERSTORE_CRASH_MAINT_VERBOSE";
const GC_THRESHOLD: f64 = 0.9;

fn maint_options() -> Options {
    Options::default()
        // The mode of the new store; the children flip it.
        .mode(LicenseMode::PerUserCopy)
        // Small packs, so GC has many packs to rewrite.
        .pack_size_limit(1 << 20)
}

fn maint_corpus() -> Corpus {
    Corpus::generate(CorpusSpec {
        seed: 0xC0FFEE,
        users: 8,
        recordings: 12,
        album_size: 4,
        tracks_per_user: 4,
        min_audio: 300_000,
        max_audio: 1_500_000,
    })
}

fn other_mode(mode: LicenseMode) -> LicenseMode {
    match mode {
        LicenseMode::PerUserCopy => LicenseMode::SingleMaster,
        LicenseMode::SingleMaster => LicenseMode::PerUserCopy,
        other => unreachable!("a mode this test does not know: {other}"),
    }
}

/// The maintainer. Runs only as the child of `sigkill_during_migration_and_gc_loses_no_track`:
/// flips the mode, migrates, collects garbage, then waits to be killed.
#[test]
#[ignore = "child process of the maintenance crash test; does nothing when run on its own"]
fn child_maintainer() {
    let Ok(dir) = std::env::var(MAINT_DIR_ENV) else {
        return;
    };
    let started = Instant::now();
    let store = Store::open(&dir, maint_options()).unwrap();
    let rec = store.recovery();
    emit(&format!(
        "OPENED removed={} truncated={} bytes={}",
        rec.removed_packs, rec.truncated_packs, rec.truncated_bytes
    ));
    let mode = other_mode(store.mode());
    emit(&format!("BEGIN MODE {}", mode.as_str()));
    store.set_mode(mode).unwrap();
    emit(&format!("DONE MODE {}", mode.as_str()));

    emit("BEGIN MIGRATE");
    let r = store
        .migrate(&mut |p| emit(&format!("MIGRATING {} {}", p.tracks_done, p.tracks_total)))
        .unwrap();
    emit(&format!(
        "DONE MIGRATE {} {} {}",
        r.tracks_migrated, r.records_promoted, r.records_copied
    ));

    emit("BEGIN GC");
    let g = store
        .gc(
            GcOptions {
                threshold: GC_THRESHOLD,
            },
            &mut |p| emit(&format!("GC {} {} {}", p.phase, p.done, p.total)),
        )
        .unwrap();
    emit(&format!(
        "DONE GC {} {} {}",
        g.entries_removed, g.packs_deleted, g.packs_rewritten
    ));
    emit("IDLE");
    // The parent kills us; a safety net in case it does not.
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    emit("GAVE UP");
}

/// Where the maintainer was when it was killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Starting or opening (recovery) the store.
    Startup,
    /// Between `BEGIN MODE` and `DONE MODE`.
    Mode,
    /// Between `DONE MODE` and `BEGIN MIGRATE`, or between `DONE MIGRATE` and `BEGIN GC`.
    Between,
    Migrate,
    Gc,
    /// After `DONE GC`.
    Idle,
}

/// What the maintainer's log says.
#[derive(Debug)]
struct MaintLog {
    phase: Phase,
    /// Whether `DONE MODE` was printed (the new mode is acknowledged).
    mode_acked: bool,
    /// Migration commits reported before the kill (progress calls after the first).
    migrate_commits: u64,
    /// Tracks the last progress report said were moved (committed, so durable).
    migrate_tracks_done: u64,
    /// Whether `DONE MIGRATE` was printed.
    migrate_acked: bool,
    /// Packs GC reported compacted before the kill.
    gc_packs_done: u64,
    /// Arrival time of `BEGIN MIGRATE`, `BEGIN GC` and `IDLE` after the spawn.
    t_migrate: Option<Duration>,
    t_gc: Option<Duration>,
    t_idle: Option<Duration>,
}

fn replay_maint(
    lines: &[(Duration, String)],
    mode: LicenseMode,
    tracks: u64,
    cycle: usize,
) -> MaintLog {
    let new_mode = other_mode(mode);
    let mut log = MaintLog {
        phase: Phase::Startup,
        mode_acked: false,
        migrate_commits: 0,
        migrate_tracks_done: 0,
        migrate_acked: false,
        gc_packs_done: 0,
        t_migrate: None,
        t_gc: None,
        t_idle: None,
    };
    let mut progress_calls = 0u64;
    for (at, line) in lines {
        let w: Vec<&str> = line.split(' ').collect();
        let ctx = || format!("cycle {cycle}: line {line:?} in phase {:?}", log.phase);
        let want = |phase: Phase| assert_eq!(log.phase, phase, "{}", ctx());
        match w[..] {
            ["OPENED", ..] => want(Phase::Startup),
            ["GAVE", "UP"] => panic!("{}: the maintainer ran out of time, never killed", ctx()),
            ["BEGIN", "MODE", m] => {
                want(Phase::Startup);
                assert_eq!(
                    m,
                    new_mode.as_str(),
                    "{}: the maintainer flips the mode",
                    ctx()
                );
                log.phase = Phase::Mode;
            }
            ["DONE", "MODE", m] => {
                want(Phase::Mode);
                assert_eq!(m, new_mode.as_str(), "{}", ctx());
                log.mode_acked = true;
                log.phase = Phase::Between;
            }
            ["BEGIN", "MIGRATE"] => {
                want(Phase::Between);
                log.t_migrate = Some(*at);
                log.phase = Phase::Migrate;
            }
            ["MIGRATING", done, total] => {
                want(Phase::Migrate);
                let (done, total): (u64, u64) = (done.parse().unwrap(), total.parse().unwrap());
                assert!(done <= total && total == tracks, "{}", ctx());
                assert!(done >= log.migrate_tracks_done, "{}", ctx());
                log.migrate_tracks_done = done;
                progress_calls += 1;
                // The first call announces the round; each later one follows a commit.
                log.migrate_commits = progress_calls - 1;
            }
            ["DONE", "MIGRATE", migrated, _promoted, _copied] => {
                want(Phase::Migrate);
                // The store was in line with the old mode: the flip moves every track.
                assert_eq!(migrated.parse::<u64>().unwrap(), tracks, "{}", ctx());
                log.migrate_acked = true;
                log.phase = Phase::Between;
            }
            ["BEGIN", "GC"] => {
                want(Phase::Between);
                assert!(log.t_migrate.is_some(), "{}", ctx());
                log.t_gc = Some(*at);
                log.phase = Phase::Gc;
            }
            ["GC", phase, done, total] => {
                want(Phase::Gc);
                let (done, total): (u64, u64) = (done.parse().unwrap(), total.parse().unwrap());
                assert!(done <= total, "{}", ctx());
                match phase {
                    "entries" => {}
                    "packs" => log.gc_packs_done = done,
                    _ => panic!("{}: unknown GC phase", ctx()),
                }
            }
            ["DONE", "GC", removed, deleted, rewritten] => {
                want(Phase::Gc);
                let removed: u64 = removed.parse().unwrap();
                let deleted: u64 = deleted.parse().unwrap();
                let rewritten: u64 = rewritten.parse().unwrap();
                assert!(removed > 0, "{}: the migration left garbage", ctx());
                assert!(rewritten <= deleted, "{}", ctx());
                log.phase = Phase::Between;
            }
            ["IDLE"] => {
                want(Phase::Between);
                assert!(log.t_gc.is_some(), "{}", ctx());
                log.t_idle = Some(*at);
                log.phase = Phase::Idle;
            }
            _ => panic!("{}: unknown protocol line", ctx()),
        }
    }
    log
}

/// The live physical cost of the corpus in each fully migrated layout.
#[derive(Clone, Copy, Debug)]
struct Layout {
    physical_bytes: u64,
    chunks: u64,
}

#[derive(Default)]
struct MaintTotals {
    by_phase: BTreeMap<String, u64>,
    /// Kills in migrate after at least one of its commits.
    migrate_after_commit: u64,
    /// Kills in GC after at least one pack was compacted.
    gc_after_compaction: u64,
    /// Reopened stores caught half-migrated (some tracks moved, some not).
    half_migrated: u64,
    /// Tracks the parent's migrations had to move after a kill.
    finished_by_parent: u64,
    removed_packs: u64,
    truncated_packs: u64,
    truncated_bytes: u64,
}

/// Pack files on disk: (count, bytes).
fn packs_on_disk(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for e in std::fs::read_dir(dir.join("packs")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".pack") {
            files += 1;
            bytes += e.metadata().unwrap().len();
        }
    }
    (files, bytes)
}

fn within_1pct(predicted: u64, actual: u64) -> bool {
    predicted.abs_diff(actual) as f64 <= 0.01 * actual.max(1) as f64
}

/// Checks every track, the accounting and the pack files of an open store.
fn check_corpus(store: &Store, dir: &Path, corpus: &Corpus, tracks: &[Vec<u8>], ctx: &str) {
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{ctx}: verify: {:#?}", v.problems);
    assert_eq!(v.tracks_checked, tracks.len() as u64, "{ctx}");
    for (i, up) in corpus.uploads.iter().enumerate() {
        let got = store
            .read_track(&user(&up.user), &key(&up.key))
            .unwrap_or_else(|e| panic!("{ctx}: reading {}/{}: {e}", up.user, up.key));
        assert!(
            got == tracks[i],
            "{ctx}: {}/{} reads back other bytes ({} bytes, {} expected)",
            up.user,
            up.key,
            got.len(),
            tracks[i].len()
        );
    }
    for u in 0..corpus.spec.users {
        let name = format!("user{u:03}");
        let n = corpus.uploads.iter().filter(|up| up.user == name).count();
        assert_eq!(store.list(&user(&name)).unwrap().len(), n, "{ctx}: {name}");
    }
    let s = store.stats().unwrap();
    let logical: u64 = tracks.iter().map(|t| t.len() as u64).sum();
    assert_eq!(
        (s.logical_bytes, s.tracks, s.users),
        (logical, tracks.len() as u64, corpus.spec.users as u64),
        "{ctx}: {s:?}"
    );
    // Recovery left exactly the committed bytes: no uncommitted tail, no unregistered pack.
    assert_eq!(
        s.pack_bytes,
        s.physical_bytes + s.garbage_bytes + 32 * s.packs,
        "{ctx}: {s:?}"
    );
    assert_eq!(
        packs_on_disk(dir),
        (s.packs, s.pack_bytes),
        "{ctx}: pack files on disk vs committed"
    );
}

/// An ignored test of this binary run as a child process, its protocol lines read on a thread.
struct Child {
    process: std::process::Child,
    out: std::thread::JoinHandle<()>,
    err: std::thread::JoinHandle<String>,
}

impl Child {
    /// Starts test `name` with `envs`. Each complete line it reports (the text after `TAG`) goes
    /// to `each` until `each` returns false; a line cut by the kill is not reported.
    fn spawn(
        exe: &Path,
        name: &str,
        envs: &[(&str, String)],
        mut each: impl FnMut(String) -> bool + Send + 'static,
    ) -> Child {
        let mut process = Command::new(exe)
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let mut stderr = process.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 || !line.ends_with('\n') {
                    break;
                }
                // libtest may have written "test <name> ... " on the same line.
                if let Some(at) = line.find(TAG)
                    && !each(line[at + TAG.len()..].trim_end().to_owned())
                {
                    break;
                }
            }
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Child { process, out, err }
    }

    /// Kills the child; returns how it ended and its stderr, once every reported line was read.
    fn kill(mut self) -> (std::process::ExitStatus, String) {
        let _ = self.process.kill();
        let status = self.process.wait().unwrap();
        self.out.join().unwrap();
        (status, self.err.join().unwrap())
    }
}

/// Spawns the maintainer; kills it after `delay`, or (without a delay) once it printed `IDLE`.
/// Returns its protocol lines with their arrival time after the spawn.
fn run_maintainer(
    exe: &Path,
    dir: &Path,
    delay: Option<Duration>,
    cycle: usize,
) -> Vec<(Duration, String)> {
    let spawned = Instant::now();
    let (tx, rx) = mpsc::channel::<(Duration, String)>();
    let child = Child::spawn(
        exe,
        "child_maintainer",
        &[(MAINT_DIR_ENV, dir.to_str().unwrap().to_owned())],
        move |line| tx.send((spawned.elapsed(), line)).is_ok(),
    );
    let mut lines = Vec::new();
    match delay {
        Some(d) => std::thread::sleep(d.saturating_sub(spawned.elapsed())),
        None => loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(l) => {
                    let idle = l.1 == "IDLE";
                    lines.push(l);
                    if idle {
                        break;
                    }
                }
                Err(e) => {
                    let (_, err) = child.kill();
                    panic!(
                        "cycle {cycle}: the maintainer never became idle ({e}); its lines: \
                         {lines:?}; its stderr:\n{err}"
                    );
                }
            }
        },
    }
    let (status, err) = child.kill();
    lines.extend(rx.try_iter());
    assert_eq!(
        status.signal(),
        Some(9),
        "cycle {cycle}: the maintainer was not killed but exited ({status:?}); its stderr:\n{err}"
    );
    lines
}

/// When the phases of a maintainer run start, per target mode (measured, then kept up to date).
#[derive(Clone, Copy, Debug)]
struct Timeline {
    migrate: Duration,
    gc: Duration,
    idle: Duration,
}

#[test]
fn sigkill_during_migration_and_gc_loses_no_track() {
    let kills: usize = std::env::var(MAINT_KILLS_ENV)
        .ok()
        .map(|v| {
            v.parse()
                .expect("LOCKERSTORE_CRASH_MAINT_KILLS is a number")
        })
        .unwrap_or(DEFAULT_MAINT_KILLS);
    let started = Instant::now();
    let corpus = maint_corpus();
    let tracks: Vec<Vec<u8>> = (0..corpus.uploads.len()).map(|i| corpus.bytes(i)).collect();
    let n_tracks = tracks.len() as u64;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();

    // The corpus in per-user copies, then collapsed: what each layout costs, exactly.
    let (per_user, single) = {
        let store = Store::open(dir.path(), maint_options()).unwrap();
        for (i, up) in corpus.uploads.iter().enumerate() {
            store
                .put(&user(&up.user), &key(&up.key), &tracks[i][..])
                .unwrap();
        }
        assert!(store.audit(false).unwrap().conforming);
        let s = store.stats().unwrap();
        let per_user = Layout {
            physical_bytes: s.physical_bytes,
            chunks: s.chunks,
        };
        store.set_mode(LicenseMode::SingleMaster).unwrap();
        store.migrate(&mut |_| {}).unwrap();
        assert!(store.audit(false).unwrap().conforming);
        let s = store.stats().unwrap();
        let single = Layout {
            physical_bytes: s.physical_bytes,
            chunks: s.chunks,
        };
        store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
        check_corpus(&store, dir.path(), &corpus, &tracks, "prepared");
        (per_user, single)
    };
    let layout = |mode| match mode {
        LicenseMode::PerUserCopy => per_user,
        LicenseMode::SingleMaster => single,
        other => unreachable!("a mode this test does not know: {other}"),
    };
    assert!(
        single.physical_bytes * 3 < per_user.physical_bytes * 2,
        "the corpus has enough duplicates to make collapse matter: {single:?} {per_user:?}"
    );
    let prepared_in = started.elapsed();

    let mut mode = LicenseMode::SingleMaster;
    let mut rng = SplitMix::new(0x0DDC_4A54_ED00);
    let mut timelines: BTreeMap<&'static str, Timeline> = BTreeMap::new();
    let mut t = MaintTotals::default();
    let mut survived = 0usize;
    let mut calibrations = 0usize;
    let mut cycle = 0usize;
    while survived < kills {
        let target = other_mode(mode);
        // The first run towards each mode is not killed before it is idle: it measures when
        // its phases start. The kills after it aim at migrate or GC, a few anywhere.
        let delay = timelines.get(target.as_str()).map(|tl| {
            let us = |d: Duration| d.as_micros() as usize;
            let (lo, hi) = match rng.range(0, 100) {
                0..45 => (us(tl.migrate), us(tl.gc)),
                45..90 => (us(tl.gc), us(tl.idle)),
                _ => (0, us(tl.idle) * 11 / 10),
            };
            Duration::from_micros(rng.range(lo, hi.max(lo + 1)) as u64)
        });
        let lines = run_maintainer(&exe, dir.path(), delay, cycle);
        if std::env::var_os(MAINT_VERBOSE_ENV).is_some() {
            println!("cycle {cycle}, kill after {delay:?}:");
            for (at, line) in &lines {
                println!("  {:>9.3} ms  {line}", at.as_secs_f64() * 1e3);
            }
        }
        let log = replay_maint(&lines, mode, n_tracks, cycle);
        if let (Some(migrate), Some(gc), Some(idle)) = (log.t_migrate, log.t_gc, log.t_idle) {
            timelines.insert(target.as_str(), Timeline { migrate, gc, idle });
        } else if let Some(tl) = timelines.get_mut(target.as_str()) {
            // A partial run still tells when its phases started, on this machine now.
            tl.migrate = log.t_migrate.unwrap_or(tl.migrate);
            tl.gc = log.t_gc.unwrap_or(tl.gc).max(tl.migrate);
            tl.idle = tl.idle.max(tl.gc);
        }
        let ctx = format!(
            "cycle {cycle} (towards {}, killed in {:?})",
            target.as_str(),
            log.phase
        );

        // After the kill: nothing lost, nothing altered.
        let store = Store::open(dir.path(), maint_options())
            .unwrap_or_else(|e| panic!("{ctx}: reopening after SIGKILL failed: {e}"));
        let rec = store.recovery().clone();
        t.removed_packs += rec.removed_packs;
        t.truncated_packs += rec.truncated_packs;
        t.truncated_bytes += rec.truncated_bytes;
        let now = store.mode();
        match log.phase {
            Phase::Startup => assert_eq!(now, mode, "{ctx}: mode"),
            Phase::Mode => assert!(now == mode || now == target, "{ctx}: mode {now:?}"),
            _ => assert_eq!(now, target, "{ctx}: the flip was acknowledged"),
        }
        assert_eq!(log.mode_acked, log.phase > Phase::Mode, "{ctx}");
        check_corpus(&store, dir.path(), &corpus, &tracks, &ctx);
        let s = store.stats().unwrap();
        // Every track in one layout or the other: the live records cost between the two.
        assert!(
            single.physical_bytes <= s.physical_bytes
                && s.physical_bytes <= per_user.physical_bytes,
            "{ctx}: {s:?}, layouts cost {single:?} and {per_user:?}"
        );
        let audit = store.audit(false).unwrap();
        if audit.pending_tracks > 0 && audit.pending_tracks < n_tracks {
            t.half_migrated += 1;
        }
        if log.migrate_acked {
            assert!(audit.conforming, "{ctx}: migration had finished: {audit:?}");
        } else if now == target {
            // Not started, or cut short: what it reported moved is durable.
            assert!(
                audit.pending_tracks <= n_tracks - log.migrate_tracks_done,
                "{ctx}: {} tracks reported moved, {audit:?}",
                log.migrate_tracks_done
            );
            if log.phase < Phase::Migrate {
                assert_eq!(audit.pending_tracks, n_tracks, "{ctx}: {audit:?}");
            }
        } else {
            assert_eq!(
                audit.pending_tracks, 0,
                "{ctx}: the flip did not land: {audit:?}"
            );
        }
        let w = store.what_if(now).unwrap();
        assert_eq!(w.pending_tracks, audit.pending_tracks, "{ctx}: {w:?}");
        assert!(
            within_1pct(w.physical_bytes, layout(now).physical_bytes),
            "{ctx}: what-if {w:?}, the layout costs {:?}",
            layout(now)
        );

        // Finishing the migration brings the layout in line, at its exact cost.
        let r = store.migrate(&mut |_| {}).unwrap();
        assert_eq!(r.tracks_migrated, audit.pending_tracks, "{ctx}: {r:?}");
        t.finished_by_parent += r.tracks_migrated;
        let audit = store.audit(false).unwrap();
        assert!(
            audit.conforming,
            "{ctx}: after the parent's migration: {audit:?}"
        );
        let s = store.stats().unwrap();
        assert_eq!(
            (s.physical_bytes, s.chunks),
            (layout(now).physical_bytes, layout(now).chunks),
            "{ctx}: after the parent's migration: {s:?}"
        );
        if r.tracks_migrated > 0 {
            let v = store.verify().unwrap();
            assert!(
                v.is_ok(),
                "{ctx}: verify after the parent's migration: {:?}",
                v.problems
            );
        }
        drop(store);
        mode = now;

        if delay.is_none() {
            assert_eq!(log.phase, Phase::Idle, "{ctx}");
            calibrations += 1;
        } else {
            let name = match log.phase {
                Phase::Startup => "startup",
                Phase::Mode => "mode switch",
                Phase::Between => "between steps",
                Phase::Migrate => "migrate",
                Phase::Gc => "gc",
                Phase::Idle => "idle",
            };
            *t.by_phase.entry(name.to_owned()).or_default() += 1;
            if log.phase == Phase::Migrate && log.migrate_commits > 0 {
                t.migrate_after_commit += 1;
            }
            if log.phase == Phase::Gc && log.gc_packs_done > 0 {
                t.gc_after_compaction += 1;
            }
            survived += 1;
        }
        cycle += 1;
    }

    // Quiescent: a full GC leaves exactly the layout's records.
    let store = Store::open(dir.path(), maint_options()).unwrap();
    store.gc(GcOptions { threshold: 1.0 }, &mut |_| {}).unwrap();
    let s = store.stats().unwrap();
    assert_eq!(s.garbage_bytes, 0, "{s:?}");
    assert_eq!(
        s.physical_bytes,
        layout(store.mode()).physical_bytes,
        "{s:?}"
    );
    assert_eq!(s.pack_bytes, s.physical_bytes + 32 * s.packs, "{s:?}");
    check_corpus(&store, dir.path(), &corpus, &tracks, "end");

    let in_migrate = t.by_phase.get("migrate").copied().unwrap_or(0);
    let in_gc = t.by_phase.get("gc").copied().unwrap_or(0);
    println!(
        "survived {survived} of {kills} SIGKILLs during maintenance in {:.1} s ({:.1} s to \
         prepare {} tracks, {calibrations} unkilled calibration runs, timelines {timelines:?}): \
         killed during migrate {in_migrate} times ({} after a commit), during gc {in_gc} times \
         ({} after a pack was compacted), by phase {:?}; {} stores reopened half-migrated, {} \
         tracks migrated by the parent afterwards; recovery removed {} packs and cut {} tails \
         ({} bytes); layouts: per-user {per_user:?}, single-master {single:?}",
        started.elapsed().as_secs_f64(),
        prepared_in.as_secs_f64(),
        n_tracks,
        t.migrate_after_commit,
        t.gc_after_compaction,
        t.by_phase,
        t.half_migrated,
        t.finished_by_parent,
        t.removed_packs,
        t.truncated_packs,
        t.truncated_bytes,
    );
    assert_eq!(survived, kills);
    if kills >= 10 {
        // Otherwise the test would not be testing crashes during maintenance.
        assert!(in_migrate > 0, "no kill landed during a migration");
        assert!(in_gc > 0, "no kill landed during GC");
    }
}
