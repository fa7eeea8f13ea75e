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

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
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

// ---- 3. A put that fails creates no user ----

/// Delivers `data`, then fails; every reader waits at `gate` before its first byte, so puts
/// sharing a gate are all in flight at once.
struct Upload {
    data: Vec<u8>,
    pos: usize,
    fail_at: Option<usize>,
    gate: Option<std::sync::Arc<std::sync::Barrier>>,
}

impl Upload {
    fn failing(data: Vec<u8>, fail_at: usize) -> Upload {
        Upload {
            data,
            pos: 0,
            fail_at: Some(fail_at),
            gate: None,
        }
    }
}

impl std::io::Read for Upload {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(g) = self.gate.take() {
            g.wait();
        }
        let end = self.fail_at.unwrap_or(self.data.len()).min(self.data.len());
        if self.pos >= end && self.fail_at.is_some() {
            return Err(std::io::Error::other("the client went away"));
        }
        let n = buf.len().min(end - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_failed_first_put_leaves_no_user_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    store
        .put(&user("alice"), &key("a"), &audio("a", 200_000)[..])
        .unwrap();
    let before = store.stats().unwrap();
    let ghost = user("ghost");
    // The reader fails after chunks were written to packs.
    let err = store
        .put(
            &ghost,
            &key("k"),
            Upload::failing(audio("g", 2_000_000), 1_500_000),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Upload { .. }), "{err}");
    // An empty reader that fails at once.
    let err = store
        .put(&ghost, &key("k"), Upload::failing(Vec::new(), 0))
        .unwrap_err();
    assert!(matches!(err, Error::Upload { .. }), "{err}");
    assert!(
        matches!(store.list(&ghost), Err(Error::UnknownUser(_))),
        "{:?}",
        store.list(&ghost)
    );
    assert_eq!(store.stats().unwrap(), before);
    drop(store);
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    assert!(matches!(store.list(&ghost), Err(Error::UnknownUser(_))));
    assert_eq!(store.stats().unwrap(), before);

    // The number the failed puts reserved is never handed to two users: new users after it,
    // the ghost included, each get their own domain.
    let song = audio("shared", 400_000);
    for name in ["bob", "ghost", "carol"] {
        store.put(&user(name), &key("s"), &song[..]).unwrap();
    }
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    assert_eq!(audit.shared_records_across_users, 0, "{audit:?}");
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.stats().unwrap().users, 4);
}

#[test]
fn concurrent_first_puts_of_a_new_user_share_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    let gate = std::sync::Arc::new(std::sync::Barrier::new(3));
    let song = audio("same", 600_000);
    std::thread::scope(|s| {
        for (i, fail) in [(0, false), (1, false), (2, true)] {
            let (store, gate, song) = (store.clone(), gate.clone(), song.clone());
            s.spawn(move || {
                let up = Upload {
                    data: song,
                    pos: 0,
                    fail_at: fail.then_some(100_000),
                    gate: Some(gate),
                };
                let r = store.put(&user("new"), &key(&format!("k{i}")), up);
                assert_eq!(r.is_err(), fail, "{r:?}");
            });
        }
    });
    let tracks = store.list(&user("new")).unwrap();
    assert_eq!(tracks.len(), 2);
    let s = store.stats().unwrap();
    assert_eq!((s.users, s.tracks), (1, 2));
    // Both tracks live in one domain: the same content is stored once for the user.
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    assert_eq!(audit.user_domain_records, tracks[0].chunks, "{audit:?}");
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn cli_put_of_a_directory_creates_no_user() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(cli(&store, &["init"]));
    let not_a_file = tmp.path().to_str().unwrap();
    fails(
        cli(&store, &["put", "ghost", "k", not_a_file]),
        2,
        "directory",
    );
    fails(cli(&store, &["ls", "ghost"]), 2, "unknown user");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(cli(&store, &["stats", "--json"]))).unwrap();
    assert_eq!(stats["users"], 0, "{stats}");
    assert_eq!(stats["per_user"], serde_json::json!([]), "{stats}");
    ok(cli(&store, &["verify"]));
}
