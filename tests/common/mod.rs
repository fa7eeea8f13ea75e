#![allow(dead_code)]

use lockerstore::corpus::noise;
use lockerstore::{LicenseMode, Options, Store, TrackKey, UserId};

pub fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

pub fn key(s: &str) -> TrackKey {
    TrackKey::new(s).unwrap()
}

/// Incompressible bytes, like encoded audio.
pub fn audio(label: &str, n: usize) -> Vec<u8> {
    noise(42, label, n)
}

pub fn open(dir: &std::path::Path, mode: LicenseMode) -> Store {
    Store::open(dir, Options::default().mode(mode)).unwrap()
}

/// Small chunks (16/64/256 KiB), so small test tracks have several.
pub fn small_chunks() -> lockerstore::ChunkerParams {
    lockerstore::ChunkerParams {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    }
}

/// Small packs and small chunks, so tests cross pack boundaries.
pub fn open_small_packs(dir: &std::path::Path, mode: LicenseMode) -> Store {
    Store::open(
        dir,
        Options::default()
            .mode(mode)
            .pack_size_limit(1 << 20)
            .chunker(small_chunks()),
    )
    .unwrap()
}

/// Runs the `lockerstore` binary on `store` (with `CI` set, so it draws no progress bars).
pub fn cli(store: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lockerstore"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("CI", "true")
        .output()
        .unwrap()
}

/// Cuts (or extends with zeros) the file at `path` to `len` bytes.
pub fn truncate(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Copies a directory tree (a store, for tests that restore an older copy of it).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Empties the `packs/` directory of a store whose packs live in a bucket: its cache (and
/// staging) goes, as on a node that lost it, so every read fetches from the bucket.
pub fn drop_cache(store_dir: &std::path::Path) {
    let packs = store_dir.join("packs");
    std::fs::remove_dir_all(&packs).unwrap();
    std::fs::create_dir(&packs).unwrap();
}
