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
    let s = Store::open(dir.path(), Options::default().mode(mode)).unwrap();
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

/// FastCDC over `data` with the store's default sizes (the baselines' chunker).
fn cdc(data: &[u8]) -> fastcdc::v2020::FastCDC<'_> {
    let p = lockerstore::ChunkerParams::default();
    fastcdc::v2020::FastCDC::with_level_and_seed(
        data,
        p.min as usize,
        p.avg as usize,
        p.max as usize,
        fastcdc::v2020::Normalization::Level1,
        7,
    )
}

/// The baseline of chunking work: FastCDC cut points and BLAKE3 of every chunk.
fn cdc_and_hash(data: &[u8]) {
    for ch in cdc(data) {
        black_box(blake3::hash(&data[ch.offset..ch.offset + ch.length]));
    }
}

fn chunk_and_hash(c: &mut Criterion) {
    let track = noise(9, "bench chunking", TRACK);
    let mut g = c.benchmark_group("chunk and hash");
    g.throughput(Throughput::Bytes(TRACK as u64));
    g.sample_size(20);
    g.bench_function("baseline: blake3 one thread", |b| {
        b.iter(|| blake3::hash(black_box(&track)))
    });
    g.bench_function("fastcdc cut points", |b| {
        b.iter(|| cdc(black_box(&track)).count())
    });
    g.bench_function("fastcdc + blake3 per chunk", |b| {
        b.iter(|| cdc_and_hash(black_box(&track)))
    });
    g.finish();

    // The compression decision on audio (kept raw after a cheap probe) and on tag text
    // (compressed), against zstd -1 on the same bytes.
    let audio = &track[..256 << 10];
    let text = "TIT2 Some Title TPE1 Some Artist COMM ripped by someone ".repeat(4700);
    let text = &text.as_bytes()[..256 << 10];
    let mut g = c.benchmark_group("compression decision");
    g.throughput(Throughput::Bytes(256 << 10));
    g.bench_function("audio chunk", |b| {
        b.iter(|| lockerstore::fuzzing::compress_decision(black_box(audio), 3))
    });
    g.bench_function("baseline: zstd -1 on the audio chunk", |b| {
        b.iter(|| zstd::bulk::compress(black_box(audio), 1).unwrap())
    });
    g.bench_function("tag text chunk", |b| {
        b.iter(|| lockerstore::fuzzing::compress_decision(black_box(text), 3))
    });
    g.finish();
}

fn reingest(c: &mut Criterion) {
    let track = noise(10, "bench reingest", TRACK);
    let (_dir, s) = store(LicenseMode::SingleMaster);
    s.put(
        &UserId::new("first").unwrap(),
        &TrackKey::new("k").unwrap(),
        &track[..],
    )
    .unwrap();
    let mut g = c.benchmark_group("re-ingest");
    g.throughput(Throughput::Bytes(TRACK as u64));
    g.sample_size(10);
    g.bench_function("baseline: fastcdc + blake3", |b| {
        b.iter(|| cdc_and_hash(black_box(&track)))
    });
    let mut n = 0u64;
    // Every chunk is a dedup hit; every put still commits durably under a new key.
    g.bench_function("put of a stored track, new key", |b| {
        b.iter(|| {
            n += 1;
            s.put(
                &UserId::new("again").unwrap(),
                &TrackKey::new(&format!("k{n}")).unwrap(),
                &track[..],
            )
            .unwrap()
        })
    });
    g.finish();
}

/// Reading the rights holder from the tags, which every put without a caller-given holder does
/// on its window, beside hashing the same bytes (which every put does too).
fn rights_holder(c: &mut Criterion) {
    use lofty::config::WriteOptions;
    use lofty::tag::{ItemKey, Tag, TagExt, TagType};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("rights holder from tags");
    for (name, tag_type) in [
        ("mp3-cbr-id3v23-cover-eyed3.mp3", TagType::Id3v2),
        (
            "flac-vorbiscomment-picture-padding-metaflac.flac",
            TagType::VorbisComments,
        ),
        (
            "m4a-aac-moov-front-tags-cover-mdat-moved-mutagen.m4a",
            TagType::Mp4Ilst,
        ),
        ("m4a-aac-moov-end-tags-cover-mutagen.m4a", TagType::Mp4Ilst),
    ] {
        let path = dir.path().join(name);
        std::fs::copy(fixtures.join(name), &path).unwrap();
        let mut tag = Tag::new(tag_type);
        tag.insert_text(ItemKey::Label, "Bench Records".into());
        tag.save_to_path(&path, WriteOptions::default()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            lockerstore::fuzzing::rights_holder(&bytes).as_deref(),
            Some("Bench Records"),
            "{name}"
        );
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("baseline: blake3", name), |b| {
            b.iter(|| blake3::hash(black_box(&bytes)))
        });
        g.bench_function(BenchmarkId::new("read the holder", name), |b| {
            b.iter(|| lockerstore::fuzzing::rights_holder(black_box(&bytes)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    chunk_and_hash,
    ingest,
    reingest,
    read,
    rights_holder
);
criterion_main!(benches);
