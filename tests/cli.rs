//! The `lockerstore` binary end to end.

mod common;

use std::process::{Command, Output};

use common::cli;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn init_put_get_ls_rm_mode_stats_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let song = lockerstore::corpus::noise(3, "cli", 1_234_567);
    let file = tmp.path().join("song.mp3");
    std::fs::write(&file, &song).unwrap();

    ok(cli(&store, &["init", "--mode", "per-user-copy"]));
    assert!(
        !cli(&store, &["init"]).status.success(),
        "init twice must fail"
    );
    ok(cli(
        &store,
        &[
            "put",
            "alice",
            "Artist/Album/01 Song.mp3",
            file.to_str().unwrap(),
        ],
    ));
    ok(cli(
        &store,
        &["put", "bob", "x.mp3", file.to_str().unwrap()],
    ));

    let out = tmp.path().join("out.mp3");
    ok(cli(
        &store,
        &[
            "get",
            "alice",
            "Artist/Album/01 Song.mp3",
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), song);
    let part = cli(
        &store,
        &[
            "get",
            "alice",
            "Artist/Album/01 Song.mp3",
            "--range",
            "1000-1999",
        ],
    );
    assert_eq!(ok_bytes(part), &song[1000..2000]);
    let bad = cli(
        &store,
        &["get", "alice", "Artist/Album/01 Song.mp3", "--range", "5-1"],
    );
    assert_eq!(bad.status.code(), Some(2));

    let ls = json(cli(&store, &["ls", "alice", "--json"]));
    assert_eq!(ls[0]["key"], "Artist/Album/01 Song.mp3");
    assert_eq!(ls[0]["size"], 1_234_567);
    assert_eq!(ls[0]["fingerprint"], blake3::hash(&song).to_hex().as_str());

    let st = json(cli(&store, &["stats", "--json"]));
    assert_eq!(st["mode"], "per-user-copy");
    assert_eq!(st["users"], 2);
    assert_eq!(st["tracks"], 2);
    assert_eq!(st["logical_bytes"], 2 * 1_234_567);
    let per_user_physical = st["physical_bytes"].as_u64().unwrap();
    for k in ["garbage_bytes", "chunks", "dedup_ratio"] {
        assert!(st.get(k).is_some(), "{k} missing");
    }

    assert_eq!(
        ok(cli(&store, &["mode", "single-master"])).trim(),
        "single-master"
    );
    assert_eq!(ok(cli(&store, &["mode"])).trim(), "single-master");
    ok(cli(
        &store,
        &["put", "carol", "y.mp3", file.to_str().unwrap()],
    ));
    let st = json(cli(&store, &["stats", "--json"]));
    assert_eq!(
        st["physical_bytes"].as_u64().unwrap(),
        per_user_physical * 3 / 2
    );

    ok(cli(&store, &["rm", "bob", "x.mp3"]));
    let st = json(cli(&store, &["stats", "--json"]));
    assert_eq!(st["tracks"], 2);
    assert!(st["garbage_bytes"].as_u64().unwrap() > 0);
    let rm_again = cli(&store, &["rm", "bob", "x.mp3"]);
    assert_eq!(rm_again.status.code(), Some(2));

    let v = json(cli(&store, &["verify", "--json"]));
    assert_eq!(v["ok"], true);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

fn ok_bytes(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn put_from_stdin_and_bad_input() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    ok(cli(&store, &["init"]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockerstore"))
        .arg("--store")
        .arg(&store)
        .args(["put", "u", "k", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(ok_bytes(cli(&store, &["get", "u", "k"])), b"from stdin");

    let missing = cli(&store, &["get", "nobody", "k"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("unknown user"));
    let empty_user = cli(&store, &["put", "", "k", "-"]);
    assert_eq!(empty_user.status.code(), Some(2));
    let not_a_store = cli(tmp.path(), &["stats"]);
    assert!(!not_a_store.status.success());
    // Non-UTF-8 user ids are refused, not mangled.
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_lockerstore"))
        .arg("--store")
        .arg(&store)
        .arg("ls")
        .arg(std::ffi::OsStr::from_bytes(&[0xff, 0xfe]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}

#[test]
fn import_a_directory_tree_of_users() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("lockers");
    for (u, k, n) in [
        ("ann", "A/1.mp3", 300_000),
        ("ann", "A/2.mp3", 10),
        ("ben", "B/x/y.flac", 70_000),
    ] {
        let p = root.join(u).join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, lockerstore::corpus::noise(1, k, n)).unwrap();
    }
    let store = tmp.path().join("s");
    ok(cli(&store, &["init", "--mode", "single-master"]));
    let out = ok(cli(&store, &["import", root.to_str().unwrap()]));
    assert!(out.contains("imported 3 files"), "{out}");
    assert!(out.contains("MB/s"), "{out}");
    assert_eq!(
        ok_bytes(cli(&store, &["get", "ben", "B/x/y.flac"])),
        lockerstore::corpus::noise(1, "B/x/y.flac", 70_000)
    );
    let ls = json(cli(&store, &["ls", "ann", "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 2);
}

#[test]
fn demo_runs_on_a_small_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(cli(
        tmp.path(),
        &[
            "demo",
            "--users",
            "4",
            "--recordings",
            "3",
            "--tracks-per-user",
            "2",
        ],
    ));
    assert!(out.contains("per-user-copy"), "{out}");
    assert!(out.contains("single-master"), "{out}");
    assert!(out.contains("read back exact and verified"), "{out}");
    assert!(out.contains("audit: conforming"), "{out}");
    assert!(!out.contains("NOT CONFORMING"), "{out}");
}

#[test]
fn what_if_migrate_audit_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let file = tmp.path().join("song.mp3");
    std::fs::write(&file, lockerstore::corpus::noise(9, "flip", 2_000_000)).unwrap();
    ok(cli(&store, &["init", "--mode", "per-user-copy"]));
    for u in ["ann", "ben", "cat"] {
        ok(cli(&store, &["put", u, "hit.mp3", file.to_str().unwrap()]));
    }
    let a = json(cli(&store, &["audit", "--json"]));
    assert_eq!(a["conforming"], true);
    assert_eq!(a["shared_records_across_users"], 0);
    let physical_before = json(cli(&store, &["stats", "--json"]))["physical_bytes"]
        .as_u64()
        .unwrap();

    ok(cli(&store, &["mode", "single-master"]));
    let pending = cli(&store, &["audit", "--json"]);
    assert_eq!(
        pending.status.code(),
        Some(1),
        "a pending layout must fail the audit"
    );
    let a: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert_eq!(a["pending_tracks"], 3);
    assert!(a["duplicate_records"].as_u64().unwrap() > 0);

    let w = json(cli(&store, &["what-if", "single-master", "--json"]));
    for k in [
        "mode",
        "physical_bytes",
        "chunks",
        "bytes_to_write",
        "bytes_to_free",
    ] {
        assert!(w.get(k).is_some(), "{k} missing");
    }
    assert_eq!(w["bytes_to_write"], 0);
    let m = json(cli(&store, &["migrate", "--json"]));
    assert_eq!(m["tracks_migrated"], 3);
    let st = json(cli(&store, &["stats", "--json"]));
    assert_eq!(st["physical_bytes"], w["physical_bytes"]);
    assert_eq!(st["physical_bytes"].as_u64().unwrap() * 3, physical_before);
    let a = json(cli(&store, &["audit", "--json", "--records"]));
    assert_eq!(a["conforming"], true);
    let records = a["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(
        records
            .iter()
            .all(|r| r["users"].as_array().unwrap().len() == 3)
    );

    let g = json(cli(&store, &["gc", "--json", "--threshold", "1.0"]));
    assert!(g["bytes_reclaimed"].as_u64().unwrap() > 0);
    assert_eq!(json(cli(&store, &["stats", "--json"]))["garbage_bytes"], 0);
    assert_eq!(json(cli(&store, &["verify", "--json"]))["ok"], true);
    assert_eq!(
        ok_bytes(cli(&store, &["get", "ben", "hit.mp3"])),
        lockerstore::corpus::noise(9, "flip", 2_000_000)
    );
}

#[test]
fn match_links_a_proven_track_and_ls_shows_audio_fingerprints() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let theirs = fixtures.join("mp3-cbr-id3v24-padding-mutagen.mp3");
    let mine = fixtures.join("mp3-cbr-retag-1-large-tag-mutagen.mp3");
    ok(cli(&store, &["init", "--mode", "single-master"]));
    ok(cli(
        &store,
        &["put", "ann", "a.mp3", theirs.to_str().unwrap()],
    ));
    let out = ok(cli(
        &store,
        &["match", "ben", "b.mp3", mine.to_str().unwrap()],
    ));
    assert!(out.contains("proof accepted"), "{out}");
    assert_eq!(
        ok_bytes(cli(&store, &["get", "ben", "b.mp3"])),
        std::fs::read(&mine).unwrap()
    );
    let ls = json(cli(&store, &["ls", "ben", "--json"]));
    assert_eq!(ls[0]["key"], "b.mp3");
    assert_eq!(ls[0]["format"], "mp3");
    assert_eq!(
        ls[0]["audio_fingerprint"],
        "cbc872537a6351ec4d6744bd6bd4d257d6e0ed5ad903cdab85254382d06f548d"
    );
    assert_eq!(json(cli(&store, &["stats", "--json"]))["recordings"], 1);
    // Per-user-copy mode: refused, nothing linked.
    ok(cli(&store, &["mode", "per-user-copy"]));
    let refused = cli(&store, &["match", "cat", "c.mp3", mine.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("refused"));
    assert_eq!(cli(&store, &["ls", "cat"]).status.code(), Some(2));
}
