//! Upload avoidance: does a refusal, or a challenge, take longer or shorter when the store holds
//! the recording? A client that knows only a hash must not be able to tell (docs/DESIGN.md 11.2,
//! docs/PERFORMANCE.md "Refusal timing").
//!
//!   cargo bench --bench proof                  # criterion groups, then the table
//!   cargo test --bench proof                   # quick mode: each case once, a table of 5
//!
//! Every proof answers with 32 zero bytes, what a client holding only the hash can send. The
//! table interleaves the cases (held, not held, held, ...) so drift hits both alike; its cold
//! rows reopen the store after dropping its files from the page cache (`posix_fadvise
//! DONTNEED`), so the held refusal reads its chunks and metadata from the disk.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{
    AudioFingerprint, ClientTrack, LicenseMode, Options, OwnershipClaim, ProofOutcome, Store,
    TrackKey, UserId,
};

struct Setup {
    dir: tempfile::TempDir,
    store: Option<Store>,
    client: ClientTrack,
    held: OwnershipClaim,
    not_held: OwnershipClaim,
}

fn open(dir: &Path) -> Store {
    Store::open(dir, Options::default().mode(LicenseMode::SingleMaster)).unwrap()
}

/// A single-master store where one user holds one 4-5 MB tagged MP3 (default chunk sizes), the
/// claim of its recording and a claim of the same length nobody holds.
fn setup() -> Setup {
    let corpus = Corpus::generate(CorpusSpec {
        seed: 11,
        users: 1,
        recordings: 1,
        album_size: 1,
        tracks_per_user: 1,
        min_audio: 4_000_000,
        max_audio: 5_000_000,
    });
    let bytes = corpus.bytes(0);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .put(
            &UserId::new("holder").unwrap(),
            &TrackKey::new("song.mp3").unwrap(),
            &bytes[..],
        )
        .unwrap();
    let client = ClientTrack::from_file_bytes(&bytes).unwrap();
    let held = client.claim;
    let not_held = OwnershipClaim {
        audio_fingerprint: AudioFingerprint(*blake3::hash(b"a recording nobody holds").as_bytes()),
        audio_len: held.audio_len,
    };
    Setup {
        dir,
        store: Some(store),
        client,
        held,
        not_held,
    }
}

impl Setup {
    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// One refused proof of `claim`: the time of `prove` alone.
    fn refusal(&self, claim: &OwnershipClaim) -> Duration {
        let s = self.store();
        let ch = s
            .challenge(
                &UserId::new("prover").unwrap(),
                &TrackKey::new("mine.mp3").unwrap(),
                claim,
            )
            .unwrap();
        let t = Instant::now();
        let out = s
            .prove(ch.id, [0; 32], &self.client.head, &self.client.tail)
            .unwrap();
        let took = t.elapsed();
        assert_eq!(out, ProofOutcome::Refused);
        took
    }

    fn challenge(&self, claim: &OwnershipClaim) -> Duration {
        let (u, k) = (
            UserId::new("prover").unwrap(),
            TrackKey::new("mine.mp3").unwrap(),
        );
        let t = Instant::now();
        black_box(self.store().challenge(&u, &k, claim).unwrap());
        t.elapsed()
    }

    /// Closes the store, drops its files from the page cache and opens it again.
    fn reopen_cold(&mut self) {
        drop(self.store.take());
        evict(self.dir.path());
        self.store = Some(open(self.dir.path()));
    }
}

fn evict(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            evict(&path);
        } else if let Ok(f) = std::fs::File::open(&path) {
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

fn criterion_groups(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("refusal");
    g.sample_size(30);
    for (name, claim) in [("refused, held", s.held), ("refused, not held", s.not_held)] {
        g.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| s.refusal(&claim)).sum())
        });
    }
    g.finish();
    // A fresh store per case: outstanding challenges (kept 60 s) make each call scan more.
    let mut g = c.benchmark_group("challenge");
    for (name, held) in [("held", true), ("not held", false)] {
        let s = setup();
        let claim = if held { s.held } else { s.not_held };
        g.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| s.challenge(&claim)).sum())
        });
    }
    g.finish();
}

/// Median, 10th and 90th percentile, in microseconds.
fn spread(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.1), at(0.9))
}

fn row(name: &str, v: Vec<Duration>) {
    let n = v.len();
    let (m, lo, hi) = spread(v);
    println!("{name:<34} {n:>5} {m:>10.1} {lo:>10.1} {hi:>10.1}");
}

fn table(quick: bool) {
    let (n, cold) = if quick { (5, 2) } else { (300, 20) };
    let mut s = setup();
    let (mut held, mut not_held) = (Vec::new(), Vec::new());
    for _ in 0..n {
        held.push(s.refusal(&s.held));
        not_held.push(s.refusal(&s.not_held));
    }
    let (mut ch_held, mut ch_not) = (Vec::new(), Vec::new());
    for _ in 0..n {
        ch_held.push(s.challenge(&s.held));
        ch_not.push(s.challenge(&s.not_held));
    }
    let (mut cold_held, mut cold_not) = (Vec::new(), Vec::new());
    for _ in 0..cold {
        s.reopen_cold();
        cold_held.push(s.refusal(&s.held));
        s.reopen_cold();
        cold_not.push(s.refusal(&s.not_held));
    }
    println!();
    println!(
        "{:<34} {:>5} {:>10} {:>10} {:>10}",
        "case (µs, prove or challenge only)", "n", "median", "p10", "p90"
    );
    row("refused, held", held);
    row("refused, not held", not_held);
    row("refused, held, cold page cache", cold_held);
    row("refused, not held, cold page cache", cold_not);
    row("challenge, held", ch_held);
    row("challenge, not held", ch_not);
}

fn refusal_table(_: &mut Criterion) {
    // `cargo bench` passes --bench; `cargo test --bench proof` does not: the quick mode.
    let quick = !std::env::args().any(|a| a == "--bench");
    table(quick);
}

criterion_group!(benches, criterion_groups, refusal_table);
criterion_main!(benches);
