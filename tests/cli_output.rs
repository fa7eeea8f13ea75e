//! What the `lockerstore` binary writes, and what it does when it cannot: byte ranges as in
//! HTTP, `get -o` never leaving a partial file, a closed pipe ending the command quietly.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockerstore"));
    c.env("CI", "true");
    c
}

fn cli(store: &Path, args: &[&str]) -> Output {
    bin().arg("--store").arg(store).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store holding `a/t` = 3,000,000 random bytes.
fn store_with_track() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let song = lockerstore::corpus::noise(11, "cli-output", 3_000_000);
    let file = tmp.path().join("song.bin");
    std::fs::write(&file, &song).unwrap();
    assert!(cli(&store, &["init"]).status.success());
    let put = cli(&store, &["put", "a", "t", file.to_str().unwrap()]);
    assert!(put.status.success(), "{}", stderr(&put));
    (tmp, store, song)
}

#[test]
fn ranges_follow_http_and_errors_quote_what_was_typed() {
    let (_tmp, store, song) = store_with_track();
    let len = song.len();
    let get = |r: &str| cli(&store, &["get", "a", "t", "--range", r]);
    // (typed, expected bytes)
    let good: &[(&str, std::ops::Range<usize>)] = &[
        ("0-9", 0..10),
        ("1000-1999", 1000..2000),
        ("-5", len - 5..len),
        ("-1", len - 1..len),
        ("2999990-", len - 10..len),
        ("0-", 0..len),
        // As in HTTP, a last byte past the end is cut to the track's last byte, and a suffix
        // longer than the track selects all of it.
        ("2999990-99999999", len - 10..len),
        ("-99999999", 0..len),
    ];
    for (typed, want) in good {
        let out = get(typed);
        assert!(out.status.success(), "{typed}: {}", stderr(&out));
        assert_eq!(out.stdout, &song[want.clone()], "range {typed}");
    }
    let bad = [
        "5",
        "0x10-0x20",
        "",
        "=-",
        "-",
        "5-1",
        "-0",
        "3000000-",
        "3000000-3000001",
        "1 - 2",
        "+1-2",
        "99999999999999999999999-",
    ];
    for typed in bad {
        let out = get(typed);
        assert_eq!(out.status.code(), Some(2), "{typed:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{typed:?} wrote output");
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!("invalid range {typed:?}")),
            "{typed:?}: the message must quote what was typed: {msg}"
        );
    }
}

fn pack_files(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn get_to_a_file_leaves_no_file_when_a_later_chunk_is_corrupt() {
    let (tmp, store, song) = store_with_track();
    // Flip a byte near the end of the only pack: the track's last chunk, long after the first
    // bytes were written out.
    let packs = pack_files(&store);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x40;
    std::fs::write(&packs[0], &bytes).unwrap();

    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("song.bin");
    let out = cli(&store, &["get", "a", "t", "-o", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch") || stderr(&out).contains("corrupt"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists(), "a partial file was left behind");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    // An existing file under that name is left as it was.
    std::fs::write(&target, b"previous contents").unwrap();
    let out = cli(&store, &["get", "a", "t", "-o", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&target).unwrap(), b"previous contents");

    // A range wholly before the damage still comes out whole.
    let out = cli(
        &store,
        &[
            "get",
            "a",
            "t",
            "--range",
            "0-99999",
            "-o",
            target.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), &song[..100_000]);
}

/// Runs the binary with its stdout a pipe whose read end is already closed, so its first write
/// fails with EPIPE whatever the timing.
fn run_into_closed_pipe(store: &Path, args: &[&str]) -> Output {
    // The read end is closed before the child exists, so not even its first write can land in
    // the pipe's buffer (closing it after the spawn raced a fast command's output).
    let (read_end, write_end) = std::io::pipe().unwrap();
    drop(read_end);
    let mut child = bin()
        .arg("--store")
        .arg(store)
        .args(args)
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr: err,
    }
}

#[test]
fn a_closed_pipe_ends_the_command_quietly_with_status_141() {
    let (_tmp, store, _song) = store_with_track();
    for args in [
        &["ls", "a", "--json"][..],
        &["ls", "a"],
        &["get", "a", "t"],
        &["get", "a", "t", "--range", "-10"],
        &["stats"],
        &["stats", "--json"],
        &["verify"],
        &["what-if", "single-master"],
        &["what-if", "--by-holder"],
        &["license", "list"],
        &["audit"],
    ] {
        let out = run_into_closed_pipe(&store, args);
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(
            stderr(&out).is_empty(),
            "{args:?} must end quietly: {}",
            stderr(&out)
        );
    }
    // The store is untouched and still reads.
    let out = cli(&store, &["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
