//! What operators do to stores and what the store does about it: a lost `STORE` file, a removed
//! `LOCK`, a put of bad input, a truncated `meta.redb`. Each is checked at the library level and
//! through the `lockerstore` binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{audio, cli, key, open, truncate, user};
use lockerstore::{Error, LicenseMode, Options, Store};

/// Creates a per-user-copy store in `dir` holding user `a`'s track `key`, and closes it.
fn store_holding(dir: &Path, key_name: &str, bytes: &[u8]) {
    let store = open(dir, LicenseMode::PerUserCopy);
    store.put(&user("a"), &key(key_name), bytes).unwrap();
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

// ---- 4. A truncated meta.redb is corruption, not an I/O error ----

#[test]
fn a_truncated_metadata_file_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    store_holding(dir.path(), "t", &audio("t", 300_000));
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

// ---- 1. A store that lost its STORE file is refused, never recreated ----

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "packs"] {
        let d = dir.join(sub);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                out.push((name, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_store_without_its_store_file_is_refused_and_repaired_from_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let song = audio("kept", 700_000);
    store_holding(dir.path(), "t1", &song);
    let store_file = std::fs::read(dir.path().join("STORE")).unwrap();
    let damages: [(&str, Option<Vec<u8>>); 4] = [
        ("missing", None),
        ("empty", Some(Vec::new())),
        ("zeroed", Some(vec![0; 48])),
        (
            "bad check",
            Some([&store_file[..40], &[0xff; 8][..]].concat()),
        ),
    ];
    for (what, damage) in damages {
        match &damage {
            None => std::fs::remove_file(dir.path().join("STORE")).unwrap(),
            Some(b) => std::fs::write(dir.path().join("STORE"), b).unwrap(),
        }
        let before = listing(dir.path());
        // The default options create a store; they must not take this one for an empty one.
        let err = Store::open(dir.path(), Options::default()).unwrap_err();
        match &err {
            Error::StoreFileLost { present, .. } => {
                assert!(present.contains(&"meta.redb".to_string()), "{what}: {err}");
                assert!(present.contains(&"packs".to_string()), "{what}: {err}");
            }
            other => panic!("STORE {what}: {other:?}"),
        }
        assert!(err.is_corruption(), "{what}");
        assert!(err.to_string().contains("repair"), "{what}: {err}");
        assert_eq!(
            listing(dir.path()),
            before,
            "STORE {what}: open changed files"
        );

        assert_eq!(
            Store::repair_store_file(dir.path(), Options::default()).unwrap(),
            lockerstore::StoreFileRepair::Rewritten,
            "{what}"
        );
        assert_eq!(std::fs::read(dir.path().join("STORE")).unwrap(), store_file);
        assert_eq!(
            Store::repair_store_file(dir.path(), Options::default()).unwrap(),
            lockerstore::StoreFileRepair::Intact
        );
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert!(!store.is_new());
        assert_eq!(store.read_track(&user("a"), &key("t1")).unwrap(), song);
        assert!(store.verify().unwrap().is_ok());
    }
}

#[test]
fn a_store_file_of_another_store_is_refused_and_repaired() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let song = audio("one", 300_000);
    store_holding(one.path(), "t", &song);
    drop(open(two.path(), LicenseMode::PerUserCopy));
    std::fs::copy(two.path().join("STORE"), one.path().join("STORE")).unwrap();
    let err = Store::open(one.path(), Options::default()).unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains("repair"),
        "{err}"
    );
    Store::repair_store_file(one.path(), Options::default()).unwrap();
    let store = Store::open(one.path(), Options::default()).unwrap();
    assert_eq!(store.read_track(&user("a"), &key("t")).unwrap(), song);
}

#[test]
fn repair_refuses_without_readable_metadata_and_lost_metadata_is_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    store_holding(dir.path(), "t", &audio("t", 300_000));
    let meta = dir.path().join("meta.redb");
    let saved = std::fs::read(&meta).unwrap();
    // Unreadable metadata: repair refuses and writes no STORE.
    std::fs::remove_file(dir.path().join("STORE")).unwrap();
    truncate(&meta, 100);
    let err = Store::repair_store_file(dir.path(), Options::default()).unwrap_err();
    assert!(err.is_corruption(), "{err:?}");
    assert!(!dir.path().join("STORE").exists());
    // No metadata at all: nothing to repair from.
    std::fs::remove_file(&meta).unwrap();
    assert!(Store::repair_store_file(dir.path(), Options::default()).is_err());
    assert!(!dir.path().join("STORE").exists());
    // With STORE back but meta.redb gone, the packs say this was a store: refused, packs kept.
    std::fs::write(&meta, &saved).unwrap();
    Store::repair_store_file(dir.path(), Options::default()).unwrap();
    std::fs::remove_file(&meta).unwrap();
    let packs = listing(dir.path());
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(err.is_corruption(), "{err:?}");
    assert_eq!(listing(dir.path()), packs);
}

#[test]
fn cli_init_refuses_a_store_that_lost_its_store_file_and_repair_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let song = audio("cli", 900_000);
    let file = tmp.path().join("song.mp3");
    std::fs::write(&file, &song).unwrap();
    ok(cli(&store, &["init"]));
    ok(cli(&store, &["put", "a", "t1", file.to_str().unwrap()]));
    std::fs::remove_file(store.join("STORE")).unwrap();

    let stderr = fails(cli(&store, &["init"]), 1, "store file is missing");
    assert!(stderr.contains("repair"), "{stderr}");
    fails(cli(&store, &["ls", "a"]), 1, "repair");
    assert!(std::fs::read_dir(store.join("packs")).unwrap().count() > 0);

    let out = ok(cli(&store, &["repair"]));
    assert!(out.contains("rewrote STORE"), "{out}");
    assert!(ok(cli(&store, &["repair"])).contains("intact"));
    let got = cli(&store, &["get", "a", "t1"]);
    assert!(got.status.success(), "{}", describe(&got));
    assert_eq!(got.stdout, song);
    ok(cli(&store, &["verify"]));
    // init refuses the store it is, and a directory holding anything else.
    fails(cli(&store, &["init"]), 2, "already holds a store");
    let foreign = tmp.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"jpeg").unwrap();
    fails(cli(&foreign, &["init"]), 1, "not a lockerstore store");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);
}

#[test]
fn cli_init_finishes_a_creation_interrupted_after_store_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(cli(&store, &["init", "--mode", "single-master"]));
    // What a creation leaves when it stops after writing STORE: STORE, maybe an empty packs/
    // and a partial meta.redb.tmp.
    std::fs::remove_file(store.join("meta.redb")).unwrap();
    std::fs::write(store.join("meta.redb.tmp"), b"partial").unwrap();
    fails(cli(&store, &["stats"]), 1, "no store");
    let out = ok(cli(&store, &["init", "--mode", "single-master"]));
    assert!(out.contains("created store"), "{out}");
    assert_eq!(ok(cli(&store, &["mode"])).trim(), "single-master");
    assert!(!store.join("meta.redb.tmp").exists());
}

// ---- 2. Removing LOCK does not let a second process in ----

#[test]
fn removing_lock_does_not_let_a_second_process_write_the_store() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(cli(&store, &["init"]));
    let song = audio("slow", 6_000_000);
    let other = tmp.path().join("other.mp3");
    std::fs::write(&other, audio("other", 500_000)).unwrap();

    let mut first = Command::new(env!("CARGO_BIN_EXE_lockerstore"))
        .arg("--store")
        .arg(&store)
        .args(["put", "a", "slow", "-"])
        .env("CI", "true")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = first.stdin.take().unwrap();
    // The put opens the store before it reads its upload, so once the pipe has taken most of
    // the first half, the first process holds the store.
    stdin.write_all(&song[..3_000_000]).unwrap();
    stdin.flush().unwrap();
    // The operator removes the "stale" lock file.
    let _ = std::fs::remove_file(store.join("LOCK"));

    fails(
        cli(&store, &["put", "b", "other", other.to_str().unwrap()]),
        1,
        "locked by another process",
    );
    let err = Store::open(&store, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    fails(cli(&store, &["repair"]), 1, "locked by another process");

    stdin.write_all(&song[3_000_000..]).unwrap();
    drop(stdin);
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "first put: {}", describe(&out));
    let got = cli(&store, &["get", "a", "slow"]);
    assert!(got.status.success(), "{}", describe(&got));
    assert!(
        got.stdout == song,
        "the first put's track does not read back"
    );
    ok(cli(&store, &["verify"]));
    fails(cli(&store, &["ls", "b"]), 2, "unknown user");
}

/// A store lock is an flock, held by an open file description, and a child forked by another
/// thread holds a copy of every descriptor of this process from its fork to its exec. The lock
/// is released explicitly when the store closes, so that copy does not keep the store locked
/// against this very process (the crash tests, which spawn children from parallel threads,
/// failed in CI with `Locked` before).
#[test]
fn a_store_closed_while_another_thread_forks_is_not_left_locked() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = open(&dir, LicenseMode::PerUserCopy);
    store.put(&user("a"), &key("t"), &b"held"[..]).unwrap();

    let (mut forked, mut tell) = std::io::pipe().unwrap();
    let spawner = std::thread::spawn(move || {
        let mut child = Command::new("true");
        // SAFETY: between fork and exec the closure only calls write(2) and nanosleep(2), both
        // async-signal-safe, and allocates nothing.
        unsafe {
            child.pre_exec(move || {
                tell.write_all(b"f")?;
                std::thread::sleep(std::time::Duration::from_millis(1500));
                Ok(())
            });
        }
        child.status().unwrap()
    });
    // The child exists and holds copies of the store's descriptors until it execs.
    let mut byte = [0u8; 1];
    forked.read_exact(&mut byte).unwrap();
    drop(store);
    let reopened = Store::open(&dir, Options::default()).unwrap();
    assert_eq!(reopened.read_track(&user("a"), &key("t")).unwrap(), b"held");
    assert!(spawner.join().unwrap().success());
}

/// A store created before the metadata kept a copy of `STORE` gets one at its next open; until
/// then, repair refuses instead of guessing.
#[test]
fn a_store_without_the_copy_of_store_gets_it_at_open_and_repair_refuses_before() {
    let dir = tempfile::tempdir().unwrap();
    let song = audio("old", 300_000);
    store_holding(dir.path(), "t", &song);
    // Make it look like a store of an earlier build: no `store_file` state key.
    {
        const STATE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("state");
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(
            txn.open_table(STATE)
                .unwrap()
                .remove("store_file")
                .unwrap()
                .is_some()
        );
        txn.commit().unwrap();
    }
    let saved = std::fs::read(dir.path().join("STORE")).unwrap();
    std::fs::remove_file(dir.path().join("STORE")).unwrap();
    let err = Store::repair_store_file(dir.path(), Options::default()).unwrap_err();
    assert!(err.to_string().contains("no copy"), "{err}");
    assert!(!dir.path().join("STORE").exists());
    // Opened once by this build, it keeps the copy, and repair works.
    std::fs::write(dir.path().join("STORE"), &saved).unwrap();
    drop(Store::open(dir.path(), Options::default()).unwrap());
    std::fs::remove_file(dir.path().join("STORE")).unwrap();
    Store::repair_store_file(dir.path(), Options::default()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("STORE")).unwrap(), saved);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.read_track(&user("a"), &key("t")).unwrap(), song);
}

/// A build from before the directory lock creates a store under the `LOCK` lock alone, and
/// writes `meta.redb` and `packs/` before `STORE`. Met halfway, that is `Locked`, not a store
/// that lost its `STORE` file.
#[test]
fn a_creation_under_the_old_lock_is_locked_not_a_lost_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir_all(dir.join("packs")).unwrap();
    std::fs::write(dir.join("meta.redb"), b"being written by an older build").unwrap();
    let lock = std::fs::File::create(dir.join("LOCK")).unwrap();
    lock.try_lock().unwrap();
    let err = Store::open(&dir, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    drop(lock);
    let err = Store::open(&dir, Options::default()).unwrap_err();
    assert!(matches!(err, Error::StoreFileLost { .. }), "{err}");
}
