//! Core benchmarks, each beside the baseline TARGETS.md names, measured in the same run.
//!
//! Workflow (fixed seeds, so runs are comparable):
//!   cargo bench --bench core -- --save-baseline before     # on the old code
//!   cargo bench --bench core -- --baseline before          # on the new code: criterion prints the change
//! Quick smoke run (what CI does): cargo test --benches

use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lockerstore::corpus::{SplitMix, noise};
use lockerstore::{LicenseMode, Options, Store, TrackKey, UserId};

const TRACK: usize = 8_000_000;

fn store(mode: LicenseMode) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        Options {
            mode,
            ..Options::default()
        },
    )
    .unwrap();
    (dir, s)
}

fn ingest(c: &mut Criterion) {
    let track = noise(7, "bench track", TRACK);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(TRACK as u64));
    g.sample_size(10);
    g.bench_function("baseline: blake3 one thread", |b| {
        b.iter(|| blake3::hash(black_box(&track)))
    });
    for mode in [LicenseMode::PerUserCopy, LicenseMode::SingleMaster] {
        let (_dir, s) = store(mode);
        let mut n = 0u64;
        // Every iteration stores the track under a new key of a new user: new bytes in
        // per-user-copy mode, all dedup hits after the first in single-master mode.
        g.bench_function(BenchmarkId::new("put durable", mode.as_str()), |b| {
            b.iter(|| {
                n += 1;
                let u = UserId::new(&format!("u{n}")).unwrap();
                s.put(&u, &TrackKey::new("k").unwrap(), &track[..]).unwrap()
            })
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let track = noise(8, "bench read", TRACK);
    let (_dir, s) = store(LicenseMode::SingleMaster);
    let (u, k) = (UserId::new("u").unwrap(), TrackKey::new("k").unwrap());
    s.put(&u, &k, &track[..]).unwrap();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(TRACK as u64));
    g.sample_size(20);
    g.bench_function("baseline: blake3 one thread", |b| {
        b.iter(|| blake3::hash(black_box(&track)))
    });
    let mut buf = Vec::with_capacity(TRACK);
    g.bench_function("sequential verified", |b| {
        b.iter(|| {
            buf.clear();
            s.open_track(&u, &k).unwrap().read_to_end(&mut buf).unwrap()
        })
    });
    g.throughput(Throughput::Bytes(64 << 10));
    let mut rng = SplitMix::new(1);
    let mut r = s.open_track(&u, &k).unwrap();
    let mut chunk = vec![0u8; 64 << 10];
    g.bench_function("seek + 64 KiB read", |b| {
        b.iter(|| {
            r.seek(SeekFrom::Start(rng.range(0, TRACK - (64 << 10)) as u64))
                .unwrap();
            r.read_exact(&mut chunk).unwrap();
        })
    });
    // One chunk decode: BLAKE3 of one average-size chunk, the work a seek may not exceed twice.
    let one = &track[..64 << 10];
    g.bench_function("baseline: one chunk verify", |b| {
        b.iter(|| blake3::hash(black_box(one)))
    });
    g.finish();
}

criterion_group!(benches, ingest, read);
criterion_main!(benches);
