//! Damage on disk: flipped bytes in pack payloads and record headers, truncated and missing pack
//! files, garbage in the metadata database. Damage must be found by `verify` (naming the pack),
//! reads of damaged tracks must fail with a corruption error and never return wrong bytes, tracks
//! elsewhere must stay readable, the store must still open, and nothing may panic.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::{audio, key, open_small_packs, user};
use lockerstore::corpus::noise;
use lockerstore::{Error, LicenseMode, Options, Store, VerifyReport};

const PACK_HEADER: u64 = 32;
const RECORD_HEADER: u64 = 64;
const PACK_LIMIT: u64 = 1 << 20;

/// Pack files by id (the name is the id in hex), lowest first.
fn packs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".pack")?.to_owned();
            Some((name, p))
        })
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
}

fn len_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn options() -> Options {
    Options::default()
        .pack_size_limit(PACK_LIMIT)
        .chunker(common::small_chunks())
}

/// A closed store holding `a` (1.6 MB: it fills the first pack, which is sealed, and starts the
/// second, since a pack takes at most 1 MiB plus one 256 KiB chunk) and then `b` (2 MB: the rest
/// of the second pack and later ones). `first` is the first pack (name, path): it holds the start
/// of `a` and nothing of `b`; the last pack holds only the end of `b`.
struct Fixture {
    dir: tempfile::TempDir,
    a: Vec<u8>,
    b: Vec<u8>,
    first: (String, PathBuf),
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let a = audio("track a", 1_600_000);
    let b = audio("track b", 2_000_000);
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    store.put(&user("u"), &key("a.mp3"), &a[..]).unwrap();
    let after_a = packs(dir.path());
    assert_eq!(after_a.len(), 2, "a spans two packs: {after_a:?}");
    let first = after_a[0].clone();
    assert!(
        len_of(&first.1) >= PACK_LIMIT,
        "the first pack is full and sealed"
    );
    store.put(&user("u"), &key("b.mp3"), &b[..]).unwrap();
    assert!(store.verify().unwrap().is_ok());
    drop(store);
    assert_eq!(packs(dir.path())[0].1, first.1);
    Fixture { dir, a, b, first }
}

fn reopen(dir: &Path) -> Store {
    Store::open(dir, options()).unwrap_or_else(|e| panic!("the store must still open: {e}"))
}

fn mentions(report: &VerifyReport, what: &str) -> bool {
    report.problems.iter().any(|p| p.contains(what))
}

/// Reading `k` fails with a corruption error through every path, and yields no bytes first.
fn assert_read_is_corrupt(store: &Store, k: &str) -> Error {
    let err = store
        .read_track(&user("u"), &key(k))
        .expect_err("reading a damaged track must fail");
    assert!(err.is_corruption(), "read_track {k}: {err:?}");
    let mut r = store.open_track(&user("u"), &key(k)).unwrap();
    let mut out = Vec::new();
    let io = r
        .read_to_end(&mut out)
        .expect_err("reading a damaged track must fail");
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData, "{io}");
    assert!(Error::from_io(io).is_corruption());
    err
}

#[test]
fn flipped_payload_byte_is_found_and_never_returned() {
    let f = fixture();
    // Inside the payload of the first record (chunks are at least 16 KiB).
    flip(&f.first.1, PACK_HEADER + RECORD_HEADER + 1000);
    let store = reopen(f.dir.path());

    let report = store.verify().unwrap();
    assert!(!report.is_ok(), "verify missed a flipped payload byte");
    assert!(
        mentions(&report, &f.first.0),
        "no problem names pack {}: {:?}",
        f.first.0,
        report.problems
    );
    assert!(mentions(&report, "a.mp3"), "{:?}", report.problems);
    assert!(!mentions(&report, "b.mp3"), "{:?}", report.problems);

    let err = assert_read_is_corrupt(&store, "a.mp3");
    assert!(
        matches!(&err, Error::ChecksumMismatch { pack, offset, .. }
            if pack.to_string() == f.first.0 && *offset == PACK_HEADER),
        "{err:?}"
    );
    // The damaged chunk's bytes never come out, not even through a first small read.
    let mut r = store.open_track(&user("u"), &key("a.mp3")).unwrap();
    let mut small = [0u8; 10];
    assert!(r.read(&mut small).is_err());
    // Undamaged chunks of the same track still read: its last 100 kB lie in other chunks.
    let tail = f.a.len() - 100_000;
    r.seek(SeekFrom::Start(tail as u64)).unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest == f.a[tail..], "tail of a");
    // The other track, which has nothing in the damaged pack, is intact.
    assert!(store.read_track(&user("u"), &key("b.mp3")).unwrap() == f.b);
    // The damage is reported again after reopening (a reader keeps the store open).
    drop(r);
    drop(store);
    let store = reopen(f.dir.path());
    assert!(!store.verify().unwrap().is_ok());
    assert!(store.read_track(&user("u"), &key("a.mp3")).is_err());
}

#[test]
fn flipped_byte_in_a_compressed_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let text: Vec<u8> = (0..40_000)
        .flat_map(|n| format!("line {n}: la la la\n").into_bytes())
        .collect();
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    store
        .put(&user("u"), &key("lyrics.txt"), &text[..])
        .unwrap();
    let s = store.stats().unwrap();
    assert!(
        s.physical_bytes * 4 < text.len() as u64,
        "stored compressed: {s:?}"
    );
    drop(store);
    let (name, path) = packs(dir.path()).remove(0);
    // Inside the first record's zstd frame.
    flip(&path, PACK_HEADER + RECORD_HEADER + 100);
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert!(
        !report.is_ok() && mentions(&report, &name),
        "{:?}",
        report.problems
    );
    let err = assert_read_is_corrupt(&store, "lyrics.txt");
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
}

#[test]
fn flipped_header_bytes_are_detected() {
    let f = fixture();
    let original = std::fs::read(&f.first.1).unwrap();
    // The pack header (magic, version, pack id, store tag), then the first record's header
    // (magic, codec, reserved, domain, chunk id, plain and stored length, checksum).
    let offsets = [0u64, 9, 17, 25, 32, 36, 37, 40, 52, 80, 81, 84, 90];
    for at in offsets {
        std::fs::write(&f.first.1, &original).unwrap();
        flip(&f.first.1, at);
        let store = reopen(f.dir.path());
        let report = store.verify().unwrap();
        assert!(!report.is_ok(), "flip at {at}: verify found nothing");
        assert!(
            mentions(&report, &f.first.0),
            "flip at {at}: no problem names pack {}: {:?}",
            f.first.0,
            report.problems
        );
        assert!(
            !mentions(&report, "b.mp3"),
            "flip at {at}: {:?}",
            report.problems
        );
        let err = assert_read_is_corrupt(&store, "a.mp3");
        assert!(
            matches!(&err, Error::Corrupted { .. }),
            "flip at {at}: a damaged header is reported as such, got {err:?}"
        );
        assert!(
            store.read_track(&user("u"), &key("b.mp3")).unwrap() == f.b,
            "flip at {at}: b"
        );
    }
    std::fs::write(&f.first.1, &original).unwrap();
    let store = reopen(f.dir.path());
    assert!(store.verify().unwrap().is_ok(), "restored pack");
}

#[test]
fn short_or_missing_pack_is_reported_and_the_store_still_works() {
    enum Damage {
        Halve,
        Truncate(u64),
        Remove,
    }
    // (which pack: the first, sealed one or the last, still open one; what happens to it)
    let cases = [
        ("last", Damage::Halve),
        ("last", Damage::Truncate(PACK_HEADER + 10)),
        ("first", Damage::Truncate(PACK_LIMIT / 2)),
        ("first", Damage::Truncate(10)),
        ("first", Damage::Truncate(0)),
        ("last", Damage::Remove),
    ];
    for (which, damage) in cases {
        let f = fixture();
        let all = packs(f.dir.path());
        let (name, path) = if which == "first" {
            f.first.clone()
        } else {
            all.last().unwrap().clone()
        };
        // The last pack holds only the end of b; the first only the start of a.
        let (hit, spared, spared_bytes) = if which == "first" {
            ("a.mp3", "b.mp3", &f.b)
        } else {
            ("b.mp3", "a.mp3", &f.a)
        };
        let case = match damage {
            Damage::Halve | Damage::Truncate(_) => {
                let full = len_of(&path);
                let n = match damage {
                    Damage::Truncate(n) => n,
                    _ => full / 2,
                };
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(n)
                    .unwrap();
                format!("{which} pack {name} cut from {full} to {n} bytes")
            }
            Damage::Remove => {
                std::fs::remove_file(&path).unwrap();
                format!("{which} pack {name} removed")
            }
        };
        let short_len = std::fs::metadata(&path).ok().map(|m| m.len());

        let store = reopen(f.dir.path());
        let report = store.verify().unwrap();
        assert!(!report.is_ok(), "{case}: verify found nothing");
        for p in &report.problems {
            assert!(
                p.contains(&name),
                "{case}: every problem is about the damaged pack, not {p:?}"
            );
        }
        assert!(mentions(&report, hit), "{case}: {:?}", report.problems);
        assert_read_is_corrupt(&store, hit);
        assert!(
            store.read_track(&user("u"), &key(spared)).unwrap() == *spared_bytes,
            "{case}: {spared}"
        );

        // New writes work and do not go into (or "repair") the damaged pack.
        let c = audio(&format!("c {case}"), 1_500_000);
        store.put(&user("u"), &key("c.mp3"), &c[..]).unwrap();
        assert!(
            store.read_track(&user("u"), &key("c.mp3")).unwrap() == c,
            "{case}: c"
        );
        assert_eq!(
            std::fs::metadata(&path).ok().map(|m| m.len()),
            short_len,
            "{case}: the damaged pack was written to"
        );
        let report = store.verify().unwrap();
        assert!(
            report.problems.iter().all(|p| p.contains(&name)) && !mentions(&report, "c.mp3"),
            "{case}: {:?}",
            report.problems
        );
        drop(store);

        // And again after another open: recovery neither fails on it nor hides it.
        let store = reopen(f.dir.path());
        assert_eq!(
            std::fs::metadata(&path).ok().map(|m| m.len()),
            short_len,
            "{case}: recovery changed the damaged pack"
        );
        assert!(!store.verify().unwrap().is_ok(), "{case}");
        assert!(
            store.read_track(&user("u"), &key("c.mp3")).unwrap() == c,
            "{case}: c"
        );
        assert!(store.read_track(&user("u"), &key(hit)).is_err(), "{case}");
    }
}

/// A store with some metadata: 30 tracks of 3 users, one deleted, one replaced.
fn store_with_metadata() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    for i in 0..30 {
        let data = audio(&format!("m{i}"), 50_000 + 10_000 * i);
        store
            .put(
                &user(&format!("u{}", i % 3)),
                &key(&format!("k{i}")),
                &data[..],
            )
            .unwrap();
    }
    store.delete(&user("u0"), &key("k3")).unwrap();
    store
        .put(&user("u1"), &key("k4"), &audio("replacement", 70_000)[..])
        .unwrap();
    assert!(store.verify().unwrap().is_ok());
    dir
}

/// Opens the store and verifies it, turning a panic into a message.
fn open_and_verify(dir: &Path) -> Result<lockerstore::Result<VerifyReport>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let store = Store::open(dir, options())?;
        let report = store.verify()?;
        Ok(report)
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".into())
    })
}

fn is_typed_metadata_error(e: &Error) -> bool {
    e.is_corruption() || matches!(e, Error::Metadata(_) | Error::Io { .. })
}

#[test]
fn garbage_in_the_middle_of_the_metadata_is_an_error_not_a_panic() {
    let dir = store_with_metadata();
    let path = dir.path().join("meta.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    // The middle half of the file: B-tree pages the tables live in.
    let (lo, hi) = (bytes.len() / 4, bytes.len() * 3 / 4);
    bytes[lo..hi].copy_from_slice(&noise(3, "garbage", hi - lo));
    std::fs::write(&path, &bytes).unwrap();

    match open_and_verify(dir.path()) {
        Err(panic) => panic!(
            "opening or verifying a store whose meta.redb holds garbage at {lo}..{hi} panicked \
             instead of returning an error: {panic}"
        ),
        Ok(Err(e)) => assert!(is_typed_metadata_error(&e), "{e:?}"),
        Ok(Ok(report)) => assert!(
            !report.is_ok(),
            "half of meta.redb replaced by garbage and verify found nothing"
        ),
    }
}

#[test]
fn garbage_in_any_metadata_page_is_an_error_or_harmless_never_a_panic() {
    let dir = store_with_metadata();
    let path = dir.path().join("meta.redb");
    let original = std::fs::read(&path).unwrap();
    let page = 4096;
    let mut panics = Vec::new();
    let mut errors = 0;
    let mut reported = 0;
    let mut harmless = 0;
    for (i, start) in (0..original.len()).step_by(page).enumerate() {
        let end = (start + page).min(original.len());
        let mut bytes = original.clone();
        bytes[start..end].copy_from_slice(&noise(4, &format!("page {i}"), end - start));
        std::fs::write(&path, &bytes).unwrap();
        match open_and_verify(dir.path()) {
            Err(panic) => panics.push(format!("page {i} ({start}..{end}): {panic}")),
            Ok(Err(e)) => {
                assert!(
                    is_typed_metadata_error(&e),
                    "page {i}: an untyped error: {e:?}"
                );
                errors += 1;
            }
            Ok(Ok(r)) if !r.is_ok() => reported += 1,
            // A free page: nothing refers to it.
            Ok(Ok(_)) => harmless += 1,
        }
    }
    std::fs::write(&path, &original).unwrap();
    println!(
        "meta.redb pages: {errors} errors, {reported} reported by verify, {harmless} harmless, \
         {} panics",
        panics.len()
    );
    assert!(
        panics.is_empty(),
        "{} of {} damaged metadata pages made open/verify panic:\n{}",
        panics.len(),
        original.len().div_ceil(page),
        panics.join("\n")
    );
    assert!(errors + reported > 0, "no damaged page was ever noticed");
    // The original bytes open fine again.
    assert!(open_and_verify(dir.path()).unwrap().unwrap().is_ok());
}
