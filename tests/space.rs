//! A full disk can be recovered: deletes on a full file system commit (or fail cleanly without
//! poisoning the store), GC deletes dead packs first and compacts only what fits, and new puts
//! work afterwards. Runs on a real 40 MB tmpfs (needs root; skipped only outside CI).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{audio, key, small_chunks, user};
use lockerstore::vfs::{StdVfs, Vfs};
use lockerstore::{Error, GcOptions, Options, Store};

/// A tmpfs mounted on a fresh directory, unmounted on drop (also when the test panics).
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: this test must be able to mount a tmpfs (run as root)"
            );
            eprintln!("skipped: cannot mount a tmpfs (not root?)");
            return None;
        }
        Some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn free(path: &Path) -> u64 {
    StdVfs.available_space(path).unwrap()
}

/// Writes a file next to the store until the file system is full, as another tenant of the disk
/// would.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0x5au8; 64 << 10];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

fn options() -> Options {
    Options::default()
        .pack_size_limit(1 << 20)
        .chunker(small_chunks())
        .min_free_space(4 << 20)
}

/// Asserts that the store still takes calls without being reopened.
fn assert_usable(store: &Store) {
    match store.stats() {
        Ok(_) => {}
        Err(e) => panic!("the store is not usable after a failed call: {e}"),
    }
}

/// The scenarios run one at a time: each mounts its own small tmpfs, and two at once would
/// share the machine's memory and the mount table's churn.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn full_disk_recovers(threshold: f64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = Tmpfs::mount("40m") else {
        return;
    };
    let dir = fs.path.join("store");
    let store = Store::open(&dir, options()).unwrap();
    let ballast = dir.join("BALLAST");
    assert_eq!(std::fs::metadata(&ballast).unwrap().len(), 1 << 20);
    let u = user("alice");
    let track = |i: usize| audio(&format!("t{i}"), 300_000 + (i % 5) * 37_000);

    // Fill the store until a put is refused, then the rest of the disk.
    let mut stored = Vec::new();
    loop {
        let i = stored.len();
        match store.put(&u, &key(&format!("t{i:03}")), &track(i)[..]) {
            Ok(_) => stored.push(i),
            Err(Error::DiskFull { .. }) => break,
            Err(e) => panic!("put {i}: {e}"),
        }
        assert!(i < 1000, "the disk never filled");
    }
    fill(&fs.path.join("filler"));
    let n = stored.len();
    assert!(n >= 40, "only {n} tracks fit");
    match store.put(&u, &key("one-more"), &track(9999)[..]) {
        Err(Error::DiskFull { .. }) => {}
        other => panic!("a put on the full disk gave {other:?}"),
    }
    assert_usable(&store);

    // Delete about half: every other track of the first three quarters (packs keep live records,
    // so they need copying) and all of the last quarter (packs with nothing live). A failing
    // delete must be a clean typed error that leaves the store usable.
    let mut live: Vec<usize> = Vec::new();
    let mut deleted = 0;
    for &i in &stored {
        if i < 3 * n / 4 && i % 2 == 0 {
            live.push(i);
            continue;
        }
        match store.delete(&u, &key(&format!("t{i:03}"))) {
            Ok(()) => deleted += 1,
            Err(e @ Error::DiskFull { .. }) => {
                eprintln!("delete t{i:03}: {e}");
                live.push(i);
            }
            Err(e) => panic!("delete t{i:03} failed with {e}"),
        }
        assert_usable(&store);
    }
    assert!(deleted >= n / 3, "only {deleted} of {n} deletes committed");
    assert!(
        !ballast.exists(),
        "the first delete on the full disk releases the ballast"
    );

    // GC gives space back to the file system.
    let before = free(&fs.path);
    let report = store
        .gc(GcOptions { threshold }, &mut |_| {})
        .unwrap_or_else(|e| panic!("gc on the full disk: {e}"));
    let after = free(&fs.path);
    assert!(report.packs_deleted > 0, "{report:?}");
    assert!(report.bytes_reclaimed() > 0, "{report:?}");
    assert!(
        after > before + (4 << 20),
        "the file system got {} bytes back ({report:?})",
        after.saturating_sub(before)
    );

    assert_eq!(
        std::fs::metadata(&ballast).map(|m| m.len()).ok(),
        Some(1 << 20),
        "GC re-creates the ballast once there is room"
    );

    // New puts fit again, and everything reads back.
    for j in 0..3 {
        let i = 5000 + j;
        store
            .put(&u, &key(&format!("new{j}")), &track(i)[..])
            .unwrap_or_else(|e| panic!("put after gc: {e}"));
    }
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    for &i in &live {
        let got = store.read_track(&u, &key(&format!("t{i:03}"))).unwrap();
        assert!(got == track(i), "t{i:03} differs");
    }
    for j in 0..3 {
        let got = store.read_track(&u, &key(&format!("new{j}"))).unwrap();
        assert!(got == track(5000 + j));
    }
    // A second GC (now with room) may compact what the first skipped; the data stays exact.
    store.gc(GcOptions { threshold }, &mut |_| {}).unwrap();
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    drop(store);
    let store = Store::open(&dir, options()).unwrap();
    for &i in &live {
        assert!(store.read_track(&u, &key(&format!("t{i:03}"))).unwrap() == track(i));
    }
    drop(store);
    drop(fs);
}

#[test]
fn full_disk_recovers_with_gc_threshold_1() {
    full_disk_recovers(1.0);
}

#[test]
fn full_disk_recovers_with_gc_threshold_half() {
    full_disk_recovers(0.5);
}
