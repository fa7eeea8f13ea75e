//! What operators do to stores and what the store does about it: a lost `STORE` file, a removed
//! `LOCK`, a put of bad input, a truncated `meta.redb`. Each is checked at the library level and
//! through the `lockerstore` binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{audio, key, open, user};
use lockerstore::{Error, LicenseMode, Options, Store};

fn cli(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockerstore"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("CI", "true")
        .output()
        .unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the command failed with `code` and its error message contains `needle`.
fn fails(out: Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    assert!(
        stderr.to_lowercase().contains(needle),
        "expected {needle:?} in the error: {}",
        describe(&out)
    );
    stderr
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

// ---- 4. A truncated meta.redb is corruption, not an I/O error ----

#[test]
fn a_truncated_metadata_file_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    store
        .put(&user("a"), &key("t"), &audio("t", 300_000)[..])
        .unwrap();
    drop(store);
    let meta = dir.path().join("meta.redb");
    let full = std::fs::read(&meta).unwrap();
    let len = full.len() as u64;
    for size in [0, 1, 100, 511, 4096, len / 2, len - 1] {
        std::fs::write(&meta, &full).unwrap();
        truncate(&meta, size);
        let err = Store::open(dir.path(), Options::default()).unwrap_err();
        assert!(
            err.is_corruption() && matches!(err, Error::Corrupted { .. }),
            "meta.redb truncated to {size} of {len} bytes: {err:?}"
        );
        // The failed open left the damaged file as it was.
        assert_eq!(std::fs::metadata(&meta).unwrap().len(), size);
    }
    // Through the CLI: exit 1 and a message that says what is wrong.
    truncate(&meta, 100);
    let stderr = fails(cli(dir.path(), &["stats"]), 1, "corrupted");
    assert!(stderr.contains("meta.redb"), "{stderr}");
}
