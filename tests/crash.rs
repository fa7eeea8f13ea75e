//! Crash test: a writer process is killed with SIGKILL at random moments, again and again on the
//! same store, and every write it acknowledged must survive each crash (and each recovery of a
//! recovery).
//!
//! The test binary re-executes itself: `child_writer` (ignored, a no-op unless the store
//! directory is in its environment) opens the store and writes forever, printing `BEGIN ...`
//! before each operation and `DONE ...` after the call returned. The parent kills it, reopens the
//! store, runs `verify` and checks the store against the replayed log. The one operation that was
//! in flight at the kill (a `BEGIN` without its `DONE`) may or may not have landed.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{key, user};
use lockerstore::corpus::{SplitMix, noise};
use lockerstore::{Error, Fingerprint, LicenseMode, Options, Store};

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
    Options {
        mode: LicenseMode::SingleMaster,
        pack_size_limit: 1 << 20,
        ..Options::default()
    }
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
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(CYCLE_ENV, cycle.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut lines = Vec::new();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                // A line cut by the kill was not reported.
                if !line.ends_with('\n') {
                    break;
                }
                // libtest may have written "test child_writer ... " on the same line.
                if let Some(at) = line.find(TAG) {
                    lines.push(line[at + TAG.len()..].trim_end().to_owned());
                }
            }
            lines
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let lines = out.join().unwrap();
        let err = err.join().unwrap();
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
