//! Soak test: mixed concurrent operations with periodic kill -9, verification after each restart.
//!
//! `cargo run --release --example soak -- --minutes 30 [--dir DIR] [--seed N]`
//!
//! The parent runs a child process (this same binary with `--child`) that ingests, replaces,
//! deletes and reads tracks from several threads while another thread flips the license mode,
//! migrates and collects garbage. The child prints a line for every operation it starts and for
//! every operation that returned `Ok`. At random moments the parent kills it with SIGKILL, reopens
//! the store, runs `verify`, and checks that every acknowledged write is there exactly (a key's
//! state may also be the result of the one operation that was in flight on it). At the end it
//! prints the operations done, the kills survived and the problems found; it exits non-zero if
//! any problem was found.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use lockerstore::corpus::{SplitMix, noise};
use lockerstore::{Error, Fingerprint, GcOptions, LicenseMode, Options, Store, TrackKey, UserId};

#[derive(Parser)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Store directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the kill schedule and of the child's operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run as the child (internal).
    #[arg(long, hide = true)]
    child: bool,
}

const USERS: usize = 3;
const KEYS: usize = 8;
const POOL: usize = 12;

/// Content `i` of the pool: deterministic, 100 KB to 2.3 MB, some shared between users.
fn content(i: usize) -> Vec<u8> {
    noise(77, &format!("soak content {i}"), 100_000 + i * 190_000)
}

fn options() -> Options {
    Options::default().pack_size_limit(4 << 20)
}

fn main() {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lockerstore-soak-{}", std::process::id()))
    });
    if args.child {
        child(&dir, args.seed);
        return;
    }
    let code = parent(&dir, &args);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::process::exit(code);
}

/// Per key: the content index the store must hold (None: no track), and the in-flight change.
#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    acked: Option<usize>,
    in_flight: Option<Option<usize>>,
}

fn parent(dir: &Path, args: &Args) -> i32 {
    let fingerprints: Vec<Fingerprint> = (0..POOL).map(|i| Fingerprint::of(&content(i))).collect();
    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut rng = SplitMix::new(args.seed);
    let mut state: HashMap<(usize, usize), KeyState> = HashMap::new();
    let (mut ops, mut kills, mut problems, mut cycles) = (0u64, 0u64, 0u64, 0u64);
    let (mut writes, mut reads, mut admin) = (0u64, 0u64, 0u64);
    drop(Store::open(dir, options()).expect("create the store"));
    while Instant::now() < deadline {
        cycles += 1;
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--child",
                "--seed",
                &(args.seed * 1000 + cycles).to_string(),
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped");
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                .collect::<Vec<String>>()
        });
        let delay = Duration::from_millis(200 + rng.next_u64() % 3000);
        std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
        let _ = child.kill();
        let _ = child.wait();
        kills += 1;
        for line in lines.join().expect("reader thread") {
            let f: Vec<&str> = line.split(' ').collect();
            let key = |i: usize| -> (usize, usize) {
                (f[i].parse().unwrap_or(0), f[i + 1].parse().unwrap_or(0))
            };
            match f.as_slice() {
                ["BEGIN", "PUT", ..] => {
                    state.entry(key(2)).or_default().in_flight =
                        Some(Some(f[4].parse().unwrap_or(0)))
                }
                ["BEGIN", "DEL", ..] => state.entry(key(2)).or_default().in_flight = Some(None),
                ["OK", "PUT", ..] => {
                    let s = state.entry(key(2)).or_default();
                    s.acked = Some(f[4].parse().unwrap_or(0));
                    s.in_flight = None;
                    ops += 1;
                    writes += 1;
                }
                ["OK", "DEL", ..] | ["GONE", "DEL", ..] => {
                    let s = state.entry(key(2)).or_default();
                    s.acked = None;
                    s.in_flight = None;
                    ops += 1;
                    writes += 1;
                }
                ["OK", "READ"] => {
                    ops += 1;
                    reads += 1;
                }
                ["OK", "ADMIN", ..] => {
                    ops += 1;
                    admin += 1;
                }
                ["PROBLEM", ..] => {
                    eprintln!("child: {line}");
                    problems += 1;
                }
                _ => {}
            }
        }
        // Recover and check.
        let store = match Store::open(dir, options()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("PROBLEM: reopen after kill {kills}: {e}");
                return 1;
            }
        };
        let report = store.verify().expect("verify runs");
        for p in &report.problems {
            eprintln!("PROBLEM: verify after kill {kills}: {p}");
            problems += 1;
        }
        for ((u, k), s) in state.iter_mut() {
            let got = store.track_info(&user(*u), &key_of(*k));
            let held = match got {
                Ok(info) => fingerprints
                    .iter()
                    .position(|f| *f == info.fingerprint)
                    .map(Some),
                Err(Error::TrackNotFound { .. } | Error::UnknownUser(_)) => Some(None),
                Err(e) => {
                    eprintln!("PROBLEM: user {u} key {k}: {e}");
                    problems += 1;
                    continue;
                }
            };
            let Some(held) = held else {
                eprintln!("PROBLEM: user {u} key {k}: content matches nothing ever written");
                problems += 1;
                continue;
            };
            if held == s.acked || Some(held) == s.in_flight {
                s.acked = held;
                s.in_flight = None;
                if let Some(c) = held
                    && store.read_track(&user(*u), &key_of(*k)).ok() != Some(content(c))
                {
                    eprintln!("PROBLEM: user {u} key {k}: bytes differ from content {c}");
                    problems += 1;
                }
            } else {
                eprintln!(
                    "PROBLEM: user {u} key {k}: holds {held:?}, acknowledged {:?}, in flight {:?}",
                    s.acked, s.in_flight
                );
                problems += 1;
            }
        }
    }
    // Finish: bring the layout in line, collect garbage, check once more.
    let store = Store::open(dir, options()).expect("final open");
    store.migrate(&mut |_| {}).expect("final migrate");
    store
        .gc(GcOptions { threshold: 1.0 }, &mut |_| {})
        .expect("final gc");
    if !store.audit(false).expect("audit").conforming {
        eprintln!("PROBLEM: layout does not conform after the final migration");
        problems += 1;
    }
    let report = store.verify().expect("verify runs");
    problems += report.problems.len() as u64;
    let stats = store.stats().expect("stats");
    println!(
        "soak: {:.1} minutes, {ops} operations acknowledged ({writes} puts and deletes, {reads} seek+reads, \
         {admin} mode flip+migrate+gc rounds), {kills} kills survived, {problems} problems; \
         final store: {} tracks, {:.1} MB logical, {:.1} MB physical, mode {}",
        args.minutes,
        stats.tracks,
        stats.logical_bytes as f64 / 1e6,
        stats.physical_bytes as f64 / 1e6,
        stats.mode
    );
    i32::from(problems > 0)
}

fn user(u: usize) -> UserId {
    UserId::new(&format!("soak{u}")).expect("valid id")
}

fn key_of(k: usize) -> TrackKey {
    TrackKey::new(&format!("Artist/Album/{k:02} Track.flac")).expect("valid key")
}

fn say(out: &Mutex<std::io::Stdout>, line: String) {
    let mut o = out.lock().expect("stdout lock");
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn child(dir: &Path, seed: u64) {
    let store = Store::open(dir, options()).expect("child open");
    let out = Mutex::new(std::io::stdout());
    let fingerprints: Vec<Fingerprint> = (0..POOL).map(|i| Fingerprint::of(&content(i))).collect();
    let (store, out, fps) = (&store, &out, &fingerprints);
    std::thread::scope(|s| {
        for u in 0..USERS {
            s.spawn(move || {
                let mut rng = SplitMix::new(seed ^ ((u as u64 + 1) * 0x9e37));
                loop {
                    let k = rng.range(0, KEYS);
                    if rng.range(0, 4) == 0 {
                        say(out, format!("BEGIN DEL {u} {k}"));
                        match store.delete(&user(u), &key_of(k)) {
                            Ok(()) => say(out, format!("OK DEL {u} {k}")),
                            Err(Error::TrackNotFound { .. } | Error::UnknownUser(_)) => {
                                say(out, format!("GONE DEL {u} {k}"))
                            }
                            Err(e) => say(out, format!("PROBLEM delete: {e}")),
                        }
                    } else {
                        let c = rng.range(0, POOL);
                        say(out, format!("BEGIN PUT {u} {k} {c}"));
                        match store.put(&user(u), &key_of(k), &content(c)[..]) {
                            Ok(_) => say(out, format!("OK PUT {u} {k} {c}")),
                            Err(e) => say(out, format!("PROBLEM put: {e}")),
                        }
                    }
                }
            });
        }
        // A reader: seeks and reads; whatever it gets must be part of some pool content.
        s.spawn(move || {
            let mut rng = SplitMix::new(seed ^ 0xabcdef);
            loop {
                let (u, k) = (rng.range(0, USERS), rng.range(0, KEYS));
                let Ok(mut r) = store.open_track(&user(u), &key_of(k)) else {
                    continue;
                };
                let Some(c) = fps.iter().position(|f| *f == r.fingerprint()) else {
                    say(out, format!("PROBLEM read: unknown fingerprint at {u} {k}"));
                    continue;
                };
                let want = content(c);
                let at = rng.range(0, want.len());
                let mut buf = vec![0u8; (want.len() - at).min(65536)];
                let got = r
                    .seek(SeekFrom::Start(at as u64))
                    .and_then(|_| r.read_exact(&mut buf));
                match got {
                    Ok(()) if buf == want[at..at + buf.len()] => say(out, "OK READ".into()),
                    Ok(()) => say(out, format!("PROBLEM read: wrong bytes at {u} {k} +{at}")),
                    Err(e) => match Error::from_io(e) {
                        Error::TrackChanged { .. } => {}
                        e => say(out, format!("PROBLEM read: {e}")),
                    },
                }
            }
        });
        s.spawn(move || {
            let mut rng = SplitMix::new(seed ^ 0x5eed);
            loop {
                let mode = if rng.range(0, 2) == 0 {
                    LicenseMode::SingleMaster
                } else {
                    LicenseMode::PerUserCopy
                };
                let step = store
                    .set_mode(mode)
                    .and_then(|()| store.migrate(&mut |_| {}).map(|_| ()))
                    .and_then(|()| {
                        store
                            .gc(GcOptions { threshold: 0.7 }, &mut |_| {})
                            .map(|_| ())
                    });
                match step {
                    Ok(()) => say(out, format!("OK ADMIN {mode}")),
                    Err(Error::InsufficientSpace { .. }) => {}
                    Err(e) => say(out, format!("PROBLEM admin: {e}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    });
}
