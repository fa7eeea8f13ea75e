//! A short sequence of store operations against a fresh store in a temporary directory, checked
//! against a `HashMap` model.
//!
//! Input layout (every missing byte reads as 0; the sequence ends when the input does):
//! * byte 0, flags: bit 0 creates the store in single-master mode (else per-user-copy); bit 1
//!   uses small chunker sizes (256 / 1 KiB / 4 KiB) so a track has many chunks, else the
//!   default 16 / 64 / 256 KiB.
//! * then at most `MAX_OPS` operations, each an opcode byte (`% 8`) and its arguments:
//!   - 0, 1, 2 `put`: user byte, key byte, content kind byte, length u16 LE, seed byte, then for
//!     kind 4 one byte `n` and `n` bytes of pattern taken from the input;
//!   - 3 `delete`: user byte, key byte;
//!   - 4 `read`: user byte, key byte (the whole track with `read_track`);
//!   - 5 `range read`: user byte, key byte, offset u16 LE, length u16 LE (`open_track` + seek);
//!   - 6 `reopen`: drop the store and open it again (recovery runs), then `verify`;
//!   - 7 `set mode`: flips the license mode (new puts go to the other copy domain).
//!
//! Properties: puts, deletes and reads never fail unexpectedly; reads equal the model; missing
//! tracks give `UnknownUser` or `TrackNotFound` exactly as the model predicts; `PutOutcome`,
//! `track_info`, `list` and `stats` agree with the model; re-putting content already stored in
//! the same copy domain writes no new chunk (nothing is garbage-collected here); `verify` finds no
//! problem. At the end every track is read back and the store is verified.
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lockerstore::{
    ChunkerParams, Error, Fingerprint, LicenseMode, Options, Store, TrackKey, UserId,
};

/// Operations per input.
const MAX_OPS: usize = 16;
/// Largest generated track (the length field is a u16, so this is a hard bound).
const MAX_CONTENT: usize = 64 << 10;

const USERS: [&str; 3] = ["alice", "bob", "Zoë ☃"];
const KEYS: [&str; 4] = [
    "Artist/Album/01 Song.mp3",
    "k",
    "Artist/Album/../01 Song.mp3",
    "ключ/трек.flac",
];

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// Copy domain, as far as dedup is concerned: the shared one or a user's own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Dom {
    Shared,
    User(usize),
}

#[derive(Default)]
struct Model {
    /// (user index, key index) -> bytes.
    tracks: BTreeMap<(usize, usize), Vec<u8>>,
    /// Users that have ever put something (they exist in the store from then on).
    known_users: HashSet<usize>,
    /// Every content put so far, for the "variation of an earlier track" generator.
    history: Vec<Vec<u8>>,
    /// (domain, fingerprint) of every content stored so far: all its chunks are in that domain.
    stored: HashSet<(Dom, [u8; 32])>,
    mode: Option<LicenseMode>,
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn gen_content(input: &mut Input<'_>, model: &Model) -> Vec<u8> {
    let kind = input.byte() % 5;
    let len = usize::from(input.u16()).min(MAX_CONTENT);
    let seed = input.byte();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (u64::from(seed) << 32 | 1);
    match kind {
        // A single byte repeated: very compressible (zstd records).
        0 => vec![seed; len],
        // Pseudo-random: incompressible (raw records).
        1 => (0..len).map(|_| (xorshift(&mut state) >> 24) as u8).collect(),
        // An earlier content, resized and with a few bytes changed: partial dedup.
        2 => {
            let Some(base) = (!model.history.is_empty())
                .then(|| &model.history[usize::from(seed) % model.history.len()])
            else {
                return vec![seed; len];
            };
            let mut v: Vec<u8> = base.iter().copied().cycle().take(len).collect();
            if base.is_empty() {
                v.resize(len, seed);
            }
            for _ in 0..(seed % 4) {
                if !v.is_empty() {
                    let at = (xorshift(&mut state) as usize) % v.len();
                    v[at] ^= 0x5a;
                }
            }
            v
        }
        // Text-like lines: compressible but not trivially so.
        3 => {
            let mut v = Vec::with_capacity(len + 64);
            let mut i = 0u64;
            while v.len() < len {
                let r = xorshift(&mut state) % 1000;
                v.extend_from_slice(format!("TIT2 Track {i:04} of seed {seed} / {r}\n").as_bytes());
                i += 1;
            }
            v.truncate(len);
            v
        }
        // A pattern taken from the input, repeated: the fuzzer controls the bytes.
        _ => {
            let n = usize::from(input.byte());
            let pattern = input.bytes(n).to_vec();
            if pattern.is_empty() {
                vec![seed; len]
            } else {
                pattern.iter().copied().cycle().take(len).collect()
            }
        }
    }
}

fn ids(input: &mut Input<'_>) -> (usize, usize, UserId, TrackKey) {
    let u = usize::from(input.byte()) % USERS.len();
    let k = usize::from(input.byte()) % KEYS.len();
    (
        u,
        k,
        UserId::new(USERS[u]).expect("valid user id"),
        TrackKey::new(KEYS[k]).expect("valid key"),
    )
}

/// Asserts that a missing track is reported the way the model predicts.
fn expect_missing<T: std::fmt::Debug>(model: &Model, u: usize, r: lockerstore::Result<T>, what: &str) {
    match r {
        Err(Error::UnknownUser(_)) if !model.known_users.contains(&u) => {}
        Err(Error::TrackNotFound { .. }) if model.known_users.contains(&u) => {}
        other => panic!(
            "{what} of a missing track (user known: {}): {other:?}",
            model.known_users.contains(&u)
        ),
    }
}

fn open(dir: &Path, single_master: bool, small_chunks: bool) -> Store {
    let mut options = Options::default()
        .mode(if single_master {
            LicenseMode::SingleMaster
        } else {
            LicenseMode::PerUserCopy
        })
        .compression_level(1);
    if small_chunks {
        options = options.chunker(ChunkerParams {
            min: 256,
            avg: 1024,
            max: 4096,
        });
    }
    Store::open(dir, options).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

fn check_verify(store: &Store, when: &str) {
    let report = store.verify().unwrap_or_else(|e| panic!("verify {when}: {e}"));
    assert!(report.is_ok(), "verify {when}: {:?}", report.problems);
}

fn check_all(store: &Store, model: &Model) {
    for (&(u, k), want) in &model.tracks {
        let user = UserId::new(USERS[u]).unwrap();
        let key = TrackKey::new(KEYS[k]).unwrap();
        let got = store
            .read_track(&user, &key)
            .unwrap_or_else(|e| panic!("read {user}/{key}: {e}"));
        assert!(got == *want, "read {user}/{key}: {} bytes, model has {}", got.len(), want.len());
    }
    for (u, name) in USERS.iter().enumerate() {
        let user = UserId::new(name).unwrap();
        let want: Vec<(&str, u64)> = model
            .tracks
            .iter()
            .filter(|((tu, _), _)| *tu == u)
            .map(|((_, k), v)| (KEYS[*k], v.len() as u64))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        match store.list(&user) {
            Ok(list) => {
                assert!(model.known_users.contains(&u), "list of unknown user {user} succeeded");
                let got: Vec<(&str, u64)> = list.iter().map(|t| (t.key.as_str(), t.size)).collect();
                let mut got_sorted = got.clone();
                got_sorted.sort();
                assert_eq!(got, got_sorted, "list of {user} is not sorted by key");
                assert_eq!(got, want, "list of {user}");
            }
            Err(e) => expect_missing(model, u, Err::<(), _>(e), "list"),
        }
    }
    let stats = store.stats().unwrap_or_else(|e| panic!("stats: {e}"));
    let logical: u64 = model.tracks.values().map(|v| v.len() as u64).sum();
    let users: HashSet<usize> = model.tracks.keys().map(|(u, _)| *u).collect();
    assert_eq!(stats.tracks, model.tracks.len() as u64, "stats.tracks: {stats:?}");
    assert_eq!(stats.logical_bytes, logical, "stats.logical_bytes: {stats:?}");
    assert_eq!(stats.users, users.len() as u64, "stats.users: {stats:?}");
    assert_eq!(stats.per_user.len(), users.len(), "stats.per_user: {stats:?}");
    assert_eq!(Some(stats.mode), model.mode, "stats.mode");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let flags = input.byte();
    let (single_master, small_chunks) = (flags & 1 != 0, flags & 2 != 0);
    // tmpfs when there is one: fsync is free there and the harness measures logic, not disks.
    let tmp = if Path::new("/dev/shm").is_dir() {
        tempfile::Builder::new().prefix("lks-fuzz").tempdir_in("/dev/shm")
    } else {
        tempfile::Builder::new().prefix("lks-fuzz").tempdir()
    }
    .expect("temporary directory");
    let dir = tmp.path().join("store");
    let mut store = Some(open(&dir, single_master, small_chunks));
    let mut model = Model {
        mode: Some(if single_master {
            LicenseMode::SingleMaster
        } else {
            LicenseMode::PerUserCopy
        }),
        ..Model::default()
    };

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let s = store.as_ref().expect("store is open");
        match input.byte() % 8 {
            0..=2 => {
                let (u, k, user, key) = ids(&mut input);
                let content = gen_content(&mut input, &model);
                let fp = Fingerprint::of(&content);
                let dom = match model.mode {
                    Some(LicenseMode::SingleMaster) => Dom::Shared,
                    _ => Dom::User(u),
                };
                let out = s
                    .put(&user, &key, &content[..])
                    .unwrap_or_else(|e| panic!("put {user}/{key} ({} bytes): {e}", content.len()));
                assert_eq!(out.len, content.len() as u64, "PutOutcome.len");
                assert_eq!(out.fingerprint, fp, "PutOutcome.fingerprint");
                assert_eq!(out.replaced, model.tracks.contains_key(&(u, k)), "PutOutcome.replaced");
                assert!(out.new_chunks <= out.chunks, "{out:?}");
                assert!(out.new_bytes <= out.len, "{out:?}");
                assert_eq!(out.chunks == 0, content.is_empty(), "{out:?}");
                if model.stored.contains(&(dom, fp.0)) {
                    assert_eq!(out.new_chunks, 0, "content already in {dom:?} was stored again: {out:?}");
                    assert_eq!(out.new_bytes, 0, "content already in {dom:?} was stored again: {out:?}");
                }
                let info = s
                    .track_info(&user, &key)
                    .unwrap_or_else(|e| panic!("track_info {user}/{key}: {e}"));
                assert_eq!(
                    (info.size, info.fingerprint, info.chunks),
                    (out.len, out.fingerprint, out.chunks),
                    "track_info after put"
                );
                model.known_users.insert(u);
                model.stored.insert((dom, fp.0));
                model.history.push(content.clone());
                model.tracks.insert((u, k), content);
            }
            3 => {
                let (u, k, user, key) = ids(&mut input);
                let r = s.delete(&user, &key);
                if model.tracks.remove(&(u, k)).is_some() {
                    r.unwrap_or_else(|e| panic!("delete {user}/{key}: {e}"));
                } else {
                    expect_missing(&model, u, r, "delete");
                }
            }
            4 => {
                let (u, k, user, key) = ids(&mut input);
                let r = s.read_track(&user, &key);
                match model.tracks.get(&(u, k)) {
                    Some(want) => {
                        let got = r.unwrap_or_else(|e| panic!("read {user}/{key}: {e}"));
                        assert!(got == *want, "read {user}/{key}: {} bytes, model has {}", got.len(), want.len());
                    }
                    None => expect_missing(&model, u, r, "read"),
                }
            }
            5 => {
                let (u, k, user, key) = ids(&mut input);
                let (off, n) = (u64::from(input.u16()), usize::from(input.u16()));
                let r = s.open_track(&user, &key);
                match model.tracks.get(&(u, k)) {
                    Some(want) => {
                        let mut reader = r.unwrap_or_else(|e| panic!("open {user}/{key}: {e}"));
                        assert_eq!(reader.len(), want.len() as u64);
                        let off = off % (want.len() as u64 + 1);
                        reader.seek(SeekFrom::Start(off)).expect("seek");
                        let mut got = Vec::new();
                        (&mut reader)
                            .take(n as u64)
                            .read_to_end(&mut got)
                            .unwrap_or_else(|e| panic!("range read {user}/{key} at {off}: {e}"));
                        let from = off as usize;
                        let to = (from + n).min(want.len());
                        assert!(
                            got[..] == want[from..to],
                            "range read {user}/{key} {from}..{to}: got {} bytes",
                            got.len()
                        );
                    }
                    None => expect_missing(&model, u, r, "open_track"),
                }
            }
            6 => {
                drop(store.take());
                let s = open(&dir, single_master, small_chunks);
                assert_eq!(Some(s.mode()), model.mode, "mode after reopen");
                check_verify(&s, "after reopen");
                store = Some(s);
            }
            _ => {
                let new = match model.mode {
                    Some(LicenseMode::SingleMaster) => LicenseMode::PerUserCopy,
                    _ => LicenseMode::SingleMaster,
                };
                s.set_mode(new).unwrap_or_else(|e| panic!("set_mode {new}: {e}"));
                assert_eq!(s.mode(), new);
                model.mode = Some(new);
            }
        }
    }

    let s = store.take().expect("store is open");
    check_all(&s, &model);
    check_verify(&s, "at the end");
});
