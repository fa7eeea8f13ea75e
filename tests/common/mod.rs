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
    Store::open(
        dir,
        Options {
            mode,
            ..Options::default()
        },
    )
    .unwrap()
}

/// Small packs, so tests cross pack boundaries.
pub fn open_small_packs(dir: &std::path::Path, mode: LicenseMode) -> Store {
    Store::open(
        dir,
        Options {
            mode,
            pack_size_limit: 1 << 20,
            ..Options::default()
        },
    )
    .unwrap()
}
